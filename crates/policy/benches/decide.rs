//! Decision latency with 10, 100 and 1,000 rules.
//!
//! `cargo bench -p p3ak-policy --bench decide` prints p50 / p99 / p99.9 per policy size,
//! measured over individually timed decisions, then runs criterion's own statistics.
//! Each policy has (about) one quarter of its rules as entries (a tenth of them wildcards) and
//! three quarters as conditional rules (amount threshold, payee list, 24-hour total), so a payment
//! decision evaluates three Cedar conditions, like the banking example.

#![expect(
    clippy::panic,
    reason = "a benchmark with a broken setup should stop loudly"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use p3ak_policy::{Policy, Request};
use serde_json::json;

fn policy_with(rules: usize) -> Policy {
    let entries = rules / 4;
    let mut yaml = String::from(
        "totals:\n  spent: { actions: [\"*\"], sum: amount, window: 24h }\nactions:\n",
    );
    for i in 0..entries {
        let name = if i % 10 == 9 {
            format!("w{i}.*")
        } else {
            format!("p{i}.pay")
        };
        let _ = write!(
            yaml,
            "  \"{name}\":\n    level: {}\n    rules:\n      - {{ id: big{i}, when: {{ args.amount: {{ gt: 10000 }} }}, level: 4 }}\n      - {{ id: payee{i}, when: {{ args.payee: {{ not_in: [alice, bob, carol, landlord] }} }}, reject: true }}\n      - {{ id: cap{i}, when: {{ total.spent: {{ gt: 50000 }} }}, level: 5 }}\n",
            1 + i % 3
        );
    }
    for i in 0..rules % 4 {
        let _ = writeln!(yaml, "  x{i}.read: {{ level: 0 }}");
    }
    Policy::from_yaml(&yaml).unwrap_or_else(|e| panic!("benchmark policy: {e}"))
}

fn payment(rules: usize) -> Request {
    let target = rules / 4 / 2;
    let target = if target % 10 == 9 { target + 1 } else { target };
    serde_json::from_value(json!({
        "agent": "ledger",
        "action": format!("p{target}.pay"),
        "args": { "payee": "landlord", "amount": 9000, "memo": "rent for march" },
        "context": { "totals": { "spent": 12000 }, "time": "12:00", "channel": "console" },
    }))
    .unwrap_or_else(|e| panic!("benchmark request: {e}"))
}

fn percentiles(policy: &Policy, request: &Request) -> (Duration, Duration, Duration) {
    for _ in 0..2_000 {
        black_box(policy.decide(black_box(request)));
    }
    let mut samples: Vec<Duration> = (0..50_000)
        .map(|_| {
            let start = Instant::now();
            black_box(policy.decide(black_box(request)));
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64) * q) as usize;
        samples
            .get(i.min(samples.len() - 1))
            .copied()
            .unwrap_or_default()
    };
    (at(0.50), at(0.99), at(0.999))
}

#[expect(clippy::print_stdout, reason = "a benchmark reports its figures")]
fn decide(c: &mut Criterion) {
    println!("decision latency (50,000 timed decisions each)");
    println!(
        "{:>6} {:>22} {:>10} {:>10} {:>10}",
        "rules", "request", "p50", "p99", "p99.9"
    );
    for rules in [10, 100, 1000] {
        let policy = policy_with(rules);
        let cases = [
            ("payment (3 conditions)", payment(rules)),
            ("unknown action", Request::new("ledger", "nobody.knows")),
        ];
        for (what, request) in &cases {
            let (p50, p99, p999) = percentiles(&policy, request);
            println!(
                "{:>6} {:>22} {:>8.2}µs {:>8.2}µs {:>8.2}µs",
                policy.rule_count(),
                what,
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                p999.as_secs_f64() * 1e6
            );
        }
    }

    let mut group = c.benchmark_group("decide_payment");
    for rules in [10, 100, 1000] {
        let policy = policy_with(rules);
        let request = payment(rules);
        group.bench_with_input(BenchmarkId::from_parameter(rules), &request, |b, r| {
            b.iter(|| policy.decide(black_box(r)));
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);

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
use p3ak_policy::{Context, Policy, Request, Source, Transcript};
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

/// A v2 policy of `rules` rules: the mail entry tests a 60-address set, a quantifier over the
/// recipients, a regular expression, links in the body and provenance, like the office example.
fn policy_v2(rules: usize) -> Policy {
    let mut yaml = String::from("sets:\n  contacts: [");
    for i in 0..60 {
        let _ = write!(
            yaml,
            "{}person{i}@corp.example",
            if i == 0 { "" } else { ", " }
        );
    }
    yaml.push_str("]\n  ours: [corp.example, \"*.corp.example\"]\nsend:\n  mail.send:\n    level: 1\n    rules:\n");
    yaml.push_str("      - { id: outside, when: { not: { args.to: { all: { any: [ { item: { email_domain_in: $ours } }, { item: { in: $contacts } } ] } } } }, level: 3 }\n");
    yaml.push_str("      - { id: not-said, when: { args.to: { not_from: [owner, operator] } }, reject: true }\n");
    yaml.push_str(
        "      - { id: phish, when: { args.body: { links_host_not_in: $ours } }, reject: true }\n",
    );
    yaml.push_str("      - { id: wire, when: { args.body: { matches: '(?i)\\bwire\\s+transfer\\b' } }, level: 4 }\n");
    yaml.push_str("      - { id: long, when: { args.body: { longer_than: 20000 } }, level: 2 }\n");
    yaml.push_str("      - { id: known, when: { args.to: { not_in: $contacts } }, level: 2 }\n");
    let mut count = 7;
    let mut i = 0;
    while count < rules {
        let _ = write!(
            yaml,
            "  p{i}.pay:\n    level: 1\n    rules:\n      - {{ id: big{i}, when: {{ args.amount: {{ gt: 10000 }} }}, level: 4 }}\n      - {{ id: payee{i}, when: {{ args.payee: {{ not_in: $contacts }} }}, reject: true }}\n      - {{ id: said{i}, when: {{ args.payee: {{ not_from: [owner] }} }}, reject: true }}\n"
        );
        count += 4;
        i += 1;
    }
    Policy::from_yaml(&yaml).unwrap_or_else(|e| panic!("benchmark policy: {e}"))
}

/// A session of `messages` texts of a few hundred to two thousand characters.
fn session(messages: usize) -> Transcript {
    let mut transcript = Transcript::new();
    for i in 0..messages {
        let source = match i % 3 {
            0 => Source::Owner,
            1 => Source::Tool("mail.read".to_owned()),
            _ => Source::Memory,
        };
        let mut text = format!(
            "Message {i}: please send the minutes to person{}@corp.example. ",
            i % 60
        );
        while text.len() < 300 + (i * 97) % 1700 {
            text.push_str("The quarterly figures are attached; see https://wiki.corp.example/q3 for the notes. ");
        }
        transcript.push(source, &text);
    }
    transcript
}

fn mail() -> Request {
    Request::new("amber", "mail.send").with_args(json!({
        "to": ["person3@corp.example", "person7@corp.example"],
        "subject": "Minutes",
        "body": "Hi both, the minutes are at https://wiki.corp.example/m/12. Thanks!",
    }))
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

    println!("\npolicy v2: sets, quantifiers, regex, links and provenance (origins supplied)");
    let transcript = session(100);
    for rules in [10, 100, 1000] {
        let policy = policy_v2(rules);
        let request = mail();
        let origins = transcript.origins_of(&request.args);
        let request = request.with_context(Context {
            origins: Some(origins),
            ..Context::default()
        });
        let (p50, p99, p999) = percentiles(&policy, &request);
        println!(
            "{:>6} {:>22} {:>8.2}µs {:>8.2}µs {:>8.2}µs",
            policy.rule_count(),
            "mail (6 conditions)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p999.as_secs_f64() * 1e6
        );
    }
    let request = mail();
    let mut samples: Vec<Duration> = (0..5_000)
        .map(|_| {
            let start = Instant::now();
            black_box(transcript.origins_of(black_box(&request.args)));
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "provenance of one proposal (5 strings) in a 100-message session ({} KiB): p50 {:.1}µs, p99 {:.1}µs",
        (0..100)
            .map(|i: usize| 300 + (i * 97) % 1700)
            .sum::<usize>()
            / 1024,
        pick(0.5).as_secs_f64() * 1e6,
        pick(0.99).as_secs_f64() * 1e6
    );

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

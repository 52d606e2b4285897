//! What provenance costs the road: labelling a stored session once per turn, and looking the
//! values of one proposal up in it before its decision (`cargo bench -p p3ak-kernel --bench
//! provenance`). The session has 100 messages of 300–2000 characters (the owner's requests,
//! the model's answers, mail and file contents from tools); the call's arguments hold 5
//! strings, one of them a 200-character body.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    reason = "bench setup"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_kernel::proposal::ToolTable;
use p3ak_kernel::road::Conversation;
use p3ak_proto::{ChatMessage, Role, ToolCall};
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "invoice",
    "the",
    "meeting",
    "Tuesday",
    "budget",
    "of",
    "quarterly",
    "report",
    "please",
    "attached",
    "déjà",
    "vu",
    "contract",
    "and",
    "renewal",
    "for",
    "Zürich",
    "office",
    "42",
    "1500.00",
    "EUR",
    "reference",
    "thanks",
    "regards",
    "schedule",
    "review",
];

/// About `len` characters of text, with an address and a link every few sentences.
fn text(seed: usize, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        i = i.wrapping_mul(2_654_435_761).wrapping_add(12_345) % 1_000_003;
        let word = WORDS[i % WORDS.len()];
        out.push_str(word);
        match i % 29 {
            0 => out.push_str(&format!(" colleague{}@acme.example", i % 97)),
            1 => out.push_str(&format!(" https://docs.acme.example/d/{}", i % 991)),
            2 => out.push_str(". "),
            _ => out.push(' '),
        }
    }
    out
}

/// A session of `n` messages: turns of an owner's request, a proposed call, its result (a
/// mail or a file), and the model's answer.
fn session(n: usize) -> Vec<ChatMessage> {
    let message = |role, content: String| ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    let mut messages = Vec::with_capacity(n);
    let mut turn = 0;
    while messages.len() < n {
        messages.push(message(Role::User, text(turn * 7 + 1, 300 + turn % 300)));
        let mut call = message(Role::Assistant, String::new());
        let id = format!("call_{turn}");
        call.tool_calls = vec![ToolCall {
            id: id.clone(),
            name: "mail__read".to_owned(),
            arguments: json!({"folder": "inbox"}),
        }];
        messages.push(call);
        let mut result = message(
            Role::Tool,
            json!({"from": "billing@partner.example", "body": text(turn * 7 + 3, 1200 + (turn * 131) % 800)})
                .to_string(),
        );
        result.tool_call_id = Some(id);
        messages.push(result);
        messages.push(message(Role::Assistant, text(turn * 7 + 5, 600)));
        turn += 1;
    }
    messages.truncate(n);
    messages
}

fn args() -> Value {
    json!({
        "to": ["colleague12@acme.example", "mallory@evil.example"],
        "subject": "Invoices for November",
        "body": text(99, 200),
        "cc": "bob@partner.example",
    })
}

fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

#[expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn report(what: &str, sorted: &[Duration]) {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or_default().as_secs_f64() * 1e6
    };
    println!(
        "{what}: n={} p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn provenance(c: &mut Criterion) {
    let table = ToolTable::new([]);
    let args = args();
    for n in [100, 200] {
        let messages = session(n);
        let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
        let conversation = Conversation::from_history("bench", &messages, &table);
        // Percentiles, which criterion does not report.
        let lookup = sample(2000, || {
            black_box(conversation.transcript().origins_of(black_box(&args)));
        });
        report(
            &format!("origins_of: 5 values in a {n}-message session ({chars} chars)"),
            &lookup,
        );
        let build = sample(200, || {
            black_box(Conversation::from_history(
                "bench",
                black_box(&messages),
                &table,
            ));
        });
        report(
            &format!("labelling the stored {n}-message session (once per turn)"),
            &build,
        );
    }
    let messages = session(100);
    let conversation = Conversation::from_history("bench", &messages, &table);
    let mut group = c.benchmark_group("provenance");
    group.bench_function("origins_of_5_values_100_messages", |b| {
        b.iter(|| conversation.transcript().origins_of(black_box(&args)));
    });
    group.bench_function("label_100_messages", |b| {
        b.iter(|| Conversation::from_history("bench", black_box(&messages), &table));
    });
    group.finish();
}

criterion_group!(benches, provenance);
criterion_main!(benches);

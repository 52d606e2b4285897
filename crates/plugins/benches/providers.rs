//! A provider's own cost on a streamed reply: 1,000 text deltas from a fake server on
//! loopback, parsed, forwarded as `stream_chunk` frames over the plugin socket and assembled,
//! for each of `anthropic` (SSE), `openai` (SSE) and `ollama` (NDJSON). The model's time is
//! not in it: the server sends as fast as it can.
//!
//! `cargo bench -p p3ak-plugins --bench providers`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

#[path = "../tests/plugins/fake_api.rs"]
mod fake_api;
#[path = "../tests/plugins/kernel.rs"]
#[allow(dead_code, reason = "the bench uses part of the test harness")]
mod kernel;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fake_api::{Canned, FakeApi};
use serde_json::json;

const DELTAS: usize = 1000;

fn anthropic_stream() -> Vec<String> {
    let mut events = vec![
        r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}"#.to_owned(),
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
    ];
    events.extend((0..DELTAS).map(|i| {
        format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"word{i} "}}}}"#)
    }));
    events.push(r#"{"type":"content_block_stop","index":0}"#.to_owned());
    events.push(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1000}}"#.to_owned());
    events.push(r#"{"type":"message_stop"}"#.to_owned());
    events
        .into_iter()
        .map(|data| {
            let kind: serde_json::Value = serde_json::from_str(&data).unwrap();
            format!(
                "event: {}\ndata: {data}\n\n",
                kind["type"].as_str().unwrap()
            )
        })
        .collect()
}

fn openai_stream() -> Vec<String> {
    let mut pieces: Vec<String> = (0..DELTAS)
        .map(|i| {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
            )
        })
        .collect();
    pieces.push("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_owned());
    pieces.push("data: [DONE]\n\n".to_owned());
    pieces
}

fn ollama_stream() -> Vec<String> {
    let mut pieces: Vec<String> = (0..DELTAS)
        .map(|i| {
            format!("{{\"model\":\"m\",\"message\":{{\"role\":\"assistant\",\"content\":\"word{i} \"}},\"done\":false}}\n")
        })
        .collect();
    pieces.push(
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"prompt_eval_count\":10,\"eval_count\":1000}\n"
            .to_owned(),
    );
    pieces
}

fn providers(c: &mut Criterion) {
    let mut group = c.benchmark_group("provider_stream_1000_deltas");
    group.sample_size(20);
    group.throughput(Throughput::Elements(DELTAS as u64));
    for (builtin, content_type, pieces) in [
        ("anthropic", "text/event-stream", anthropic_stream()),
        ("openai", "text/event-stream", openai_stream()),
        ("ollama", "application/x-ndjson", ollama_stream()),
    ] {
        let api = FakeApi::start_with(move || {
            Some(Canned::Stream {
                content_type,
                pieces: pieces.clone(),
                drop: false,
                pause: Duration::ZERO,
            })
        });
        let mut k = kernel::start(
            builtin,
            json!({"base_url": api.base, "model": "m", "max_retries": 0}),
        );
        let mut request = kernel::request(vec![kernel::user("go")], true);
        request.credential = Some(p3ak_proto::Credential::new(
            "sk-bench-0123456789".to_owned(),
        ));
        group.bench_function(builtin, |b| {
            b.iter(|| {
                let (chunks, reply) = k.infer(request.clone());
                assert_eq!(chunks.len(), DELTAS);
                reply.unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, providers);
criterion_main!(benches);

//! Conversion throughput on generated inputs: Markdown (about 1 MiB) and PDF (50 pages).
//! Run: `cargo bench -p p3ak-convert --bench convert`. Criterion prints the time per document
//! (docs/s = 1 / time) and MiB/s.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "bench code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p3ak_convert::{ChunkOptions, Input, Limits, chunk, convert};

fn markdown_doc() -> String {
    let mut s = String::from("# Handbook\n\n");
    let mut i = 0;
    while s.len() < 1 << 20 {
        i += 1;
        s.push_str(&format!("## Section {i}\n\nThis paragraph talks about topic {i}, with *emphasis*, `code` and a [link](https://example.invalid/{i}). It is long enough to look like prose, and mentions budgets, invoices and vault search.\n\n- item one for {i}\n- item two for {i}\n\n```rust\nfn f{i}() -> u32 {{ {i} }}\n```\n\n"));
    }
    s
}

fn pdf_doc() -> Vec<u8> {
    let page: String = (0..40)
        .map(|l| format!("Line {l} of a generated page, with words to extract and index.\n"))
        .collect();
    let pages: Vec<&str> = (0..50).map(|_| page.as_str()).collect();
    common::pdf(&pages)
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let md = markdown_doc();
    let pdf = pdf_doc();
    let mut group = c.benchmark_group("convert");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(md.len() as u64));
    group.bench_function("markdown_1mib", |b| {
        b.iter(|| {
            convert(
                black_box(&Input::new(md.as_bytes()).with_name("a.md")),
                &limits,
            )
            .unwrap()
        })
    });
    group.bench_function("markdown_1mib_and_chunk", |b| {
        b.iter(|| {
            let doc = convert(
                black_box(&Input::new(md.as_bytes()).with_name("a.md")),
                &limits,
            )
            .unwrap();
            chunk(&doc, &ChunkOptions::default())
        })
    });
    group.throughput(Throughput::Bytes(pdf.len() as u64));
    group.bench_function("pdf_50_pages", |b| {
        b.iter(|| convert(black_box(&Input::new(&pdf).with_name("a.pdf")), &limits).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

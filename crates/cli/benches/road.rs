//! The road's overhead: one tool call from proposal to result through a running kernel with
//! real plugin processes (`files.list` on an empty workspace: as close to a no-op tool as a
//! real plugin gets), and the IPC round trip to a plugin (ping → pong).
//!
//! `cargo bench -p p3ak --bench road`. The road figure includes four audit entries, each a
//! vault commit with two fsyncs: that is the price of I5, and most of the total.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_kernel::home::Home;
use p3ak_kernel::{Kernel, KernelOptions};
use p3ak_vault::{KdfParams, Passphrase};

fn road(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let pass = || Passphrase::new("bench passphrase".to_owned());
    home.init(&pass(), KdfParams::RFC9106_SECOND).unwrap();
    std::fs::write(
        home.policy(),
        "version: 1\nread:\n  files.list: { level: 0 }\n",
    )
    .unwrap();
    std::fs::write(
        home.config(),
        "[plugins.files]\nbuiltin = \"files\"\n[plugins.vault]\nbuiltin = \"vault\"\n\
         [plugins.http]\nbuiltin = \"http\"\n[plugins.shell]\nbuiltin = \"shell\"\n",
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kernel = runtime
        .block_on(Kernel::start(KernelOptions {
            home: home.clone(),
            passphrase: pass(),
            exe: env!("CARGO_BIN_EXE_p3ak").into(),
        }))
        .unwrap();
    let call = p3ak_proto::ToolCall {
        id: "bench".to_owned(),
        name: "files__list".to_owned(),
        arguments: serde_json::json!({}),
    };
    let first = runtime
        .block_on(kernel.propose("assistant", &call, "bench"))
        .unwrap();
    assert!(first.contains("entries"), "{first}");

    let mut group = c.benchmark_group("road");
    group
        .sample_size(200)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("proposal_to_result_files_list", |b| {
        b.iter(|| {
            runtime
                .block_on(kernel.propose("assistant", &call, "bench"))
                .unwrap()
        });
    });
    let files = kernel.host().connection("files").unwrap();
    group.bench_function("ipc_round_trip_ping", |b| {
        b.iter(|| {
            runtime
                .block_on(files.request(
                    p3ak_proto::Message::Ping(p3ak_proto::Ping {}),
                    Duration::from_secs(5),
                    None,
                ))
                .unwrap()
        });
    });
    group.finish();
    kernel.request_stop();
    runtime.block_on(kernel.serve()).unwrap();
}

criterion_group!(benches, road);
criterion_main!(benches);

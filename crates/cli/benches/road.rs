//! The road's overhead: one tool call from proposal to result through a running kernel with
//! real plugin processes (`files.list` on an empty workspace: as close to a no-op tool as a
//! real plugin gets), and the IPC round trip to a plugin (ping → pong).
//!
//! `cargo bench -p p3ak --bench road`. The road figure includes its audit entries: one vault
//! commit (one fsync) before the tool runs, the price of I5 and most of the total; the result
//! joins the next commit without the call waiting. Concurrent turns share commits (the audit
//! log group-commits). The kernel's own CPU per call is measured apart from both.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use p3ak_kernel::home::Home;
use p3ak_kernel::{Kernel, KernelOptions};
use p3ak_vault::{KdfParams, Passphrase};

#[expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
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

    // Percentiles, which criterion does not report: the issue asks for p50 and p99.
    let steps_before = step_totals(&kernel.metrics().encode());
    let road = sample(2000, || {
        runtime
            .block_on(kernel.propose("assistant", &call, "bench"))
            .unwrap();
    });
    report(
        "road: proposal -> decision -> execution -> result (files.list)",
        &road,
    );
    report_steps(&steps_before, &step_totals(&kernel.metrics().encode()));
    // The same from a task on the kernel's runtime, as a turn makes its calls: no hop from
    // this thread into the runtime and back.
    let in_task = runtime
        .block_on(runtime.spawn({
            let kernel = std::sync::Arc::clone(&kernel);
            let call = call.clone();
            async move {
                let mut times = Vec::with_capacity(2000);
                for i in 0..2100 {
                    let start = std::time::Instant::now();
                    kernel.propose("assistant", &call, "bench").await.unwrap();
                    if i >= 100 {
                        times.push(start.elapsed());
                    }
                }
                times.sort();
                times
            }
        }))
        .unwrap();
    report(
        "road, called from a task on the runtime (as a turn)",
        &in_task,
    );
    // The kernel's own CPU per call: `block_on` runs the road on this thread, while the
    // audit log's fsyncs run on its writer thread and the tool in its plugin's process. A
    // turn builds its tool table once, so one step of its road is `propose_with`.
    let table = kernel.tools_offered("assistant").unwrap();
    let own = cpu_sample(2000, || {
        runtime
            .block_on(kernel.propose_with("assistant", &table, &call, "bench"))
            .unwrap();
    });
    report(
        "road: the kernel's own CPU per call (no fsync, no plugin)",
        &own,
    );
    let start = cpu_sample(2000, || {
        kernel.tools_offered("assistant").unwrap();
    });
    report("turn start: the tools an agent is offered (CPU)", &start);
    // Concurrent turns: the same call from 1, 2, 4 and 8 tasks at once, calls per second.
    // Durability is shared between turns only where the audit log group-commits.
    let mut one = 0.0;
    for parallel in [1usize, 2, 4, 8] {
        let calls = 1600;
        let started = std::time::Instant::now();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..parallel {
                let kernel = std::sync::Arc::clone(&kernel);
                let call = call.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..calls / parallel {
                        kernel.propose("assistant", &call, "bench").await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let rate = calls as f64 / started.elapsed().as_secs_f64();
        if parallel == 1 {
            one = rate;
        }
        println!(
            "road, {parallel} concurrent turn(s): {rate:.0} calls/s ({:.2}x one)",
            rate / one
        );
    }
    let files = kernel.host().connection("files").unwrap();
    let ping = sample(5000, || {
        runtime
            .block_on(files.request(
                p3ak_proto::Message::Ping(p3ak_proto::Ping {}),
                Duration::from_secs(5),
                None,
            ))
            .unwrap();
    });
    report("ipc: ping -> pong round trip", &ping);
    // The tool alone, straight to its plugin: the road's `tool` step without the road.
    let invoke = sample(5000, || {
        runtime
            .block_on(files.request(
                p3ak_proto::Message::Invoke(p3ak_proto::Invoke {
                    agent: "assistant".to_owned(),
                    action: "list".to_owned(),
                    args: serde_json::json!({}),
                    deadline_ms: None,
                }),
                Duration::from_secs(5),
                None,
            ))
            .unwrap();
    });
    report("ipc: files.list invoke -> result round trip", &invoke);
    let mut group = c.benchmark_group("road");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("proposal_to_result_files_list", |b| {
        b.iter(|| {
            runtime
                .block_on(kernel.propose("assistant", &call, "bench"))
                .unwrap()
        });
    });
    group.finish();
    kernel.request_stop();
    runtime.block_on(kernel.serve()).unwrap();
}

/// Each road step's (seconds, count) so far, from the kernel's `p3ak_road_step_seconds`.
fn step_totals(metrics: &str) -> Vec<(String, f64, f64)> {
    let value = |name: &str, step: &str| {
        let prefix = format!("p3ak_road_step_seconds_{name}{{step=\"{step}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ["decide", "commit", "tool", "total"]
        .iter()
        .map(|step| (step.to_string(), value("sum", step), value("count", step)))
        .collect()
}

/// Where a call's time went over a sample: each step's mean, as the kernel times it.
#[expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn report_steps(before: &[(String, f64, f64)], after: &[(String, f64, f64)]) {
    let means: Vec<String> = before
        .iter()
        .zip(after)
        .map(|((step, sum0, n0), (_, sum1, n1))| {
            let mean = (sum1 - sum0) / (n1 - n0).max(1.0);
            format!("{step} {:.0} µs", mean * 1e6)
        })
        .collect();
    println!("road: mean per step: {}", means.join(", "));
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds). The kernel
/// brings that figure up to date when the thread is switched out or yields, not when it is
/// read: without the yield, the time since the thread last woke is missing (a call's tail was
/// counted in the next call, and work that never blocks showed as 0 or a whole 4 ms tick).
fn thread_cpu() -> Duration {
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// This thread's CPU time for each of `n` runs of `f`, sorted.
fn cpu_sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let before = thread_cpu();
            f();
            thread_cpu().saturating_sub(before)
        })
        .collect();
    times.sort();
    times
}

fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 20 {
        f();
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = std::time::Instant::now();
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
        "{what}: n={} p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

criterion_group!(benches, road);
criterion_main!(benches);

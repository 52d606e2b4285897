//! The Harness's costs, through a real kernel with one scripted provider process per agent:
//!
//! - **board meetings**: 3, 5 and 7 members whose models each take 2 s; the meeting's wall
//!   time beside what asking them one after the other takes (the sum of their own times);
//! - **routing**: a message to `amber`, routed to `ledger`, against the same message sent to
//!   `ledger` directly — providers that answer at once, so the difference is the kernel's
//!   cost of the hand-over (one more model call, the route's proposal, decision, execution and
//!   result entries, the second turn's scope).
//!
//! `cargo bench -p p3ak --bench harness` (add `--profile dev` for a debug build's figures).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark: a failed step should stop it loudly"
)]

use std::time::Instant;

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};
use serde_json::{Value, json};

const POLICY: &str =
    "version: 1\nteam:\n  agents.route: { level: 0 }\n  agents.ask: { level: 0 }\n";
const ROUTED: usize = 100;

/// A kernel whose agents are `agents` (name, tools, scripted replies).
fn kernel(agents: &[(String, &str, Vec<Value>)]) -> Kernel {
    let home = Home::init("bench passphrase");
    let dir = home.home();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    for entry in std::fs::read_dir(dir.join("agents")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut plugins = String::new();
    for (name, tools, script) in agents {
        std::fs::write(
            dir.join(format!("agents/{name}.toml")),
            format!("prompt = \"{name}\"\nprovider = \"m-{name}\"\ntools = {tools}\nmemory = 0\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("s-{name}.json")),
            json!({"responses": script}).to_string(),
        )
        .unwrap();
        plugins.push_str(&format!(
            "[plugins.m-{name}]\nbuiltin = \"scripted\"\nconfig = {{ script = \"s-{name}.json\" }}\n\n"
        ));
    }
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[kernel]\ndefault_agent = \"{}\"\n{}\n[hitl]\nconsole = \"off\"\n\n\
             [agents]\nmax_fanout = 8\n\n{plugins}",
            agents[0].0,
            sandbox_setting()
        ),
    )
    .unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    kernel
}

fn board(members: usize) {
    let mut agents = vec![(
        "board".to_owned(),
        r#"["agents.ask"]"#,
        vec![json!({"content": "synthesis"})],
    )];
    for i in 0..members {
        agents.push((
            format!("m{i}"),
            "[]",
            vec![json!({"content": format!("view {i}"), "delay_ms": 2000})],
        ));
    }
    let mut k = kernel(&agents);
    let mut args = vec!["--json".to_owned(), "board".to_owned(), "q?".to_owned()];
    for i in 0..members {
        args.extend(["--member".to_owned(), format!("m{i}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = k.ok(&args);
    let wall = started.elapsed();
    let report: Value = serde_json::from_str(&out).unwrap();
    let sequential: u64 = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["elapsed_ms"].as_u64().unwrap())
        .sum();
    println!(
        "board, {members} members at 2 s each: wall {:.2} s (kernel's own count {:.2} s); \
         one after the other: {:.2} s; {:.1}× faster",
        wall.as_secs_f64(),
        report["wall_ms"].as_u64().unwrap() as f64 / 1000.0,
        sequential as f64 / 1000.0,
        sequential as f64 / wall.as_secs_f64() / 1000.0
    );
    k.stop();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn routing() {
    let answers: Vec<Value> = (0..ROUTED)
        .map(|i| json!({"content": format!("a{i}")}))
        .collect();
    let routes: Vec<Value> = (0..ROUTED)
        .map(|_| json!({"content": "", "tool_calls": [{"name": "agents__route", "arguments": {"agent": "ledger"}}]}))
        .collect();
    let mut both = answers.clone();
    both.extend(answers);
    let mut k = kernel(&[
        ("amber".to_owned(), r#"["agents.route"]"#, routes),
        ("ledger".to_owned(), "[]", both),
    ]);
    let time = |agent: &str| {
        let mut took: Vec<f64> = (0..ROUTED)
            .map(|i| {
                let started = Instant::now();
                k.ok(&[
                    "chat",
                    "--agent",
                    agent,
                    "--conversation",
                    &format!("c{i}"),
                    "-m",
                    "hello",
                ]);
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        took.sort_by(f64::total_cmp);
        took
    };
    let direct = time("ledger");
    let routed = time("amber");
    for (what, t) in [
        ("to ledger directly", &direct),
        ("through amber's route", &routed),
    ] {
        println!(
            "message {what}: p50 {:.1} ms, p99 {:.1} ms ({ROUTED} messages, `p3ak chat` process included)",
            percentile(t, 0.5),
            percentile(t, 0.99)
        );
    }
    println!(
        "routing overhead: p50 +{:.1} ms",
        percentile(&routed, 0.5) - percentile(&direct, 0.5)
    );
    k.stop();
}

fn main() {
    for members in [3, 5, 7] {
        board(members);
    }
    routing();
}

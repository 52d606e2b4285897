//! The kernel's metrics through a real turn: a kernel started in this process (as the
//! server runs it) with real plugin processes and the scripted provider; a turn with one
//! allowed and one rejected tool call moves the counters and the road's histogram by exactly
//! that much.

#![cfg(test)]

use std::collections::BTreeMap;

use p3ak_kernel::{Kernel, KernelOptions};
use p3ak_testkit::Home;
use p3ak_testkit::kernel::sandbox_setting;

const PASS: &str = "metrics test passphrase";

const POLICY: &str = "version: 1
read:
  files.list: { level: 0 }
write:
  files.write:
    level: 1
    rules:
      - id: no-forbidden
        when: { args.path: { like: 'forbidden*' } }
        reject: true
";

/// Every sample of the text format, `name{labels}` (labels sorted) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text:\n{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            (key, value.parse().unwrap())
        })
        .collect()
}

fn get(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn a_turn_with_tool_calls_moves_the_decision_counters_and_the_road_histogram() {
    let home = Home::init(PASS);
    let script = serde_json::json!({"responses": [
        {"content": "", "tool_calls": [
            {"name": "files__list", "arguments": {}},
            {"name": "files__write", "arguments": {"path": "forbidden.txt", "content": "x"}},
        ]},
        {"content": "done"},
    ]});
    home.write_scripted(POLICY, &script);
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.files]\nbuiltin = \"files\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\nconfig = {{ script = \"script.json\" }}\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(home.home().join("workspaces/assistant")).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kernel = runtime
        .block_on(Kernel::start(KernelOptions {
            home: p3ak_kernel::home::Home::new(home.home()),
            passphrase: p3ak_vault::Passphrase::new(PASS.to_owned()),
            exe: env!("CARGO_BIN_EXE_p3ak").into(),
        }))
        .unwrap();
    let before = samples(&kernel.metrics().encode());
    assert_eq!(get(&before, "p3ak_plugin_up{plugin=\"files\"}"), 1.0);
    assert_eq!(
        get(&before, "p3ak_plugin_restarts_total{plugin=\"files\"}"),
        0.0
    );
    assert!(
        get(&before, "p3ak_kernel_vault_bytes") > 0.0,
        "the kernel's vault has a size"
    );

    let (events, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let inbound = p3ak_proto::Inbound::new("metrics-1", "tester", "list, then write");
    let reply = runtime
        .block_on(kernel.turn(inbound, "cli", events))
        .unwrap();
    assert_eq!(reply, "done");

    let after = samples(&kernel.metrics().encode());
    let moved = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(
        moved("p3ak_decisions_total{plugin=\"files\",verdict=\"allow\"}"),
        1.0
    );
    assert_eq!(
        moved("p3ak_decisions_total{plugin=\"files\",verdict=\"reject\"}"),
        1.0
    );
    assert_eq!(
        moved("p3ak_decisions_total{plugin=\"files\",verdict=\"escalate\"}"),
        0.0
    );
    // Two calls took the road; both were decided; only the allowed one was committed and ran.
    assert_eq!(moved("p3ak_road_step_seconds_count{step=\"total\"}"), 2.0);
    assert_eq!(moved("p3ak_road_step_seconds_count{step=\"decide\"}"), 2.0);
    assert_eq!(moved("p3ak_road_step_seconds_count{step=\"commit\"}"), 1.0);
    assert_eq!(moved("p3ak_road_step_seconds_count{step=\"tool\"}"), 1.0);
    assert_eq!(
        moved("p3ak_road_step_seconds_count{step=\"approval_wait\"}"),
        0.0
    );
    assert_eq!(
        moved("p3ak_road_step_seconds_bucket{le=\"+Inf\",step=\"total\"}"),
        2.0
    );
    assert!(moved("p3ak_road_step_seconds_sum{step=\"tool\"}") > 0.0);
    assert_eq!(
        moved("p3ak_turns_total{channel=\"cli\",outcome=\"reply\"}"),
        1.0
    );
    assert_eq!(moved("p3ak_inbound_total{channel=\"cli\"}"), 1.0);

    kernel.request_stop();
    runtime.block_on(kernel.serve()).unwrap();
}

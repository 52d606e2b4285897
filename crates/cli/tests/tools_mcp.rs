//! The `mcp` bridge end to end: a real kernel with the reference MCP server (server-everything,
//! node, stdio) as the plugin `everything`, in the real sandbox when root. A model proposes
//! three calls; the policy lets two through and rejects the third (an `echo` whose argument
//! a rule refuses), which provably never reaches the server: the server's standard input is
//! copied to a record file by `tee`, and the audit log shows the decision.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::servers::mcp::{EverythingHttp, everything_dir};
use p3ak_testkit::{Home, Kernel};
use serde_json::json;

const PASS: &str = "mcp test passphrase";

const POLICY: &str = "version: 1
tools:
  everything.get-sum: { level: 0 }
  everything.echo:
    level: 0
    rules:
      - id: no-passwords-to-servers
        when: { args.message: { like: '*password*' } }
        reject: true
";

/// Copies a tree, keeping it readable by the plugin's own user (the npm prefix sits under
/// `/root`, which strangers cannot enter).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mode = if entry.metadata().unwrap().permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

#[test]
#[ignore = "needs node and server-everything"]
fn mcp_tools_go_through_the_policy_and_a_rejected_one_never_reaches_the_server() {
    let node_modules = everything_dir();
    let home = Home::init(PASS);
    let server = home.path("mcp-server");
    copy_tree(&node_modules, &server.join("node_modules"));
    std::fs::set_permissions(home.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let record_dir = home.path("mcp-record");
    std::fs::create_dir(&record_dir).unwrap();
    let record = record_dir.join("stdin.jsonl");
    let entry = server.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let script = json!({"responses": [
        {"content": "", "tool_calls": [
            {"name": "everything__echo", "arguments": {"message": "hello from the model"}},
            {"name": "everything__get-sum", "arguments": {"a": 20, "b": 22}},
            {"name": "everything__echo", "arguments": {"message": "the password is hunter2"}},
        ]},
        {"content": "done"},
    ]});
    home.write_scripted(POLICY, &script);
    // The server's standard input is copied to the record: every request it ever got.
    let command = json!([
        "sh",
        "-c",
        format!(
            "tee -a '{}' | exec node '{}' stdio",
            record.display(),
            entry.display()
        ),
    ]);
    let config = format!(
        "[kernel]\n{}ping_interval = \"1s\"\nping_timeout = \"5s\"\nrestart_limit = 3\n\
         tool_timeout = \"20s\"\n\n\
         [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
         [plugins.everything]\nbuiltin = \"mcp\"\nconfig = {{ command = {command}, timeout_secs = 20 }}\n\n\
         [plugins.everything.sandbox]\nread = [\"{server}\"]\nwrite = [\"{records}\"]\n",
        sandbox_setting(),
        server = server.display(),
        records = record_dir.display(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut k = Kernel::new(home);
    k.up();
    let reply = k.ok(&["chat", "-m", "echo, add, and echo my password"]);
    assert!(reply.contains("done"), "{reply}\n{}", k.log());
    let results = k.tool_results(1);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        results[0].contains("hello from the model"),
        "{results:?}\n{}",
        k.log()
    );
    assert!(results[1].contains("42"), "{results:?}");
    assert_eq!(results[2], "action not permitted");

    // What the server received: both allowed calls, never the rejected one.
    let received = std::fs::read_to_string(&record).unwrap();
    let calls: Vec<serde_json::Value> = received
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["method"] == "tools/call")
        .map(|m| m["params"]["name"].clone())
        .collect();
    assert_eq!(calls, [json!("echo"), json!("get-sum")], "{received}");
    assert!(received.contains("hello from the model"), "{received}");
    assert!(!received.contains("hunter2"), "{received}");

    let audit = k.audit();
    let decisions: Vec<&serde_json::Value> =
        audit.iter().filter(|e| e["kind"] == "decision").collect();
    assert_eq!(decisions.len(), 3, "{decisions:#?}");
    let rejected = decisions
        .iter()
        .find(|e| e["payload"]["call_id"] == "call_3")
        .unwrap();
    assert_eq!(rejected["payload"]["action"], "everything.echo");
    assert_eq!(rejected["payload"]["verdict"]["decision"], "reject");
    assert_eq!(
        rejected["payload"]["verdict"]["rules"][0],
        "no-passwords-to-servers"
    );
    let executed: Vec<&str> = audit
        .iter()
        .filter(|e| e["kind"] == "execution")
        .filter_map(|e| e["payload"]["call_id"].as_str())
        .collect();
    assert_eq!(executed, ["call_1", "call_2"]);
}

/// A streamable HTTP server, reached by the plugin in the `network` class of the sandbox.
#[test]
#[ignore = "needs node and server-everything"]
fn an_mcp_server_over_http_is_reached_from_the_sandbox() {
    let server = EverythingHttp::start();
    let home = Home::init(PASS);
    let script = json!({"responses": [
        {"content": "", "tool_calls": [
            {"name": "remote__get-sum", "arguments": {"a": 1.5, "b": 2}},
        ]},
        {"content": "done"},
    ]});
    home.write_scripted(
        "version: 1\ntools:\n  remote.get-sum: { level: 0 }\n",
        &script,
    );
    let config = format!(
        "[kernel]\n{}ping_interval = \"1s\"\nping_timeout = \"5s\"\nrestart_limit = 3\n\
         tool_timeout = \"20s\"\n\n\
         [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
         [plugins.remote]\nbuiltin = \"mcp\"\nconfig = {{ url = \"{}\", timeout_secs = 20 }}\n",
        sandbox_setting(),
        server.url(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut k = Kernel::new(home);
    k.up();
    let reply = k.ok(&["chat", "-m", "add"]);
    assert!(reply.contains("done"), "{reply}\n{}", k.log());
    let results = k.tool_results(1);
    assert!(results[0].contains("3.5"), "{results:?}\n{}", k.log());
}

//! `p3ak mcp` end to end: a real MCP client (the Python `mcp` SDK) starts `p3ak mcp` over stdio,
//! lists its tools and calls them; `p3ak mcp` reaches the REST API over a Unix socket, here a
//! test double of our own API with fixed answers (`crates/server/tests/common/api_double.rs`).

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "../../server/tests/common/api_double.rs"]
mod api_double;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p3ak_testkit::home::p3ak_path;
use p3ak_testkit::need;
use serde_json::{Value, json};

/// The MCP client: starts the server command given as arguments, lists its tools, makes the
/// calls read as JSON from stdin, prints what it saw as JSON.
const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    calls = json.loads(sys.stdin.read())
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.server_info.name
            out["instructions"] = init.instructions
            tools = await session.list_tools()
            out["tools"] = {t.name: t.annotations.model_dump(by_alias=True, exclude_none=True)
                            for t in tools.tools}
            out["results"] = []
            for name, args in calls:
                r = await session.call_tool(name, args)
                out["results"].append({
                    "error": bool(r.is_error),
                    "text": "\n".join(c.text for c in r.content if c.type == "text"),
                    "structured": r.structured_content,
                })
    print(json.dumps(out))

asyncio.run(main())
"#;

/// Runs the Python client against `p3ak mcp ARGS…`, with `calls`; its JSON report.
fn python_client(dir: &Path, args: &[&str], calls: &Value) -> Value {
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(p3ak_path())
        .arg("mcp")
        .args(args)
        .env_remove("P3AK_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(calls.to_string().as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the MCP client did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the mcp SDK"]
async fn a_python_mcp_client_lists_and_calls_the_tools_of_p3ak_mcp() {
    need::python_mcp();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let seen = api_double::serve(&socket);
    let socket_arg = socket.to_str().unwrap().to_owned();

    let calls = json!([
        ["search", {"query": "sailing", "mode": "bm25", "k": 2}],
        ["read_document", {"id": "ab12"}],
        ["read_document", {"id": "nope"}],
        ["add_note", {"title": "Idea", "content": "Sail more.", "tags": {"topic": "travel"}}],
        ["add_note", {"title": "wait", "content": "This one needs approval."}],
        ["ask_agent", {"text": "hello?"}],
        ["list_documents", {"limit": 5}],
    ]);
    let dir_path = dir.path().to_owned();
    let report = tokio::task::spawn_blocking(move || {
        python_client(&dir_path, &["--socket", &socket_arg], &calls)
    })
    .await
    .unwrap();

    assert_eq!(report["server"], "p3ak");
    assert!(
        report["instructions"]
            .as_str()
            .unwrap()
            .contains("private AI kernel")
    );
    let tools = report["tools"].as_object().unwrap();
    let names: Vec<_> = tools.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(tools["search"]["readOnlyHint"], true);
    assert_eq!(tools["add_note"]["destructiveHint"], false);
    assert_eq!(tools["add_note"]["readOnlyHint"], false);

    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["error"], false);
    assert_eq!(
        results[0]["structured"]["hits"][0]["snippet"],
        "about sailing"
    );
    assert_eq!(results[1]["text"], "Sail to Hydra.");
    assert_eq!(results[2]["error"], true);
    assert_eq!(results[2]["text"], "no document `nope`");
    assert_eq!(results[3]["structured"]["id"], "n1");
    assert_eq!(results[4]["error"], false);
    assert_eq!(results[4]["structured"]["approval"], "ap-7");
    assert!(
        results[4]["text"]
            .as_str()
            .unwrap()
            .contains("approval `ap-7`")
    );
    assert_eq!(results[5]["text"], "You asked: hello?");
    assert_eq!(results[6]["structured"]["documents"][0]["id"], "ab12");

    // What reached the API (`/healthz` at startup is not recorded by the double).
    let lines = seen.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    assert!(lines[0].starts_with("POST /v1/search"), "{lines:#?}");
    assert!(
        lines[3].contains(r#""tags":{"topic":"travel"}"#),
        "{lines:#?}"
    );
    assert!(
        lines[5].starts_with("POST /v1/chat accept=application/json"),
        "{lines:#?}"
    );
    assert_eq!(lines[6], "GET /v1/documents?limit=5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the mcp SDK"]
async fn scopes_narrow_the_tools_p3ak_mcp_offers() {
    need::python_mcp();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    api_double::serve(&socket);
    let socket_arg = socket.to_str().unwrap().to_owned();
    let dir_path = dir.path().to_owned();
    let report = tokio::task::spawn_blocking(move || {
        python_client(
            &dir_path,
            &["--socket", &socket_arg, "--scopes", "vault:read"],
            &json!([]),
        )
    })
    .await
    .unwrap();
    let names: Vec<_> = report["tools"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.contains(&"add_note".to_owned()) && !names.contains(&"ask_agent".to_owned()));
}

#[test]
fn p3ak_mcp_without_a_running_kernel_fails_at_once_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/api.sock");
    let started = Instant::now();
    let out = Command::new(p3ak_path())
        .args(["mcp", "--socket", socket.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "stdout is the MCP channel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: the kernel is not running (nothing answers on {}); start it with `p3ak up`",
            socket.display()
        )
    );
}

#[test]
fn p3ak_mcp_refuses_an_unknown_scope() {
    let out = Command::new(p3ak_path())
        .args([
            "mcp",
            "--socket",
            "/nonexistent/api.sock",
            "--scopes",
            "vault:read,audit:read",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope `audit:read`"));
}

/// The real thing: `p3ak up` with the vault plugin and a scripted model, and the Python MCP
/// client driving `p3ak mcp` on the kernel's own API socket (the caller is this uid, an
/// operator). The note it adds goes through the road and is found by its search.
#[test]
#[ignore = "needs python3 with the mcp SDK"]
fn a_python_mcp_client_uses_a_real_kernel_through_p3ak_mcp() {
    need::python_mcp();
    let home = p3ak_testkit::Home::init("mcp kernel passphrase");
    home.write_scripted(
        "version: 1\nread:\n  vault.search: { level: 0 }\n  vault.read: { level: 0 }\n  vault.list: { level: 0 }\n\
         write:\n  vault.write: { level: 0 }\n",
        &json!({"responses": [{"content": "Hello from the assistant."}]}),
    );
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\nconfig = {{ script = \"script.json\" }}\n\n\
             [plugins.vault]\nbuiltin = \"vault\"\n",
            p3ak_testkit::kernel::sandbox_setting()
        ),
    )
    .unwrap();
    let mut kernel = p3ak_testkit::Kernel::new(home);
    kernel.up();
    let socket = kernel.home().join("run/api.sock");
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            kernel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = json!([
        ["add_note", {"title": "Boat", "content": "The mooring fee for the sailing boat is due in April.", "tags": {"topic": "boat"}}],
        ["search", {"query": "mooring fee sailing", "k": 3}],
        ["list_documents", {"limit": 5}],
        ["ask_agent", {"text": "hello?"}],
    ]);
    let dir = tempfile::tempdir().unwrap();
    let report = python_client(dir.path(), &["--socket", socket.to_str().unwrap()], &calls);
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["error"] == false), "{report}");
    assert!(
        results[1]["text"].as_str().unwrap().contains("mooring"),
        "{report}"
    );
    assert!(
        results[2]["text"].as_str().unwrap().contains("Boat"),
        "{report}"
    );
    assert!(
        results[3]["text"]
            .as_str()
            .unwrap()
            .contains("Hello from the assistant."),
        "{report}"
    );
    // The note took the road as the API's, from this operator's uid.
    let audit = kernel.audit();
    let write = audit
        .iter()
        .find(|e| e["kind"] == "proposal" && e["payload"]["action"] == "vault.write")
        .unwrap();
    assert_eq!(write["payload"]["agent"], "api");
    assert_eq!(write["payload"]["channel"], "api");
}

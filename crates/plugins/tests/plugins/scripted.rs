//! `scripted`: replies in order, call ids, usage, errors, exhaustion, streaming, recording.

use p3ak_proto::{ErrorKind, PluginKind, StopReason};
use serde_json::json;

use crate::kernel::{request, start, start_failing, user};

fn write_script(dir: &std::path::Path, script: &serde_json::Value) -> std::path::PathBuf {
    let path = dir.join("script.json");
    std::fs::write(&path, serde_json::to_vec(script).unwrap()).unwrap();
    path
}

#[test]
fn replies_in_order_then_exhaustion() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        &json!({"responses": [
            {"content": "let me look", "tool_calls": [
                {"name": "files__read", "arguments": {"path": "a.txt"}},
                {"name": "files__list"}
            ]},
            {"error": {"kind": "transient", "message": "model overloaded"}},
            {"content": "again", "tool_calls": [{"name": "shell__run", "arguments": {"command": "ls"}}]},
            {"content": "final answer"}
        ]}),
    );
    let record = dir.path().join("requests.jsonl");
    let mut kernel = start("scripted", json!({"script": script, "record": record}));
    assert_eq!(kernel.register.kind, PluginKind::Provider);
    assert!(kernel.register.actions.is_empty());

    let (chunks, reply) = kernel.infer(request(vec![user("hello")], false));
    assert!(chunks.is_empty());
    let reply = reply.unwrap();
    assert_eq!(reply.content, "let me look");
    assert_eq!(reply.stop, StopReason::ToolUse);
    let calls: Vec<(&str, &str)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(
        calls,
        [("call_1", "files__read"), ("call_2", "files__list")]
    );
    assert_eq!(reply.tool_calls[0].arguments, json!({"path": "a.txt"}));
    assert_eq!(reply.tool_calls[1].arguments, json!({}));
    // "hello" is 5 characters: 2 tokens; "let me look" 11: 3.
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (2, 3)
    );

    let (_, reply) = kernel.infer(request(vec![user("hello"), user("more")], false));
    let error = reply.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert_eq!(error.message, "model overloaded");

    let (_, reply) = kernel.infer(request(vec![user("x")], false));
    let reply = reply.unwrap();
    assert_eq!(reply.tool_calls[0].id, "call_3");

    let (_, reply) = kernel.infer(request(vec![user("x")], false));
    let reply = reply.unwrap();
    assert_eq!(reply.content, "final answer");
    assert_eq!(reply.stop, StopReason::EndTurn);
    assert!(reply.tool_calls.is_empty());

    for _ in 0..2 {
        let (_, reply) = kernel.infer(request(vec![user("x")], false));
        let reply = reply.unwrap();
        assert_eq!(reply.content, "(the script has no more replies)");
        assert_eq!(reply.stop, StopReason::EndTurn);
    }
    kernel.shutdown();

    // Every request was recorded, one JSON line each, in order.
    let text = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["messages"][0]["content"], "hello");
    assert_eq!(lines[1]["messages"][1]["content"], "more");
    assert_eq!(lines[0]["system"], "be brief");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn streaming_sends_words_first() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        &json!({"responses": [{"content": "one two  three\nfour"}, {"content": ""}]}),
    );
    let mut kernel = start("scripted", json!({"script": script}));
    let (chunks, reply) = kernel.infer(request(vec![user("hi")], true));
    assert_eq!(chunks, ["one ", "two ", " ", "three\n", "four"]);
    assert_eq!(chunks.concat(), reply.unwrap().content);
    let (chunks, reply) = kernel.infer(request(vec![user("hi")], true));
    assert!(chunks.is_empty());
    assert_eq!(reply.unwrap().content, "");
    kernel.shutdown();
}

#[test]
fn a_delayed_response_waits_while_pings_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        &json!({"responses": [{"content": "slow", "delay_ms": 300}, {"content": "quick"}]}),
    );
    let mut kernel = start("scripted", json!({"script": script}));
    let started = std::time::Instant::now();
    kernel.send(
        7,
        p3ak_proto::Message::InferenceRequest(request(vec![user("hi")], false)),
    );
    // The reader answers a ping while the response is being held back.
    kernel.send(8, p3ak_proto::Message::Ping(p3ak_proto::Ping {}));
    let pong = kernel.recv();
    assert!(
        matches!(pong.message, p3ak_proto::Message::Pong(_)) && pong.id == 8,
        "{pong:?}"
    );
    let reply = kernel.recv();
    assert_eq!(reply.id, 7);
    let p3ak_proto::Message::InferenceResponse(response) = reply.message else {
        panic!("{reply:?}")
    };
    assert_eq!(response.content, "slow");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let (_, reply) = kernel.infer(request(vec![user("hi")], false));
    assert_eq!(reply.unwrap().content, "quick");
    kernel.shutdown();
}

#[test]
fn a_tool_request_to_a_provider_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), &json!({"responses": []}));
    let mut kernel = start("scripted", json!({"script": script}));
    let msg = kernel.invalid("a", "read", json!({}));
    assert!(msg.contains("provider"), "{msg}");
    kernel.shutdown();
}

#[test]
fn bad_scripts_fail_at_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{not json", "key must be a string"),
        (r#"{"responses": {}}"#, "invalid type"),
        (r#"{"replies": []}"#, "unknown field `replies`"),
        (r#"{"responses": [{"content": 3}]}"#, "invalid type"),
        (
            r#"{"responses": [{}, {"tool_calls": [{"name": "x", "arguments": []}]}]}"#,
            "response 2",
        ),
        (
            r#"{"responses": [{"error": {"kind": "sideways"}}]}"#,
            "unknown variant",
        ),
        (
            r#"{"responses": [{"content": "a", "delay_ms": 60001}]}"#,
            "response 1: `delay_ms` must be at most 60000, not 60001",
        ),
    ];
    for (text, says) in cases {
        let path = dir.path().join("script.json");
        std::fs::write(&path, text).unwrap();
        let (sent, returned) = start_failing(
            "scripted",
            json!({"script": path}),
            p3ak_plugins::Launch::new("model"),
        );
        let message = returned.to_string();
        assert!(message.contains(says), "{text}: {message}");
        assert!(message.contains("script.json"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(sent.kind, ErrorKind::Invalid);
        assert_eq!(sent.message, message);
    }
    let (_, returned) = start_failing(
        "scripted",
        json!({"script": dir.path().join("missing.json")}),
        p3ak_plugins::Launch::new("model"),
    );
    assert!(returned.to_string().contains("missing.json"), "{returned}");
    let (_, returned) = start_failing("scripted", json!({}), p3ak_plugins::Launch::new("model"));
    assert!(returned.to_string().contains("script"), "{returned}");
}

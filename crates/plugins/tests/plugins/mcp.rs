//! `mcp`: the bridge against real MCP servers: the reference server-everything (node, stdio
//! and streamable HTTP) and a Python MCP SDK server that records the calls it gets.

use p3ak_proto::{ErrorKind, Tier};
use p3ak_testkit::servers::mcp::{EverythingHttp, Recorder, everything_stdio};
use serde_json::json;

use crate::kernel::{Kernel, start, start_failing};

fn action<'a>(kernel: &'a Kernel, name: &str) -> &'a p3ak_proto::ActionSpec {
    kernel
        .register
        .actions
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no action `{name}` in {:?}", names(kernel)))
}

fn names(kernel: &Kernel) -> Vec<&str> {
    kernel
        .register
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect()
}

/// server-everything's tools, registered with their schemas; `echo` and `get-sum` called.
#[test]
#[ignore = "needs node and server-everything"]
fn stdio_everything_lists_and_calls() {
    let command = everything_stdio();
    let mut kernel = start("mcp", json!({"command": command}));
    let echo = action(&kernel, "echo");
    assert_eq!(
        echo.tier,
        Tier::Act,
        "a read-only hint never lowers the tier"
    );
    assert!(
        echo.description.ends_with("[server hints: read-only]"),
        "{}",
        echo.description
    );
    assert_eq!(echo.parameters["type"], "object");
    assert_eq!(echo.parameters["properties"]["message"]["type"], "string");
    assert_eq!(echo.parameters["required"], json!(["message"]));
    let sum = action(&kernel, "get-sum");
    assert_eq!(sum.parameters["properties"]["a"]["type"], "number");
    for a in &kernel.register.actions {
        assert!(
            !a.name.contains('.') && !a.name.contains("__"),
            "{}",
            a.name
        );
    }

    let out = kernel.ok("main", "echo", json!({"message": "hello through MCP"}));
    assert_eq!(out["truncated"], false);
    assert!(
        out["text"].as_str().unwrap().contains("hello through MCP"),
        "{out}"
    );
    let out = kernel.ok("main", "get-sum", json!({"a": 2, "b": 40}));
    assert!(out["text"].as_str().unwrap().contains("42"), "{out}");
    // An image is described, never dumped.
    let out = kernel.ok("main", "get-tiny-image", json!({}));
    let text = out["text"].as_str().unwrap();
    assert!(text.contains("[image image/png"), "{text}");
    assert!(text.len() < 2000, "{text}");

    // Arguments the server refuses (wrong type) and an action it does not have.
    let e = kernel
        .invoke("main", "get-sum", json!({"a": "two", "b": 1}))
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Invalid | ErrorKind::Permanent),
        "{e:?}"
    );
    let message = kernel.invalid("main", "no-such-tool", json!({}));
    assert!(message.contains("unknown action"), "{message}");
    let message = kernel.invalid("main", "echo", json!(["not", "an", "object"]));
    assert!(message.contains("object"), "{message}");
    kernel.shutdown();
}

/// The Python server: dotted names mapped back, hints into tiers, a tool error as a
/// failure with the server's text, a crashed server restarted, and the calls as the server
/// saw them.
#[test]
#[ignore = "needs python3 with the mcp SDK"]
fn recorder_tiers_names_and_errors() {
    let recorder = Recorder::new();
    let mut kernel = start("mcp", json!({"command": recorder.command()}));
    let mut listed = names(&kernel);
    listed.sort_unstable();
    assert_eq!(listed, ["crash", "erase", "fail", "notes_add", "peek"]);
    assert_eq!(
        action(&kernel, "erase").tier,
        Tier::Commit,
        "destructive → commit"
    );
    assert!(
        action(&kernel, "erase")
            .description
            .contains("[server hints: destructive]")
    );
    assert_eq!(
        action(&kernel, "peek").tier,
        Tier::Act,
        "read-only stays act"
    );
    assert_eq!(action(&kernel, "notes_add").tier, Tier::Act);

    let out = kernel.ok("main", "notes_add", json!({"key": "k1", "text": "milk"}));
    assert_eq!(out["text"], "added k1");
    let e = kernel
        .invoke("main", "fail", json!({"reason": "no way"}))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e:?}");
    assert!(e.message.contains("refused: no way"), "{e:?}");
    // A server that dies mid-call: a transient failure, and the next call starts it again.
    let e = kernel.invoke("main", "crash", json!({})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    let out = kernel.ok("main", "peek", json!({"key": "k1"}));
    assert_eq!(out["text"], "note k1: nothing yet");
    assert_eq!(
        recorder.calls(),
        [
            json!({"tool": "notes.add", "args": {"key": "k1", "text": "milk"}}),
            json!({"tool": "fail", "args": {"reason": "no way"}}),
            json!({"tool": "crash", "args": {}}),
            json!({"tool": "peek", "args": {"key": "k1"}}),
        ]
    );
    kernel.shutdown();
}

/// A server that exits at start: the plugin refuses to start, saying so.
#[test]
fn server_that_exits_at_start() {
    let launch = p3ak_plugins::Launch::new("mcp");
    let (sent, returned) = start_failing(
        "mcp",
        json!({"command": ["sh", "-c", "echo broken >&2; exit 3"]}),
        launch,
    );
    assert!(sent.message.contains("did not start"), "{sent:?}");
    assert!(
        returned.to_string().starts_with("invalid config"),
        "{returned}"
    );
    let launch = p3ak_plugins::Launch::new("mcp");
    let (sent, _) = start_failing(
        "mcp",
        json!({"command": ["/nonexistent/mcp-server"]}),
        launch,
    );
    assert!(sent.message.contains("cannot start"), "{sent:?}");
}

/// Configs that cannot work are refused with a line saying why.
#[test]
fn bad_configs() {
    for (config, said) in [
        (json!({}), "exactly one of"),
        (
            json!({"command": ["x"], "url": "http://127.0.0.1:1/mcp"}),
            "exactly one of",
        ),
        (json!({"command": []}), "needs a program"),
        (json!({"url": "ftp://127.0.0.1/mcp"}), "http or https"),
        (json!({"url": "not a url"}), "not a URL"),
        (
            json!({"command": ["x"], "timeout_secs": 0}),
            "from 1 to 600",
        ),
        (json!({"command": ["x"], "extra": 1}), "extra"),
    ] {
        let launch = p3ak_plugins::Launch::new("mcp");
        let (sent, _) = start_failing("mcp", config.clone(), launch);
        assert!(sent.message.contains(said), "{config}: {sent:?}");
    }
}

/// Streamable HTTP: the same server over HTTP lists and calls; a server gone is transient.
#[test]
#[ignore = "needs node and server-everything"]
fn http_everything_lists_and_calls() {
    let server = EverythingHttp::start();
    let mut kernel = start("mcp", json!({"url": server.url(), "timeout_secs": 10}));
    action(&kernel, "echo");
    let out = kernel.ok("main", "echo", json!({"message": "over http"}));
    assert!(out["text"].as_str().unwrap().contains("over http"), "{out}");
    let out = kernel.ok("main", "get-sum", json!({"a": 1.5, "b": 2}));
    assert!(out["text"].as_str().unwrap().contains("3.5"), "{out}");
    drop(server);
    let e = kernel
        .invoke("main", "echo", json!({"message": "anyone?"}))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    kernel.shutdown();
}

/// The plugin's credential goes to an HTTP server as a bearer token, and never into a message.
#[test]
fn http_sends_the_credential_as_a_bearer_token() {
    let recorder =
        p3ak_testkit::http::HeaderRecorder::start("authorization", 4, |_| "not MCP".to_owned());
    let url = format!("http://127.0.0.1:{}/mcp", recorder.port);
    let token = "mcp-token-0123456789";
    let key = p3ak_proto::Credential::new(token.to_owned());
    let (sent, returned) = Kernel::start_failing(
        json!({"url": url, "timeout_secs": 5}),
        Some(key),
        move |stream| p3ak_plugins::serve("mcp", stream, p3ak_plugins::Launch::new("mcp")),
    );
    assert_eq!(
        recorder.seen().first().map(String::as_str),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(sent.message.contains("did not start"), "{sent:?}");
    assert!(!sent.message.contains(token), "{sent:?}");
    assert!(!returned.to_string().contains(token), "{returned}");
}

//! `files`: reading, writing and listing beneath the workspace, and nothing outside it.

use std::os::unix::fs::PermissionsExt;

use p3ak_proto::{PluginKind, Tier};
use serde_json::json;

use crate::kernel::{start, start_failing};

fn setup() -> (tempfile::TempDir, crate::kernel::Kernel) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspaces");
    let kernel = start("files", json!({"workspaces": root}));
    (dir, kernel)
}

#[test]
fn registers_three_actions_with_strict_schemas() {
    let (_dir, kernel) = setup();
    assert_eq!(kernel.register.kind, PluginKind::Tool);
    let names: Vec<(&str, Tier)> = kernel
        .register
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.tier))
        .collect();
    assert_eq!(
        names,
        [
            ("read", Tier::Observe),
            ("write", Tier::Act),
            ("list", Tier::Observe)
        ]
    );
    for action in &kernel.register.actions {
        assert_eq!(action.parameters["type"], "object");
        assert_eq!(action.parameters["additionalProperties"], false);
    }
    assert_eq!(
        kernel.register.actions[1].parameters["required"],
        json!(["path", "content"])
    );
    kernel.shutdown();
}

#[test]
fn write_read_append_list() {
    let (dir, mut kernel) = setup();
    let out = kernel.ok(
        "alice",
        "write",
        json!({"path": "notes/a.txt", "content": "héllo"}),
    );
    assert_eq!(out, json!({"path": "notes/a.txt", "bytes": 6}));
    let out = kernel.ok(
        "alice",
        "write",
        json!({"path": "notes/a.txt", "content": " world", "append": true}),
    );
    assert_eq!(out["bytes"], 6);
    let out = kernel.ok("alice", "read", json!({"path": "notes/a.txt"}));
    assert_eq!(
        out,
        json!({"path": "notes/a.txt", "content": "héllo world"})
    );
    kernel.ok("alice", "write", json!({"path": "b.txt", "content": "x"}));
    // Overwrite truncates.
    kernel.ok("alice", "write", json!({"path": "b.txt", "content": ""}));
    assert_eq!(
        kernel.ok("alice", "read", json!({"path": "./b.txt"}))["content"],
        ""
    );

    let out = kernel.ok("alice", "list", json!({}));
    assert_eq!(out["path"], ".");
    assert_eq!(
        out["entries"],
        json!([
            {"name": "b.txt", "kind": "file", "size": 0},
            {"name": "notes", "kind": "dir", "size": out["entries"][1]["size"]},
        ])
    );
    let out = kernel.ok("alice", "list", json!({"path": "notes"}));
    assert_eq!(
        out["entries"],
        json!([{"name": "a.txt", "kind": "file", "size": 12}])
    );

    // Modes: the workspace and new directories 0700, new files 0600.
    let ws = dir.path().join("workspaces/alice");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ws), 0o700);
    assert_eq!(mode(&ws.join("notes")), 0o700);
    assert_eq!(mode(&ws.join("notes/a.txt")), 0o600);

    // Agents are kept apart.
    let msg = kernel.invalid("bob", "read", json!({"path": "notes/a.txt"}));
    assert!(msg.contains("no such file"), "{msg}");
    kernel.shutdown();
}

#[test]
fn escapes_are_refused() {
    let (dir, mut kernel) = setup();
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    kernel.ok(
        "alice",
        "write",
        json!({"path": "a.txt", "content": "mine"}),
    );
    kernel.ok("bob", "write", json!({"path": "b.txt", "content": "bob's"}));

    for path in [
        "../secret.txt",
        "../../secret.txt",
        "a/../../x",
        "../bob/b.txt",
    ] {
        let msg = kernel.invalid("alice", "read", json!({"path": path}));
        assert!(msg.contains("escapes the workspace"), "{path}: {msg}");
        let msg = kernel.invalid("alice", "write", json!({"path": path, "content": "x"}));
        assert!(msg.contains("escapes the workspace"), "{path}: {msg}");
        kernel.invalid("alice", "list", json!({"path": path}));
    }
    let msg = kernel.invalid("alice", "read", json!({"path": outside}));
    assert!(msg.contains("absolute"), "{msg}");
    let msg = kernel.invalid("alice", "write", json!({"path": "/tmp/x", "content": "x"}));
    assert!(msg.contains("absolute"), "{msg}");
    kernel.invalid("alice", "list", json!({"path": "/"}));

    // Symbolic links planted in the workspace (by the shell, say) lead nowhere.
    let ws = dir.path().join("workspaces/alice");
    std::os::unix::fs::symlink(&outside, ws.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), ws.join("up")).unwrap();
    std::os::unix::fs::symlink("a.txt", ws.join("inside.txt")).unwrap();
    for path in ["link.txt", "up/secret.txt", "inside.txt"] {
        let msg = kernel.invalid("alice", "read", json!({"path": path}));
        assert!(msg.contains("symbolic link"), "{path}: {msg}");
        let msg = kernel.invalid("alice", "write", json!({"path": path, "content": "pwned"}));
        assert!(msg.contains("symbolic link"), "{path}: {msg}");
    }
    kernel.invalid("alice", "list", json!({"path": "up"}));
    kernel.invalid(
        "alice",
        "write",
        json!({"path": "up/new.txt", "content": "x"}),
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "top secret");
    assert!(!dir.path().join("new.txt").exists());
    // The listing shows links as links.
    let out = kernel.ok("alice", "list", json!({}));
    let kinds: Vec<(&str, &str)> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a.txt", "file"),
            ("inside.txt", "symlink"),
            ("link.txt", "symlink"),
            ("up", "symlink")
        ]
    );

    // A workspace that is itself a link is refused.
    std::os::unix::fs::symlink(dir.path(), dir.path().join("workspaces/mallory")).unwrap();
    let e = kernel.invoke("mallory", "list", json!({})).unwrap_err();
    assert!(e.message.contains("symbolic link"), "{e:?}");
    kernel.shutdown();
}

#[test]
fn bad_arguments_are_invalid_not_fatal() {
    let (dir, mut kernel) = setup();
    let ws = dir.path().join("workspaces/alice");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(ws.join("big"), vec![b'a'; (1 << 20) + 1]).unwrap();
    let msg = kernel.invalid("alice", "read", json!({"path": "bin"}));
    assert!(msg.contains("not UTF-8 text"), "{msg}");
    let msg = kernel.invalid("alice", "read", json!({"path": "big"}));
    assert!(msg.contains("over the limit"), "{msg}");
    let cases = [
        ("read", json!({})),
        ("read", json!({"path": 3})),
        ("read", json!({"path": "a", "extra": 1})),
        ("read", json!("a.txt")),
        ("read", json!(null)),
        ("read", json!({"path": ""})),
        ("write", json!({"path": "a"})),
        (
            "write",
            json!({"path": "a", "content": "x", "append": "yes"}),
        ),
        ("write", json!({"path": ".", "content": "x"})),
        ("list", json!({"path": ["a"]})),
        ("read", json!({"path": "."})),
        ("list", json!({"path": "bin"})),
        ("delete", json!({"path": "a"})),
    ];
    for (action, args) in cases {
        kernel.invalid("alice", action, args);
    }
    for agent in ["", "..", "a/b", "al ice"] {
        let msg = kernel.invalid(agent, "list", json!({}));
        assert!(msg.contains("agent name"), "{msg}");
    }
    assert!(!dir.path().join("workspaces/..").join("x").exists());
    // Still serving.
    kernel.ok("alice", "list", json!({}));
    kernel.shutdown();
}

#[test]
fn config_is_checked() {
    let launch = p3ak_plugins::Launch::new("files");
    let (sent, returned) = start_failing("files", json!({}), launch);
    assert!(sent.message.contains("workspaces"), "{sent:?}");
    assert!(
        returned.to_string().starts_with("invalid config"),
        "{returned}"
    );
    let launch = p3ak_plugins::Launch::new("files");
    let (sent, _) = start_failing("files", json!({"workspaces": "relative/dir"}), launch);
    assert!(sent.message.contains("absolute"), "{sent:?}");
}

//! `shell`: exit codes, output, the environment, timeouts that kill the whole group.

use std::time::{Duration, Instant};

use p3ak_proto::Tier;
use serde_json::json;

use crate::kernel::{Kernel, start, start_failing};

fn setup(extra: serde_json::Value) -> (tempfile::TempDir, Kernel) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = json!({"workspaces": dir.path().join("workspaces")});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let kernel = start("shell", config);
    (dir, kernel)
}

#[test]
fn exit_code_and_output() {
    let (dir, mut kernel) = setup(json!({}));
    assert_eq!(kernel.register.actions.len(), 1);
    assert_eq!(kernel.register.actions[0].name, "run");
    assert_eq!(kernel.register.actions[0].tier, Tier::Commit);
    let out = kernel.ok(
        "alice",
        "run",
        json!({"command": "echo out; echo err >&2; echo data > f.txt; exit 3"}),
    );
    assert_eq!(
        out,
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": false, "truncated": false})
    );
    // It ran in the workspace.
    let ws = dir.path().join("workspaces/alice");
    assert_eq!(std::fs::read_to_string(ws.join("f.txt")).unwrap(), "data\n");
    let out = kernel.ok("alice", "run", json!({"command": "pwd; cat f.txt"}));
    assert_eq!(out["stdout"], format!("{}\ndata\n", ws.display()));
    assert_eq!(out["exit_code"], 0);
    // A signal leaves no exit code.
    let out = kernel.ok("alice", "run", json!({"command": "kill -9 $$"}));
    assert_eq!(out["exit_code"], json!(null));
    kernel.shutdown();
}

#[test]
fn environment_is_cleared_and_stdin_is_empty() {
    let (dir, mut kernel) = setup(json!({}));
    let out = kernel.ok("alice", "run", json!({"command": "env | sort; cat"}));
    let ws = dir.path().join("workspaces/alice");
    let mut lines: Vec<&str> = out["stdout"].as_str().unwrap().lines().collect();
    // Shells add a few of their own (PWD, SHLVL, _); none come from the plugin's environment.
    lines.retain(|l| {
        !l.starts_with("PWD=")
            && !l.starts_with("SHLVL=")
            && !l.starts_with("_=")
            && !l.starts_with("OLDPWD=")
    });
    assert_eq!(
        lines,
        [
            format!("HOME={}", ws.display()).as_str(),
            "LANG=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/bin"
        ]
    );
    kernel.shutdown();
}

#[test]
fn timeout_kills_the_whole_group() {
    let (dir, mut kernel) = setup(json!({"timeout_secs": 5}));
    let ws = dir.path().join("workspaces/alice");
    let started = Instant::now();
    // A background child that would write a file after the timeout, and a foreground sleep.
    let out = kernel.ok(
        "alice",
        "run",
        json!({"command": "(sleep 3; echo late > late.txt) & echo started; sleep 30", "timeout_secs": 1}),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["exit_code"], json!(null));
    assert_eq!(out["stdout"], "started\n");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !ws.join("late.txt").exists(),
        "the background child survived"
    );
    // Background work does not outlive a command that ends on its own either.
    let out = kernel.ok(
        "alice",
        "run",
        json!({"command": "(sleep 2; echo late > late2.txt) & exit 0"}),
    );
    assert_eq!(out["timed_out"], false);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !ws.join("late2.txt").exists(),
        "the background child survived"
    );
    // Over the configured limit.
    kernel.invalid(
        "alice",
        "run",
        json!({"command": "true", "timeout_secs": 6}),
    );
    kernel.shutdown();
}

#[test]
fn output_is_capped() {
    let (_dir, mut kernel) = setup(json!({"max_output": 100}));
    let out = kernel.ok(
        "alice",
        "run",
        json!({"command": "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2"}),
    );
    assert_eq!(out["stdout"].as_str().unwrap().len(), 100);
    assert_eq!(out["stderr"], "done\n");
    assert_eq!(out["truncated"], true);
    assert_eq!(out["exit_code"], 0);
    kernel.shutdown();
}

#[test]
fn bad_arguments_and_config() {
    let (_dir, mut kernel) = setup(json!({}));
    for args in [
        json!({}),
        json!({"command": 1}),
        json!({"command": ""}),
        json!({"command": "true", "timeout_secs": 0}),
        json!({"command": "true", "timeout_secs": "5"}),
        json!({"command": "true", "cwd": "/"}),
        json!(["true"]),
    ] {
        kernel.invalid("alice", "run", args);
    }
    kernel.invalid("../x", "run", json!({"command": "true"}));
    kernel.invalid("alice", "exec", json!({"command": "true"}));
    kernel.shutdown();

    let dir = tempfile::tempdir().unwrap();
    for config in [
        json!({"workspaces": dir.path(), "timeout_secs": 601}),
        json!({"workspaces": dir.path(), "max_output": 0}),
        json!({"workspaces": dir.path(), "timeout": 5}),
    ] {
        let (sent, _) = start_failing("shell", config.clone(), p3ak_plugins::Launch::new("shell"));
        assert_eq!(sent.kind, p3ak_proto::ErrorKind::Invalid, "{config}");
    }
}

#[test]
fn pings_are_answered_while_a_command_runs() {
    use p3ak_proto::{Invoke, Message, Ping};
    let (_dir, mut kernel) = setup(json!({}));
    kernel.send(
        7,
        Message::Invoke(Invoke {
            agent: "alice".to_owned(),
            action: "run".to_owned(),
            args: json!({"command": "sleep 1; echo slept"}),
            deadline_ms: None,
        }),
    );
    std::thread::sleep(Duration::from_millis(200));
    kernel.send(8, Message::Ping(Ping {}));
    let first = kernel.recv();
    assert_eq!(first.id, 8);
    assert!(matches!(first.message, Message::Pong(_)), "{first:?}");
    let second = kernel.recv();
    assert_eq!(second.id, 7);
    let Message::Result(result) = second.message else {
        panic!("{second:?}")
    };
    assert_eq!(result.output["stdout"], "slept\n");
    kernel.shutdown();
}

#[test]
fn one_agents_commands_cannot_read_or_change_another_agents_workspace() {
    let (dir, mut kernel) = setup(json!({}));
    let out = kernel.ok(
        "alice",
        "run",
        json!({"command": "echo private > diary.txt && cat diary.txt"}),
    );
    assert_eq!(out["stdout"], "private\n", "{out}");
    let alice = dir.path().join("workspaces/alice");
    let bob = kernel.ok(
        "bob",
        "run",
        json!({"command": format!(
            "cat {0}/diary.txt; echo planted > {0}/note.txt; ls {0}; ls ../alice",
            alice.display()
        )}),
    );
    assert_eq!(bob["stdout"], "", "{bob}");
    assert!(
        bob["stderr"].as_str().unwrap().contains("ermission denied"),
        "{bob}"
    );
    assert!(!alice.join("note.txt").exists());
    // Bob's own workspace works as ever, programs included.
    let own = kernel.ok(
        "bob",
        "run",
        json!({"command": "echo mine > f && sort f && ls /usr/bin | head -1 >/dev/null"}),
    );
    assert_eq!(own["stdout"], "mine\n", "{own}");
    assert_eq!(own["exit_code"], 0, "{own}");
    kernel.shutdown();
}

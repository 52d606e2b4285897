//! The `run` entry point: its errors in process, and the real thing in a child process that
//! gets its connection on standard input and its environment like the kernel gives them.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use p3ak_plugins::{PluginError, RunError};
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Envelope, Message, Welcome};
use serde_json::json;

use crate::kernel::MAX;

#[test]
fn unknown_plugin_and_missing_environment() {
    let e = p3ak_plugins::run("teleport").unwrap_err();
    assert!(matches!(e, RunError::UnknownPlugin(_)));
    assert_eq!(
        e.to_string(),
        "unknown plugin `teleport`: the first-party plugins are files, shell, http, vault, scripted, anthropic, openai and ollama"
    );
    // The test process has no plugin environment.
    if std::env::var_os("P3AK_PLUGIN_NAME").is_none() {
        let e = p3ak_plugins::run("files").unwrap_err();
        assert!(
            matches!(
                e,
                RunError::Plugin(PluginError::MissingEnv("P3AK_PLUGIN_NAME"))
            ),
            "{e}"
        );
    }
}

/// Runs only as the child of `run_from_the_environment`.
#[test]
#[ignore = "started as a child process by run_from_the_environment"]
fn child_plugin() {
    if let Ok(name) = std::env::var("P3AK_TEST_CHILD")
        && let Err(e) = p3ak_plugins::run(&name)
    {
        panic!("plugin failed: {e}");
    }
}

/// Starts this test binary as plugin `name` under the kernel's environment, `stdin` its
/// standard input (the kernel gives it one end of a socket pair).
fn spawn(name: &str, stdin: Stdio) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "run::child_plugin",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("P3AK_TEST_CHILD", name)
        .env("P3AK_PLUGIN_NAME", format!("my-{name}"))
        .env("P3AK_MAX_FRAME", "65536")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A socket pair: the kernel's end, and the plugin's as its standard input.
fn connection() -> (UnixStream, Stdio) {
    let (kernel, plugin) = UnixStream::pair().unwrap();
    (kernel, Stdio::from(std::os::fd::OwnedFd::from(plugin)))
}

/// What the child wrote, both streams.
fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn run_from_the_environment() {
    // A plugin whose config is refused exits with an error.
    let (mut stream, plugin) = connection();
    let child = spawn("files", plugin);
    let _hello = read_message(&mut stream, MAX).unwrap().unwrap();
    write_message(
        &mut stream,
        &Envelope::new(
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: json!({}),
                key: None,
            }),
        ),
        MAX,
    )
    .unwrap();
    let reply = read_message(&mut stream, MAX).unwrap().unwrap();
    assert!(matches!(reply.message, Message::Error(_)), "{reply:?}");
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        said(&output).contains("invalid config"),
        "{}",
        said(&output)
    );

    // Started by something else than the kernel: standard input is no socket.
    let child = spawn("scripted", Stdio::null());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        said(&output).contains("no connection to the kernel"),
        "{}",
        said(&output)
    );
}

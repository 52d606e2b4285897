//! The `run` entry point: its errors in process, and the real thing in a child process that
//! gets its connection on standard input and its environment like the kernel gives them.

use std::process::Stdio;

use p3ak_plugins::{PluginError, RunError};
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Envelope, Message, Welcome};
use p3ak_testkit::plugin::{self, MAX, connection, said, spawn_child};
use serde_json::json;

#[test]
fn unknown_plugin_and_missing_environment() {
    let e = p3ak_plugins::run("teleport").unwrap_err();
    assert!(matches!(e, RunError::UnknownPlugin(_)));
    assert_eq!(
        e.to_string(),
        "unknown plugin `teleport`: the first-party plugins are files, shell, skills, http, mail, calendar, web, mcp, vault, scripted, anthropic, openai, ollama, telegram, discord, slack and webhook"
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
    if let Some(name) = plugin::child_plugin()
        && let Err(e) = p3ak_plugins::run(&name)
    {
        panic!("plugin failed: {e}");
    }
}

#[test]
fn run_from_the_environment() {
    // A plugin whose config is refused exits with an error.
    let (mut stream, plugin) = connection();
    let child = spawn_child("run::child_plugin", "files", plugin);
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
    let child = spawn_child("run::child_plugin", "scripted", Stdio::null());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        said(&output).contains("no connection to the kernel"),
        "{}",
        said(&output)
    );
}

//! The `run` entry point: its errors in process, and the real thing in a child process that
//! gets its environment (and, for the vault, its key on standard input) like the kernel gives.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use p3ak_plugins::PluginError;
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Envelope, Message, Registered, Shutdown, Welcome};
use serde_json::json;

use crate::kernel::MAX;

#[test]
fn unknown_plugin_and_missing_environment() {
    let e = p3ak_plugins::run("teleport").unwrap_err();
    assert!(matches!(e, PluginError::UnknownPlugin(_)));
    assert_eq!(
        e.to_string(),
        "unknown plugin `teleport`: the first-party plugins are files, shell, http, vault, scripted, anthropic, openai and ollama"
    );
    // The test process has no plugin environment.
    if std::env::var_os("P3AK_PLUGIN_SOCKET").is_none() {
        let e = p3ak_plugins::run("files").unwrap_err();
        assert!(
            matches!(e, PluginError::MissingEnv("P3AK_PLUGIN_SOCKET")),
            "{e}"
        );
        assert!(e.to_string().contains("`P3AK_PLUGIN_SOCKET`"));
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

/// Starts this test binary as plugin `name` under the kernel's environment, with `stdin`.
fn spawn(name: &str, socket: &std::path::Path, stdin: &[u8]) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
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
        .env("P3AK_PLUGIN_SOCKET", socket)
        .env("P3AK_PLUGIN_NAME", format!("my-{name}"))
        .env("P3AK_MAX_FRAME", "65536")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child
}

/// What the child wrote, both streams.
fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn handshake(
    listener: &UnixListener,
    name: &str,
    config: serde_json::Value,
) -> std::os::unix::net::UnixStream {
    let (mut stream, _) = listener.accept().unwrap();
    let hello = read_message(&mut stream, MAX).unwrap().unwrap();
    let Message::Hello(hello) = hello.message else {
        panic!("{hello:?}")
    };
    assert_eq!(hello.plugin, format!("my-{name}"));
    write_message(
        &mut stream,
        &Envelope::new(0, Message::Welcome(Welcome { version: 1, config })),
        MAX,
    )
    .unwrap();
    let register = read_message(&mut stream, MAX).unwrap().unwrap();
    assert!(
        matches!(register.message, Message::Register(_)),
        "{register:?}"
    );
    write_message(
        &mut stream,
        &Envelope::new(0, Message::Registered(Registered {})),
        MAX,
    )
    .unwrap();
    stream
}

#[test]
fn run_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();

    // The vault plugin, its key on standard input.
    let socket = dir.path().join("vault.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let vault_path = dir.path().join("memory.vault");
    let pass = p3ak_vault::Passphrase::new("pass phrase".into());
    drop(
        p3ak_vault::Vault::create(
            &vault_path,
            p3ak_vault::Protection::Passphrase {
                passphrase: &pass,
                kdf: p3ak_vault::KdfParams {
                    memory_kib: p3ak_vault::KdfParams::MIN_MEMORY_KIB,
                    iterations: 1,
                    parallelism: 1,
                },
            },
        )
        .unwrap(),
    );
    let key = p3ak_vault::VaultKey::derive(&vault_path, &pass).unwrap();
    let child = spawn("vault", &socket, key.to_handoff_bytes().expose());
    let mut stream = handshake(&listener, "vault", json!({"vault": vault_path}));
    write_message(
        &mut stream,
        &Envelope::new(
            5,
            Message::Invoke(p3ak_proto::Invoke {
                agent: "a".into(),
                action: "write".into(),
                args: json!({"title": "t", "content": "handed over on stdin"}),
                deadline_ms: None,
            }),
        ),
        MAX,
    )
    .unwrap();
    let reply = read_message(&mut stream, MAX).unwrap().unwrap();
    assert!(matches!(reply.message, Message::Result(_)), "{reply:?}");
    write_message(
        &mut stream,
        &Envelope::new(6, Message::Shutdown(Shutdown {})),
        MAX,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", said(&output));

    // A plugin whose config is refused exits with an error.
    let socket = dir.path().join("files.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let child = spawn("files", &socket, b"");
    let (mut stream, _) = listener.accept().unwrap();
    let _hello = read_message(&mut stream, MAX).unwrap().unwrap();
    write_message(
        &mut stream,
        &Envelope::new(
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: json!({}),
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

    // No socket to connect to.
    let child = spawn("scripted", &dir.path().join("nobody.sock"), b"");
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        said(&output).contains("cannot connect"),
        "{}",
        said(&output)
    );
}

//! The `run` entry point: its errors in process, and the real thing in a child process that
//! gets its connection on standard input and its environment like the kernel gives them.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Envelope, Message, Registered, Shutdown, Welcome};
use serde_json::json;

use crate::kernel::MAX;

/// Runs only as the child of `run_from_the_environment`.
#[test]
#[ignore = "started as a child process by run_from_the_environment"]
fn child_plugin() {
    if std::env::var_os("P3AK_TEST_CHILD").is_some()
        && let Err(e) = p3ak_vaulttool::run()
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

fn handshake(
    mut stream: UnixStream,
    name: &str,
    config: serde_json::Value,
    key: Option<p3ak_proto::Credential>,
) -> UnixStream {
    let hello = read_message(&mut stream, MAX).unwrap().unwrap();
    let Message::Hello(hello) = hello.message else {
        panic!("{hello:?}")
    };
    assert_eq!(hello.plugin, format!("my-{name}"));
    write_message(
        &mut stream,
        &Envelope::new(
            0,
            Message::Welcome(Welcome {
                version: 1,
                config,
                key,
            }),
        ),
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

    // The vault plugin, its key in `welcome`.
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
    let (kernel, plugin) = connection();
    let child = spawn("vault", plugin);
    let key = p3ak_proto::Credential::new(hex::encode(key.to_handoff_bytes().expose()));
    let mut stream = handshake(kernel, "vault", json!({"vault": vault_path}), Some(key));
    write_message(
        &mut stream,
        &Envelope::new(
            5,
            Message::Invoke(p3ak_proto::Invoke {
                agent: "a".into(),
                action: "write".into(),
                args: json!({"title": "t", "content": "written with the handed-over key"}),
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
}

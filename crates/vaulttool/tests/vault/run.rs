//! The `run` entry point: its errors in process, and the real thing in a child process that
//! gets its connection on standard input and its environment like the kernel gives them.

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Envelope, Message, Shutdown};
use p3ak_testkit::plugin::{self, MAX, connection, handshake, said, spawn_child};
use serde_json::json;

/// Runs only as the child of `run_from_the_environment`.
#[test]
#[ignore = "started as a child process by run_from_the_environment"]
fn child_plugin() {
    if plugin::child_plugin().is_some()
        && let Err(e) = p3ak_vaulttool::run()
    {
        panic!("plugin failed: {e}");
    }
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
    let (mut stream, plugin) = connection();
    let child = spawn_child("run::child_plugin", "vault", plugin);
    let key = p3ak_proto::Credential::new(hex::encode(key.to_handoff_bytes().expose()));
    handshake(
        &mut stream,
        "my-vault",
        json!({"vault": vault_path}),
        Some(key),
    );
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

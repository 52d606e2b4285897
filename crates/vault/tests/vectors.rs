//! Test vectors for the v1 format (`docs/vault-format.md`): a committed vault file that every
//! future build must read, `fail_*` variants of it that must be refused, and a cross-check
//! against an independent Python reader written from the specification.

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use p3ak_vault::{Access, NewDocument, Passphrase, Protection, Unlock, Vault, VaultError};

const VECTOR_PASS: &str = "p3ak test vector";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn vector_pass() -> Passphrase {
    Passphrase::new(VECTOR_PASS.into())
}

/// Writes the committed vectors. Run with `P3AK_REGENERATE_VECTORS=1 cargo test -p p3ak-vault
/// --test vectors regenerate -- --ignored`; only when the format version changes.
#[test]
#[ignore = "writes the committed vector files"]
fn regenerate() {
    assert_eq!(std::env::var("P3AK_REGENERATE_VECTORS").as_deref(), Ok("1"));
    let path = vectors().join("v1-encrypted.vault");
    let _ = std::fs::remove_file(&path);
    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &vector_pass(),
            kdf: TEST_KDF,
        },
    )
    .unwrap();
    fill(&vault);
    drop(vault);
    let _ = std::fs::remove_file(vectors().join("v1-encrypted.vault.lock"));
}

fn fill(vault: &Vault) {
    let mut greeting = NewDocument::new(b"Hello, vault.\n");
    greeting.title = Some("greeting".into());
    greeting.tags.insert("lang".into(), "en".into());
    vault.put(greeting).unwrap();
    let gone = vault
        .put(NewDocument::new(b"deleted before the end"))
        .unwrap();
    let mut binary = NewDocument::new(&[0u8, 1, 2, 255, 254, 0]);
    binary.title = Some("bytes".into());
    vault.put(binary).unwrap();
    vault.delete(&gone.id).unwrap();
}

fn copy_vector(dir: &Path) -> PathBuf {
    let path = dir.join("vector.vault");
    std::fs::copy(vectors().join("v1-encrypted.vault"), &path).unwrap();
    path
}

#[test]
fn v1_vector_reads_with_its_known_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path());
    let vault = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Read).unwrap();
    let docs = vault.list();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].title.as_deref(), Some("greeting"));
    assert_eq!(docs[0].tags.get("lang").map(String::as_str), Some("en"));
    assert_eq!(
        vault.get(&docs[0].id).unwrap().1.expose(),
        b"Hello, vault.\n"
    );
    assert_eq!(
        vault.get(&docs[1].id).unwrap().1.expose(),
        &[0u8, 1, 2, 255, 254, 0]
    );
    assert!(vault.verify(&mut |_, _| {}).unwrap().is_ok());
    let info = vault.info().unwrap();
    assert_eq!((info.format_version, info.encryption), (1, "aes-256-gcm"));
}

/// Opens a mutated copy of the vector.
fn open_mutated(
    edit: impl FnOnce(&mut Vec<u8>),
) -> (tempfile::TempDir, PathBuf, p3ak_vault::Result<Vault>) {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let result = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Read);
    (dir, path, result)
}

#[test]
fn fail_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path());
    let wrong = Passphrase::new("p3ak test vectoR".into());
    assert!(matches!(
        Vault::open(&path, Unlock::Passphrase(&wrong), Access::Read),
        Err(VaultError::WrongPassphrase)
    ));
}

#[test]
fn fail_bad_magic() {
    let (_d, _, r) = open_mutated(|b| b[1] = b'Q');
    assert!(matches!(r, Err(VaultError::NotAVault { .. })));
}

#[test]
fn fail_future_version() {
    let (_d, _, r) = open_mutated(|b| b[8] = 2);
    assert!(matches!(
        r,
        Err(VaultError::UnsupportedVersion { version: 2, .. })
    ));
}

#[test]
fn fail_vault_id_changed() {
    let (_d, _, r) = open_mutated(|b| b[20] ^= 1);
    assert!(matches!(r, Err(VaultError::WrongPassphrase)));
}

#[test]
fn fail_kdf_memory_raised_in_both_slots() {
    // Parameters are bound into the wrap: raising them (or lowering them) breaks the unwrap.
    let (_d, _, r) = open_mutated(|b| {
        b[64 + 5] ^= 1;
        b[64 + 128 + 5] ^= 1;
    });
    assert!(matches!(r, Err(VaultError::WrongPassphrase)));
}

#[test]
fn one_damaged_key_slot_is_survivable() {
    let (_d, _, r) = open_mutated(|b| b[64 + 50] ^= 1);
    assert_eq!(r.unwrap().list().len(), 2);
}

#[test]
fn fail_both_commit_slots_damaged_is_read_only() {
    let (_d, path, r) = open_mutated(|b| {
        b[1024] ^= 1;
        b[1536] ^= 1;
    });
    let vault = r.unwrap();
    assert!(vault.open_report().no_intact_commit_slot);
    drop(vault);
    let err = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Write)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::Damaged(_)), "{err}");
}

#[test]
fn fail_record_swapped_with_its_neighbour() {
    // Swap the first document's two records: each is bound to its offset and index.
    let (_d, _, r) = open_mutated(|b| {
        let len1 = 28 + u32::from_le_bytes(b[4100..4104].try_into().unwrap()) as usize;
        let second = 4096 + len1;
        let len2 = 28 + u32::from_le_bytes(b[second + 4..second + 8].try_into().unwrap()) as usize;
        let first: Vec<u8> = b[4096..second].to_vec();
        let next: Vec<u8> = b[second..second + len2].to_vec();
        b.splice(4096..second + len2, next.into_iter().chain(first));
    });
    let vault = r.unwrap();
    assert!(!vault.verify(&mut |_, _| {}).unwrap().is_ok());
}

#[test]
fn fail_old_record_replayed_at_the_end() {
    let (_d, _, r) = open_mutated(|b| {
        let len1 = 28 + u32::from_le_bytes(b[4100..4104].try_into().unwrap()) as usize;
        let replay: Vec<u8> = b[4096..4096 + len1].to_vec();
        b.extend_from_slice(&replay);
    });
    let vault = r.unwrap();
    // The replayed record is not accepted as data: it is an unauthenticated tail.
    assert_eq!(vault.list().len(), 2);
    assert!(vault.open_report().torn_tail_bytes > 0);
}

#[test]
fn fail_truncated_tail() {
    let (_d, _, r) = open_mutated(|b| {
        let len = b.len();
        b.truncate(len - 1);
    });
    assert!(r.unwrap().open_report().truncated.is_some());
}

/// Runs the independent Python reader (it needs `cryptography` >= 44 for Argon2id).
fn python_read(path: &Path, pass: &str) -> serde_json::Value {
    p3ak_testkit::need::python_module(
        "cryptography.hazmat.primitives.kdf.argon2",
        "cryptography>=44",
    );
    let script = vectors().join("read_vault.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(path)
        .env("P3AK_PASSPHRASE", pass)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python reader failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rust_view(vault: &Vault) -> Vec<serde_json::Value> {
    vault
        .list()
        .into_iter()
        .map(|d| {
            let (_, content) = vault.get(&d.id).unwrap();
            let sha: String = p3ak_crypto::sha256(&[content.expose()])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            serde_json::json!({
                "id": d.id.to_string(),
                "title": d.title,
                "tags": d.tags,
                "size": d.size,
                "sha256": sha,
            })
        })
        .collect()
}

/// The Python reader recomputes the log's Merkle root (RFC 9162) and checks the header
/// checkpoint's Ed25519 signature; both must agree with ours.
fn assert_log_agrees(py: &serde_json::Value, vault: &Vault) {
    let cp = vault.log_checkpoint().unwrap();
    assert_eq!(py["log"]["entries"], vault.log_len());
    assert_eq!(py["log"]["checkpoint_size"], cp.size);
    let root: String = cp.root.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(py["log"]["root"], root);
}

#[test]
#[ignore = "needs python3 with cryptography>=44"]
fn independent_reader_agrees_on_the_vector() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_vector(dir.path());
    let py = python_read(&path, VECTOR_PASS);
    let vault = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Read).unwrap();
    assert_eq!(py["documents"], serde_json::Value::Array(rust_view(&vault)));
    assert_log_agrees(&py, &vault);
}

#[test]
#[ignore = "needs python3 with cryptography>=44"]
fn independent_reader_agrees_on_a_fresh_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    fill(&vault);
    let big = content(9, 2_500_000); // three content records
    let mut d = NewDocument::new(&big);
    d.title = Some("large".into());
    vault.put(d).unwrap();
    // A second writer session: fresh nonce reservation, new commits.
    drop(vault);
    let vault = open(&path, &key(&path), Access::Write).unwrap();
    vault.put(NewDocument::new(b"second session")).unwrap();
    drop(vault);
    let py = python_read(&path, PASS);
    let vault = open(&path, &key(&path), Access::Read).unwrap();
    assert_eq!(py["documents"], serde_json::Value::Array(rust_view(&vault)));
    assert_log_agrees(&py, &vault);
    // The canary is checked by the independent reader too, and is not a document to it.
    assert_eq!(py["canary"], true);

    let plain_path = dir.path().join("plain.vault");
    let plain = Vault::create(&plain_path, Protection::Unencrypted).unwrap();
    fill(&plain);
    let py = python_read(&plain_path, "");
    assert_eq!(py["encryption"], "none");
    assert_eq!(py["documents"], serde_json::Value::Array(rust_view(&plain)));
}

//! The canary: written at create, checked after a rewrite, hidden from everything that lists
//! documents or objects.

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use p3ak_vault::{
    Access, CANARY_SPACE, NewKeys, Passphrase, Protection, Unlock, Vault, VaultError,
};

const VECTOR_PASS: &str = "p3ak test vector";

/// A vault written before canaries existed.
fn old_vault(dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1-encrypted.vault");
    let to = dir.join("old.vault");
    std::fs::copy(from, &to).unwrap();
    to
}

fn vector_pass() -> Passphrase {
    Passphrase::new(VECTOR_PASS.into())
}

#[test]
fn a_new_vault_has_a_canary_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    assert!(vault.has_canary());
    let check = vault.check_canary().unwrap();
    assert_eq!(check.size, 64);
    assert_eq!(check.created, vault.info().unwrap().created);
    // It is in the create commit: the log holds just `vault.create`, which says so.
    assert_eq!(vault.log_len(), 1);
    assert_eq!(vault.log_entry(0).unwrap().0.payload["canary"], true);
    drop(vault);
    let vault = open(&path, &key(&path), Access::Read).unwrap();
    assert_eq!(vault.check_canary().unwrap(), check);
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    let plain_path = dir.path().join("plain.vault");
    let plain = Vault::create(&plain_path, Protection::Unencrypted).unwrap();
    plain.check_canary().unwrap();
}

#[test]
fn the_canary_is_not_a_document_or_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    assert!(vault.list().is_empty());
    let info = vault.info().unwrap();
    assert_eq!((info.documents, info.objects), (0, 0));
    assert_eq!((info.content_bytes, info.object_bytes), (0, 0));
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert_eq!((report.documents, report.objects), (0, 0));

    vault.put(doc(b"a document")).unwrap();
    vault
        .transact(|tx| tx.put_object("index", "seg", b"an object"))
        .unwrap();
    let info = vault.info().unwrap();
    assert_eq!((info.documents, info.objects), (1, 1));
    assert_eq!(vault.list().len(), 1);
    assert_eq!(vault.objects("index").len(), 1);
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert_eq!((report.documents, report.objects), (1, 1));
    // No id prefix reaches it: every prefix resolves to the one document or to nothing.
    let id = vault.list()[0].id;
    for prefix in 0..=0xffffu32 {
        let prefix = format!("{prefix:04x}");
        match vault.resolve(&prefix) {
            Ok(found) => assert_eq!(found, id),
            Err(e) => assert!(matches!(e, VaultError::NotFound(_)), "{e}"),
        }
    }

    let out = dir.path().join("export");
    let report = vault.export(&out, &mut |_, _| {}).unwrap();
    assert_eq!(report.created, 1);
    let exported: Vec<_> = walk(&out);
    assert!(
        exported.iter().all(|p| !p.contains("canary")),
        "{exported:?}"
    );

    // Callers cannot write or remove it.
    for result in [
        vault.transact(|tx| tx.put_object(CANARY_SPACE, "canary", b"forged")),
        vault.transact(|tx| tx.delete_object(CANARY_SPACE, "canary").map(|_| ())),
    ] {
        assert!(matches!(result, Err(VaultError::ReservedSpace(_))));
    }
    vault.check_canary().unwrap();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
            out.push(std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    out
}

#[test]
fn an_old_vault_gets_a_canary_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_vault(dir.path());
    let reader = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Read).unwrap();
    assert!(!reader.has_canary());
    let e = reader.check_canary().unwrap_err();
    assert!(e.to_string().contains("no canary record"), "{e}");
    assert!(matches!(reader.ensure_canary(), Err(VaultError::ReadOnly)));
    drop(reader);

    let vault = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Write).unwrap();
    let (documents, log_len) = (vault.list().len(), vault.log_len());
    assert!(vault.ensure_canary().unwrap());
    assert!(!vault.ensure_canary().unwrap(), "written once");
    vault.check_canary().unwrap();
    assert_eq!(vault.list().len(), documents);
    assert_eq!(vault.log_len(), log_len + 1);
    assert_eq!(vault.log_entry(log_len).unwrap().0.kind, "vault.canary");
    drop(vault);
    let vault = Vault::open(&path, Unlock::Passphrase(&vector_pass()), Access::Read).unwrap();
    vault.check_canary().unwrap();
    assert_eq!(vault.info().unwrap().objects, 0);
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn rewrites_carry_the_canary_and_add_one_to_an_old_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let before = vault.check_canary().unwrap();
    assert_eq!(vault.last_rekey_unix().unwrap(), None);
    vault
        .rewrite(NewKeys::SamePassphrase, &mut |_, _| {})
        .unwrap();
    let vault = open(&path, &key(&path), Access::Write).unwrap();
    assert_eq!(vault.check_canary().unwrap(), before);
    assert_eq!(
        vault.last_rekey_unix().unwrap(),
        None,
        "compact is not a rekey"
    );
    vault
        .rewrite(
            NewKeys::Passphrase {
                passphrase: &pass(),
                kdf: TEST_KDF,
            },
            &mut |_, _| {},
        )
        .unwrap();
    let vault = open(&path, &key(&path), Access::Read).unwrap();
    assert_eq!(vault.check_canary().unwrap(), before);
    let rekeyed = vault.last_rekey_unix().unwrap().unwrap();
    assert!(rekeyed >= before.created);

    let old = old_vault(dir.path());
    let vault = Vault::open(&old, Unlock::Passphrase(&vector_pass()), Access::Write).unwrap();
    let documents = vault.list().len();
    let report = vault
        .rewrite(NewKeys::SamePassphrase, &mut |_, _| {})
        .unwrap();
    assert_eq!(report.documents, documents);
    let vault = Vault::open(&old, Unlock::Passphrase(&vector_pass()), Access::Read).unwrap();
    vault.check_canary().unwrap();
    assert_eq!(vault.list().len(), documents);
}

/// Offsets of the records after the header: (offset, body length).
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 4096;
    while at + 28 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 28 + len;
    }
    out
}

#[test]
fn invariant_i9_a_damaged_canary_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    drop(vault);
    let mut bytes = std::fs::read(&path).unwrap();
    // Record 0 is the log key, 1 its checkpoint; the create commit holds the canary's
    // metadata (2) and content (3), the `vault.create` entry and a checkpoint.
    let (at, len) = records(&bytes)[3];
    assert_eq!(len, 1 + 64 + 16);
    bytes[at + 28 + 10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let vault = open(&path, &key(&path), Access::Read).unwrap();
    let e = vault.check_canary().unwrap_err();
    assert!(matches!(e, VaultError::Canary(_)), "{e}");
    assert!(e.to_string().contains("canary record is damaged"), "{e}");
}

//! Invariant I6 against a downgrade: a vault whose header says "unencrypted" opens only when
//! the caller asked for plaintext (`Unlock::Unencrypted`). A caller holding a passphrase or a
//! key expects an encrypted vault; handed a plaintext one (swapped in, or an encrypted one with
//! its encryption byte flipped), every entry point refuses and nothing is written: not the
//! vault, not a lock file, not an unlock-failure note, not an export.

#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use p3ak_vault::{Access, KdfParams, NewKeys, Protection, Unlock, Vault, VaultError, VaultKey};

/// Every file in `dir` with a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let hash = hex::encode(p3ak_crypto::sha256(&[&std::fs::read(&p).unwrap()]));
            (p, hash)
        })
        .collect()
}

fn create_plain(path: &Path) {
    let vault = Vault::create(path, Protection::Unencrypted).unwrap();
    vault
        .put(doc(b"planted by whoever swapped the file"))
        .unwrap();
}

/// An encrypted vault at `dir/test.vault` and its key, then a plaintext vault moved over it:
/// what an attacker with write access to the directory does.
fn swapped(dir: &Path) -> (PathBuf, VaultKey) {
    let (path, vault) = create(dir);
    vault.put(doc(b"the owner's document")).unwrap();
    drop(vault);
    let key = key(&path);
    let plain = dir.join("plain.vault");
    create_plain(&plain);
    std::fs::rename(&plain, &path).unwrap();
    // The plaintext vault's lock file is not part of the swap.
    let _ = std::fs::remove_file(dir.join("plain.vault.lock"));
    (path, key)
}

fn assert_not_encrypted(result: p3ak_vault::Result<Vault>, path: &Path) {
    let err = result
        .err()
        .expect("a plaintext vault must not open with a key");
    assert!(
        matches!(err.root(), VaultError::NotEncrypted { path: p } if p == path),
        "unexpected error: {err}"
    );
}

const ACCESSES: [Access; 3] = [Access::Read, Access::Write, Access::Repair];

#[test]
fn invariant_i6_unencrypted_vault_refuses_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = swapped(dir.path());
    let before = snapshot(dir.path());
    for access in ACCESSES {
        assert_not_encrypted(
            Vault::open(&path, Unlock::Passphrase(&pass()), access),
            &path,
        );
        assert_eq!(snapshot(dir.path()), before, "{access:?} wrote something");
    }
}

#[test]
fn invariant_i6_unencrypted_vault_refuses_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = swapped(dir.path());
    let before = snapshot(dir.path());
    for access in ACCESSES {
        assert_not_encrypted(Vault::open(&path, Unlock::Key(&key), access), &path);
        assert_eq!(snapshot(dir.path()), before, "{access:?} wrote something");
    }
}

#[test]
fn invariant_i6_key_derivation_refuses_an_unencrypted_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = swapped(dir.path());
    let before = snapshot(dir.path());
    let err = VaultKey::derive(&path, &pass()).err().unwrap();
    assert!(
        matches!(err.root(), VaultError::NotEncrypted { .. }),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn invariant_i6_not_encrypted_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = swapped(dir.path());
    let err = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Read)
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("`{}` is not encrypted", path.display())),
        "{message}"
    );
    assert!(!message.ends_with('.'), "{message}");
}

/// Every operation that changes or copies a vault starts from an open vault: each one, tried
/// with a passphrase and with a key on a swapped vault, refuses before doing anything.
#[test]
fn invariant_i6_no_operation_reaches_a_swapped_vault_with_a_passphrase_or_key() {
    type Op = fn(&Vault, &Path) -> p3ak_vault::Result<()>;
    let ops: [(&str, Access, Op); 11] = [
        ("put", Access::Write, |v, _| v.put(doc(b"secret")).map(drop)),
        ("transact", Access::Write, |v, _| {
            v.transact(|tx| tx.put_object("search-index", "x", b"secret"))
        }),
        ("log_event", Access::Write, |v, _| {
            v.log_event("kernel.start", serde_json::json!({})).map(drop)
        }),
        ("ensure_canary", Access::Write, |v, _| {
            v.ensure_canary().map(drop)
        }),
        ("check_canary", Access::Read, |v, _| {
            v.check_canary().map(drop)
        }),
        ("import", Access::Write, |v, dir| {
            v.import(&dir.join("to-import"), &mut |_, _| {}).map(drop)
        }),
        ("export", Access::Read, |v, dir| {
            v.export(&dir.join("exported"), &mut |_, _| {}).map(drop)
        }),
        ("get", Access::Read, |v, _| {
            let id = v.list().first().map(|d| d.id).unwrap();
            v.get(&id).map(drop)
        }),
        ("verify", Access::Read, |v, _| {
            v.verify(&mut |_, _| {}).map(drop)
        }),
        ("compact", Access::Repair, |_, _| unreachable!()),
        ("rekey", Access::Write, |_, _| unreachable!()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = swapped(dir.path());
    let import_dir = dir.path().join("to-import");
    std::fs::create_dir(&import_dir).unwrap();
    std::fs::write(import_dir.join("note.txt"), b"secret to import").unwrap();
    let before = snapshot(dir.path());
    let new_pass = p3ak_vault::Passphrase::new("a new passphrase".into());
    for (name, access, op) in ops {
        for unlock in [Unlock::Passphrase(&pass()), Unlock::Key(&key)] {
            let opened = Vault::open(&path, unlock, access);
            let result = match (name, opened) {
                (_, Err(e)) => Err(e),
                ("compact", Ok(v)) => v.rewrite(NewKeys::SamePassphrase, &mut |_, _| {}).map(drop),
                ("rekey", Ok(v)) => v
                    .rewrite(
                        NewKeys::Passphrase {
                            passphrase: &new_pass,
                            kdf: KdfParams {
                                memory_kib: KdfParams::MIN_MEMORY_KIB,
                                iterations: 1,
                                parallelism: 1,
                            },
                        },
                        &mut |_, _| {},
                    )
                    .map(drop),
                (_, Ok(v)) => op(&v, dir.path()),
            };
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{name} went through"));
            assert!(
                matches!(err.root(), VaultError::NotEncrypted { .. }),
                "{name}: {err}"
            );
            assert_eq!(snapshot(dir.path()), before, "{name} wrote something");
            assert!(!dir.path().join("exported").exists(), "{name}");
        }
    }
}

/// Flipping the encryption byte of an encrypted vault and clearing its key slots (a header that
/// parses as unencrypted over encrypted records) is the same downgrade: refused, and the file is
/// left as it is.
#[test]
fn invariant_i6_flipped_encryption_byte_is_refused_with_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    vault.put(doc(b"the owner's document")).unwrap();
    drop(vault);
    let key = key(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[10], 1);
    bytes[10] = 0;
    bytes[64..576].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot(dir.path());
    for access in ACCESSES {
        assert_not_encrypted(
            Vault::open(&path, Unlock::Passphrase(&pass()), access),
            &path,
        );
        assert_not_encrypted(Vault::open(&path, Unlock::Key(&key), access), &path);
    }
    let err = VaultKey::derive(&path, &pass()).err().unwrap();
    assert!(matches!(err, VaultError::NotEncrypted { .. }), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

/// The other direction, kept: an encrypted vault does not open as plaintext, and refusing it
/// writes nothing either (no lock file).
#[test]
fn invariant_i6_encrypted_vault_refuses_unencrypted_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    drop(vault);
    let _ = std::fs::remove_file(dir.path().join("test.vault.lock"));
    let before = snapshot(dir.path());
    for access in ACCESSES {
        let err = Vault::open(&path, Unlock::Unencrypted, access)
            .err()
            .unwrap();
        assert!(matches!(err, VaultError::PassphraseRequired), "{err}");
        assert_eq!(snapshot(dir.path()), before, "{access:?} wrote something");
    }
}

/// The explicit path still works: a plaintext vault opens, reads and writes when asked for as
/// plaintext, and a vault opened with a passphrase or key is always an encrypted one.
#[test]
fn invariant_i6_unencrypted_vault_opens_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.vault");
    create_plain(&plain);
    for access in ACCESSES {
        let vault = Vault::open(&plain, Unlock::Unencrypted, access).unwrap();
        assert!(!vault.is_encrypted());
    }
    let vault = Vault::open(&plain, Unlock::Unencrypted, Access::Write).unwrap();
    vault.put(doc(b"on purpose")).unwrap();
    drop(vault);

    let (path, vault) = create(dir.path());
    drop(vault);
    let key = key(&path);
    for access in ACCESSES {
        assert!(
            Vault::open(&path, Unlock::Passphrase(&pass()), access)
                .unwrap()
                .is_encrypted()
        );
        assert!(
            Vault::open(&path, Unlock::Key(&key), access)
                .unwrap()
                .is_encrypted()
        );
    }
}

#![cfg(test)]

mod common;

use std::sync::Arc;

use common::*;
use p3ak_vault::{Access, NewDocument, NewKeys, PutStatus, Unlock, Vault, VaultError};

#[test]
fn put_get_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let big = content(1, 3 * 1024 * 1024 + 17); // four content records
    let mut d = NewDocument::new(&big);
    d.title = Some("big one".into());
    d.tags.insert("kind".into(), "test".into());
    let a = vault.put(d).unwrap();
    assert_eq!(a.status, PutStatus::Created);
    let small = content(2, 100);
    let b = vault.put(doc(&small)).unwrap();
    let empty: &[u8] = b"";
    let c = vault.put(doc(empty)).unwrap();

    let (meta, got) = vault.get(&a.id).unwrap();
    assert_eq!(got.expose(), &big[..]);
    assert_eq!(meta.title.as_deref(), Some("big one"));
    assert_eq!(meta.tags.get("kind").map(String::as_str), Some("test"));
    assert_eq!(vault.get(&c.id).unwrap().1.len(), 0);
    let ids: Vec<_> = vault.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![a.id, b.id, c.id], "listing keeps insertion order");

    vault.delete(&b.id).unwrap();
    assert!(matches!(vault.get(&b.id), Err(VaultError::NotFound(_))));
    assert!(matches!(vault.delete(&b.id), Err(VaultError::NotFound(_))));
    drop(vault);

    let vault = open(&path, &key(&path), Access::Read).unwrap();
    assert_eq!(vault.list().len(), 2);
    assert_eq!(vault.get(&a.id).unwrap().1.expose(), &big[..]);
    assert!(vault.get(&b.id).is_err(), "deletion survives reopening");
}

#[test]
fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    let text = b"same bytes";
    let first = vault.put(doc(text)).unwrap();
    let second = vault.put(doc(text)).unwrap();
    assert_eq!(second.status, PutStatus::Unchanged);
    assert_eq!(first.id, second.id);
    assert_eq!(vault.list().len(), 1);
}

#[test]
fn ids_resolve_by_unique_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    let id = vault.put(doc(b"x")).unwrap().id;
    let hex = id.to_string();
    assert_eq!(vault.resolve(&hex[..6]).unwrap(), id);
    assert_eq!(vault.resolve(&hex.to_uppercase()).unwrap(), id);
    assert!(matches!(
        vault.resolve("abc"),
        Err(VaultError::InvalidId(_))
    ));
    assert!(matches!(
        vault.resolve("not-hex!"),
        Err(VaultError::InvalidId(_))
    ));
    let other = if hex.starts_with('0') { "ffff" } else { "0000" };
    assert!(matches!(vault.resolve(other), Err(VaultError::NotFound(_))));
}

#[test]
fn wrong_passphrase_is_refused_with_the_documented_message() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    drop(vault);
    let wrong = p3ak_vault::Passphrase::new("not it".into());
    let err = Vault::open(&path, Unlock::Passphrase(&wrong), Access::Read)
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "wrong passphrase or damaged header");
    let err = Vault::open(&path, Unlock::Unencrypted, Access::Read)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::PassphraseRequired));
}

#[test]
fn second_writer_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let err = open(&path, &key(&path), Access::Write).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("vault is locked by pid {}", std::process::id())
    );
    // Readers are never blocked.
    assert!(open(&path, &key(&path), Access::Read).is_ok());
    drop(vault);
    assert!(open(&path, &key(&path), Access::Write).is_ok());
}

#[test]
fn a_waiting_writer_gets_the_vault_when_the_holder_lets_go() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let key = key(&path);
    let unlock = Unlock::Key(&key);
    // No patience: refused at once, as `open` is.
    let err = Vault::open_waiting(&path, unlock, Access::Write, Duration::ZERO)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::Locked { .. }), "{err}");
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(vault);
    });
    let waited = Vault::open_waiting(&path, unlock, Access::Write, Duration::from_secs(30));
    holder.join().unwrap();
    assert!(waited.is_ok(), "the writer waited for the lock");
}

#[test]
fn readers_run_while_one_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    let first: Vec<_> = (0..20)
        .map(|i| vault.put(doc(&content(i, 2000))).unwrap().id)
        .collect();
    let vault = Arc::new(vault);
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let vault = Arc::clone(&vault);
            let first = first.clone();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let i = (round + t) % first.len();
                    let (_, got) = vault.get(&first[i]).unwrap();
                    assert_eq!(got.expose(), &content(i, 2000)[..]);
                    assert!(vault.list().len() >= 20);
                }
            })
        })
        .collect();
    for i in 20..60 {
        vault.put(doc(&content(i, 2000))).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(vault.list().len(), 60);
}

#[test]
fn rekey_replaces_passphrase_and_keeps_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let ids: Vec<_> = (0..30)
        .map(|i| vault.put(doc(&content(i, 500 + i * 10))).unwrap().id)
        .collect();
    vault.delete(&ids[3]).unwrap();
    let new_pass = p3ak_vault::Passphrase::new("a brand new passphrase".into());
    let report = vault
        .rewrite(
            NewKeys::Passphrase {
                passphrase: &new_pass,
                kdf: TEST_KDF,
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(report.documents, 29);
    assert!(report.bytes_after < report.bytes_before);
    let err = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Read)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::WrongPassphrase));
    let vault = Vault::open(&path, Unlock::Passphrase(&new_pass), Access::Read).unwrap();
    for (i, id) in ids.iter().enumerate() {
        if i == 3 {
            assert!(vault.get(id).is_err());
        } else {
            assert_eq!(
                vault.get(id).unwrap().1.expose(),
                &content(i, 500 + i * 10)[..]
            );
        }
    }
    assert!(vault.verify(&mut |_, _| {}).unwrap().is_ok());
    assert!(!dir.path().join("test.vault.p3ak-tmp").exists());
}

#[test]
fn compact_keeps_the_passphrase_and_drops_deleted_content() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let keep = vault.put(doc(&content(1, 10_000))).unwrap().id;
    let gone = vault.put(doc(&content(2, 10_000))).unwrap().id;
    vault.delete(&gone).unwrap();
    let report = vault
        .rewrite(NewKeys::SamePassphrase, &mut |_, _| {})
        .unwrap();
    assert_eq!(report.documents, 1);
    assert!(report.bytes_after < report.bytes_before - 9_000);
    let vault = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Write).unwrap();
    assert_eq!(
        vault.get(&keep).unwrap().1.expose(),
        &content(1, 10_000)[..]
    );
    // Appending after a rewrite works: fresh master key, fresh nonce space.
    vault.put(doc(b"after compact")).unwrap();
}

#[test]
fn unencrypted_vault_says_so_and_still_detects_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.vault");
    let vault = Vault::create(&path, p3ak_vault::Protection::Unencrypted).unwrap();
    let id = vault.put(doc(b"visible on purpose")).unwrap().id;
    drop(vault);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[10], 0, "encryption-status byte");
    assert_eq!(p3ak_vault::peek(&path).unwrap().encryption, "none");
    let vault = Vault::open(&path, Unlock::Unencrypted, Access::Read).unwrap();
    assert_eq!(vault.get(&id).unwrap().1.expose(), b"visible on purpose");
    drop(vault);
    let at = bytes.windows(7).position(|w| w == b"visible").unwrap();
    let mut bad = bytes.clone();
    bad[at] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let vault = Vault::open(&path, Unlock::Unencrypted, Access::Read).unwrap();
    assert!(!vault.verify(&mut |_, _| {}).unwrap().is_ok());
    assert!(vault.get(&id).is_err());
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _vault) = create(dir.path());
    let err = Vault::create(&path, p3ak_vault::Protection::Unencrypted)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::Exists { .. }));
}

#[test]
fn export_then_import_into_another_vault_keeps_ids_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    let mut d = NewDocument::new(b"exported text");
    d.title = Some("t".into());
    d.tags.insert("k".into(), "v".into());
    let id = vault.put(d).unwrap().id;
    let out = dir.path().join("export");
    let report = vault.export(&out, &mut |_, _| {}).unwrap();
    assert_eq!(report.created, 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let file_mode = std::fs::metadata(out.join("documents").join(id.to_string()))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(file_mode, 0o600);
    assert!(
        vault.export(&out, &mut |_, _| {}).is_err(),
        "refuses a non-empty dir"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let (_, other) = create(other_dir.path());
    let report = other.import(&out, &mut |_, _| {}).unwrap();
    assert_eq!(report.created, 1);
    let (meta, body) = other.get(&id).unwrap();
    assert_eq!(body.expose(), b"exported text");
    assert_eq!(meta.title.as_deref(), Some("t"));
    let again = other.import(&out, &mut |_, _| {}).unwrap();
    assert_eq!((again.created, again.unchanged), (0, 1));

    // A tampered export file is refused by its checksum, and the rest goes on.
    std::fs::write(out.join("documents").join(id.to_string()), b"tampered").unwrap();
    let third_dir = tempfile::tempdir().unwrap();
    let (_, third) = create(third_dir.path());
    let report = third.import(&out, &mut |_, _| {}).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(third.list().len(), 0);
}

#[test]
fn import_of_a_plain_directory_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.md"), b"# beta").unwrap();
    let (_, vault) = create(dir.path());
    let report = vault.import(&src, &mut |_, _| {}).unwrap();
    assert_eq!(report.created, 2);
    let titles: Vec<_> = vault.list().into_iter().filter_map(|d| d.title).collect();
    assert_eq!(titles, vec!["a.txt".to_owned(), "sub/b.md".to_owned()]);
}

#[test]
fn invariant_i9_oversized_metadata_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    let mut d = NewDocument::new(b"x");
    d.title = Some("t".repeat(p3ak_vault::MAX_TITLE_LEN + 1));
    assert!(matches!(vault.put(d), Err(VaultError::TooLarge { .. })));
    let mut d = NewDocument::new(b"x");
    d.tags.insert("bad=key".into(), "v".into());
    assert!(matches!(vault.put(d), Err(VaultError::InvalidTag(_))));
    assert!(vault.list().is_empty(), "a refused put writes nothing");
}

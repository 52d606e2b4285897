//! Internal objects (search index files, embeddings) and transactions: hidden from the
//! document commands, replaced by name, carried through compact and rekey, committed atomically
//! with the documents they describe.

#![cfg(test)]

mod common;

use common::*;
use p3ak_vault::{Access, NewDocument, NewKeys, ObjectInfo, Passphrase, VaultError, VaultKey};

#[test]
fn objects_are_named_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let big = content(9, 2 * 1024 * 1024 + 5); // spans three content records
    vault
        .transact(|tx| {
            tx.put_object("index", "meta.json", b"{\"v\":1}")?;
            tx.put_object("index", "seg.idx", &big)?;
            tx.put_object("embed", "seg.idx", b"other space, same name")
        })
        .unwrap();
    assert_eq!(
        vault.objects("index"),
        vec![
            ObjectInfo {
                name: "meta.json".into(),
                size: 7
            },
            ObjectInfo {
                name: "seg.idx".into(),
                size: big.len() as u64
            },
        ]
    );
    vault
        .transact(|tx| tx.put_object("index", "meta.json", b"{\"v\":2}"))
        .unwrap();
    assert_eq!(
        vault
            .read_object("index", "meta.json")
            .unwrap()
            .unwrap()
            .expose(),
        b"{\"v\":2}"
    );
    assert!(
        vault
            .transact(|tx| tx.delete_object("index", "seg.idx"))
            .unwrap()
    );
    assert!(
        !vault
            .transact(|tx| tx.delete_object("index", "seg.idx"))
            .unwrap()
    );
    drop(vault);

    let vault = open(&path, &key(&path), Access::Read).unwrap();
    assert_eq!(
        vault.objects("index").len(),
        1,
        "replacement and removal survive reopening"
    );
    assert_eq!(
        vault
            .read_object("index", "meta.json")
            .unwrap()
            .unwrap()
            .expose(),
        b"{\"v\":2}"
    );
    assert_eq!(
        vault
            .read_object("embed", "seg.idx")
            .unwrap()
            .unwrap()
            .expose(),
        b"other space, same name"
    );
    assert!(vault.read_object("index", "missing").unwrap().is_none());
}

#[test]
fn objects_are_invisible_to_document_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    let user = vault.put(doc(b"a user document")).unwrap();
    // Same bytes as the user document: objects are never deduplicated against documents.
    vault
        .transact(|tx| tx.put_object("index", "copy", b"a user document"))
        .unwrap();
    let listed: Vec<_> = vault.list().into_iter().map(|d| d.id).collect();
    assert_eq!(listed, vec![user.id]);
    let info = vault.info().unwrap();
    assert_eq!((info.documents, info.objects), (1, 1));
    assert_eq!(info.content_bytes, 15);
    // Deleting the document leaves the object; no id prefix reaches the object.
    vault.delete(&user.id).unwrap();
    assert!(vault.list().is_empty());
    assert_eq!(vault.objects("index").len(), 1);
    for prefix in ["0000", "ffff", "abcd"] {
        assert!(vault.resolve(prefix).is_err());
    }
    let export = dir.path().join("out");
    let report = vault.export(&export, &mut |_, _| {}).unwrap();
    assert_eq!(report.created, 0, "objects are not exported");
}

#[test]
fn bad_object_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    for (space, name) in [("", "x"), ("index", ""), ("index", "a\nb")] {
        let err = vault
            .transact(|tx| tx.put_object(space, name, b"x"))
            .unwrap_err();
        assert!(matches!(err, VaultError::InvalidObjectName(_)), "{err}");
    }
    let long = "n".repeat(513);
    assert!(
        vault
            .transact(|tx| tx.put_object("index", &long, b"x"))
            .is_err()
    );
}

#[test]
fn objects_survive_compact_and_rekey() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let user = vault.put(doc(b"keep me")).unwrap();
    vault
        .transact(|tx| {
            tx.put_object("index", "a", b"first")?;
            tx.put_object("index", "b", b"second")
        })
        .unwrap();
    vault
        .transact(|tx| tx.put_object("index", "a", b"first, replaced"))
        .unwrap();
    let report = vault
        .rewrite(NewKeys::SamePassphrase, &mut |_, _| {})
        .unwrap();
    assert_eq!(report.documents, 1, "only documents are counted");

    let vault = open(&path, &key(&path), Access::Write).unwrap();
    assert_eq!(
        vault.read_object("index", "a").unwrap().unwrap().expose(),
        b"first, replaced"
    );
    let new_pass = Passphrase::new("another long passphrase".into());
    vault
        .rewrite(
            NewKeys::Passphrase {
                passphrase: &new_pass,
                kdf: TEST_KDF,
            },
            &mut |_, _| {},
        )
        .unwrap();
    let key = VaultKey::derive(&path, &new_pass).unwrap();
    let vault = open(&path, &key, Access::Read).unwrap();
    assert_eq!(vault.get(&user.id).unwrap().1.expose(), b"keep me");
    assert_eq!(vault.objects("index").len(), 2);
    assert_eq!(
        vault.read_object("index", "b").unwrap().unwrap().expose(),
        b"second"
    );
    assert!(vault.verify(&mut |_, _| {}).unwrap().is_ok());
}

#[test]
fn a_failed_transaction_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let before = std::fs::read(&path).unwrap();
    let err = vault.transact(|tx| {
        tx.put(NewDocument::new(b"half of a change"))?;
        tx.put_object("index", "seg", b"index of it")?;
        tx.put_object("index", "", b"this one is refused")
    });
    assert!(err.is_err());
    assert!(vault.list().is_empty());
    assert!(vault.objects("index").is_empty());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "appended bytes are cut"
    );
}

/// A transaction holding a document and the index objects describing it is atomic under a
/// crash: cut the file at every byte of it, and a reader sees both or neither.
#[test]
fn a_transaction_is_atomic_under_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let before = std::fs::read(&path).unwrap();
    let start = before.len();
    vault
        .transact(|tx| {
            tx.put(NewDocument::new(b"the document"))?;
            tx.put_object("index", "seg", b"the index that finds it")?;
            tx.log("memory.ingest", serde_json::json!({ "files": 1 }))
        })
        .unwrap();
    drop(vault);
    let full = std::fs::read(&path).unwrap();
    let key = key(&path);
    let cut_path = dir.path().join("cut.vault");
    for cut in start..=full.len() {
        let mut bytes = full.clone();
        bytes.truncate(cut);
        // A crash before the commit slot was written leaves the old header in place.
        if cut < full.len() {
            bytes[..4096].copy_from_slice(&before[..4096]);
        }
        std::fs::write(&cut_path, &bytes).unwrap();
        let opened =
            p3ak_vault::Vault::open(&cut_path, p3ak_vault::Unlock::Key(&key), Access::Read);
        let v = opened.unwrap();
        let docs = v.list().len();
        let objects = v.objects("index").len();
        assert_eq!(
            docs, objects,
            "cut at {cut}: {docs} documents, {objects} objects"
        );
        if cut == full.len() {
            assert_eq!(docs, 1);
        }
    }
}

#[test]
fn a_key_handoff_round_trips_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    drop(vault);
    let key = key(&path);
    let bytes = key.to_handoff_bytes();
    let back = VaultKey::from_handoff_bytes(bytes.expose()).unwrap();
    assert!(open(&path, &back, Access::Read).is_ok());
    assert!(VaultKey::from_handoff_bytes(&bytes.expose()[1..]).is_err());
    assert!(VaultKey::from_handoff_bytes(b"").is_err());
}

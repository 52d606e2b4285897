//! The vault's own audit log: what it records, and that tampering is detected and named even
//! by an attacker who can recompute every record tag (an unencrypted vault's tags are plain
//! SHA-256), because the log's hash chain and signed checkpoint do not depend on them.

#![cfg(test)]

mod common;

use std::path::Path;

use common::*;
use p3ak_vault::format::{
    self, COMMIT_SLOT_BODY_LEN, COMMIT_SLOT_LEN, COMMIT_SLOT_OFFSETS, CommitSlot, HEADER_LEN,
    KEY_SLOTS_END, RECORD_HEADER_LEN, RecordHeader, kind,
};
use p3ak_vault::{Access, NewKeys, Passphrase, Protection, Unlock, Vault, VaultError};

fn kinds(vault: &Vault) -> Vec<String> {
    vault
        .log_entries(0, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[test]
fn invariant_i5_every_vault_operation_lands_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let a = vault.put(doc(b"first")).unwrap().id;
    vault.put(doc(b"first")).unwrap(); // unchanged: nothing happened, nothing logged
    vault.delete(&a).unwrap();
    vault
        .log_event("note", serde_json::json!({ "text": "hello" }))
        .unwrap();
    let report = vault
        .rewrite(
            NewKeys::Passphrase {
                passphrase: &Passphrase::new("a new passphrase".into()),
                kdf: TEST_KDF,
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(report.documents, 0);
    let vault = Vault::open(
        &path,
        Unlock::Passphrase(&Passphrase::new("a new passphrase".into())),
        Access::Read,
    )
    .unwrap();
    assert_eq!(
        kinds(&vault),
        [
            "vault.create",
            "vault.put",
            "vault.delete",
            "note",
            "vault.rekey"
        ]
    );
    let entries = vault.log_entries(0, 10).unwrap();
    assert_eq!(entries[1].payload["id"], a.to_string());
    assert!(entries[1].actor.starts_with("uid="));
    // Every commit left a checkpoint that covers the whole log; the header carries it.
    let cp = vault.log_checkpoint().unwrap();
    assert_eq!(cp.size, 5);
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.log_entries, report.log_checkpoint), (5, Some(5)));
}

#[test]
fn invariant_i5_failed_unlock_attempts_are_logged_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    drop(vault);
    for _ in 0..3 {
        let wrong = Passphrase::new("wrong".into());
        assert!(matches!(
            Vault::open(&path, Unlock::Passphrase(&wrong), Access::Read),
            Err(VaultError::WrongPassphrase)
        ));
    }
    let sidecar = dir.path().join("test.vault.unlock-failures");
    assert!(sidecar.exists());
    let vault = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Write).unwrap();
    let last = vault.log_entries(0, 100).unwrap().pop().unwrap();
    assert_eq!(last.kind, "vault.unlock_failed");
    assert_eq!(last.payload["count"], 3);
    assert!(!sidecar.exists());
}

#[test]
fn inclusion_proofs_verify_against_the_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vault) = create(dir.path());
    for i in 0..20 {
        vault.put(doc(format!("doc {i}").as_bytes())).unwrap();
    }
    let public = vault.log_public_key().unwrap();
    let cp = vault.log_checkpoint().unwrap();
    cp.verify_signature(&public).unwrap();
    for seq in 0..vault.log_len() {
        let proof = vault.log_inclusion_proof(seq).unwrap();
        let hashes = proof.proof.to_hashes().unwrap();
        let (_, bytes) = vault.log_entry(seq).unwrap();
        p3ak_audit::verify_inclusion(
            &p3ak_audit::leaf_hash(&bytes),
            seq,
            proof.tree_size,
            &hashes,
            &cp.root,
        )
        .unwrap();
    }
    assert!(vault.log_inclusion_proof(vault.log_len()).is_err());
    // And the log at 5 entries is a prefix of the log now.
    let old_root = vault.log_checkpoint().unwrap();
    let proof = vault.log_consistency_proof(5, old_root.size).unwrap();
    let mut tip = p3ak_audit::Chain::new();
    for seq in 0..5 {
        tip.push(&vault.log_entry(seq).unwrap().1).unwrap();
    }
    p3ak_audit::verify_consistency(5, old_root.size, &tip.tree().root(), &old_root.root, &proof)
        .unwrap();
}

// ---- a capable attacker on an unencrypted vault ----

/// (kind, payload) of every committed record.
fn records(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while let Some(h) = bytes.get(pos..).and_then(RecordHeader::parse) {
        let body = &bytes[pos + RECORD_HEADER_LEN..pos + h.total_len() as usize - 16];
        out.push((body[0], body[1..].to_vec()));
        pos += h.total_len() as usize;
    }
    out
}

/// A vault file with these records, every tag and the commit slot recomputed: what an attacker
/// with write access to an unencrypted vault can produce. The header's signed checkpoint is
/// kept, since the attacker cannot sign a new one.
fn forge(original: &[u8], recs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = original[..HEADER_LEN].to_vec();
    let vault_id: [u8; 16] = original[16..32].try_into().unwrap();
    for (i, (k, payload)) in recs.iter().enumerate() {
        let plain = [&[*k][..], payload].concat();
        let header = RecordHeader {
            body_len: (plain.len() + 16) as u32,
            index: i as u64,
            counter: 1 << 40 | i as u64,
        };
        let aad = format::record_aad(&vault_id, out.len() as u64, &header);
        let tag = p3ak_crypto::sha256(&[b"p3ak vault v1 plain record", &aad, &plain]);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&plain);
        out.extend_from_slice(&tag[..16]);
    }
    let newest = COMMIT_SLOT_OFFSETS
        .iter()
        .filter_map(|&at| CommitSlot::parse(&original[at..at + COMMIT_SLOT_LEN]))
        .max_by_key(|(s, _)| s.generation)
        .unwrap()
        .0;
    let slot = CommitSlot {
        generation: newest.generation + 10,
        committed_end: out.len() as u64,
        record_count: recs.len() as u64,
        nonce_reserved: 1 << 41,
        ..newest
    };
    let body = slot.encode_body();
    let mac = p3ak_crypto::sha256(&[
        b"p3ak vault v1 commit slot",
        &original[..KEY_SLOTS_END],
        &body,
    ]);
    let at = COMMIT_SLOT_OFFSETS[0];
    out[at..at + COMMIT_SLOT_BODY_LEN].copy_from_slice(&body);
    out[at + COMMIT_SLOT_BODY_LEN..at + COMMIT_SLOT_LEN].copy_from_slice(&mac);
    out
}

fn plain_vault(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("plain.vault");
    let vault = Vault::create(&path, Protection::Unencrypted).unwrap();
    for i in 0..6 {
        vault.put(doc(format!("document {i}").as_bytes())).unwrap();
    }
    drop(vault);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// `verify`'s problems for the given file contents.
fn problems(path: &Path, bytes: &[u8]) -> Vec<String> {
    std::fs::write(path, bytes).unwrap();
    let vault = Vault::open(path, Unlock::Unencrypted, Access::Read).unwrap();
    vault.verify(&mut |_, _| {}).unwrap().problems
}

fn log_positions(recs: &[(u8, Vec<u8>)]) -> Vec<usize> {
    (0..recs.len())
        .filter(|&i| recs[i].0 == kind::LOG_ENTRY)
        .collect()
}

#[test]
fn forging_the_records_faithfully_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = plain_vault(dir.path());
    // The forger itself is right: rebuilding the same records verifies cleanly.
    assert_eq!(
        problems(&path, &forge(&bytes, &records(&bytes))),
        Vec::<String>::new()
    );
}

#[test]
fn editing_one_byte_of_any_log_entry_is_detected_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = plain_vault(dir.path());
    let recs = records(&bytes);
    for (n, &at) in log_positions(&recs).iter().enumerate() {
        let mut forged = recs.clone();
        // Change the payload (a digit in the size or id) without breaking the JSON.
        let text = String::from_utf8(forged[at].1.clone()).unwrap();
        let edited = text.replacen("\"time_ms\":1", "\"time_ms\":2", 1);
        assert_ne!(text, edited);
        forged[at].1 = edited.into_bytes();
        let found = problems(&path, &forge(&bytes, &forged));
        let named = format!("entry {}", n + 1);
        let own = format!("entry {n}");
        assert!(
            found.iter().any(|p| p.contains(&named) || p.contains(&own)),
            "edit of entry {n}: {found:?}"
        );
    }
}

#[test]
fn deleting_a_log_entry_is_detected_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = plain_vault(dir.path());
    let recs = records(&bytes);
    let positions = log_positions(&recs);
    let mut forged = recs.clone();
    forged.remove(positions[3]);
    let found = problems(&path, &forge(&bytes, &forged));
    assert!(
        found
            .iter()
            .any(|p| p.contains("log entry 3: has sequence number 4")),
        "{found:?}"
    );
}

#[test]
fn reordering_two_log_entries_is_detected_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = plain_vault(dir.path());
    let recs = records(&bytes);
    let positions = log_positions(&recs);
    let mut forged = recs.clone();
    forged.swap(positions[2], positions[4]);
    let found = problems(&path, &forge(&bytes, &forged));
    assert!(found.iter().any(|p| p.contains("log entry 2")), "{found:?}");
}

#[test]
fn truncating_the_log_tail_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = plain_vault(dir.path());
    let recs = records(&bytes);
    let positions = log_positions(&recs);
    let forged: Vec<_> = recs[..positions[5]].to_vec();
    let found = problems(&path, &forge(&bytes, &forged));
    assert!(
        found
            .iter()
            .any(|p| p.contains("covers 7 entries but the log has 5")),
        "{found:?}"
    );
}

/// A vault that committed `one`, then `later` more documents, whose commit slots are then put
/// back from the file as it was after `one`; every record stays.
fn with_slots_from_before(dir: &Path, later: &[&[u8]]) -> std::path::PathBuf {
    let path = dir.join("v.vault");
    let vault = Vault::create(&path, Protection::Unencrypted).unwrap();
    vault.put(doc(b"one")).unwrap();
    let older = std::fs::read(&path).unwrap();
    for content in later {
        vault.put(doc(content)).unwrap();
    }
    drop(vault);
    let mut bytes = std::fs::read(&path).unwrap();
    for at in COMMIT_SLOT_OFFSETS {
        bytes[at..at + COMMIT_SLOT_LEN].copy_from_slice(&older[at..at + COMMIT_SLOT_LEN]);
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn replacing_the_checkpoint_with_an_older_one_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    // Two commits past the slots: more than a crash can leave.
    let path = with_slots_from_before(dir.path(), &[b"two", b"three"]);
    let found = problems(&path, &std::fs::read(&path).unwrap());
    assert!(
        found
            .iter()
            .any(|p| p.contains("an older header was put back")),
        "{found:?}"
    );
}

/// With one sync per commit, a crash can lose the last commit's slot but not its records: verify
/// says so as a warning, and the log it reports is the recovered one.
#[test]
fn a_lost_commit_slot_is_a_warning_and_the_next_writer_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_slots_from_before(dir.path(), &[b"two"]);
    let vault = Vault::open(&path, Unlock::Unencrypted, Access::Read).unwrap();
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.documents, 2);
    assert_eq!(report.log_checkpoint, Some(2), "the header as found");
    assert_eq!(report.log_entries, 3, "the recovered log");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the last commit's slot was not written")),
        "{:?}",
        report.warnings
    );
    drop(vault);
    let vault = Vault::open(&path, Unlock::Unencrypted, Access::Write).unwrap();
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.log_checkpoint, Some(report.log_entries));
    assert!(
        !report.warnings.iter().any(|w| w.contains("slot")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_crash_mid_append_loses_only_the_torn_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    for i in 0..5 {
        vault
            .log_event("step", serde_json::json!({ "i": i }))
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    vault
        .log_event("step", serde_json::json!({ "i": 5 }))
        .unwrap();
    let after = std::fs::read(&path).unwrap();
    drop(vault);
    let key = key(&path);
    for cut in before.len()..after.len() {
        let mut bytes = before.clone();
        bytes.extend_from_slice(&after[before.len()..cut]);
        std::fs::write(&path, &bytes).unwrap();
        let vault = open(&path, &key, Access::Write).unwrap();
        assert_eq!(vault.log_len(), 6, "cut at {cut}: create + 5 steps survive");
        vault.log_event("after", serde_json::json!({})).unwrap();
        drop(vault);
        let vault = open(&path, &key, Access::Read).unwrap();
        let report = vault.verify(&mut |_, _| {}).unwrap();
        assert!(report.is_ok(), "cut at {cut}: {:?}", report.problems);
        assert_eq!(vault.log_len(), 7);
    }
}

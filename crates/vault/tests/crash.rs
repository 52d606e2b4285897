//! Crash safety: cut the file at every byte of the last record and at a sample of offsets
//! elsewhere; reopen each. Every record committed before the cut is there; nothing panics.

#![cfg(test)]

mod common;

use std::path::Path;

use common::*;
use p3ak_vault::{Access, DocId, VaultError};

struct Fixture {
    _dir: tempfile::TempDir,
    /// File contents up to the commit point after every commit: `states[i]` holds documents
    /// `0..i` (the writer's zeros written ahead left out).
    states: Vec<Vec<u8>>,
    ids: Vec<DocId>,
    key: p3ak_vault::VaultKey,
}

const DOCS: usize = 6;

fn doc_len(i: usize) -> usize {
    150 + i * 37
}

/// One writer session, one commit per document, a snapshot of the file after each.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let snapshot = |vault: &p3ak_vault::Vault| {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(vault.info().unwrap().committed_bytes as usize);
        bytes
    };
    let mut states = vec![snapshot(&vault)];
    let mut ids = Vec::new();
    for i in 0..DOCS {
        ids.push(vault.put(doc(&content(i, doc_len(i)))).unwrap().id);
        states.push(snapshot(&vault));
    }
    drop(vault);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        states[DOCS],
        "a closed vault ends at its last record"
    );
    let key = key(&path);
    Fixture {
        _dir: dir,
        states,
        ids,
        key,
    }
}

fn write(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
}

fn assert_docs(fx: &Fixture, vault: &p3ak_vault::Vault, present: usize, context: &str) {
    for (i, id) in fx.ids.iter().enumerate() {
        if i < present {
            let (_, got) = vault
                .get(id)
                .unwrap_or_else(|e| panic!("{context}: document {i} lost: {e}"));
            assert_eq!(got.expose(), &content(i, doc_len(i))[..], "{context}");
        } else {
            assert!(vault.get(id).is_err(), "{context}: document {i} appeared");
        }
    }
}

#[test]
fn crash_before_commit_at_every_byte_of_the_last_record_loses_only_that_record() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.vault");
    // The header of the state before the last put (its commit slot was never updated), with
    // any prefix of the last put's bytes: exactly what a crash mid-put leaves on disk.
    let before = &fx.states[DOCS - 1];
    let after = &fx.states[DOCS];
    // Every other cut lands in zeros the writer wrote ahead of its records, as most commits
    // do; the others at the end of the file, as a commit that grows it does.
    for (cut, zeros) in (before.len()..=after.len()).flat_map(|cut| [(cut, 0), (cut, 3000)]) {
        let mut bytes = before.clone();
        bytes.extend_from_slice(&after[before.len()..cut]);
        bytes.resize(bytes.len() + zeros, 0);
        write(&path, &bytes);
        let complete = cut == after.len();
        let vault = open(&path, &fx.key, Access::Read).unwrap();
        let context = format!("uncommitted, cut at {cut}, {zeros} zeros after");
        assert_docs(
            &fx,
            &vault,
            if complete { DOCS } else { DOCS - 1 },
            &context,
        );
        let report = vault.open_report();
        let tail = (bytes.len() - before.len()) as u64;
        // Only zeros after the last complete batch: space written ahead, not a torn write.
        let (torn, ahead) = if complete || cut == before.len() {
            (0, zeros as u64)
        } else {
            (tail, 0)
        };
        assert_eq!(report.torn_tail_bytes, torn, "{context}");
        assert_eq!(report.preallocated_bytes, ahead, "{context}");
        assert!(vault.open_report().damage_summary().is_none(), "{context}");
        drop(vault);

        // A writer cuts the torn tail and goes on; the next reopen is clean.
        let vault = open(&path, &fx.key, Access::Write).unwrap();
        vault.put(doc(b"after the crash")).unwrap();
        drop(vault);
        let vault = open(&path, &fx.key, Access::Read).unwrap();
        assert_docs(
            &fx,
            &vault,
            if complete { DOCS } else { DOCS - 1 },
            &context,
        );
        assert_eq!(vault.list().len(), if complete { DOCS + 1 } else { DOCS });
        assert!(vault.verify(&mut |_, _| {}).unwrap().is_ok(), "{context}");
    }
}

#[test]
fn truncating_committed_records_at_every_byte_is_detected_and_keeps_the_rest() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.vault");
    let before = fx.states[DOCS - 1].len();
    let after = &fx.states[DOCS];
    for cut in before..after.len() {
        write(&path, &after[..cut]);
        let context = format!("committed, cut at {cut}");
        let vault = open(&path, &fx.key, Access::Read).unwrap();
        // Everything before the last put is there. The last document may survive whole when
        // only its log entry was cut; then it must be intact.
        for (i, id) in fx.ids.iter().enumerate() {
            match vault.get(id) {
                Ok((_, got)) => assert_eq!(got.expose(), &content(i, doc_len(i))[..], "{context}"),
                Err(e) => assert!(i == DOCS - 1, "{context}: document {i} lost: {e}"),
            }
        }
        assert!(vault.open_report().truncated.is_some(), "{context}");
        assert!(!vault.verify(&mut |_, _| {}).unwrap().is_ok(), "{context}");
        drop(vault);
        // Appending to a vault that lost committed data would hide the loss: refused.
        assert!(matches!(
            open(&path, &fx.key, Access::Write),
            Err(VaultError::Damaged(_))
        ));
    }
}

#[test]
fn cuts_elsewhere_keep_every_record_before_the_cut() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.vault");
    let full = &fx.states[DOCS];
    for cut in (0..full.len()).step_by(61) {
        write(&path, &full[..cut]);
        let context = format!("cut at {cut}");
        match open(&path, &fx.key, Access::Read) {
            Ok(vault) => {
                let intact = fx
                    .states
                    .iter()
                    .filter(|s| s.len() <= cut)
                    .count()
                    .saturating_sub(1);
                for (i, id) in fx.ids.iter().enumerate().take(intact) {
                    let (_, got) = vault
                        .get(id)
                        .unwrap_or_else(|e| panic!("{context}: {i}: {e}"));
                    assert_eq!(got.expose(), &content(i, doc_len(i))[..]);
                }
            }
            Err(e) => {
                assert!(
                    cut < 4096,
                    "{context}: only a cut header may fail to open: {e}"
                );
                let text = e.to_string();
                assert!(
                    text.contains("not a p3ak vault") || text.contains("header damaged"),
                    "{context}: {text}"
                );
            }
        }
    }
}

#[test]
fn rekey_interrupted_at_any_point_leaves_the_old_vault_or_the_new_one() {
    // A rewrite writes `<vault>.p3ak-tmp` and renames it over the vault. Simulate a crash at
    // each stage: a partial temporary file beside the intact old vault must not matter.
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.vault");
    let tmp = dir.path().join("test.vault.p3ak-tmp");
    let full = &fx.states[DOCS];
    for cut in [0, 100, 4096, 5000, full.len() / 2] {
        write(&path, full);
        write(&tmp, &full[..cut]);
        let vault = open(&path, &fx.key, Access::Write).unwrap();
        assert!(!tmp.exists(), "the writer removes a stale temporary file");
        assert_docs(&fx, &vault, DOCS, &format!("tmp cut at {cut}"));
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_writer_writes_space_ahead_that_readers_and_verify_accept_and_closing_gives_back() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    vault.put(doc(&content(0, 300))).unwrap();
    let grown = file_len(&path);
    let info = vault.info().unwrap();
    assert_eq!(info.file_bytes, grown);
    assert!(
        grown > info.committed_bytes && grown >= 64 * 1024,
        "{grown} bytes for {} committed",
        info.committed_bytes
    );
    // Small commits go into the zeros written ahead: the file does not grow.
    let mut ids = Vec::new();
    for i in 1..20 {
        ids.push(vault.put(doc(&content(i, 300))).unwrap().id);
    }
    assert_eq!(file_len(&path), grown, "small commits reuse the space");
    // A batch larger than the write buffer and the space ahead grows the file again.
    let big = content(99, 3 << 20);
    let big_id = vault.put(doc(&big)).unwrap().id;
    assert!(file_len(&path) > vault.info().unwrap().committed_bytes);

    // A reader while the writer is open: the zeros are space ahead, not an interrupted write.
    let key = key(&path);
    let reader = open(&path, &key, Access::Read).unwrap();
    let report = reader.open_report();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(
        report.preallocated_bytes,
        file_len(&path) - vault.info().unwrap().committed_bytes
    );
    let verified = reader.verify(&mut |_, _| {}).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert!(verified.warnings.is_empty(), "{:?}", verified.warnings);
    assert_eq!(reader.get(&big_id).unwrap().1.expose(), &big[..]);
    drop(reader);

    let committed = vault.info().unwrap().committed_bytes;
    drop(vault);
    assert_eq!(file_len(&path), committed, "closing gives the space back");
    let vault = open(&path, &key, Access::Read).unwrap();
    assert_eq!(vault.open_report().preallocated_bytes, 0);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(vault.get(id).unwrap().1.expose(), &content(i + 1, 300)[..]);
    }
}

#[test]
fn a_crash_with_space_written_ahead_loses_nothing_and_the_next_writer_keeps_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(vault.put(doc(&content(i, 500))).unwrap().id);
    }
    // The file as a power loss would leave it: the writer never closed.
    let crashed = dir.path().join("crashed.vault");
    std::fs::copy(&path, &crashed).unwrap();
    let ahead = file_len(&crashed);
    drop(vault);
    let key = key(&path);

    let vault = open(&crashed, &key, Access::Write).unwrap();
    assert_eq!(vault.open_report().torn_tail_bytes, 0);
    assert!(vault.open_report().preallocated_bytes > 0);
    assert_eq!(file_len(&crashed), ahead, "the space ahead is kept");
    ids.push(vault.put(doc(&content(5, 500))).unwrap().id);
    assert_eq!(file_len(&crashed), ahead, "the next commit goes into it");
    drop(vault);

    let vault = open(&crashed, &key, Access::Read).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(vault.get(id).unwrap().1.expose(), &content(i, 500)[..]);
    }
    let verified = vault.verify(&mut |_, _| {}).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
}

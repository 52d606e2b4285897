//! Every way of tampering with a log is detected and names the entry, in the pure core (the
//! vault's tests repeat this on the encrypted file).

#![cfg(test)]

use p3ak_audit::{Chain, Checkpoint, LogError, Signer};
use p3ak_crypto::Key;

const LOG: [u8; 16] = [7; 16];

fn signer() -> Signer {
    Signer::from_seed(&Key::from_bytes(&mut [42; 32]))
}

/// Entries as stored, plus a checkpoint over all of them.
fn log(n: u64) -> (Vec<Vec<u8>>, Checkpoint) {
    let mut tip = Chain::new().tip();
    let entries: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            tip.append(
                1_700_000_000_000 + i as i64,
                "tool.call",
                "agent:mail",
                &serde_json::json!({ "amount": i * 100, "to": "alice" }),
            )
            .unwrap()
        })
        .collect();
    let cp = signer().checkpoint(LOG, &tip, 1);
    (entries, cp)
}

/// Reads entries and checks the checkpoint: the first problem.
fn check(entries: &[Vec<u8>], cp: &Checkpoint) -> Result<(), LogError> {
    let mut chain = Chain::new();
    for bytes in entries {
        chain.push(bytes)?;
    }
    cp.verify_against(&LOG, &chain, &signer().public_key())
}

#[test]
fn an_intact_log_verifies() {
    let (entries, cp) = log(20);
    check(&entries, &cp).unwrap();
}

#[test]
fn editing_one_byte_of_any_entry_is_detected_naming_it() {
    let (entries, cp) = log(12);
    for i in 0..entries.len() {
        for at in (0..entries[i].len()).step_by(5) {
            let mut bad = entries.clone();
            bad[i][at] ^= 0x01;
            let err = check(&bad, &cp).unwrap_err();
            let named = match &err {
                LogError::Entry { index, .. } => *index == i as u64 || *index == i as u64 + 1,
                LogError::Checkpoint { .. } => i == entries.len() - 1,
                LogError::Log(_) => false,
            };
            assert!(named, "edit in entry {i} at {at}: {err}");
        }
    }
}

#[test]
fn deleting_an_entry_is_detected_naming_it() {
    let (entries, cp) = log(10);
    for i in 0..entries.len() - 1 {
        let mut bad = entries.clone();
        bad.remove(i);
        let err = check(&bad, &cp).unwrap_err();
        assert!(
            matches!(err, LogError::Entry { index, .. } if index == i as u64),
            "deleted {i}: {err}"
        );
        assert!(err.to_string().contains("removed, added or moved"), "{err}");
    }
}

#[test]
fn reordering_two_entries_is_detected_naming_the_first() {
    let (entries, cp) = log(10);
    let mut bad = entries.clone();
    bad.swap(3, 6);
    let err = check(&bad, &cp).unwrap_err();
    assert!(matches!(err, LogError::Entry { index: 3, .. }), "{err}");
}

#[test]
fn truncating_the_tail_is_detected_by_the_checkpoint() {
    let (entries, cp) = log(10);
    let err = check(&entries[..7], &cp).unwrap_err();
    assert!(
        err.to_string()
            .contains("covers 10 entries but the log has 7"),
        "{err}"
    );
}

#[test]
fn rewriting_history_consistently_fails_the_signed_root() {
    // Rebuild a whole new chain with one changed entry: every link is valid, the root is not.
    let (_, cp) = log(10);
    let mut tip = Chain::new().tip();
    let forged: Vec<Vec<u8>> = (0..10u64)
        .map(|i| {
            let to = if i == 4 { "mallory" } else { "alice" };
            tip.append(
                1_700_000_000_000 + i as i64,
                "tool.call",
                "agent:mail",
                &serde_json::json!({ "amount": i * 100, "to": to }),
            )
            .unwrap()
        })
        .collect();
    let err = check(&forged, &cp).unwrap_err();
    assert!(err.to_string().contains("root differs"), "{err}");
}

#[test]
fn an_older_checkpoint_still_verifies_but_a_forged_one_does_not() {
    let (entries, _) = log(10);
    let mut tip = Chain::new().tip();
    for e in &entries[..6] {
        tip.append_bytes(e);
    }
    let older = signer().checkpoint(LOG, &tip, 1);
    // An older checkpoint is a true statement about a prefix; detecting that it replaced a
    // newer one is the job of whoever keeps the newer one (the vault header, the kernel's
    // checkpoint file), tested there.
    check(&entries, &older).unwrap();
    let mut forged = older;
    forged.size = 10;
    assert!(
        check(&entries, &forged)
            .unwrap_err()
            .to_string()
            .contains("signature")
    );
}

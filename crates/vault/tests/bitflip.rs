//! Random single-bit flips anywhere in the file: `verify` reports corruption, nothing panics,
//! and every document the flip did not touch is still readable.

#![cfg(test)]

mod common;

use common::*;
use p3ak_vault::Access;

#[test]
fn invariant_i9_single_bit_flips_are_reported_and_spare_undamaged_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let lens = [300, 5000, 1_200_000, 40, 2000];
    let mut ids = Vec::new();
    let mut ends = vec![vault.info().unwrap().committed_bytes];
    for (i, len) in lens.iter().enumerate() {
        ids.push(vault.put(doc(&content(i, *len))).unwrap().id);
        ends.push(vault.info().unwrap().committed_bytes);
    }
    drop(vault);
    let key = key(&path);
    let original = std::fs::read(&path).unwrap();
    let expected: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, l)| content(i, *l))
        .collect();
    let flipped = dir.path().join("flipped.vault");

    // Every byte of the header region at stride, plus random positions over the records.
    let mut offsets: Vec<usize> = (0..4096).step_by(11).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..250 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        offsets.push(4096 + (x as usize) % (original.len() - 4096));
    }
    // The small documents' records, densely.
    offsets.extend((ends[3] as usize..ends[5] as usize).step_by(5));

    let mut opened = 0;
    for (n, &offset) in offsets.iter().enumerate() {
        let bit = (n % 8) as u8;
        let mut bytes = original.clone();
        bytes[offset] ^= 1 << bit;
        let _ = std::fs::remove_file(&flipped);
        std::fs::write(&flipped, &bytes).unwrap();
        let context = format!("flip at byte {offset} bit {bit}");
        let vault = match open(&flipped, &key, Access::Read) {
            Ok(vault) => vault,
            Err(e) => {
                assert!(
                    offset < 4096,
                    "{context}: records damage must not stop opening: {e}"
                );
                continue;
            }
        };
        opened += 1;
        let report = vault.verify(&mut |_, _| {}).unwrap();
        assert!(!report.is_ok(), "{context}: verify found nothing");
        for (i, id) in ids.iter().enumerate() {
            let touched = (ends[i]..ends[i + 1]).contains(&(offset as u64));
            if touched {
                continue;
            }
            let (_, got) = vault
                .get(id)
                .unwrap_or_else(|e| panic!("{context}: undamaged document {i} unreadable: {e}"));
            assert_eq!(got.expose(), &expected[i][..], "{context}");
        }
    }
    assert!(
        opened > offsets.len() / 2,
        "most flips leave the vault openable"
    );
}

//! Record decoding on arbitrary bytes. The harness builds an unencrypted vault (whose tags are
//! plain SHA-256, so the fuzzer can get past them) whose committed region holds either the raw
//! fuzz input or records built from it with valid tags, then opens, lists, reads and verifies
//! it. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_vault::format::{
    self, COMMIT_SLOT_BODY_LEN, COMMIT_SLOT_OFFSETS, CommitSlot, Encryption, HEADER_LEN, Header,
    Prefix, RecordHeader,
};
use p3ak_vault::{Access, Unlock, Vault};

fn plain_record(vault_id: &[u8; 16], offset: u64, index: u64, plain: &[u8]) -> Vec<u8> {
    let header = RecordHeader {
        body_len: (plain.len() + 16) as u32,
        index,
        counter: index,
    };
    let aad = format::record_aad(vault_id, offset, &header);
    let tag = p3ak_crypto::sha256(&[b"p3ak vault v1 plain record", &aad, plain]);
    let mut out = header.encode().to_vec();
    out.extend_from_slice(plain);
    out.extend_from_slice(&tag[..16]);
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = p3ak_vault::parse_record_header(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let prefix = Prefix {
        version: format::FORMAT_VERSION,
        encryption: Encryption::None,
        vault_id: [7; 16],
        created_unix: 0,
    };
    let mut file = Header::encode(&prefix, &[]);
    let mut count = 0u64;
    if mode % 2 == 0 {
        file.extend_from_slice(rest);
        count = u64::from(mode);
    } else {
        // Each piece: [len u8][plaintext …] where plaintext starts with the record kind.
        let mut input = rest;
        while let Some((&len, tail)) = input.split_first() {
            let take = usize::from(len).min(tail.len());
            let (plain, next) = tail.split_at(take);
            let record = plain_record(&prefix.vault_id, file.len() as u64, count, plain);
            file.extend_from_slice(&record);
            count += 1;
            input = next;
        }
    }
    let slot = CommitSlot {
        generation: 1,
        committed_end: file.len() as u64,
        record_count: count,
        nonce_reserved: 1 << 32,
        time_unix: 0,
        checkpoint: None,
    };
    let bound = file[..format::KEY_SLOTS_END].to_vec();
    let body = slot.encode_body();
    let mac = p3ak_crypto::sha256(&[b"p3ak vault v1 commit slot", &bound, &body]);
    let at = COMMIT_SLOT_OFFSETS[0];
    file[at..at + COMMIT_SLOT_BODY_LEN].copy_from_slice(&body);
    file[at + COMMIT_SLOT_BODY_LEN..at + COMMIT_SLOT_BODY_LEN + 32].copy_from_slice(&mac);
    assert!(file.len() >= HEADER_LEN);

    let dir = std::env::temp_dir().join(format!("p3ak-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("fuzz.vault");
    std::fs::write(&path, &file).expect("write");
    for access in [Access::Read, Access::Repair, Access::Write] {
        if let Ok(vault) = Vault::open(&path, Unlock::Unencrypted, access) {
            for doc in vault.list() {
                let _ = vault.get(&doc.id);
            }
            let _ = vault.verify(&mut |_, _| {});
        }
    }
});

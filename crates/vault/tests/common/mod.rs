#![allow(dead_code)]

use std::path::{Path, PathBuf};

use p3ak_vault::{Access, KdfParams, NewDocument, Passphrase, Protection, Unlock, Vault, VaultKey};

pub const PASS: &str = "correct horse battery staple";

/// The lowest parameters the vault accepts, to keep tests quick; production uses RFC 9106's.
pub const TEST_KDF: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    iterations: 1,
    parallelism: 1,
};

pub fn pass() -> Passphrase {
    Passphrase::new(PASS.into())
}

pub fn create(dir: &Path) -> (PathBuf, Vault) {
    let path = dir.join("test.vault");
    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &pass(),
            kdf: TEST_KDF,
        },
    )
    .unwrap();
    (path, vault)
}

pub fn key(path: &Path) -> VaultKey {
    VaultKey::derive(path, &pass()).unwrap()
}

pub fn open(path: &Path, key: &VaultKey, access: Access) -> p3ak_vault::Result<Vault> {
    Vault::open(path, Unlock::Key(key), access)
}

/// Distinct, recognisable content for document `i`.
pub fn content(i: usize, len: usize) -> Vec<u8> {
    let mut out = format!("document {i}: ").into_bytes();
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(len.max(12));
    out
}

pub fn doc(content: &[u8]) -> NewDocument<'_> {
    NewDocument::new(content)
}

use ring::{digest, hmac};

use crate::Key;

/// HMAC-SHA256 output length.
pub const MAC_LEN: usize = 32;

/// An HMAC-SHA256 key. Verification is constant-time.
pub struct MacKey(hmac::Key);

impl MacKey {
    pub fn new(key: &Key) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.expose()))
    }

    /// HMAC over the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check of `tag` against the HMAC of `parts`.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        crate::constant_time_eq(&self.sign(parts), tag)
    }
}

/// SHA-256 over the concatenation of `parts` (integrity only, no key).
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 1's message under a 32-byte key; the expected tag was computed
    /// independently with Python's `hmac` module.
    #[test]
    fn hmac_sign_and_verify() {
        let key = MacKey::new(&Key::from_bytes(&mut [0x0b; 32]));
        let tag = key.sign(&[b"Hi ", b"There"]);
        assert_eq!(tag, key.sign(&[b"Hi There"]));
        assert!(key.verify(&[b"Hi There"], &tag));
        assert!(!key.verify(&[b"Hi there"], &tag));
        assert!(!key.verify(&[b"Hi There"], &tag[..31]));
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn sha256_of_abc() {
        let hex: String = sha256(&[b"a", b"bc"])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

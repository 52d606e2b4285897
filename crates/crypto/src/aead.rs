use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{CryptoError, Key};

/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM authentication tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An AES-256-GCM key ready for use.
///
/// The caller supplies the nonce; every caller in P3AK documents why its nonces never repeat
/// under one key (see `docs/vault-format.md`). `ring` keeps its own expanded key schedule, which
/// it does not zeroize; the raw key bytes we hold are zeroized.
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    pub fn new(key: &Key) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::Length {
                what: "aes-256-gcm key",
                expected: 32,
                actual: key.expose().len(),
            })?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// Encrypts `buf` in place and appends the 16-byte tag.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Decrypts `buf` (ciphertext followed by tag) in place and truncates the tag away.
    /// On failure `buf` holds no plaintext (ring only releases it after the tag checks).
    pub fn open_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let plain_len = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AeadKey {
        AeadKey::new(&Key::from_bytes(&mut [byte; 32])).unwrap()
    }

    #[test]
    fn round_trip_and_every_tamper_is_caught() {
        let k = key(1);
        let mut buf = b"attack at dawn".to_vec();
        k.seal_in_place([9; 12], b"ad", &mut buf).unwrap();
        assert_eq!(buf.len(), 14 + TAG_LEN);

        let mut good = buf.clone();
        k.open_in_place([9; 12], b"ad", &mut good).unwrap();
        assert_eq!(good, b"attack at dawn");

        assert!(k.open_in_place([8; 12], b"ad", &mut buf.clone()).is_err());
        assert!(k.open_in_place([9; 12], b"AD", &mut buf.clone()).is_err());
        assert!(
            key(2)
                .open_in_place([9; 12], b"ad", &mut buf.clone())
                .is_err()
        );
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(k.open_in_place([9; 12], b"ad", &mut bad).is_err());
        }
    }

    /// NIST GCM test case 14 (AES-256, zero key, zero IV, one zero block).
    #[test]
    fn matches_nist_gcm_test_case_14() {
        let k = AeadKey::new(&Key::from_bytes(&mut [0u8; 32])).unwrap();
        let mut buf = vec![0u8; 16];
        k.seal_in_place([0; 12], b"", &mut buf).unwrap();
        assert_eq!(
            hex(&buf),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

//! Cryptographic building blocks for P3AK.
//!
//! Everything secret lives in a type that zeroizes its bytes on drop and implements neither
//! `Debug` nor `Clone`, so a secret cannot be printed by accident or silently duplicated.
//! AES-256-GCM, HKDF and HMAC come from `ring` (fast, constant-time, audited); Argon2id comes
//! from RustCrypto's `argon2`.
//!
//! Two pieces of plumbing live here too, as the lowest crate every stateful crate depends on:
//! the wall clock ([`clock`]) and the private atomic file write ([`write_private`]).
#![forbid(unsafe_code)]

mod aead;
pub mod clock;
mod error;
mod file;
mod kdf;
mod mac;
mod secret;

pub use aead::{AeadKey, NONCE_LEN, TAG_LEN};
pub use error::CryptoError;
pub use file::{WriteError, WriteStep, write_private};
pub use kdf::{KdfParams, derive_key_from_passphrase, derive_subkey};
pub use mac::{MAC_LEN, MacKey, sha256};
pub use secret::{KEY_LEN, Key, Passphrase, SecretBytes};

/// Fills `out` with bytes from the operating system's CSPRNG.
pub fn fill_random(out: &mut [u8]) -> Result<(), CryptoError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| CryptoError::Random)
}

/// Returns `N` random bytes from the operating system's CSPRNG.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// Compares two byte strings in constant time (for MACs and tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

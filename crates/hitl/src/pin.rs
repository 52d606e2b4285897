//! The operator's PIN: the level 3 factor, and the second half of level 5.
//!
//! A [`Pin`] holds what was typed in a zeroizing buffer with neither `Debug` nor `Clone`, so it
//! cannot be logged or copied by accident (invariant I4). Only its Argon2id hash is kept, sealed
//! inside the factor store: even with the store and its key, an attacker pays a memory-hard hash
//! per guess, and the daemon limits guesses on top (invariant I8).
//! The comparison of hashes is constant-time.

use argon2::{Algorithm, Argon2, Params, Version};
use p3ak_crypto::KdfParams;
use zeroize::{Zeroize, Zeroizing};

use crate::{FactorError, HitlError};

/// The fewest characters a PIN may have.
pub const MIN_PIN_CHARS: usize = 6;
/// The most characters a PIN may have (more is a passphrase pasted by mistake, or an attack
/// on the hash's cost).
pub const MAX_PIN_CHARS: usize = 128;

const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// A PIN as typed. Zeroized on drop; no `Debug`, no `Clone`.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Checks a PIN as typed or read from a pipe: one trailing newline (`\n` or `\r\n`) is
    /// dropped; then 6..=128 characters, not all the same one. The text is zeroized whether
    /// or not it is accepted, and an error never repeats it.
    pub fn new(text: String) -> Result<Self, HitlError> {
        let mut text = Zeroizing::new(text);
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        let count = text.chars().count();
        if count < MIN_PIN_CHARS {
            return Err(FactorError::PinTooShort {
                min: MIN_PIN_CHARS,
                count,
            }
            .into());
        }
        if count > MAX_PIN_CHARS {
            return Err(FactorError::PinTooLong {
                max: MAX_PIN_CHARS,
                count,
            }
            .into());
        }
        let mut chars = text.chars();
        let first = chars.next();
        if chars.all(|c| Some(c) == first) {
            return Err(FactorError::PinRepeated.into());
        }
        Ok(Self(text))
    }

    /// The PIN's bytes, for the hash.
    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Argon2id parameters as stored beside a hash (so the cost can be raised later without
/// losing the PIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredParams {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl From<KdfParams> for StoredParams {
    fn from(p: KdfParams) -> Self {
        Self {
            memory_kib: p.memory_kib,
            iterations: p.iterations,
            parallelism: p.parallelism,
        }
    }
}

impl From<StoredParams> for KdfParams {
    fn from(p: StoredParams) -> Self {
        Self {
            memory_kib: p.memory_kib,
            iterations: p.iterations,
            parallelism: p.parallelism,
        }
    }
}

/// A PIN's Argon2id hash with its salt and cost. Lives only inside the sealed factor store.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinRecord {
    salt: [u8; SALT_LEN],
    params: StoredParams,
    hash: [u8; HASH_LEN],
}

impl Drop for PinRecord {
    fn drop(&mut self) {
        self.hash.zeroize();
    }
}

impl PinRecord {
    /// Hashes `pin` under a fresh random salt. `params` must pass [`KdfParams::validate`]
    /// (at least [`KdfParams::MIN_MEMORY_KIB`]).
    pub(crate) fn create(pin: &Pin, params: KdfParams) -> Result<Self, HitlError> {
        let salt = p3ak_crypto::random_array::<SALT_LEN>()?;
        let hash = hash(pin, &salt, params)?;
        Ok(Self {
            salt,
            params: params.into(),
            hash: *hash,
        })
    }

    /// True when `pin` hashes to the stored hash (compared in constant time).
    pub(crate) fn verify(&self, pin: &Pin) -> Result<bool, HitlError> {
        let candidate = hash(pin, &self.salt, self.params.into())?;
        Ok(p3ak_crypto::constant_time_eq(
            candidate.as_slice(),
            &self.hash,
        ))
    }

    /// The cost this hash was made with.
    pub(crate) fn params(&self) -> KdfParams {
        self.params.into()
    }
}

fn hash(
    pin: &Pin,
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; HASH_LEN]>, HitlError> {
    params.validate()?;
    let argon_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(HASH_LEN),
    )
    .map_err(|e| p3ak_crypto::CryptoError::KdfParams(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; HASH_LEN]);
    argon
        .hash_password_into(pin.expose(), salt, out.as_mut())
        .map_err(|e| p3ak_crypto::CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        iterations: 1,
        parallelism: 1,
    };

    fn pin(text: &str) -> Result<Pin, HitlError> {
        Pin::new(text.to_owned())
    }

    #[test]
    fn pins_are_checked_for_length_and_repetition() -> Result<(), HitlError> {
        assert!(
            matches!(pin("12345"), Err(e @ HitlError::Factor(FactorError::PinTooShort { .. })) if e.to_string().contains("at least 6"))
        );
        assert!(pin("123456").is_ok());
        assert!(
            matches!(pin("111111"), Err(e @ HitlError::Factor(FactorError::PinRepeated)) if e.to_string().contains("repeated"))
        );
        assert!(matches!(
            pin("ääääää"),
            Err(HitlError::Factor(FactorError::PinRepeated))
        ));
        assert!(pin(&"ab".repeat(64)).is_ok());
        assert!(
            matches!(pin(&"ab".repeat(65)), Err(e @ HitlError::Factor(FactorError::PinTooLong { .. })) if e.to_string().contains("at most 128"))
        );
        // characters, not bytes: six two-byte letters are six characters
        assert!(pin("äöüÄÖÜ").is_ok());
        assert!(pin("äöüÄÖ").is_err());
        Ok(())
    }

    #[test]
    fn one_trailing_newline_is_dropped() -> Result<(), HitlError> {
        assert_eq!(pin("246810\n")?.expose(), b"246810");
        assert_eq!(pin("246810\r\n")?.expose(), b"246810");
        assert_eq!(pin("246810\n\n")?.expose(), b"246810\n");
        // the newline does not count towards the length
        assert!(pin("12345\n").is_err());
        Ok(())
    }

    #[test]
    fn errors_never_repeat_the_pin() {
        for bad in ["98765", "999999999", &"x7".repeat(80)] {
            if let Err(e) = pin(bad) {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn a_hash_verifies_its_pin_only() -> Result<(), HitlError> {
        let record = PinRecord::create(&pin("correct-pin")?, CHEAP)?;
        assert!(record.verify(&pin("correct-pin")?)?);
        assert!(!record.verify(&pin("correct-pim")?)?);
        assert_eq!(record.params(), CHEAP);
        // a fresh salt each time: the same PIN hashes differently
        let again = PinRecord::create(&pin("correct-pin")?, CHEAP)?;
        assert_ne!(record.salt, again.salt);
        assert_ne!(record.hash, again.hash);
        Ok(())
    }

    #[test]
    fn a_cost_below_the_floor_is_refused() -> Result<(), HitlError> {
        let weak = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB - 1,
            ..CHEAP
        };
        assert!(matches!(
            PinRecord::create(&pin("correct-pin")?, weak),
            Err(HitlError::Crypto(p3ak_crypto::CryptoError::KdfParams(_)))
        ));
        Ok(())
    }
}

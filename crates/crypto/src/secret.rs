use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// Length of every symmetric key in P3AK, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl Key {
    /// Wraps key bytes; the caller's array is zeroized.
    pub fn from_bytes(bytes: &mut [u8; KEY_LEN]) -> Self {
        let key = Self(Zeroizing::new(*bytes));
        bytes.zeroize();
        key
    }

    /// Copies key bytes out of a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::Length {
            what: "key",
            expected: KEY_LEN,
            actual: bytes.len(),
        })?;
        Ok(Self::from_bytes(&mut array))
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        crate::fill_random(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    /// The raw key bytes, for handing to a cipher.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A passphrase typed by the operator. Zeroized on drop; no `Debug`, no `Clone`.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Takes ownership of the string; its buffer is zeroized when the passphrase drops.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// Strips one trailing newline (`\n` or `\r\n`), as read from a file or a pipe.
    pub fn trim_line_ending(mut self) -> Self {
        if self.0.ends_with('\n') {
            self.0.pop();
            if self.0.ends_with('\r') {
                self.0.pop();
            }
        }
        self
    }

    /// The passphrase bytes, for the key-derivation function.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True when the passphrase is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in characters, for strength checks.
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        crate::constant_time_eq(self.expose(), other.expose())
    }
}

/// A plaintext buffer that may hold secret content. Zeroized on drop; no `Debug`, no `Clone`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of the buffer; it is zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// An empty buffer with room for `capacity` bytes (no reallocation, so no stray copies).
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access for in-place decryption.
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_trims_exactly_one_line_ending() {
        assert_eq!(
            Passphrase::new("abc\r\n".into())
                .trim_line_ending()
                .expose(),
            b"abc"
        );
        assert_eq!(
            Passphrase::new("abc\n\n".into())
                .trim_line_ending()
                .expose(),
            b"abc\n"
        );
        assert_eq!(
            Passphrase::new("abc".into()).trim_line_ending().expose(),
            b"abc"
        );
    }

    #[test]
    fn key_from_bytes_wipes_the_source() {
        let mut raw = [7u8; KEY_LEN];
        let key = Key::from_bytes(&mut raw);
        assert_eq!(raw, [0u8; KEY_LEN]);
        assert_eq!(key.expose(), &[7u8; KEY_LEN]);
    }

    #[test]
    fn key_from_slice_rejects_wrong_length() {
        assert!(matches!(
            Key::from_slice(&[0u8; 31]),
            Err(CryptoError::Length {
                expected: 32,
                actual: 31,
                ..
            })
        ));
    }
}

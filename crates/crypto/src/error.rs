use thiserror::Error;

/// What can go wrong in a cryptographic operation. Messages never carry secret material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: wrong key, or the ciphertext, nonce or associated data changed.
    #[error("authentication failed")]
    Authentication,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Key-derivation parameters outside the accepted range.
    #[error("invalid key-derivation parameters: {0}")]
    KdfParams(String),
    /// The key-derivation function itself failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// A buffer had the wrong length for the operation.
    #[error("invalid length for {what}: expected {expected}, got {actual}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
}

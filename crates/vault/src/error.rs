use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong with a vault. Messages are one line, lowercase, and never carry
/// secret material or document content.
#[derive(Debug, Error)]
pub enum VaultError {
    #[error("`{}` is not a p3ak vault", path.display())]
    NotAVault { path: PathBuf },
    #[error("`{}` uses vault format version {version}; this build reads version 1", path.display())]
    UnsupportedVersion { path: PathBuf, version: u16 },
    #[error("wrong passphrase or damaged header")]
    WrongPassphrase,
    #[error("vault header damaged: {0}")]
    HeaderDamaged(String),
    #[error("the vault is encrypted: a passphrase is needed")]
    PassphraseRequired,
    /// A passphrase or key was given for a vault whose header says it is not encrypted: a
    /// plaintext vault put where an encrypted one was (a downgrade). Such a vault opens only
    /// with [`crate::Unlock::Unencrypted`].
    #[error(
        "`{}` is not encrypted: its header says plaintext, but a passphrase or key was given for it",
        path.display()
    )]
    NotEncrypted { path: PathBuf },
    #[error("vault is locked by pid {pid}")]
    Locked { pid: String },
    #[error("`{}` already exists", path.display())]
    Exists { path: PathBuf },
    #[error("no document `{0}`")]
    NotFound(String),
    #[error("document id prefix `{0}` matches more than one document")]
    AmbiguousId(String),
    #[error("invalid document id `{0}`: expected 4 to 32 hexadecimal digits")]
    InvalidId(String),
    #[error("document `{id}` is damaged: {reason}")]
    DocumentDamaged { id: String, reason: String },
    #[error(
        "vault is damaged ({0}); run `p3ak vault verify` to see where, then `p3ak vault compact` to rebuild it from what is intact"
    )]
    Damaged(String),
    #[error("vault canary: {0}")]
    Canary(String),
    #[error("object space `{0}` is reserved for the vault itself")]
    ReservedSpace(String),
    #[error("audit log: {0}")]
    Log(String),
    #[error("the vault was opened read-only")]
    ReadOnly,
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error(
        "invalid tag `{0}`: keys must be 1 to 128 characters without `=` or control characters"
    )]
    InvalidTag(String),
    #[error("invalid object name `{0}`: 1 to 512 bytes without control characters")]
    InvalidObjectName(String),
    #[error("`{}`: {reason}", path.display())]
    Transfer { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
    /// Another error, with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<VaultError>,
    },
}

impl VaultError {
    /// This error, saying what was being done (`while opening the vault`, ...).
    #[must_use]
    pub fn context(self, context: impl Into<String>) -> Self {
        Self::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The error under any context added with [`VaultError::context`].
    #[must_use]
    pub fn root(&self) -> &Self {
        match self {
            Self::Context { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

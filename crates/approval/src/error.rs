use std::path::PathBuf;

/// What can go wrong staging, sealing or moving an approval request.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// A request (or spool name) that cannot be admitted.
    #[error("invalid staged request `{id}`: {reason}")]
    InvalidRequest {
        /// The id (or file name).
        id: String,
        /// Why.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A spool file that does not open.
    #[error("`{path}`: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A spool file that opens but holds no request.
    #[error("`{path}`: not a request: {source}")]
    NotARequest {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A spool file that is not a regular file of sane size.
    #[error("`{path}`: not a regular file of at most {max} bytes", path = .0.display(), max = crate::spool::MAX_STAGED)]
    NotAFile(PathBuf),
    /// A request to stage that is larger than the daemon reads.
    #[error("a staged request is at most {max} bytes", max = crate::spool::MAX_STAGED)]
    TooLarge,
    /// A request that cannot be written as JSON.
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The spool key handed over is not hex.
    #[error("the spool key is not hex")]
    KeyNotHex(#[source] hex::FromHexError),
    /// A spool path without a file name.
    #[error("`{}` has no file name", .0.display())]
    NoFileName(PathBuf),
    /// The destination of a move exists already.
    #[error("`{}` already exists", .0.display())]
    Exists(PathBuf),
    /// A sealed chat-approval message that cannot be opened.
    #[error("sealed approval message: {0}")]
    Sealed(&'static str),
    /// Crypto failed.
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
}

impl ApprovalError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

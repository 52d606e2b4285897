use std::path::PathBuf;

/// What can go wrong in the loop.
#[derive(Debug, thiserror::Error)]
pub enum HitlError {
    /// No such item waits (never staged, already answered, or timed out).
    #[error("no pending approval `{0}`")]
    Unknown(String),
    /// The approval names an action other than the one waiting under that id.
    #[error(
        "approval for `{id}` does not match the waiting action (it changed, or the approval is for another one)"
    )]
    Mismatch {
        /// The id.
        id: String,
    },
    /// The factor given is weaker than the level needs.
    #[error("`{id}` needs level {level}: {needed}; {given} is level {strength}")]
    TooWeak {
        /// The id.
        id: String,
        /// The level asked for.
        level: u8,
        /// What the level needs, in words.
        needed: &'static str,
        /// What was given.
        given: crate::level::Factor,
        /// Its strength.
        strength: u8,
    },
    /// The item's timeout ran out; it was denied.
    #[error("`{0}` timed out and was denied")]
    Expired(String),
    /// Already approved: an approval is used once.
    #[error("`{0}` is already approved; an approval cannot be given again")]
    AlreadyApproved(String),
    /// Pull-back after the window, or for an action that has none.
    #[error("`{id}` cannot be pulled back: {reason}")]
    NoPullback {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A staged request that cannot be admitted.
    #[error("invalid staged request `{id}`: {reason}")]
    InvalidRequest {
        /// The id (or file name).
        id: String,
        /// Why.
        reason: String,
    },
    /// A factor was wrong, missing or locked.
    #[error("{0}")]
    Factor(String),
    /// Too many wrong factors: locked for a while.
    #[error("too many wrong tries: locked for {seconds} s more")]
    LockedOut {
        /// Seconds left.
        seconds: u64,
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
    /// A spool file or state file that does not open.
    #[error("`{path}`: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A process that is not one of the operators asked the daemon something.
    #[error("uid {uid} is not an operator of this approval daemon")]
    NotOperator {
        /// The peer's uid.
        uid: u32,
    },
    /// Nothing answers on the daemon's socket.
    #[error("no approval daemon is running (nothing answers on `{}`): start the kernel with `p3ak up`", socket.display())]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
    },
    /// The console or daemon could not do its work.
    #[error("{0}")]
    Daemon(String),
    /// A frame on the kernel's channel or the operator socket that is not what this side
    /// expects, or that could not be sent.
    #[error("{context}: {source}")]
    Frame {
        /// What was being read or written.
        context: &'static str,
        /// Why.
        #[source]
        source: p3ak_proto::ProtoError,
    },
    /// Staging, sealing or moving a request failed.
    #[error(transparent)]
    Approval(#[from] p3ak_approval::ApprovalError),
    /// Crypto failed.
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
}

impl HitlError {
    pub(crate) fn frame(context: &'static str) -> impl FnOnce(p3ak_proto::ProtoError) -> Self {
        move |source| Self::Frame { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

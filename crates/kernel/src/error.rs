//! The kernel's errors.

use std::path::PathBuf;

/// What can stop the kernel or one of its commands.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `config.toml` or an agent file is invalid.
    #[error("`{}`: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the location where known.
        message: String,
    },
    /// `policy.yaml` is invalid.
    #[error("{0}")]
    Policy(#[from] p3ak_policy::PolicyError),
    /// The kernel's vault or the memory vault failed.
    #[error("{0}")]
    Vault(#[from] p3ak_vault::VaultError),
    /// The memory index failed.
    #[error("{0}")]
    Memory(#[from] p3ak_memory::MemoryError),
    /// The home directory is not set up.
    #[error("{0}")]
    Home(String),
    /// Another kernel runs on this home.
    #[error("a kernel is already running on `{}` (pid {pid})", home.display())]
    AlreadyRunning {
        /// The home.
        home: PathBuf,
        /// Its pid, from the pid file.
        pid: String,
    },
    /// No kernel answers on the control socket.
    #[error("no kernel is running on `{}`: start one with `p3ak up`", socket.display())]
    NotRunning {
        /// The control socket tried.
        socket: PathBuf,
    },
    /// The control connection failed.
    #[error("control connection: {0}")]
    Control(String),
    /// A secret operation failed.
    #[error("{0}")]
    Secret(String),
    /// An operator command named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Randomness or a key failed.
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
    /// The approval daemon failed or is not running.
    #[error("approval daemon: {0}")]
    Hitl(String),
    /// A background task of the kernel panicked or was cancelled.
    #[error("a kernel task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// Staging, sealing or reading back an approval request failed.
    #[error("approval daemon: {0}")]
    Approval(#[from] p3ak_approval::ApprovalError),
}

impl KernelError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

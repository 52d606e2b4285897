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
    /// A message named an agent that has no file in `agents/`.
    #[error("no agent `{0}`")]
    UnknownAgent(String),
    /// A conversation id the kernel will not store.
    #[error("conversation `{0}`: use letters, digits, `_` and `-`")]
    BadConversation(String),
    /// A turn ran past `kernel.turn_timeout`.
    #[error("the turn took longer than {}", humantime::format_duration(*.0))]
    TurnTimeout(std::time::Duration),
    /// The agent's provider cannot answer.
    #[error("{0}")]
    Provider(#[from] ProviderUnavailable),
    /// The model failed. The text is the provider's error, scrubbed of secrets, so the error
    /// itself is not kept (it may hold a credential).
    #[error("the model failed: {0}")]
    ModelFailed(String),
    /// The scheduled rekey did not happen.
    #[error("{0}")]
    Rekey(#[from] RekeyRefused),
    /// The audit log's writer thread is gone: nothing can be recorded, so nothing runs.
    #[error("the audit log's writer stopped: nothing can be recorded")]
    AuditWriterGone,
    /// A background task of the kernel panicked or was cancelled.
    #[error("a kernel task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// Staging, sealing or reading back an approval request failed.
    #[error("approval daemon: {0}")]
    Approval(#[from] p3ak_approval::ApprovalError),
}

/// Why an agent's provider cannot answer (each says what to change).
#[derive(Debug, thiserror::Error)]
pub enum ProviderUnavailable {
    /// The agent file names no provider.
    #[error(
        "agent `{0}` has no provider: set `provider` in agents/{0}.toml to a provider plugin \
         configured in config.toml"
    )]
    Unset(String),
    /// The plugin named is a tool or a connector.
    #[error("plugin `{0}` is not a provider")]
    WrongKind(String),
    /// Configured, but not running now.
    #[error("provider `{0}` is not running (see `p3ak status`)")]
    Stopped(String),
    /// Not in `config.toml`.
    #[error("provider `{0}` is not configured: add [plugins.{0}] to config.toml")]
    Unconfigured(String),
}

/// Why the scheduled rekey of the memory vault did not run.
#[derive(Debug, thiserror::Error)]
pub enum RekeyRefused {
    /// There is no memory vault.
    #[error("there is no memory vault at `{}` to rekey", .0.display())]
    NoVault(PathBuf),
    /// The kernel holds no way to rekey it (no passphrase, no warden).
    #[error("the memory vault was created after the kernel started: restart it to rekey")]
    CreatedAfterStart,
    /// A human (or the daemon) said no.
    #[error("the rekey `{id}` was not approved ({ending})")]
    NotApproved {
        /// The escalation.
        id: String,
        /// How it ended.
        ending: &'static str,
    },
    /// Nobody answered in time.
    #[error("the rekey `{0}` was not approved in time")]
    NoAnswer(String),
    /// A plugin holding the vault open did not stop.
    #[error("the rekey `{id}` did not run: plugin `{plugin}` did not stop")]
    PluginDidNotStop {
        /// The escalation.
        id: String,
        /// The plugin.
        plugin: String,
    },
}

impl KernelError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

//! The kernel's errors.
//!
//! Each keeps what caused it as its `source`. Messages are one line and show the cause too,
//! because they travel as text (to the control client, the audit log); the CLI does not repeat
//! a cause the message already ends with.

use std::path::PathBuf;

use p3ak_proto::ProtoError;

use crate::config::ConsoleAddrError;
use crate::launch::ExitInfo;
use crate::launch::plan::PlanError;
use crate::warden::channel::ChannelError;

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
    /// A remembered approval (grant) could not be read, stored or revoked.
    #[error("{0}")]
    Grant(#[from] crate::grants::GrantError),
    /// An API token could not be read, made or revoked.
    #[error("{0}")]
    Token(#[from] crate::tokens::TokenError),
    /// The kernel's vault or the memory vault failed.
    #[error("{0}")]
    Vault(#[from] p3ak_vault::VaultError),
    /// The memory index failed.
    #[error("{0}")]
    Memory(#[from] p3ak_memory::MemoryError),
    /// The home directory is not set up.
    #[error("`{}` is not set up: run `p3ak init`", home.display())]
    NotInitialised {
        /// The home.
        home: PathBuf,
    },
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
    /// A blocking task did not finish (it panicked or was cancelled).
    #[error("{what} failed: {source}")]
    Task {
        /// Which task (`startup task`, `key derivation`).
        what: &'static str,
        /// Why.
        source: tokio::task::JoinError,
    },
    /// The control connection failed.
    #[error("control connection: {0}")]
    Connection(#[from] ControlError),
    /// The warden, or the kernel's start under it, failed.
    #[error("{0}")]
    Warden(#[from] WardenError),
    /// A call to the warden (a memory rekey, the ready notice) failed.
    // Shown under `approval daemon:` as before this error had its own type.
    #[error("approval daemon: {0}")]
    WardenCall(#[from] WardenCallError),
    /// A secret could not be stored or loaded.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// A stored conversation does not decode.
    #[error("session `{conversation}` of agent `{agent}` is unreadable: {source}")]
    SessionUnreadable {
        /// The agent.
        agent: String,
        /// The conversation id.
        conversation: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A report could not be encoded as JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// A conversation could not be encoded for storage.
    #[error("{0}")]
    SessionEncode(#[source] serde_json::Error),
    /// Randomness or a key failed.
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
    /// The approval daemon failed or is not running.
    #[error("approval daemon: {0}")]
    Daemon(#[from] DaemonError),
    /// A message named an agent that has no file in `agents/`.
    #[error("no agent `{0}`")]
    UnknownAgent(String),
    /// A CREST request that cannot be done.
    #[error("{0}")]
    Crest(#[from] crate::crest::CrestError),
    /// A board meeting that cannot be held as asked.
    #[error("board meeting: {0}")]
    Board(String),
    /// A conversation id the kernel will not store.
    #[error("conversation `{0}`: use letters, digits, `_`, `.`, `:` and `-` (at most 128)")]
    BadConversation(String),
    /// A chat connector's request or the connectors' state.
    #[error("connectors: {0}")]
    Connector(String),
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

    pub(crate) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| Self::Task { what, source }
    }
}

/// Why a control request to a running kernel failed (the client's side).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket exists but does not take the connection.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The request does not encode.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    /// The request does not fit a frame, or the answer's framing is broken.
    #[error("{0}")]
    Frame(#[source] ProtoError),
    /// The request could not be sent.
    #[error("cannot send: {0}")]
    Send(#[source] std::io::Error),
    /// The socket could not be set up for reading.
    #[error("{0}")]
    Socket(#[source] std::io::Error),
    /// The answer could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The answer is not an event.
    #[error("bad answer: {0}")]
    Answer(#[source] ProtoError),
    /// The kernel hung up first.
    #[error("the kernel closed the connection without answering")]
    Closed,
}

/// Why the kernel could not start, reach or stage to the approval daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `[hitl] console` is not a usable address.
    #[error("{0}")]
    ConsoleAddress(#[source] ConsoleAddrError),
    /// The binary cannot be opened for the daemon's user.
    #[error("cannot start the daemon: {0}")]
    Program(#[source] p3ak_sandbox::SandboxError),
    /// The process did not start.
    #[error("cannot start `{} hitl run`: {source}", exe.display())]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The child has no standard output to report on.
    #[error("the daemon has no report pipe")]
    NoReportPipe,
    /// The report line is not a `Started` report.
    #[error("the daemon's report: {0}")]
    Report(#[source] ProtoError),
    /// It exited before reporting.
    #[error(
        "the daemon stopped while starting{}",
        status.map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    StoppedStarting {
        /// How it ended, when known.
        status: Option<std::process::ExitStatus>,
    },
    /// No report in time.
    #[error("the daemon did not start within {seconds} s")]
    StartTimeout {
        /// The time allowed.
        seconds: u64,
    },
    /// The salt of the daemon's key has the wrong length.
    #[error("`{}` is not a 16-byte salt", path.display())]
    BadSalt {
        /// The salt file.
        path: PathBuf,
    },
    /// Its channel closed before it said it was ready.
    #[error("the daemon stopped before it was ready")]
    StoppedBeforeReady,
    /// Not ready in time.
    #[error("the daemon was not ready within {seconds} s")]
    ReadyTimeout {
        /// The time allowed.
        seconds: u64,
    },
    /// Its channel is closed.
    #[error("the daemon is not running")]
    NotRunning,
    /// The daemon has no approval key for a connector (not a plugin that relays approvals).
    #[error("the approval daemon has no key for connector `{connector}`")]
    NoChatKey {
        /// The connector's name.
        connector: String,
    },
    /// The daemon did not answer a chat press in time.
    #[error("the approval daemon did not answer the press within {seconds} s")]
    PressTimeout {
        /// The time allowed.
        seconds: u64,
    },
    /// The blocking write of a staged request did not finish.
    #[error("staging task failed: {0}")]
    StageTask(#[source] tokio::task::JoinError),
    /// `p3ak hitl stage` cannot be opened for the writer's user.
    #[error("cannot stage: {0}")]
    StageProgram(#[source] p3ak_sandbox::SandboxError),
    /// Running `p3ak hitl stage` failed.
    #[error("cannot stage: {0}")]
    StageIo(#[source] std::io::Error),
    /// `p3ak hitl stage` did not finish in time.
    #[error("staging took longer than {seconds} s")]
    StageTimeout {
        /// The time allowed.
        seconds: u64,
    },
    /// `p3ak hitl stage` refused; its standard error says why (text from another process).
    #[error("cannot stage `{id}`: {stderr}")]
    StageRefused {
        /// The request.
        id: String,
        /// What it printed.
        stderr: String,
    },
    /// The start frame does not encode.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    /// The start frame is over the frame limit.
    #[error("{0}")]
    Frame(#[source] ProtoError),
    /// The start frame could not be written.
    #[error("cannot write to the daemon: {0}")]
    Write(#[source] std::io::Error),
    /// A message could not be written to its channel.
    #[error("cannot write to the daemon: {0}")]
    Send(#[source] ProtoError),
    /// The daemon's directories could not be given their modes.
    #[error("{0}")]
    Permissions(#[source] PlanError),
}

/// Why the warden, or the kernel it starts, failed.
#[derive(Debug, thiserror::Error)]
pub enum WardenError {
    /// The binary cannot be opened for the kernel's user.
    #[error("cannot start the kernel: {0}")]
    KernelProgram(#[source] p3ak_sandbox::SandboxError),
    /// The kernel's process did not start.
    #[error("cannot start the kernel: {0}")]
    KernelSpawn(#[source] std::io::Error),
    /// The kernel ended with a failure.
    #[error("the kernel stopped: {status}")]
    KernelStopped {
        /// How it ended.
        status: ExitInfo,
    },
    /// The kernel's process could not be waited for.
    #[error("the kernel could not be waited for")]
    KernelUnwaitable,
    /// Standard input is not the warden's channel.
    #[error("the warden's channel: {0}")]
    Stdin(#[source] ProtoError),
    /// The channel between the warden and the kernel failed.
    #[error("the warden's channel: {0}")]
    Channel(#[source] ChannelError),
    /// The warden closed the channel before the start message.
    #[error("the warden closed its channel")]
    Closed,
    /// The warden's first message is something else.
    #[error("the warden's first message is not a start")]
    NotStart,
    /// The start message came without the daemon's channel.
    #[error("the warden sent no daemon channel")]
    NoDaemonChannel,
    /// The start message announced an API listener it did not carry.
    #[error("the warden announced the API's listener but sent none")]
    NoApiListener,
    /// A key in the start message is not hex.
    #[error("a key from the warden is not hex")]
    KeyNotHex,
    /// The home could not be prepared for the kernel's user.
    #[error("{0}")]
    Prepare(#[source] PlanError),
}

/// Why a call from the kernel to its warden failed.
#[derive(Debug, thiserror::Error)]
pub enum WardenCallError {
    /// The request could not be sent.
    #[error("the warden: {0}")]
    Channel(#[source] ChannelError),
    /// The warden's channel closed before the answer.
    #[error("the warden went away")]
    Gone,
    /// The warden's rekey task did not finish.
    #[error("the rekey task failed: {0}")]
    RekeyTask(#[source] tokio::task::JoinError),
    /// The warden's answer carries a key that is not hex.
    #[error("the rekeyed key is not hex")]
    KeyNotHex,
    /// The warden answered success without the new key.
    #[error("the warden rekeyed without a key")]
    NoKey,
    /// The warden's own error; it crossed a process boundary, so it arrives as text.
    #[error("{message}")]
    Remote {
        /// The warden's message.
        message: String,
    },
}

/// Why a secret could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A stored secret does not decode.
    #[error("secret `{name}` is unreadable: {source}")]
    Unreadable {
        /// The secret.
        name: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A scope that is not an action pattern.
    // `Pattern::parse` (p3ak-policy) reports its reason as text.
    #[error("scope `{scope}`: {reason}")]
    Scope {
        /// The scope as given.
        scope: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A host that is not a host pattern.
    #[error(
        "host `{host}`: expected a host name (`api.example.com`), a domain's subdomains \
         (`*.example.com`) or an IP address"
    )]
    Host {
        /// The host as given.
        host: String,
    },
    /// A name that is not a secret name.
    #[error("secret name `{name}`: use 1–64 letters, digits, `_` and `-`")]
    Name {
        /// The name as given.
        name: String,
    },
    /// A value too short to scrub reliably.
    #[error(
        "the value is too short: at least {min} characters, so that it can be scrubbed from \
         text reliably"
    )]
    TooShort {
        /// The minimum length.
        min: usize,
    },
    /// A value over several lines.
    #[error("the value spans lines: give one line")]
    MultiLine,
    /// The secret does not encode.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The causes below `error`, outermost first.
    fn causes(error: &KernelError) -> Vec<String> {
        std::iter::successors(error.source(), |e| (*e).source())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn messages_read_as_before_and_keep_their_cause() {
        let spawn = KernelError::from(DaemonError::Spawn {
            exe: PathBuf::from("/usr/bin/p3ak"),
            source: std::io::Error::other("no such file"),
        });
        assert_eq!(
            spawn.to_string(),
            "approval daemon: cannot start `/usr/bin/p3ak hitl run`: no such file"
        );
        assert_eq!(
            causes(&spawn).last().map(String::as_str),
            Some("no such file")
        );
        let io = std::iter::successors(spawn.source(), |e| (*e).source())
            .find_map(|e| e.downcast_ref::<std::io::Error>());
        assert!(io.is_some(), "the io::Error is reachable as a source");

        let connect = KernelError::from(ControlError::Connect(std::io::Error::other("refused")));
        assert_eq!(
            connect.to_string(),
            "control connection: cannot connect: refused"
        );
        assert_eq!(causes(&connect), ["cannot connect: refused", "refused"]);

        let stopped = KernelError::from(DaemonError::StoppedStarting { status: None });
        assert_eq!(
            stopped.to_string(),
            "approval daemon: the daemon stopped while starting"
        );
        let remote = KernelError::from(WardenCallError::Remote {
            message: "nothing to rekey".to_owned(),
        });
        assert_eq!(remote.to_string(), "approval daemon: nothing to rekey");
        let home = KernelError::NotInitialised {
            home: PathBuf::from("/srv/p3ak"),
        };
        assert_eq!(
            home.to_string(),
            "`/srv/p3ak` is not set up: run `p3ak init`"
        );
    }

    #[test]
    fn every_message_is_one_line() {
        let errors = [
            KernelError::from(SecretError::Host {
                host: "a b".to_owned(),
            }),
            KernelError::from(SecretError::TooShort { min: 8 }),
            KernelError::from(DaemonError::StartTimeout { seconds: 30 }),
            KernelError::from(ControlError::Closed),
            KernelError::from(WardenError::NoDaemonChannel),
        ];
        for error in errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }
}

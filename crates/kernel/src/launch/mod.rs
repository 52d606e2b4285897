//! Starting plugins: one builder for the command (used by the kernel, the warden and
//! `p3ak sandbox`), and a [`Launcher`] that the plugin host asks for a running, connected
//! plugin — started in this process ([`LocalLauncher`]) or by the privileged warden on behalf
//! of an unprivileged kernel ([`crate::warden::RemoteLauncher`]).
//!
//! A plugin's connection to the kernel is one end of a socket pair, handed to it as its
//! standard input (as inetd does): nothing is listening anywhere, so no other process can
//! connect in its place, and no directory of the home needs to be opened to it.

pub mod exercise;
mod local;
mod loopback;
pub mod plan;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use local::LocalLauncher;

use crate::config::{Config, Launch};
use crate::home::Home;

/// Everything needed to (re)start one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Its configured name.
    pub name: String,
    /// How to start it.
    pub launch: Launch,
    /// Its arguments.
    pub args: Vec<String>,
    /// Handed over in `welcome`.
    pub config: serde_json::Value,
    /// Whether it relays approvals to a chat: it is started with its
    /// [`p3ak_approval::chat::ChatKey`] in [`p3ak_approval::chat::APPROVAL_KEY_ENV`].
    pub approvals: bool,
}

impl PluginSpec {
    /// Whether it is one of ours (`p3ak plugin run NAME`), whose declared tiers the policy
    /// may honour; a plugin started from a path is a third party's.
    #[must_use]
    pub fn first_party(&self) -> bool {
        matches!(self.launch, Launch::Builtin(_))
    }
}

/// The first-party chat connectors: they always relay approvals.
pub const CONNECTOR_BUILTINS: [&str; 3] = ["telegram", "slack", "discord"];

/// Whether `plugin` relays approvals to a chat: a first-party connector, or `approvals = true`.
#[must_use]
pub fn relays_approvals(plugin: &crate::config::PluginConfig) -> bool {
    plugin.approvals
        || plugin
            .builtin
            .as_deref()
            .is_some_and(|b| CONNECTOR_BUILTINS.contains(&b))
}

/// The enabled plugins of `config` that relay approvals (the approval daemon's connectors).
#[must_use]
pub fn connectors(config: &Config) -> Vec<String> {
    config
        .plugins
        .iter()
        .filter(|(_, p)| p.enabled && p.launch().is_some() && relays_approvals(p))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Each enabled plugin of `config`, with the settings first-party plugins need filled in.
#[must_use]
pub fn plugin_specs(home: &Home, config: &Config) -> Vec<PluginSpec> {
    let mut specs = Vec::new();
    for (name, plugin) in &config.plugins {
        if !plugin.enabled {
            continue;
        }
        let Some(launch) = plugin.launch() else {
            continue;
        };
        let mut settings: serde_json::Map<String, serde_json::Value> = plugin
            .config
            .iter()
            .filter_map(|(k, v)| serde_json::to_value(v).ok().map(|v| (k.clone(), v)))
            .collect();
        if let Launch::Builtin(builtin) = &launch {
            let path = |p: PathBuf| serde_json::Value::String(p.display().to_string());
            match builtin.as_str() {
                "files" | "shell" => {
                    settings
                        .entry("workspaces")
                        .or_insert_with(|| path(home.workspaces()));
                }
                "skills" => {
                    settings
                        .entry("workspaces")
                        .or_insert_with(|| path(home.workspaces()));
                    // The skills are the home's: the folder and what was found in it.
                    settings.insert("skills".to_owned(), path(home.skills()));
                    settings.insert(
                        "catalog".to_owned(),
                        crate::skills::Skills::discover(&home.skills()).catalog(),
                    );
                }
                "vault" => {
                    settings
                        .entry("vault")
                        .or_insert_with(|| path(home.memory_vault()));
                    // Semantic search and the vectors of its writes, once a model is installed.
                    if home.models().is_dir() {
                        settings
                            .entry("models")
                            .or_insert_with(|| path(home.models()));
                    }
                }
                _ => {}
            }
            // Relative paths in first-party settings are relative to the home.
            for key in [
                "script",
                "record",
                "workspaces",
                "vault",
                "models",
                "ca_file",
            ] {
                if let Some(serde_json::Value::String(p)) = settings.get(key) {
                    let p = PathBuf::from(p);
                    if p.is_relative() {
                        let absolute = home.root().join(p);
                        settings.insert(key.to_owned(), path(absolute));
                    }
                }
            }
        }
        specs.push(PluginSpec {
            name: name.clone(),
            launch,
            args: plugin.args.clone(),
            config: serde_json::Value::Object(settings),
            approvals: relays_approvals(plugin),
        });
    }
    specs
}

/// The command that starts `spec` as `plan` says, its connection to the kernel on standard
/// input, stdout discarded and stderr piped. The sandbox itself is installed by the caller
/// (`plan.prepared.prepare(..).install(..)`, or a tracer).
pub fn command(
    spec: &PluginSpec,
    plan: &plan::PluginPlan,
    exe: &Path,
    max_frame: usize,
    connection: OwnedFd,
) -> Result<std::process::Command, LaunchError> {
    let program = match &spec.launch {
        Launch::Builtin(_) => exe,
        Launch::Path(path) => path,
    };
    let mut command = p3ak_sandbox::Program::open(program, plan.prepared.ids)
        .map_err(LaunchError::Program)?
        .command();
    if let Launch::Builtin(builtin) = &spec.launch {
        command.arg("plugin").arg("run").arg(builtin);
    }
    command
        .args(&spec.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", &plan.scratch)
        .env("TMPDIR", &plan.scratch)
        .env("P3AK_PLUGIN_NAME", &spec.name)
        .env("P3AK_MAX_FRAME", max_frame.to_string())
        .current_dir(&plan.scratch)
        .stdin(Stdio::from(connection))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The plugin leads its own process group, so that stopping it stops its children too.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    for name in &plan.env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    Ok(command)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl From<std::process::ExitStatus> for ExitInfo {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: status.code(),
            signal: status.signal(),
            core_dumped: status.core_dumped(),
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status: {code}"),
            (None, Some(signal)) => write!(
                f,
                "signal: {signal}{}",
                if self.core_dumped {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// Waits for a process's exit, and keeps it once known: unlike the bare receiver it may be
/// awaited again (in every `select!` of a plugin's life), and an abandoned wait loses nothing.
pub struct ExitWatch {
    receiver: oneshot::Receiver<ExitInfo>,
    known: Option<Option<ExitInfo>>,
}

impl ExitWatch {
    /// Watches `receiver`, which resolves when the process exits.
    #[must_use]
    pub fn new(receiver: oneshot::Receiver<ExitInfo>) -> Self {
        Self {
            receiver,
            known: None,
        }
    }

    /// How it exited, once it has; `None` when that cannot be known (nobody waits on it).
    pub async fn wait(&mut self) -> Option<ExitInfo> {
        if let Some(known) = self.known {
            return known;
        }
        let status = (&mut self.receiver).await.ok();
        self.known = Some(status);
        status
    }

    /// How it exited, if it has by now.
    pub fn now(&mut self) -> Option<ExitInfo> {
        if self.known.is_none() {
            match self.receiver.try_recv() {
                Ok(status) => self.known = Some(Some(status)),
                Err(oneshot::error::TryRecvError::Closed) => self.known = Some(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.known.flatten()
    }
}

/// A plugin process, started and connected to the kernel.
pub struct Launched {
    /// Its pid (it leads its own process group).
    pub pid: u32,
    /// The uid it runs as.
    pub uid: u32,
    /// Its sandbox, for the audit log.
    pub sandbox: serde_json::Value,
    /// The kernel's end of its connection.
    pub connection: tokio::net::UnixStream,
    /// The reading end of its stderr.
    pub stderr: Option<OwnedFd>,
    /// Its exit.
    pub exit: ExitWatch,
}

/// Why a plugin was not started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The sandbox is incomplete on this host and the mode is `enforce`: what it lacks.
    #[error("{0}")]
    Refused(String),
    /// No plugin of that name is configured.
    #[error("plugin `{0}` is not configured")]
    Unknown(String),
    /// Its uid, scratch directory or files could not be planned or prepared.
    #[error("{0}")]
    Plan(#[source] plan::PlanError),
    /// Its binary cannot be opened for its user.
    #[error("{0}")]
    Program(#[source] p3ak_sandbox::SandboxError),
    /// Its connection could not be created.
    #[error("cannot create its connection: {0}")]
    CreateConnection(#[source] std::io::Error),
    /// The sandbox could not be prepared.
    #[error("cannot prepare the sandbox: {0}")]
    Sandbox(#[source] p3ak_sandbox::SandboxError),
    /// The process did not start.
    #[error("cannot start: {0}")]
    Spawn(#[source] std::io::Error),
    /// It exited before it could be watched.
    #[error("it exited at once")]
    ExitedAtOnce,
    /// Its approval key could not be derived.
    #[error("cannot derive its approval key: {0}")]
    ApprovalKey(#[source] p3ak_approval::ApprovalError),
    /// Its connection could not be made asynchronous.
    #[error("cannot use the connection: {0}")]
    Connection(#[source] std::io::Error),
    /// The request could not be sent to the warden.
    #[error("the warden: {0}")]
    Warden(#[source] crate::warden::channel::ChannelError),
    /// The warden's channel closed before its answer.
    #[error("the warden went away")]
    WardenGone,
    /// The warden's answer came without the plugin's connection.
    #[error("the warden sent no connection")]
    NoConnection,
    /// The warden could not start it; its error crossed a process boundary, so it is text.
    #[error("{0}")]
    Remote(String),
}

/// What the host's audit subsystem tells about refused accesses of plugins.
pub struct DenialFeed {
    /// Whether denials are audited here, and why not when they are not.
    pub why_not: Option<String>,
    /// Whether refusals by file permissions are reported too.
    pub permission_refusals: bool,
    /// The denials, as they happen.
    pub denials: Option<mpsc::UnboundedReceiver<p3ak_sandbox::denials::Denial>>,
}

/// Starts plugins for the plugin host.
#[derive(Clone)]
pub enum Launcher {
    /// In this process (the kernel has the privileges, or none are needed).
    Local(Arc<LocalLauncher>),
    /// Through the warden, the privileged parent of an unprivileged kernel.
    Remote(Arc<crate::warden::RemoteLauncher>),
}

impl Launcher {
    /// Starts plugin `name` and connects to it.
    pub async fn launch(&self, name: &str) -> Result<Launched, LaunchError> {
        match self {
            Self::Local(local) => local.launch(name).await,
            Self::Remote(remote) => remote.launch(name).await,
        }
    }

    /// Kills a plugin's process group.
    pub fn kill(&self, name: &str, pid: u32) {
        match self {
            Self::Local(_) => kill_group(pid),
            Self::Remote(remote) => remote.kill(name, pid),
        }
    }

    /// The host's sandbox, for the audit log (`sandbox.host`).
    #[must_use]
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Self::Local(local) => local.sandbox().describe(),
            Self::Remote(remote) => remote.describe(),
        }
    }

    /// Why no plugin may start, if none may; what is missing otherwise.
    #[must_use]
    pub fn refusal(&self) -> (Option<String>, Vec<String>) {
        match self {
            Self::Local(local) => (
                local.sandbox().refusal(),
                local.sandbox().missing().to_vec(),
            ),
            Self::Remote(remote) => remote.refusal(),
        }
    }

    /// Starts reading the host's record of refused accesses (once).
    pub fn denials(&self, stopping: Arc<std::sync::atomic::AtomicBool>) -> DenialFeed {
        match self {
            Self::Local(local) => local.denials(stopping),
            Self::Remote(remote) => remote.denials(),
        }
    }
}

/// Kills the process group `pid` leads (its children too: a shell command).
pub(crate) fn kill_group(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[plugins.files]
builtin = "files"
[plugins.matrix]
path = "/opt/matrix-connector"
approvals = true
"#;

    /// The configuration, with the first-party connectors added as their entries read (they
    /// are not necessarily known builtins of this build).
    fn config() -> Config {
        let mut config = Config::parse(CONFIG, Path::new("config.toml")).unwrap();
        for (name, text) in [
            ("telegram", "builtin = \"telegram\""),
            ("discord", "builtin = \"discord\"\nenabled = false"),
        ] {
            config
                .plugins
                .insert(name.to_owned(), toml::from_str(text).unwrap());
        }
        config
    }

    #[test]
    fn connectors_are_the_chat_builtins_and_plugins_that_ask_for_approvals() {
        let config = config();
        assert_eq!(connectors(&config), ["matrix", "telegram"]);
        let home = Home::new("/tmp/p3ak-launch-test");
        let specs = plugin_specs(&home, &config);
        let flagged: Vec<(&str, bool)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.approvals))
            .collect();
        assert_eq!(
            flagged,
            [("files", false), ("matrix", true), ("telegram", true)]
        );
    }

    #[test]
    fn only_a_connector_gets_its_own_approval_key() {
        let config = config();
        let home = Home::new("/tmp/p3ak-launch-test");
        let specs = plugin_specs(&home, &config);
        let master = p3ak_crypto::Key::generate().unwrap();
        let bare = LocalLauncher::new(
            specs.clone(),
            &config.kernel,
            home.root(),
            "/bin/true".into(),
            0,
        );
        let launcher = LocalLauncher::new(
            specs.clone(),
            &config.kernel,
            home.root(),
            "/bin/true".into(),
            0,
        )
        .with_approval_master(p3ak_crypto::Key::from_slice(master.expose()).unwrap());
        for spec in &specs {
            assert!(bare.approval_key(spec).unwrap().is_none());
            let key = launcher.approval_key(spec).unwrap();
            if spec.approvals {
                let expected = p3ak_approval::chat::ChatKey::derive(&master, &spec.name).unwrap();
                assert_eq!(key.unwrap().as_str(), expected.to_hex().as_str());
            } else {
                assert!(key.is_none(), "{} got a key", spec.name);
            }
        }
    }
}

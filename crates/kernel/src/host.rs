//! The plugin host: starts each configured plugin as its own process with its own socket,
//! checks who connected, validates what it registers, pings it, and restarts it with backoff
//! when it dies, hangs or breaks the protocol — while every other plugin keeps being served.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use p3ak_crypto::SecretBytes;
use p3ak_proto::{
    ActionSpec, Envelope, ErrorKind, ErrorMessage, FrameDecoder, Message, PluginKind, Registered,
    Welcome,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedReadHalf;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use crate::audit::AuditLog;
use crate::broker::Broker;
use crate::config::{KernelSettings, Launch};
use crate::proposal::compile_schema;

/// Most actions one plugin may register.
pub const MAX_ACTIONS: usize = 256;

/// Most frames a plugin may send in one second that answer no request (late replies to
/// timed-out requests are legitimate, a stream of them is a flood): past this it is cut off.
pub const MAX_UNSOLICITED_PER_SECOND: u32 = 256;

/// Everything needed to (re)start one plugin.
pub struct PluginSpec {
    /// Its configured name.
    pub name: String,
    /// How to start it.
    pub launch: Launch,
    /// Its arguments.
    pub args: Vec<String>,
    /// Handed over in `welcome`.
    pub config: serde_json::Value,
    /// Written to its stdin at each start, then stdin is closed (the vault plugin's key).
    pub stdin: Option<Arc<SecretBytes>>,
    /// Where its socket goes.
    pub socket: PathBuf,
}

/// One action as registered, its schema compiled.
#[derive(Clone)]
pub struct RegisteredAction {
    /// The spec the plugin sent.
    pub spec: ActionSpec,
    pub(crate) validator: Arc<jsonschema::Validator>,
}

/// What a plugin registered.
#[derive(Clone)]
pub struct Registration {
    /// Connector, tool or provider.
    pub kind: PluginKind,
    /// Its actions (tools).
    pub actions: Vec<RegisteredAction>,
}

/// A plugin's state, for `p3ak status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum PluginState {
    /// Being started.
    Starting,
    /// Connected and registered.
    Running,
    /// Waiting to be restarted.
    Restarting(String),
    /// Given up on after too many restarts.
    Failed(String),
    /// Shut down.
    Stopped,
}

/// A row of `p3ak status`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    #[serde(flatten)]
    pub state: PluginState,
    /// Its kind, once registered.
    pub kind: Option<PluginKind>,
    /// Its actions, once registered.
    pub actions: Vec<String>,
    /// Times it was restarted.
    pub restarts: u32,
    /// Its process id while running.
    pub pid: Option<u32>,
}

/// Why a request to a plugin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// It is not running (starting, restarting, failed, unknown).
    #[error("plugin `{0}` is not running")]
    NotRunning(String),
    /// No answer in time.
    #[error("plugin `{0}` did not answer in time")]
    Timeout(String),
    /// The connection went away before the answer.
    #[error("plugin `{0}` disconnected")]
    Disconnected(String),
    /// It answered with an error.
    #[error("{}: {}", kind_name(.0.kind), .0.message)]
    Plugin(ErrorMessage),
    /// It answered with something else than the request calls for.
    #[error("plugin `{0}` answered with an unexpected `{1}`")]
    Unexpected(String, &'static str),
    /// The request could not be encoded (too large).
    #[error("request to plugin `{0}` could not be sent: {1}")]
    Encode(String, String),
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => "transient error",
        ErrorKind::Permanent => "permanent error",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Auth => "authentication error",
        ErrorKind::Invalid => "invalid request",
        ErrorKind::Rejected => "rejected",
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<Message, HostError>>,
    chunks: Option<mpsc::UnboundedSender<String>>,
}

/// A live connection to a registered plugin.
pub struct Connection {
    name: String,
    frames: mpsc::Sender<Zeroizing<Vec<u8>>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    max_frame: usize,
    /// Unsolicited frames in the current one-second window.
    unsolicited: Mutex<(Instant, u32)>,
    /// What it registered.
    pub registration: Registration,
}

impl Connection {
    /// Sends a request and waits for its answer. Stream chunks, if any, go to `chunks`.
    pub async fn request(
        &self,
        message: Message,
        timeout: Duration,
        chunks: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Message, HostError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut envelope = Envelope::new(id, message);
        let frame = p3ak_proto::encode(&envelope, self.max_frame)
            .map(Zeroizing::new)
            .map_err(|e| HostError::Encode(self.name.clone(), e.to_string()));
        // Invoke arguments carry injected secrets: wipe them once they are in the frame.
        if let Message::Invoke(invoke) = &mut envelope.message {
            crate::broker::zeroize_value(&mut invoke.args);
        }
        let frame = frame?;
        let (reply, answer) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id, Waiter { reply, chunks });
        }
        if self.frames.send(frame).await.is_err() {
            self.forget(id);
            return Err(HostError::Disconnected(self.name.clone()));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(HostError::Disconnected(self.name.clone())),
            Err(_) => {
                self.forget(id);
                Err(HostError::Timeout(self.name.clone()))
            }
        }
    }

    /// No request is waiting for an answer. A busy plugin is not pinged: each request has its
    /// own timeout, and a plugin that hangs is caught by the next ping once it is idle.
    fn idle(&self) -> bool {
        self.waiters.lock().is_ok_and(|w| w.is_empty())
    }

    fn forget(&self, id: u64) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&id);
        }
    }

    /// Hands a frame to the request it answers. A plugin that floods the kernel with frames
    /// answering nothing is an error.
    fn deliver(&self, envelope: Envelope) -> Result<(), String> {
        let Ok(mut waiters) = self.waiters.lock() else {
            return Ok(());
        };
        let solicited = if let Message::StreamChunk(chunk) = &envelope.message {
            match waiters.get(&envelope.id).and_then(|w| w.chunks.as_ref()) {
                Some(sink) => {
                    let _ = sink.send(chunk.text.clone());
                    true
                }
                None => waiters.contains_key(&envelope.id),
            }
        } else if let Some(waiter) = waiters.remove(&envelope.id) {
            let result = match envelope.message {
                Message::Error(e) => Err(HostError::Plugin(e)),
                other => Ok(other),
            };
            let _ = waiter.reply.send(result);
            true
        } else {
            // A reply whose request timed out is dropped.
            false
        };
        drop(waiters);
        if solicited {
            return Ok(());
        }
        let Ok(mut window) = self.unsolicited.lock() else {
            return Ok(());
        };
        if window.0.elapsed() > Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 > MAX_UNSOLICITED_PER_SECOND {
            return Err(format!(
                "protocol violation: flooded the kernel with more than \
                 {MAX_UNSOLICITED_PER_SECOND} unsolicited frames in a second"
            ));
        }
        Ok(())
    }

    fn fail_all(&self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            for (_, waiter) in waiters.drain() {
                let _ = waiter
                    .reply
                    .send(Err(HostError::Disconnected(self.name.clone())));
            }
        }
    }
}

struct Slot {
    spec: PluginSpec,
    /// Replaces `spec.stdin` once set (a vault key after a rekey).
    handoff: RwLock<Option<Arc<SecretBytes>>>,
    /// While true the plugin is stopped and not restarted (maintenance such as a rekey).
    held: watch::Sender<bool>,
    state: watch::Sender<PluginState>,
    connection: RwLock<Option<Arc<Connection>>>,
    pid: RwLock<Option<u32>>,
    restarts: AtomicU64,
}

/// The host of every configured plugin.
pub struct Host {
    slots: BTreeMap<String, Arc<Slot>>,
    settings: KernelSettings,
    audit: AuditLog,
    broker: Arc<Broker>,
    exe: PathBuf,
    stopping: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    sandbox: sandboxing::Sandbox,
    /// Whether this kernel added the audit rules for its plugins' refused calls.
    refusal_rules: AtomicBool,
}

impl Host {
    /// A host for these plugins; `exe` is the `p3ak` binary first-party plugins run from.
    #[must_use]
    pub fn new(
        specs: Vec<PluginSpec>,
        settings: KernelSettings,
        audit: AuditLog,
        broker: Arc<Broker>,
        exe: PathBuf,
    ) -> Self {
        let slots: BTreeMap<String, Arc<Slot>> = specs
            .into_iter()
            .map(|spec| {
                let (state, _) = watch::channel(PluginState::Starting);
                let (held, _) = watch::channel(false);
                (
                    spec.name.clone(),
                    Arc::new(Slot {
                        spec,
                        handoff: RwLock::new(None),
                        held,
                        state,
                        connection: RwLock::new(None),
                        pid: RwLock::new(None),
                        restarts: AtomicU64::new(0),
                    }),
                )
            })
            .collect();
        let (shutdown, _) = watch::channel(false);
        let sandbox = sandboxing::Sandbox::new(&settings, slots.values().map(|s| &s.spec));
        Self {
            slots,
            settings,
            audit,
            broker,
            exe,
            stopping: Arc::new(AtomicBool::new(false)),
            shutdown,
            sandbox,
            refusal_rules: AtomicBool::new(false),
        }
    }

    /// Starts every plugin's supervisor and waits (up to the start timeout) until each is
    /// running or has failed its first start.
    pub async fn start(self: &Arc<Self>) {
        let _ = self
            .audit
            .record("sandbox.host", self.sandbox.describe())
            .await;
        if let Some(refusal) = self.sandbox.refusal() {
            tracing::error!("{refusal}");
        } else if !self.sandbox.missing().is_empty() {
            tracing::warn!("sandbox degraded: {}", self.sandbox.missing().join("; "));
        }
        self.watch_denials().await;
        for slot in self.slots.values() {
            let host = Arc::clone(self);
            let slot = Arc::clone(slot);
            tokio::spawn(async move { host.supervise(slot).await });
        }
        let deadline = Instant::now() + self.settings.start_timeout + Duration::from_secs(1);
        for slot in self.slots.values() {
            let mut state = slot.state.subscribe();
            let wait = state.wait_for(|s| !matches!(s, PluginState::Starting));
            let _ = tokio::time::timeout_at(deadline.into(), wait).await;
        }
    }

    /// Audits every file access Landlock refuses a plugin (`sandbox.denied`), read from the
    /// host's audit subsystem; says in `sandbox.denials` whether that is possible here.
    async fn watch_denials(self: &Arc<Self>) {
        let why_not = match denial_feed(self.sandbox.support()) {
            Ok(feed) => {
                // What file permissions refuse never reaches Landlock: an audit rule makes
                // Linux report those failures of the plugin uids too. It stays after the
                // kernel stops (another kernel on the host may share the range; adding is
                // idempotent) and costs nothing while no plugin uid fails a call.
                let (first, last) = self.settings.plugin_ids;
                match p3ak_sandbox::denials::watch_refusals(first, last, true) {
                    Ok(()) => self.refusal_rules.store(true, Ordering::SeqCst),
                    Err(e) => tracing::warn!("sandbox: permission refusals are not audited: {e}"),
                }
                let (denials, mut received) = mpsc::unbounded_channel();
                let stopping = Arc::clone(&self.stopping);
                let mut feed = feed;
                std::thread::spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        match feed.wait() {
                            Ok(Some(denial)) => {
                                if denials.send(denial).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!("sandbox: denials are no longer read: {e}");
                                return;
                            }
                        }
                    }
                });
                let host = Arc::clone(self);
                tokio::spawn(async move {
                    let mut limiter = DenialLimiter::default();
                    while let Some(denial) = received.recv().await {
                        host.record_denial(&denial, &mut limiter).await;
                    }
                });
                None
            }
            Err(why) => Some(why),
        };
        let _ = self
            .audit
            .record(
                "sandbox.denials",
                serde_json::json!({
                    "audited": why_not.is_none(), "why_not": why_not,
                    "permission_refusals": self.refusal_rules.load(Ordering::SeqCst),
                }),
            )
            .await;
    }

    async fn record_denial(
        &self,
        denial: &p3ak_sandbox::denials::Denial,
        limiter: &mut DenialLimiter,
    ) {
        let by_pid = self.slots.values().find(|slot| {
            slot.pid
                .read()
                .map(|p| *p == Some(denial.pid))
                .unwrap_or(false)
        });
        let plugins: Vec<String> = match by_pid {
            Some(slot) => vec![slot.spec.name.clone()],
            None => self
                .slots
                .values()
                .filter(|slot| self.sandbox.uid_of(&slot.spec) == Some(denial.uid))
                .map(|slot| slot.spec.name.clone())
                .collect(),
        };
        // Other sandboxed programs on the host are not ours to audit.
        let Some(first) = plugins.first() else {
            return;
        };
        let Some(suppressed) = limiter.admit(first) else {
            return;
        };
        let _ = self
            .audit
            .record(
                "sandbox.denied",
                serde_json::json!({
                    "plugin": plugins.join("|"), "pid": denial.pid, "uid": denial.uid,
                    "blockers": denial.blockers, "detail": denial.detail,
                    "suppressed_before": suppressed,
                }),
            )
            .await;
    }

    /// The live connection to a plugin.
    #[must_use]
    pub fn connection(&self, name: &str) -> Option<Arc<Connection>> {
        self.slots
            .get(name)
            .and_then(|slot| slot.connection.read().ok().and_then(|c| c.clone()))
    }

    /// Running plugins of a kind, by name.
    #[must_use]
    pub fn running(&self, kind: PluginKind) -> Vec<(String, Arc<Connection>)> {
        self.slots
            .keys()
            .filter_map(|name| self.connection(name).map(|c| (name.clone(), c)))
            .filter(|(_, c)| c.registration.kind == kind)
            .collect()
    }

    /// Whether a plugin of that name is configured.
    #[must_use]
    pub fn is_configured(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    /// Every plugin's state.
    #[must_use]
    pub fn status(&self) -> Vec<PluginStatus> {
        self.slots
            .iter()
            .map(|(name, slot)| {
                let connection = self.connection(name);
                PluginStatus {
                    name: name.clone(),
                    state: slot.state.borrow().clone(),
                    kind: connection.as_ref().map(|c| c.registration.kind),
                    actions: connection
                        .map(|c| {
                            c.registration
                                .actions
                                .iter()
                                .map(|a| format!("{name}.{}", a.spec.name))
                                .collect()
                        })
                        .unwrap_or_default(),
                    restarts: u32::try_from(slot.restarts.load(Ordering::Relaxed))
                        .unwrap_or(u32::MAX),
                    pid: slot.pid.read().ok().and_then(|p| *p),
                }
            })
            .collect()
    }

    /// Waits until a plugin is running again (for tests and the demo), up to `timeout`.
    pub async fn wait_running(&self, name: &str, timeout: Duration) -> bool {
        let Some(slot) = self.slots.get(name) else {
            return false;
        };
        let mut state = slot.state.subscribe();
        let wait = state.wait_for(|s| matches!(s, PluginState::Running));
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// Stops a plugin and keeps it stopped until [`Host::resume`]: it is asked to shut down
    /// (then killed) and not restarted. Returns once it is down (or after 10 s).
    pub async fn hold(&self, name: &str) -> bool {
        let Some(slot) = self.slots.get(name) else {
            return false;
        };
        slot.held.send_replace(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let down = slot.pid.read().map(|p| p.is_none()).unwrap_or(true)
                && !matches!(
                    *slot.state.borrow(),
                    PluginState::Running | PluginState::Starting
                );
            if down {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Starts a held plugin again; `handoff`, when given, replaces what its stdin gets.
    pub async fn resume(&self, name: &str, handoff: Option<Arc<SecretBytes>>) -> bool {
        let Some(slot) = self.slots.get(name) else {
            return false;
        };
        if let Some(handoff) = handoff
            && let Ok(mut h) = slot.handoff.write()
        {
            *h = Some(handoff);
        }
        slot.held.send_replace(false);
        self.wait_running(name, self.settings.start_timeout + Duration::from_secs(2))
            .await
    }

    /// Asks every plugin to shut down, then kills what is left.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for slot in self.slots.values() {
            let mut state = slot.state.subscribe();
            let wait =
                state.wait_for(|s| matches!(s, PluginState::Stopped | PluginState::Failed(_)));
            let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        }
    }

    async fn supervise(self: Arc<Self>, slot: Arc<Slot>) {
        let name = slot.spec.name.clone();
        let mut recent: Vec<Instant> = Vec::new();
        let mut backoff = Duration::from_millis(500);
        loop {
            if *slot.held.borrow() {
                slot.state
                    .send_replace(PluginState::Restarting("held for maintenance".to_owned()));
                let mut held = slot.held.subscribe();
                let mut shutdown = self.shutdown.subscribe();
                tokio::select! {
                    _ = held.wait_for(|h| !*h) => {}
                    () = stopped(&mut shutdown) => {}
                }
                if self.stopping.load(Ordering::SeqCst) {
                    slot.state.send_replace(PluginState::Stopped);
                    return;
                }
                slot.state.send_replace(PluginState::Starting);
            }
            let started = Instant::now();
            let reason = self.run_once(&slot).await;
            if let Ok(mut c) = slot.connection.write() {
                *c = None;
            }
            if let Ok(mut p) = slot.pid.write() {
                *p = None;
            }
            if self.stopping.load(Ordering::SeqCst) {
                let _ = self
                    .audit
                    .record("plugin.stop", serde_json::json!({"plugin": name}))
                    .await;
                slot.state.send_replace(PluginState::Stopped);
                return;
            }
            if *slot.held.borrow() {
                let _ = self
                    .audit
                    .record("plugin.held", serde_json::json!({"plugin": name}))
                    .await;
                continue;
            }
            tracing::warn!(plugin = %name, %reason, "plugin stopped");
            let _ = self
                .audit
                .record(
                    "plugin.exit",
                    serde_json::json!({"plugin": name, "reason": reason}),
                )
                .await;
            // A plugin that ran well for a while starts again from the shortest delay.
            if started.elapsed() > self.settings.restart_window {
                backoff = Duration::from_millis(500);
            }
            let now = Instant::now();
            recent.retain(|t| now.duration_since(*t) < self.settings.restart_window);
            if recent.len() >= self.settings.restart_limit as usize {
                let detail = format!(
                    "{} restarts within {}; last: {reason}",
                    recent.len(),
                    humantime::format_duration(self.settings.restart_window)
                );
                let _ = self
                    .audit
                    .record(
                        "plugin.failed",
                        serde_json::json!({"plugin": name, "reason": detail}),
                    )
                    .await;
                tracing::error!(plugin = %name, "{detail}: given up");
                slot.state.send_replace(PluginState::Failed(detail));
                return;
            }
            recent.push(now);
            slot.state.send_replace(PluginState::Restarting(reason));
            let mut shutdown = self.shutdown.subscribe();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => {}
            }
            if self.stopping.load(Ordering::SeqCst) {
                slot.state.send_replace(PluginState::Stopped);
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
            slot.restarts.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .audit
                .record("plugin.restart", serde_json::json!({"plugin": name}))
                .await;
            slot.state.send_replace(PluginState::Starting);
        }
    }

    /// Starts the plugin once and serves it until it goes away; returns why it did.
    async fn run_once(&self, slot: &Arc<Slot>) -> String {
        let spec = &slot.spec;
        let handoff = slot.handoff.read().ok().and_then(|h| h.clone());
        let mut child = match self
            .spawn(spec, handoff.or_else(|| spec.stdin.clone()))
            .await
        {
            Ok(child) => child,
            Err(reason) => return reason,
        };
        let pid = child.child.id();
        if let Ok(mut p) = slot.pid.write() {
            *p = pid;
        }
        let outcome = self.connect_and_serve(slot, &mut child).await;
        // A plugin killed by its sandbox closes the connection as it dies: give its exit a
        // moment to arrive, so that what killed it is audited.
        let status = match child.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ if outcome == "closed the connection" => {
                match tokio::time::timeout(Duration::from_secs(3), child.child.wait()).await {
                    Ok(Ok(status)) => Some(status),
                    _ => None,
                }
            }
            _ => None,
        };
        let mut outcome = outcome;
        if let Some(status) = status {
            if outcome == "closed the connection" {
                outcome = format!("closed the connection and exited ({status})");
            }
            self.audit_exit_signal(&spec.name, status).await;
        }
        kill_group(pid);
        let _ = tokio::time::timeout(Duration::from_secs(2), child.child.wait()).await;
        outcome
    }

    async fn spawn(
        &self,
        spec: &PluginSpec,
        stdin: Option<Arc<SecretBytes>>,
    ) -> Result<Spawned, String> {
        if let Some(refusal) = self.sandbox.refusal() {
            let _ = self
                .audit
                .record(
                    "sandbox.refused",
                    serde_json::json!({"plugin": spec.name, "missing": self.sandbox.missing()}),
                )
                .await;
            return Err(refusal);
        }
        let plan = self.sandbox.plan(spec, &self.exe)?;
        if let Err(e) = std::fs::remove_file(&spec.socket)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot remove stale socket: {e}"));
        }
        let listener = UnixListener::bind(&spec.socket)
            .map_err(|e| format!("cannot bind `{}`: {e}", spec.socket.display()))?;
        self.sandbox.prepare_files(spec, &plan)?;
        let program = match &spec.launch {
            Launch::Builtin(_) => &self.exe,
            Launch::Path(path) => path,
        };
        let mut command = p3ak_sandbox::Program::open(program, plan.prepared.ids)
            .map_err(|e| e.to_string())?
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
            .env("P3AK_PLUGIN_SOCKET", &spec.socket)
            .env("P3AK_PLUGIN_NAME", &spec.name)
            .env("P3AK_MAX_FRAME", self.settings.max_frame.to_string())
            .current_dir(&plan.scratch)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        for name in &plan.env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        plan.prepared
            .prepare(self.sandbox.support())
            .map_err(|e| format!("cannot prepare the sandbox: {e}"))?
            .install(&mut command);
        let mut command = Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
        let _ = self
            .audit
            .record(
                "plugin.start",
                serde_json::json!({"plugin": spec.name, "pid": child.id(), "sandbox": plan.describe()}),
            )
            .await;
        if let (Some(bytes), Some(mut stdin)) = (&stdin, child.stdin.take()) {
            let _ = stdin.write_all(bytes.expose()).await;
            let _ = stdin.shutdown().await;
        }
        if let Some(stderr) = child.stderr.take() {
            let name = spec.name.clone();
            let broker = Arc::clone(&self.broker);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Plugins see injected secrets; what they print is scrubbed like results.
                    let line = broker.scrubber().scrub(&line);
                    tracing::info!(plugin = %name, "{line}");
                }
            });
        }
        Ok(Spawned {
            child,
            listener,
            uid: plan.uid(),
        })
    }

    async fn connect_and_serve(&self, slot: &Arc<Slot>, spawned: &mut Spawned) -> String {
        let spec = &slot.spec;
        let accept = tokio::time::timeout(self.settings.start_timeout, spawned.listener.accept());
        let stream = tokio::select! {
            accepted = accept => match accepted {
                Ok(Ok((stream, _))) => stream,
                Ok(Err(e)) => return format!("accept failed: {e}"),
                Err(_) => return "did not connect in time".to_owned(),
            },
            status = spawned.child.wait() => {
                return match status {
                    Ok(s) => format!("exited before connecting ({s})"),
                    Err(e) => format!("exited before connecting: {e}"),
                };
            }
        };
        // Nobody else may connect: the socket goes as soon as the plugin is in.
        let _ = std::fs::remove_file(&spec.socket);
        let expected_pid = spawned.child.id();
        match stream.peer_cred() {
            Ok(cred) => {
                let uid = spawned.uid;
                let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
                if cred.uid() != uid || pid != expected_pid {
                    let _ = self
                        .audit
                        .record(
                            "plugin.peer_refused",
                            serde_json::json!({
                                "plugin": spec.name, "peer_uid": cred.uid(), "peer_pid": pid,
                                "expected_uid": uid, "expected_pid": expected_pid,
                            }),
                        )
                        .await;
                    return format!(
                        "refused a connection from uid {} pid {:?}: not the process started",
                        cred.uid(),
                        pid
                    );
                }
            }
            Err(e) => return format!("cannot read peer credentials: {e}"),
        }
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader::new(read, self.settings.max_frame);
        let deadline = tokio::time::Instant::now() + self.settings.start_timeout;
        let registration = match self
            .handshake(spec, &mut reader, &mut write, deadline)
            .await
        {
            Ok(r) => r,
            Err(reason) => {
                let _ = self
                    .audit
                    .record(
                        "plugin.misbehaved",
                        serde_json::json!({"plugin": spec.name, "reason": reason}),
                    )
                    .await;
                return reason;
            }
        };
        self.audit_registration(spec, &registration).await;

        let (frames, mut outgoing) = mpsc::channel::<Zeroizing<Vec<u8>>>(64);
        let connection = Arc::new(Connection {
            name: spec.name.clone(),
            frames,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            max_frame: self.settings.max_frame,
            unsolicited: Mutex::new((Instant::now(), 0)),
            registration,
        });
        if let Ok(mut c) = slot.connection.write() {
            *c = Some(Arc::clone(&connection));
        }
        slot.state.send_replace(PluginState::Running);

        let writer = tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
            write
        });
        let mut shutdown = self.shutdown.subscribe();
        let mut held = slot.held.subscribe();
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.tick().await;
        let reason = loop {
            tokio::select! {
                frame = reader.next() => match frame {
                    Ok(Some(envelope)) => if let Err(reason) = connection.deliver(envelope) {
                        let _ = self.audit.record("plugin.misbehaved",
                            serde_json::json!({"plugin": spec.name, "reason": reason})).await;
                        break reason;
                    },
                    Ok(None) => break "closed the connection".to_owned(),
                    Err(e) => {
                        let reason = format!("protocol violation: {e}");
                        let _ = self.audit.record("plugin.misbehaved",
                            serde_json::json!({"plugin": spec.name, "reason": reason})).await;
                        break reason;
                    }
                },
                status = spawned.child.wait() => {
                    break match status {
                        Ok(s) => format!("exited ({s})"),
                        Err(e) => format!("wait failed: {e}"),
                    };
                }
                _ = ping.tick(), if connection.idle() => {
                    let pinger = Arc::clone(&connection);
                    let timeout = self.settings.ping_timeout;
                    // The answer arrives through the reader above; wait for it off this loop.
                    let (tx, rx) = oneshot::channel();
                    tokio::spawn(async move {
                        let result = pinger
                            .request(Message::Ping(p3ak_proto::Ping {}), timeout, None)
                            .await;
                        let _ = tx.send(result);
                    });
                    let reader_ref = &mut reader;
                    let answered = wait_ping(rx, reader_ref, &connection, &mut spawned.child).await;
                    if let Err(reason) = answered {
                        if reason.starts_with("protocol violation") {
                            let _ = self.audit.record("plugin.misbehaved",
                                serde_json::json!({"plugin": spec.name, "reason": reason})).await;
                        }
                        break reason;
                    }
                }
                () = stopped_or_held(&mut shutdown, &mut held) => {
                    let _ = connection.frames.send(Zeroizing::new(
                        p3ak_proto::encode(&Envelope::new(0, Message::Shutdown(p3ak_proto::Shutdown {})),
                            self.settings.max_frame).unwrap_or_default())).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), spawned.child.wait()).await;
                    break "shut down".to_owned();
                }
            }
        };
        if let Ok(mut c) = slot.connection.write() {
            *c = None;
        }
        connection.fail_all();
        writer.abort();
        reason
    }

    async fn handshake(
        &self,
        spec: &PluginSpec,
        reader: &mut FrameReader,
        write: &mut tokio::net::unix::OwnedWriteHalf,
        deadline: tokio::time::Instant,
    ) -> Result<Registration, String> {
        let max = self.settings.max_frame;
        let (hello_id, hello) = match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Ok(Some(Envelope {
                id,
                message: Message::Hello(hello),
                ..
            }))) => (id, hello),
            Ok(Ok(Some(other))) => {
                return Err(format!(
                    "sent `{}` before `hello`",
                    other.message.type_name()
                ));
            }
            Ok(Ok(None)) => return Err("closed the connection before `hello`".to_owned()),
            Ok(Err(e)) => {
                // A newer plugin deserves to hear why it is turned away.
                if matches!(e, p3ak_proto::ProtoError::Version(_)) {
                    let refusal = error(ErrorKind::Invalid, "unsupported protocol version");
                    let frame = p3ak_proto::encode(&Envelope::new(0, refusal), max);
                    let _ = write.write_all(&frame.unwrap_or_default()).await;
                }
                return Err(format!("protocol violation: {e}"));
            }
            Err(_) => return Err("no `hello` in time".to_owned()),
        };
        // Replies repeat the id of the message they answer.
        let send = |id: u64, message: Message| {
            p3ak_proto::encode(&Envelope::new(id, message), max).unwrap_or_default()
        };
        if hello.plugin != spec.name {
            let _ = write
                .write_all(&send(
                    hello_id,
                    error(ErrorKind::Invalid, "wrong plugin name"),
                ))
                .await;
            return Err(format!(
                "said hello as `{}`, but was started as `{}`",
                hello.plugin, spec.name
            ));
        }
        let Some(version) = p3ak_proto::negotiate(&hello.versions) else {
            let _ = write
                .write_all(&send(
                    hello_id,
                    error(ErrorKind::Invalid, "no common protocol version"),
                ))
                .await;
            return Err(format!(
                "speaks protocol versions {:?}, the kernel {:?}",
                hello.versions,
                p3ak_proto::SUPPORTED_VERSIONS
            ));
        };
        let welcome = Message::Welcome(Welcome {
            version,
            config: spec.config.clone(),
        });
        write
            .write_all(&send(hello_id, welcome))
            .await
            .map_err(|e| format!("cannot send welcome: {e}"))?;
        let (register_id, register) = match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Ok(Some(Envelope {
                id,
                message: Message::Register(register),
                ..
            }))) => (id, register),
            Ok(Ok(Some(other))) => {
                return Err(format!(
                    "sent `{}` instead of `register`",
                    other.message.type_name()
                ));
            }
            Ok(Ok(None)) => return Err("closed the connection before `register`".to_owned()),
            Ok(Err(e)) => return Err(format!("protocol violation: {e}")),
            Err(_) => return Err("no `register` in time".to_owned()),
        };
        let registration = match validate_registration(&spec.name, register) {
            Ok(r) => r,
            Err(reason) => {
                let _ = write
                    .write_all(&send(register_id, error(ErrorKind::Invalid, &reason)))
                    .await;
                return Err(format!("invalid registration: {reason}"));
            }
        };
        write
            .write_all(&send(register_id, Message::Registered(Registered {})))
            .await
            .map_err(|e| format!("cannot send registered: {e}"))?;
        Ok(registration)
    }

    /// A plugin killed by a signal: `SIGSYS` is its seccomp filter stopping a system call,
    /// `SIGXCPU`/`SIGKILL` after `RLIMIT_CPU` its CPU limit.
    async fn audit_exit_signal(&self, plugin: &str, status: std::process::ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        let Some(signal) = status.signal() else {
            return;
        };
        let (kind, layer) = match signal {
            31 => (
                "sandbox.violation",
                "seccomp: a system call outside its profile",
            ),
            24 => ("sandbox.violation", "rlimit: CPU time"),
            25 => ("sandbox.violation", "rlimit: file size"),
            _ => ("plugin.signal", "killed by a signal"),
        };
        let _ = self
            .audit
            .record(
                kind,
                serde_json::json!({"plugin": plugin, "signal": signal, "stopped_by": layer,
                    "core_dumped": status.core_dumped()}),
            )
            .await;
    }

    /// Records what a plugin registered. Returns nothing to the plugin about masking.
    async fn audit_registration(&self, spec: &PluginSpec, registration: &Registration) {
        let actions: Vec<String> = registration
            .actions
            .iter()
            .map(|a| format!("{}.{}", spec.name, a.spec.name))
            .collect();
        let _ = self
            .audit
            .record(
                "plugin.registered",
                serde_json::json!({
                    "plugin": spec.name,
                    "kind": registration.kind,
                    "actions": actions,
                }),
            )
            .await;
    }
}

fn error(kind: ErrorKind, message: &str) -> Message {
    Message::Error(ErrorMessage {
        kind,
        message: message.to_owned(),
        retry_after_ms: None,
    })
}

/// Waits for a ping's answer while still reading frames (the pong arrives through them).
async fn wait_ping(
    mut rx: oneshot::Receiver<Result<Message, HostError>>,
    reader: &mut FrameReader,
    connection: &Arc<Connection>,
    child: &mut Child,
) -> Result<(), String> {
    loop {
        tokio::select! {
            answer = &mut rx => {
                return match answer {
                    Ok(Ok(Message::Pong(_))) => Ok(()),
                    Ok(Ok(other)) => Err(format!("answered ping with `{}`", other.type_name())),
                    Ok(Err(HostError::Timeout(_))) => Err("did not answer a ping in time (hung)".to_owned()),
                    Ok(Err(e)) => Err(format!("ping failed: {e}")),
                    Err(_) => Err("ping abandoned".to_owned()),
                };
            }
            frame = reader.next() => match frame {
                Ok(Some(envelope)) => connection.deliver(envelope)?,
                Ok(None) => return Err("closed the connection".to_owned()),
                Err(e) => return Err(format!("protocol violation: {e}")),
            },
            status = child.wait() => {
                return Err(match status {
                    Ok(s) => format!("exited ({s})"),
                    Err(e) => format!("wait failed: {e}"),
                });
            }
        }
    }
}

fn validate_registration(
    plugin: &str,
    register: p3ak_proto::Register,
) -> Result<Registration, String> {
    if register.kind != PluginKind::Tool && !register.actions.is_empty() {
        return Err("only tools register actions".to_owned());
    }
    if register.actions.len() > MAX_ACTIONS {
        return Err(format!("more than {MAX_ACTIONS} actions"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut actions = Vec::with_capacity(register.actions.len());
    for spec in register.actions {
        let full = format!("{plugin}.{}", spec.name);
        // `.` separates plugin and action; `__` stands for it in tool names, so neither may
        // appear inside a name.
        if spec.name.contains('.')
            || spec.name.contains("__")
            || !p3ak_policy::valid_action_name(&full)
        {
            return Err(format!("`{}` is not a valid action name", spec.name));
        }
        if !seen.insert(spec.name.clone()) {
            return Err(format!("action `{}` registered twice", spec.name));
        }
        if spec.description.len() > 4096 {
            return Err(format!(
                "action `{}`: description over 4096 bytes",
                spec.name
            ));
        }
        let validator =
            compile_schema(&spec.parameters).map_err(|e| format!("action `{}`: {e}", spec.name))?;
        actions.push(RegisteredAction {
            spec,
            validator: Arc::new(validator),
        });
    }
    Ok(Registration {
        kind: register.kind,
        actions,
    })
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // The plugin leads its own process group: this takes its children too (a shell command).
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

struct Spawned {
    child: Child,
    listener: UnixListener,
    /// The uid the plugin runs as: the only one allowed to connect.
    uid: u32,
}

/// Reads frames from a plugin; an oversized or malformed one is an error (and the end).
struct FrameReader {
    read: OwnedReadHalf,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    fn new(read: OwnedReadHalf, max: usize) -> Self {
        Self {
            read,
            decoder: FrameDecoder::new(max),
            buf: vec![0u8; 64 * 1024],
        }
    }

    async fn next(&mut self) -> Result<Option<Envelope>, p3ak_proto::ProtoError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return p3ak_proto::decode(&payload).map(Some);
            }
            let n = self.read.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(self.buf.get(..n).unwrap_or_default());
        }
    }
}

/// Resolves once `flag` turns true (or its sender is gone).
/// Resolves when the kernel stops or the plugin is held.
async fn stopped_or_held(shutdown: &mut watch::Receiver<bool>, held: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = stopped(shutdown) => {}
        () = stopped(held) => {}
    }
}

pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// The feed of Landlock denials, or why there is none on this host.
fn denial_feed(
    support: &p3ak_sandbox::Support,
) -> Result<p3ak_sandbox::denials::DenialFeed, String> {
    if !support.root {
        return Err("the kernel is not root: it cannot read the host's audit log".to_owned());
    }
    if support.landlock_abi.is_none_or(|abi| abi < 7) {
        return Err("Landlock ABI 7 (Linux 6.15) is needed to log denials".to_owned());
    }
    match p3ak_sandbox::denials::host_audit_enabled() {
        Ok(true) => {}
        Ok(false) => {
            return Err(
                "the host's audit subsystem is off: `auditctl -e 1` (or the `audit=1` boot \
                 parameter) makes refused file accesses show up here"
                    .to_owned(),
            );
        }
        Err(e) => return Err(e.to_string()),
    }
    p3ak_sandbox::denials::DenialFeed::open().map_err(|e| e.to_string())
}

/// At most [`DenialLimiter::BURST`] `sandbox.denied` entries per plugin in each
/// [`DenialLimiter::WINDOW`]; the rest are counted into the next entry, so that a plugin
/// hammering at a wall cannot flood the audit log.
#[derive(Default)]
struct DenialLimiter {
    by_plugin: HashMap<String, (Instant, u32, u64)>,
}

impl DenialLimiter {
    const BURST: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(suppressed since the last entry)` when an entry may be written now.
    fn admit(&mut self, plugin: &str) -> Option<u64> {
        let now = Instant::now();
        let (start, count, suppressed) = self
            .by_plugin
            .entry(plugin.to_owned())
            .or_insert((now, 0, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= Self::BURST {
            *suppressed += 1;
            return None;
        }
        *count += 1;
        Some(std::mem::take(suppressed))
    }
}

/// How the host sandboxes each plugin (invariant I7), with `p3ak-sandbox` doing the work in
/// the child: what each plugin may reach, under which uid, and preparing those files.
pub mod sandboxing {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use p3ak_sandbox::{Class, Limits, Mode, Plan, Support};

    use super::PluginSpec;
    use crate::config::{KernelSettings, Launch, PluginSandbox};

    /// The host's sandbox: what the machine offers and who each plugin is.
    pub struct Sandbox {
        mode: Mode,
        support: Support,
        missing: Vec<String>,
        ids: Result<BTreeMap<String, u32>, String>,
        settings: BTreeMap<String, PluginSandbox>,
    }

    /// One start's sandbox.
    pub struct PluginPlan {
        /// What `p3ak-sandbox` applies.
        pub prepared: Plan,
        /// Its own directory: HOME, TMPDIR and working directory.
        pub scratch: PathBuf,
        /// Variables passed through.
        pub env: Vec<String>,
        /// Whose uid it gets.
        pub identity: String,
        /// Files the kernel creates for it (a provider's request record).
        files: Vec<PathBuf>,
        /// Trees made its own.
        own: Vec<PathBuf>,
        kernel_uid: u32,
    }

    impl PluginPlan {
        /// The uid it runs as.
        pub fn uid(&self) -> u32 {
            self.prepared.ids.map_or(self.kernel_uid, |(uid, _)| uid)
        }

        /// For the audit log.
        pub fn describe(&self) -> serde_json::Value {
            let p = &self.prepared;
            serde_json::json!({
                "uid": self.uid(),
                "user": self.identity,
                "class": p.class.name(),
                "network": p.network,
                "landlock": p.landlock,
                "seccomp": p.seccomp,
                "limits": p.limits,
            })
        }
    }

    /// The identity whose uid a plugin runs as.
    fn identity(spec: &PluginSpec, settings: Option<&PluginSandbox>) -> String {
        if let Some(user) = settings.and_then(|s| s.user.clone()) {
            return user;
        }
        match &spec.launch {
            Launch::Builtin(b) if b == "files" || b == "shell" => "workspaces".to_owned(),
            _ => spec.name.clone(),
        }
    }

    /// The default class of a plugin.
    fn class_of(launch: &Launch) -> Class {
        match launch {
            Launch::Builtin(b) => match b.as_str() {
                "files" | "vault" => Class::Tool,
                "shell" => Class::Shell,
                "scripted" => Class::Provider,
                // `http` and the providers that call a model service.
                _ => Class::Network,
            },
            Launch::Path(_) => Class::Script,
        }
    }

    fn existing(paths: &[&str]) -> Vec<PathBuf> {
        paths
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    }

    impl Sandbox {
        pub fn new<'a>(
            settings: &KernelSettings,
            specs: impl Iterator<Item = &'a PluginSpec>,
        ) -> Self {
            let support = p3ak_sandbox::probe();
            let missing = support.missing();
            let identities: Vec<String> = specs
                .map(|spec| identity(spec, settings.plugin_sandbox.get(&spec.name)))
                .collect();
            let (first, last) = settings.plugin_ids;
            let ids =
                p3ak_sandbox::allocate_ids(identities.iter().map(String::as_str), first, last)
                    .map_err(|e| e.to_string());
            Self {
                mode: settings.sandbox,
                support,
                missing,
                ids,
                settings: settings.plugin_sandbox.clone(),
            }
        }

        pub fn support(&self) -> &Support {
            &self.support
        }

        /// The uid `spec` runs as, when it has one of its own.
        pub fn uid_of(&self, spec: &PluginSpec) -> Option<u32> {
            let identity = identity(spec, self.settings.get(&spec.name));
            self.ids.as_ref().ok()?.get(&identity).copied()
        }

        pub fn missing(&self) -> &[String] {
            &self.missing
        }

        /// Why no plugin may start, if none may.
        pub fn refusal(&self) -> Option<String> {
            if let Err(e) = &self.ids {
                return Some(format!("sandbox: {e}"));
            }
            if self.mode == Mode::Enforce && !self.missing.is_empty() {
                return Some(p3ak_sandbox::SandboxError::Missing(self.missing.clone()).to_string());
            }
            None
        }

        pub fn describe(&self) -> serde_json::Value {
            serde_json::json!({
                "mode": self.mode,
                "support": self.support,
                "missing": self.missing,
                "ids": self.ids.as_ref().ok(),
            })
        }

        /// What `spec` may reach, as which user.
        pub fn plan(&self, spec: &PluginSpec, exe: &Path) -> Result<PluginPlan, String> {
            let settings = self.settings.get(&spec.name).cloned().unwrap_or_default();
            let identity = identity(spec, Some(&settings));
            let class = settings.class.unwrap_or_else(|| class_of(&spec.launch));
            let network = settings.network.unwrap_or(class == Class::Network);
            let home = spec
                .socket
                .parent()
                .and_then(Path::parent)
                .ok_or("the plugin socket is not in a home's run/")?
                .to_owned();
            let scratch = home.join("plugins").join(&spec.name);
            let program = match &spec.launch {
                Launch::Builtin(_) => exe.to_owned(),
                Launch::Path(path) => path.clone(),
            };
            let mut exec = vec![program];
            exec.extend(existing(&[
                "/lib64/ld-linux-x86-64.so.2",
                "/lib/ld-linux-aarch64.so.1",
            ]));
            let mut read = existing(&[
                "/lib",
                "/lib64",
                "/usr/lib",
                "/usr/lib64",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/usr/share/zoneinfo",
                "/dev/urandom",
            ]);
            let mut write = existing(&["/dev/null"]);
            write.push(scratch.clone());
            if network {
                read.extend(existing(&[
                    "/etc/ssl",
                    "/etc/ca-certificates",
                    "/usr/share/ca-certificates",
                    "/etc/pki",
                    "/etc/resolv.conf",
                    "/etc/hosts",
                    "/etc/nsswitch.conf",
                    "/etc/gai.conf",
                    "/etc/host.conf",
                    "/etc/services",
                ]));
            }
            if matches!(class, Class::Shell | Class::Script) {
                exec.extend(existing(&["/usr/bin", "/usr/local/bin", "/bin"]));
                read.extend(existing(&[
                    "/usr",
                    "/etc/passwd",
                    "/etc/group",
                    "/etc/nsswitch.conf",
                ]));
            }
            let mut files = Vec::new();
            let mut own = Vec::new();
            if let Launch::Builtin(_) = &spec.launch {
                let setting = |key: &str| {
                    spec.config
                        .get(key)
                        .and_then(serde_json::Value::as_str)
                        .map(PathBuf::from)
                };
                if let Some(dir) = setting("workspaces") {
                    own.push(dir);
                }
                if let Some(vault) = setting("vault")
                    && let Some(dir) = vault.parent()
                {
                    own.push(dir.to_owned());
                }
                if let Some(script) = setting("script") {
                    read.push(script);
                }
                if let Some(record) = setting("record") {
                    files.push(record);
                }
            }
            read.extend(settings.read.iter().cloned());
            exec.extend(settings.exec.iter().cloned());
            own.extend(settings.write.iter().cloned());
            write.extend(own.iter().cloned());
            write.extend(files.iter().cloned());
            let defaults = Limits::for_class(class);
            let limits = Limits {
                address_space: settings
                    .memory_mib
                    .map_or(defaults.address_space, |m| m.saturating_mul(1 << 20)),
                open_files: settings.open_files.unwrap_or(defaults.open_files),
                processes: settings.processes.unwrap_or(defaults.processes),
                cpu_seconds: settings.cpu_seconds.unwrap_or(defaults.cpu_seconds),
            };
            let id = match &self.ids {
                Ok(ids) => ids.get(&identity).copied(),
                Err(e) => return Err(e.clone()),
            };
            let ids = if self.support.root {
                let id = id.ok_or_else(|| format!("no uid allocated for `{identity}`"))?;
                Some((id, id))
            } else {
                None
            };
            Ok(PluginPlan {
                prepared: Plan {
                    ids,
                    class,
                    network,
                    read,
                    exec,
                    write,
                    limits,
                    landlock: self.support.landlock_abi.is_some(),
                    seccomp: self.support.seccomp && self.support.seccomp_profiles,
                    trace: false,
                },
                scratch,
                env: settings.env.clone(),
                identity,
                files,
                own,
                kernel_uid: rustix::process::geteuid().as_raw(),
            })
        }

        /// Makes what the plugin needs exist and belong to it: its scratch directory, the
        /// trees it writes, its socket (0600, its uid), and a path to them it may traverse.
        pub fn prepare_files(&self, spec: &PluginSpec, plan: &PluginPlan) -> Result<(), String> {
            // Landlock rules need the files to exist: the plugin may write them, not create
            // them next to the kernel's own.
            for file in &plan.files {
                if !file.exists() {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(file)
                        .map_err(|e| format!("cannot create `{}`: {e}", file.display()))?;
                }
            }
            let Some((uid, gid)) = plan.prepared.ids else {
                return make_dir(&plan.scratch, None);
            };
            let home = plan
                .scratch
                .parent()
                .and_then(Path::parent)
                .ok_or("no home")?
                .to_owned();
            // The home, run/ and plugins/ are traversable, not listable: 0711. Everything the
            // kernel keeps inside stays 0700/0600.
            make_dir(&home.join("plugins"), None)?;
            for dir in [home.clone(), home.join("run"), home.join("plugins")] {
                set_mode(&dir, 0o711)?;
            }
            traversable_ancestors(&home)?;
            make_dir(&plan.scratch, Some((uid, gid)))?;
            for dir in &plan.own {
                make_dir(dir, None)?;
                chown_tree(dir, uid, gid)?;
                if let Some(parent) = dir.parent() {
                    traversable_ancestors(parent)?;
                }
            }
            for file in &plan.files {
                chown(file, uid, gid)?;
            }
            chown(&spec.socket, uid, gid)?;
            set_mode(&spec.socket, 0o600)
        }
    }

    fn make_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        if let Some((uid, gid)) = owner {
            chown(dir, uid, gid)?;
            set_mode(dir, 0o700)?;
        }
        Ok(())
    }

    pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of `{}`: {e}", path.display()))
    }

    fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give `{}` to uid {uid}: {e}", path.display()))
    }

    /// Gives a tree to a plugin's user (symlinks themselves, never what they point to).
    fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
        let mut stack = vec![dir.to_owned()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            if meta.uid() != uid || meta.gid() != gid {
                chown(&path, uid, gid)?;
            }
            if meta.is_dir() {
                let entries = std::fs::read_dir(&path)
                    .map_err(|e| format!("cannot list `{}`: {e}", path.display()))?;
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
        Ok(())
    }

    /// A plugin's user must be able to walk from `/` to its files: directories on the way
    /// that belong to the kernel's user get search permission for others (not read: nothing
    /// can be listed). Others' directories are left alone.
    pub(crate) fn traversable_ancestors(path: &Path) -> Result<(), String> {
        let me = rustix::process::geteuid().as_raw();
        for dir in path.ancestors() {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            if meta.mode() & 0o001 == 0 && meta.uid() == me {
                set_mode(dir, (meta.mode() & 0o7777) | 0o001)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn classes_follow_the_builtin() {
            assert_eq!(class_of(&Launch::Builtin("files".into())), Class::Tool);
            assert_eq!(class_of(&Launch::Builtin("shell".into())), Class::Shell);
            assert_eq!(class_of(&Launch::Builtin("http".into())), Class::Network);
            assert_eq!(
                class_of(&Launch::Builtin("anthropic".into())),
                Class::Network
            );
            assert_eq!(
                class_of(&Launch::Builtin("scripted".into())),
                Class::Provider
            );
            assert_eq!(class_of(&Launch::Path("/x".into())), Class::Script);
        }
    }
}

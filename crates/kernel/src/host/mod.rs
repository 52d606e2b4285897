//! The plugin host: has each configured plugin started (by the [`Launcher`]), takes its
//! handshake, serves its connection, pings it, and restarts it with backoff when it dies,
//! hangs or breaks the protocol — while every other plugin keeps being served.
//!
//! | module | job |
//! |---|---|
//! | [`connection`] | a live connection: requests, answers, streams, flood limits |
//! | [`handshake`] | the handshake as a sans-IO state machine |
//! | [`registration`] | what a plugin may register |
//! | `supervise` | one plugin's life: start, serve, stop, restart |
//! | `denials` | refused accesses reported by the host, rate-limited |

pub mod connection;
mod denials;
pub mod handshake;
pub mod registration;
mod supervise;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use p3ak_crypto::SecretBytes;
use p3ak_proto::PluginKind;
use serde::Serialize;
use tokio::sync::watch;

pub use connection::{CONNECTOR_QUEUE, Connection, HostError, PluginEvent, Violation};
pub use registration::{RegisteredAction, Registration};

use crate::audit::AuditEvent;
use crate::audit::AuditLog;
use crate::broker::Broker;
use crate::config::KernelSettings;
use crate::launch::{Launcher, PluginSpec};

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

struct Slot {
    spec: PluginSpec,
    /// The key it gets in `welcome` (the vault plugin's), replaced after a rekey.
    handoff: RwLock<Option<Arc<SecretBytes>>>,
    /// While true the plugin is stopped and not restarted (maintenance such as a rekey).
    held: watch::Sender<bool>,
    state: watch::Sender<PluginState>,
    connection: RwLock<Option<Arc<Connection>>>,
    pid: RwLock<Option<u32>>,
    /// The uid it ran as last, to match the host's reports of refused accesses.
    uid: RwLock<Option<u32>>,
    restarts: AtomicU64,
}

/// The host of every configured plugin.
pub struct Host {
    slots: BTreeMap<String, Arc<Slot>>,
    settings: KernelSettings,
    audit: AuditLog,
    broker: Arc<Broker>,
    launcher: Launcher,
    stopping: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    connectors: std::sync::OnceLock<Connectors>,
}

/// The chat connectors' side of the host: their tokens and where their requests go.
struct Connectors {
    /// Plugin → the secret handed to it in `welcome` (see [`PluginSecret`]).
    tokens: BTreeMap<String, PluginSecret>,
    requests: tokio::sync::mpsc::Sender<PluginEvent>,
}

/// The secret a plugin is handed in `welcome` (`credential = "NAME"` in its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSecret {
    /// The secret's name.
    pub name: String,
    /// Whether the secret's host binding is checked against the URLs of the plugin's config
    /// (a tool's servers); a connector talks to its one platform and is not checked.
    pub host_bound: bool,
}

impl Host {
    /// A host for these plugins, started by `launcher`. `vault_key` is handed to the `vault`
    /// plugins in `welcome`.
    #[must_use]
    pub fn new(
        specs: Vec<PluginSpec>,
        settings: KernelSettings,
        audit: AuditLog,
        broker: Arc<Broker>,
        launcher: Launcher,
        vault_key: Option<Arc<SecretBytes>>,
    ) -> Self {
        let slots: BTreeMap<String, Arc<Slot>> = specs
            .into_iter()
            .map(|spec| {
                let (state, _) = watch::channel(PluginState::Starting);
                let (held, _) = watch::channel(false);
                let handoff = match &spec.launch {
                    crate::config::Launch::Builtin(b) if b == "vault" => vault_key.clone(),
                    _ => None,
                };
                (
                    spec.name.clone(),
                    Arc::new(Slot {
                        spec,
                        handoff: RwLock::new(handoff),
                        held,
                        state,
                        connection: RwLock::new(None),
                        pid: RwLock::new(None),
                        uid: RwLock::new(None),
                        restarts: AtomicU64::new(0),
                    }),
                )
            })
            .collect();
        let (shutdown, _) = watch::channel(false);
        Self {
            slots,
            settings,
            audit,
            broker,
            launcher,
            stopping: Arc::new(AtomicBool::new(false)),
            shutdown,
            connectors: std::sync::OnceLock::new(),
        }
    }

    /// Routes the connectors' requests (and their comings up) to the returned queue, and hands
    /// each connector in `tokens` its platform token from the broker when it starts. Call
    /// before [`Host::start`]; a second call returns `None`.
    pub fn route_connectors(
        &self,
        tokens: BTreeMap<String, PluginSecret>,
    ) -> Option<tokio::sync::mpsc::Receiver<PluginEvent>> {
        let (requests, receiver) = tokio::sync::mpsc::channel(CONNECTOR_QUEUE);
        self.connectors
            .set(Connectors { tokens, requests })
            .ok()
            .map(|()| receiver)
    }

    /// A plugin's credential, fresh from the broker (a secret changed with `p3ak secret set`
    /// applies at its next start). A missing, out-of-scope or wrongly bound secret is logged;
    /// the plugin then starts without one and says so.
    fn plugin_token(
        &self,
        plugin: &str,
        config: &serde_json::Value,
    ) -> Option<p3ak_proto::Credential> {
        let secret = self.connectors.get()?.tokens.get(plugin)?;
        let config = secret.host_bound.then_some(config);
        match self.broker.plugin_credential(&secret.name, plugin, config) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::warn!(plugin, "no credential: {e}");
                None
            }
        }
    }

    /// Starts every plugin's supervisor and waits (up to the start timeout) until each is
    /// running or has failed its first start.
    pub async fn start(self: &Arc<Self>) {
        let described = self.launcher.describe();
        let weaker = described
            .get("weaker")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten();
        for weaker in weaker {
            tracing::warn!("sandbox: {}", weaker.as_str().unwrap_or_default());
        }
        self.audit.note(AuditEvent::SandboxHost { described }).await;
        match self.launcher.refusal() {
            (Some(refusal), _) => tracing::error!("{refusal}"),
            (None, missing) if !missing.is_empty() => {
                tracing::warn!("sandbox degraded: {}", missing.join("; "));
            }
            _ => {}
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

    /// Audits every file access Landlock (or a file's permissions) refuses a plugin
    /// (`sandbox.denied`), as the launcher reads them from the host's audit subsystem; says in
    /// `sandbox.denials` whether that is possible here.
    async fn watch_denials(self: &Arc<Self>) {
        let feed = self.launcher.denials(Arc::clone(&self.stopping));
        if let Some(mut denials) = feed.denials {
            let host = Arc::clone(self);
            tokio::spawn(async move {
                let mut limiter = denials::DenialLimiter::default();
                while let Some(denial) = denials.recv().await {
                    host.record_denial(&denial, &mut limiter).await;
                }
            });
        }
        self.audit
            .note(AuditEvent::SandboxDenials {
                audited: feed.why_not.is_none(),
                why_not: feed.why_not.clone(),
                permission_refusals: serde_json::json!(feed.permission_refusals),
            })
            .await;
    }

    async fn record_denial(
        &self,
        denial: &p3ak_sandbox::denials::Denial,
        limiter: &mut denials::DenialLimiter,
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
                .filter(|slot| {
                    slot.uid
                        .read()
                        .map(|u| *u == Some(denial.uid))
                        .unwrap_or(false)
                })
                .map(|slot| slot.spec.name.clone())
                .collect(),
        };
        // A refusal of the kernel's own uid (under the warden: something running as the
        // kernel reached for the approval daemon's files, say).
        if plugins.is_empty() && denial.uid == rustix::process::geteuid().as_raw() {
            if limiter.admit("kernel", Instant::now()).is_some() {
                self.audit
                    .note(AuditEvent::KernelDenied {
                        pid: serde_json::json!(denial.pid),
                        uid: serde_json::json!(denial.uid),
                        blockers: serde_json::json!(denial.blockers),
                        detail: serde_json::json!(denial.detail),
                    })
                    .await;
            }
            return;
        }
        // Other sandboxed programs on the host are not ours to audit.
        let Some(first) = plugins.first() else {
            return;
        };
        let Some(suppressed) = limiter.admit(first, Instant::now()) else {
            return;
        };
        self.audit
            .note(AuditEvent::SandboxDenied {
                plugin: plugins.join("|"),
                pid: serde_json::json!(denial.pid),
                uid: serde_json::json!(denial.uid),
                blockers: serde_json::json!(denial.blockers),
                detail: serde_json::json!(denial.detail),
                suppressed_before: suppressed,
            })
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

    /// Whether the plugin is one of ours (its declared tiers may count).
    #[must_use]
    pub fn is_first_party(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|s| s.spec.first_party())
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

    /// Starts a held plugin again; `handoff`, when given, replaces the key it gets.
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
}

/// Resolves once `flag` turns true (or its sender is gone).
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

//! The running kernel: startup, the control socket, shutdown.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p3ak_crypto::Passphrase;
use p3ak_policy::{Policy, PolicyCell};
use p3ak_vault::{Access, Unlock, Vault, VaultKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::KernelError;
use crate::agent::{Agent, load_agents};
use crate::audit::AuditLog;
use crate::authorize::Enforcer;
use crate::broker::{Broker, SecretValue};
use crate::config::{Config, Launch};
use crate::control::{ControlEvent, ControlRequest, KernelStatus, MAX_CONTROL_FRAME, plugin_rows};
use crate::hitl::{HitlLink, HitlStart};
use crate::home::Home;
use crate::host::{Host, PluginSpec};
use crate::ledger::Ledger;
use crate::pending::PendingQueue;
use p3ak_hitl::wire::{OperatorAnswer, OperatorRequest};

/// What the kernel needs to start.
pub struct KernelOptions {
    /// Its home.
    pub home: Home,
    /// The kernel's passphrase (opens the kernel's vault and the memory vault).
    pub passphrase: Passphrase,
    /// The `p3ak` binary, which first-party plugins run from.
    pub exe: PathBuf,
}

/// A running kernel.
pub struct Kernel {
    pub(crate) home: Home,
    pub(crate) config: Config,
    pub(crate) agents: BTreeMap<String, Agent>,
    pub(crate) enforcer: Enforcer,
    pub(crate) broker: Arc<Broker>,
    pub(crate) audit: AuditLog,
    pub(crate) host: Arc<Host>,
    pub(crate) pending: Arc<PendingQueue>,
    pub(crate) hitl: Arc<HitlLink>,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) vault: Arc<Vault>,
    pub(crate) memory_key: std::sync::RwLock<Option<VaultKey>>,
    /// Kept only when a rekey may be staged (the same passphrase, a new master key).
    pub(crate) rekey_passphrase: Option<Passphrase>,
    pub(crate) usage: Mutex<crate::control::UsageTotals>,
    stop: watch::Sender<bool>,
}

impl Kernel {
    /// Opens everything and starts the plugins.
    pub async fn start(options: KernelOptions) -> Result<Arc<Self>, KernelError> {
        let KernelOptions {
            home,
            passphrase,
            exe,
        } = options;
        if !home.is_initialised() {
            return Err(KernelError::Home(format!(
                "`{}` is not set up: run `p3ak init`",
                home.root().display()
            )));
        }
        home.prepare_run_dir()?;
        check_not_running(&home)?;
        let config = Config::load(&home.config())?;
        let policy_path = home.policy();
        let policy_text = std::fs::read_to_string(&policy_path).map_err(KernelError::io(
            format!("cannot read `{}`", policy_path.display()),
        ))?;
        let policy = Policy::from_yaml(&policy_text)?;
        let agents = load_agents(&home.agents())?;
        if !agents.contains_key(&config.kernel.default_agent) {
            return Err(KernelError::Config {
                path: home.config(),
                message: format!(
                    "default_agent `{}` has no file in `{}`",
                    config.kernel.default_agent,
                    home.agents().display()
                ),
            });
        }

        let (vault, memory_key, passphrase) = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || -> Result<_, KernelError> {
                let mut vault = Vault::open(
                    &home.kernel_vault(),
                    Unlock::Passphrase(&passphrase),
                    Access::Write,
                )?;
                vault.set_actor("kernel");
                let memory = home.memory_vault();
                let key = if memory.exists() {
                    Some(VaultKey::derive(&memory, &passphrase)?)
                } else {
                    None
                };
                Ok((vault, key, passphrase))
            })
            .await
            .map_err(|e| KernelError::Home(format!("startup task failed: {e}")))??
        };
        // Kept for a rekey of the memory vault (same passphrase, new master key).
        let rekey_passphrase = memory_key.is_some().then_some(passphrase);
        let vault = Arc::new(vault);
        let broker = Arc::new(Broker::load(&vault)?);
        let audit = AuditLog::new(Arc::clone(&vault), Arc::clone(&broker));
        std::fs::write(home.pid_file(), std::process::id().to_string())
            .map_err(KernelError::io("cannot write the pid file"))?;

        let specs = plugin_specs(&home, &config, memory_key.as_ref());
        audit
            .record(
                "kernel.start",
                serde_json::json!({
                    "pid": std::process::id(),
                    "plugins": specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                    "agents": agents.keys().collect::<Vec<_>>(),
                    "policy_rules": policy.rule_count(),
                }),
            )
            .await?;
        let host = Arc::new(Host::new(
            specs,
            config.kernel.clone(),
            audit.clone(),
            Arc::clone(&broker),
            exe.clone(),
        ));
        let pending = Arc::new(PendingQueue::default());
        let hitl = match HitlLink::start(HitlStart {
            home: &home,
            settings: &config.hitl,
            exe: &exe,
            vault: &vault,
            categories: vec!["kernel".to_owned()],
            pending: Arc::clone(&pending),
            audit: audit.clone(),
        })
        .await
        {
            Ok(hitl) => hitl,
            Err(e) => {
                let _ = std::fs::remove_file(home.pid_file());
                return Err(e);
            }
        };
        audit
            .record(
                "hitl.start",
                serde_json::json!({
                    "pid": hitl.info().pid,
                    "console": hitl.info().login_link.is_some(),
                    "console_error": hitl.info().console_error,
                }),
            )
            .await?;
        host.start().await;
        let (stop, _) = watch::channel(false);
        Ok(Arc::new(Self {
            home,
            config,
            agents,
            enforcer: Enforcer::new(Arc::new(PolicyCell::new(policy))),
            broker,
            audit,
            host,
            pending,
            hitl,
            ledger: Mutex::new(Ledger::default()),
            vault,
            memory_key: std::sync::RwLock::new(memory_key),
            rekey_passphrase,
            usage: Mutex::new(crate::control::UsageTotals::default()),
            stop,
        }))
    }

    /// The plugin host.
    #[must_use]
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The pending queue.
    #[must_use]
    pub fn pending(&self) -> &Arc<PendingQueue> {
        &self.pending
    }

    /// The approval daemon.
    #[must_use]
    pub fn hitl(&self) -> &Arc<HitlLink> {
        &self.hitl
    }

    /// Sends an operator's request to the approval daemon (what the control socket does).
    pub async fn operator(
        &self,
        request: OperatorRequest,
        channel: &str,
    ) -> Result<OperatorAnswer, KernelError> {
        self.hitl.operator(request, channel).await
    }

    /// The audit log.
    #[must_use]
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Asks [`Kernel::serve`] to return.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Serves the control socket until a stop is requested, then shuts down the plugins.
    pub async fn serve(self: &Arc<Self>) -> Result<(), KernelError> {
        let socket = self.home.control_socket();
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(KernelError::io(format!(
            "cannot bind `{}`",
            socket.display()
        )))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(KernelError::io("cannot restrict the control socket"))?;
        let mut stop = self.stop.subscribe();
        let schedule = tokio::spawn(Arc::clone(self).run_rekey_schedule());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let kernel = Arc::clone(self);
                        tokio::spawn(async move { kernel.handle_control(stream).await });
                    }
                }
                () = crate::host::stopped(&mut stop) => break,
            }
        }
        schedule.abort();
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        self.shutdown().await
    }

    async fn shutdown(&self) -> Result<(), KernelError> {
        self.hitl.shutdown().await;
        self.host.shutdown().await;
        self.audit
            .record(
                "kernel.stop",
                serde_json::json!({"pid": std::process::id()}),
            )
            .await?;
        let _ = std::fs::remove_file(self.home.pid_file());
        Ok(())
    }

    async fn handle_control(self: Arc<Self>, mut stream: UnixStream) {
        let own_uid = rustix::process::geteuid().as_raw();
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == own_uid => {}
            Ok(cred) => {
                let _ = self
                    .audit
                    .record(
                        "control.refused",
                        serde_json::json!({"peer_uid": cred.uid()}),
                    )
                    .await;
                return;
            }
            Err(_) => return,
        }
        let request = match read_request(&mut stream).await {
            Ok(request) => request,
            Err(message) => {
                let _ = write_event(&mut stream, &ControlEvent::Error { message }).await;
                return;
            }
        };
        let (events, mut receiver) = mpsc::unbounded_channel::<ControlEvent>();
        let kernel = Arc::clone(&self);
        let work = tokio::spawn(async move { kernel.control(request, events).await });
        while let Some(event) = receiver.recv().await {
            let last = event.is_final();
            if write_event(&mut stream, &event).await.is_err() || last {
                break;
            }
        }
        drop(receiver);
        let _ = work.await;
    }

    async fn control(&self, request: ControlRequest, events: mpsc::UnboundedSender<ControlEvent>) {
        let operator = format!("operator (uid {})", rustix::process::geteuid().as_raw());
        let event = match &request {
            ControlRequest::Chat {
                agent,
                conversation,
                text,
            } => {
                let inbound = p3ak_proto::Inbound {
                    conversation: conversation.clone(),
                    sender: operator.clone(),
                    text: text.clone(),
                    agent: agent.clone(),
                };
                match self.turn(inbound, "console", events.clone()).await {
                    Ok(text) => ControlEvent::Reply { text },
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::Hitl { .. } => {
                let mut request = request;
                let operator_request = match &mut request {
                    ControlRequest::Hitl { request } => {
                        std::mem::replace(request, OperatorRequest::Pending)
                    }
                    _ => OperatorRequest::Pending,
                };
                match self.hitl.operator(operator_request, &operator).await {
                    Ok(answer) => ControlEvent::Hitl { answer },
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::SecretSet {
                name,
                value,
                scopes,
            } => {
                let broker = Arc::clone(&self.broker);
                let vault = Arc::clone(&self.vault);
                let (name, scopes) = (name.clone(), scopes.clone());
                let value = SecretValue::new(value.clone());
                let shown = name.clone();
                let result =
                    tokio::task::spawn_blocking(move || broker.set(&vault, &name, value, scopes))
                        .await;
                match result {
                    Ok(Ok(())) => ControlEvent::Done {
                        message: format!("secret `{shown}` stored"),
                    },
                    Ok(Err(e)) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                    Err(e) => ControlEvent::Error {
                        message: format!("secret task failed: {e}"),
                    },
                }
            }
            ControlRequest::Rekey => match self.stage_rekey("operator", Some(&events)).await {
                Ok(message) => ControlEvent::Done { message },
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::SecretList => ControlEvent::Secrets {
                items: self.broker.list(),
            },
            ControlRequest::Status => ControlEvent::Status(self.status()),
            ControlRequest::Shutdown => {
                self.request_stop();
                ControlEvent::Done {
                    message: "the kernel is shutting down".to_owned(),
                }
            }
        };
        let _ = events.send(event);
    }

    /// The kernel's state.
    #[must_use]
    pub fn status(&self) -> KernelStatus {
        KernelStatus {
            pid: std::process::id(),
            home: self.home.root().display().to_string(),
            plugins: plugin_rows(self.host.status()),
            pending: self.pending.len(),
            hitl: serde_json::json!({
                "pid": self.hitl.info().pid,
                "running": self.hitl.is_alive(),
                "console": self.hitl.info().login_link.is_some(),
                "console_error": self.hitl.info().console_error,
            }),
            agents: self.agents.keys().cloned().collect(),
            usage: self.usage.lock().map(|u| u.all).unwrap_or_default(),
            usage_by_provider: self
                .usage
                .lock()
                .map(|u| u.by_provider.clone())
                .unwrap_or_default(),
        }
    }
}

fn check_not_running(home: &Home) -> Result<(), KernelError> {
    let Ok(text) = std::fs::read_to_string(home.pid_file()) else {
        return Ok(());
    };
    let pid = text.trim().to_owned();
    let alive = pid
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    if alive && home.control_socket().exists() {
        return Err(KernelError::AlreadyRunning {
            home: home.root().to_owned(),
            pid,
        });
    }
    Ok(())
}

/// Each enabled plugin, with the settings first-party plugins need filled in.
fn plugin_specs(home: &Home, config: &Config, memory_key: Option<&VaultKey>) -> Vec<PluginSpec> {
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
        let mut stdin = None;
        if let Launch::Builtin(builtin) = &launch {
            let path = |p: PathBuf| serde_json::Value::String(p.display().to_string());
            match builtin.as_str() {
                "files" | "shell" => {
                    settings
                        .entry("workspaces")
                        .or_insert_with(|| path(home.workspaces()));
                }
                "vault" => {
                    settings
                        .entry("vault")
                        .or_insert_with(|| path(home.memory_vault()));
                    stdin = memory_key.map(|k| Arc::new(k.to_handoff_bytes()));
                }
                _ => {}
            }
            // Relative paths in first-party settings are relative to the home.
            for key in ["script", "record", "workspaces", "vault"] {
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
            stdin,
            socket: home.plugin_socket(name),
        });
    }
    specs
}

async fn read_request(stream: &mut UnixStream) -> Result<ControlRequest, String> {
    let mut decoder = p3ak_proto::FrameDecoder::new(MAX_CONTROL_FRAME);
    let mut buf = vec![0u8; 16 * 1024];
    let read = async {
        loop {
            if let Some(payload) = decoder.next_frame().map_err(|e| e.to_string())? {
                let payload = zeroize::Zeroizing::new(payload);
                return serde_json::from_slice::<ControlRequest>(&payload)
                    .map_err(|e| format!("invalid request: {e}"));
            }
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a whole request".to_owned());
            }
            decoder.push(buf.get(..n).unwrap_or_default());
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "no request in time".to_owned())?;
    zeroize::Zeroize::zeroize(&mut buf);
    result
}

async fn write_event(stream: &mut UnixStream, event: &ControlEvent) -> Result<(), String> {
    let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let frame =
        p3ak_proto::encode_payload(&payload, MAX_CONTROL_FRAME).map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

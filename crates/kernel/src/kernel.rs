//! The running kernel: startup, the control socket, shutdown.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p3ak_crypto::Passphrase;
use p3ak_policy::{Policy, PolicyCell};
use p3ak_vault::{Access, Unlock, Vault, VaultKey};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::agent::{Agent, load_agents};
use crate::audit::AuditEvent;
use crate::audit::AuditLog;
use crate::authorize::Enforcer;
use crate::broker::{Broker, SecretValue};
use crate::config::Config;
use crate::control::{ControlEvent, ControlRequest, KernelStatus, MAX_CONTROL_FRAME, plugin_rows};
use crate::grants::GrantBook;
use crate::hitl::{Attach, DaemonLaunch, HitlLink, StageWriter};
use crate::home::Home;
use crate::host::Host;
use crate::launch::{Launcher, LocalLauncher};
use crate::ledger::Ledger;
use crate::pending::PendingQueue;
use crate::road::{Clock as _, Road, RoadParts, SystemClock};
use crate::warden::RemoteLauncher;
use crate::{KernelError, WardenError};
use p3ak_approval::spool::{Spool, SpoolKey};

/// What the kernel needs to start in this process (the demo, tests, a host without the
/// warden): it derives its keys from the passphrase and starts plugins and the approval daemon
/// itself.
pub struct KernelOptions {
    /// Its home.
    pub home: Home,
    /// The kernel's passphrase (opens the kernel's vault and the memory vault).
    pub passphrase: Passphrase,
    /// The `p3ak` binary, which first-party plugins run from.
    pub exe: PathBuf,
}

/// How the memory vault is rekeyed: with the passphrase this process holds, or by the warden,
/// which holds it for an unprivileged kernel.
pub(crate) enum Rekeyer {
    /// Here.
    Local(Passphrase),
    /// By the warden.
    Warden(Arc<RemoteLauncher>),
    /// Not at all (no memory vault).
    None,
}

/// A running kernel.
pub struct Kernel {
    pub(crate) home: Home,
    pub(crate) config: Config,
    pub(crate) agents: BTreeMap<String, Agent>,
    /// The chat connectors' router: pairings, commands, conversations.
    pub(crate) connectors: crate::connectors::Router,
    pub(crate) road: Road,
    pub(crate) broker: Arc<Broker>,
    pub(crate) audit: AuditLog,
    pub(crate) host: Arc<Host>,
    pub(crate) pending: Arc<PendingQueue>,
    pub(crate) hitl: Arc<HitlLink>,
    pub(crate) vault: Arc<Vault>,
    pub(crate) memory_key: std::sync::RwLock<Option<VaultKey>>,
    pub(crate) rekeyer: Rekeyer,
    pub(crate) usage: Mutex<crate::control::UsageTotals>,
    /// The policy in force; swapped by `policy apply` and SIGHUP.
    pub(crate) policy: Arc<PolicyCell>,
    /// One policy change at a time.
    pub(crate) reload: tokio::sync::Mutex<()>,
    /// Remembered approvals.
    pub(crate) grants: Arc<GrantBook>,
    /// The API's tokens.
    pub(crate) tokens: Arc<crate::tokens::TokenBook>,
    /// What `GET /metrics` shows.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The skills in `skills/`, read at start (docs/skills.md).
    pub(crate) skills: Arc<crate::skills::Skills>,
    /// The uids served on the control socket.
    operators: Vec<u32>,
    /// The warden, when it started this kernel.
    warden: Option<Arc<RemoteLauncher>>,
    stop: watch::Sender<bool>,
}

/// What both ways of starting have ready before the plugins start.
struct Opened {
    home: Home,
    config: Config,
    policy: Policy,
    agents: BTreeMap<String, Agent>,
    vault: Arc<Vault>,
    broker: Arc<Broker>,
    audit: AuditLog,
    grants: Arc<GrantBook>,
    tokens: Arc<crate::tokens::TokenBook>,
}

impl Kernel {
    /// Opens everything and starts the approval daemon and the plugins, in this process.
    pub async fn start(options: KernelOptions) -> Result<Arc<Self>, KernelError> {
        let KernelOptions {
            home,
            passphrase,
            exe,
        } = options;
        let (kernel_key, memory_key, state_key, passphrase) = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || -> Result<_, KernelError> {
                let kernel = VaultKey::derive(&home.kernel_vault(), &passphrase)?;
                let memory = home.memory_vault();
                let memory = if memory.exists() {
                    Some(VaultKey::derive(&memory, &passphrase)?)
                } else {
                    None
                };
                let state = crate::hitl::state_key(&home, &passphrase)?;
                Ok((kernel, memory, state, passphrase))
            })
            .await
            .map_err(KernelError::task("startup task"))??
        };
        let opened = Self::open(home, &kernel_key).await?;
        let Opened {
            home,
            config,
            policy,
            ..
        } = &opened;
        let root = rustix::process::geteuid().is_root();
        let (daemon_id, writer_id) = config.hitl.ids;
        let daemon = root.then_some((daemon_id, daemon_id));
        let writer = root.then_some((writer_id, writer_id));
        let operators = crate::warden::operators(config);
        let previous_state_key = crate::hitl::previous_state_key(&opened.vault)?;
        let spool_key = SpoolKey::generate()?;
        let mut categories = vec!["kernel".to_owned()];
        categories.extend(policy.groups());
        let approval_master = crate::hitl::chat_master_key(&state_key)?;
        let started = crate::hitl::spawn_daemon(DaemonLaunch {
            home,
            settings: &config.hitl,
            exe: &exe,
            categories,
            daemon,
            writer,
            operators: operators.clone(),
            state_key,
            previous_state_key,
            spool_key: &spool_key,
            connectors: crate::launch::connectors(config),
        })
        .await?;
        if started.resealed {
            crate::hitl::forget_previous_state_key(&opened.vault)?;
        }
        let writer = match writer {
            Some((uid, gid)) => StageWriter::AsUser {
                exe: exe.clone(),
                uid,
                gid,
            },
            None => StageWriter::Direct,
        };
        let specs = crate::launch::plugin_specs(home, config);
        let launcher = Launcher::Local(Arc::new(
            LocalLauncher::new(
                specs,
                &config.kernel,
                home.root(),
                exe,
                rustix::process::getegid().as_raw(),
            )
            .with_approval_master(approval_master),
        ));
        let rekeyer = if memory_key.is_some() {
            Rekeyer::Local(passphrase)
        } else {
            Rekeyer::None
        };
        let kernel = Self::assemble(
            opened,
            Assembly {
                memory_key,
                launcher,
                daemon: DaemonSide::Started(Box::new(started)),
                spool_key,
                writer,
                rekeyer,
                operators,
                warden: None,
            },
        )
        .await?;
        Ok(kernel)
    }

    /// Starts the kernel the warden prepared: keys instead of the passphrase, plugins and the
    /// approval daemon started by the warden.
    pub(crate) async fn start_under_warden(
        start: crate::warden::KernelStart,
        daemon_channel: std::os::unix::net::UnixStream,
        remote: Arc<RemoteLauncher>,
    ) -> Result<Arc<Self>, KernelError> {
        let home = Home::new(&start.home);
        let kernel_key = handoff_key(&start.kernel_key)?;
        let memory_key = start.memory_key.as_ref().map(handoff_key).transpose()?;
        let spool_key = SpoolKey::from_hex(start.spool_key.expose())?;
        let opened = Self::open(home, &kernel_key).await?;
        drop(kernel_key);
        if start.forget_previous_state_key {
            crate::hitl::forget_previous_state_key(&opened.vault)?;
        }
        let rekeyer = if memory_key.is_some() {
            Rekeyer::Warden(Arc::clone(&remote))
        } else {
            Rekeyer::None
        };
        Self::assemble(
            opened,
            Assembly {
                memory_key,
                launcher: Launcher::Remote(Arc::clone(&remote)),
                daemon: DaemonSide::Attached {
                    channel: daemon_channel,
                    info: start.hitl.clone(),
                },
                spool_key,
                writer: StageWriter::Direct,
                rekeyer,
                operators: start.operators.clone(),
                warden: Some(remote),
            },
        )
        .await
    }

    /// Checks the home, reads config, policy and agents, and opens the kernel's vault.
    async fn open(home: Home, key: &VaultKey) -> Result<Opened, KernelError> {
        if !home.is_initialised() {
            return Err(KernelError::NotInitialised {
                home: home.root().to_owned(),
            });
        }
        home.prepare_run_dir()?;
        check_not_running(&home)?;
        let config = Config::load(&home.config())?;
        let policy = load_policy(&home)?;
        let agents = load_agents(&home.agents())?;
        check_agent_refs(&home, &config, &agents)?;
        let vault = {
            let path = home.kernel_vault();
            let key = VaultKey::from_handoff_bytes(key.to_handoff_bytes().expose())?;
            tokio::task::spawn_blocking(move || -> Result<Vault, KernelError> {
                let mut vault = Vault::open(&path, Unlock::Key(&key), Access::Write)?;
                vault.set_actor("kernel");
                Ok(vault)
            })
            .await
            .map_err(KernelError::task("startup task"))??
        };
        let vault = Arc::new(vault);
        let broker = Arc::new(Broker::load(&vault)?);
        let grants = Arc::new(GrantBook::load(Arc::clone(&vault), unix_now())?);
        let tokens = Arc::new(crate::tokens::TokenBook::load(
            Arc::clone(&vault),
            unix_now(),
        )?);
        let audit = AuditLog::new(Arc::clone(&vault), Arc::clone(&broker));
        std::fs::write(home.pid_file(), std::process::id().to_string())
            .map_err(KernelError::io("cannot write the pid file"))?;
        Ok(Opened {
            home,
            config,
            policy,
            agents,
            vault,
            broker,
            audit,
            grants,
            tokens,
        })
    }

    /// Attaches the approval daemon, starts the plugins and builds the kernel.
    async fn assemble(opened: Opened, assembly: Assembly) -> Result<Arc<Self>, KernelError> {
        let Opened {
            home,
            config,
            policy,
            agents,
            vault,
            broker,
            audit,
            grants,
            tokens: api_tokens,
        } = opened;
        let Assembly {
            memory_key,
            launcher,
            daemon,
            spool_key,
            writer,
            rekeyer,
            operators,
            warden,
        } = assembly;
        let specs = crate::launch::plugin_specs(&home, &config);
        audit
            .record(AuditEvent::KernelStart {
                pid: std::process::id(),
                uid: rustix::process::geteuid().as_raw(),
                warden: warden.is_some(),
                plugins: specs.iter().map(|s| s.name.clone()).collect(),
                agents: agents.keys().cloned().collect(),
                policy_rules: policy.rule_count(),
            })
            .await?;
        let skills = {
            let root = home.skills();
            tokio::task::spawn_blocking(move || crate::skills::Skills::discover(&root))
                .await
                .map_err(KernelError::task("reading the skills"))?
        };
        for invalid in &skills.invalid {
            tracing::warn!("skill left out: {}", invalid.error);
            audit
                .record(AuditEvent::SkillInvalid {
                    dir: invalid.dir.clone(),
                    error: invalid.error.clone(),
                })
                .await
                .ok();
        }
        // Totals and session histories as the audit log has them: they survive a restart.
        let ledger = Ledger::restore(Arc::clone(&vault), &policy, SystemClock.unix_ms()).await?;
        let pending = Arc::new(PendingQueue::default());
        let (channel, child, info) = match daemon {
            DaemonSide::Started(started) => (started.channel, Some(started.child), started.info),
            DaemonSide::Attached { channel, info } => (channel, None, info),
        };
        let attached = HitlLink::attach(Attach {
            channel,
            child,
            info,
            spool: Spool::new(home.spool()),
            key: spool_key,
            writer,
            pending: Arc::clone(&pending),
            audit: audit.clone(),
            grants: Arc::clone(&grants),
            clock: Arc::new(SystemClock),
        })
        .await;
        let hitl = match attached {
            Ok(hitl) => hitl,
            Err(e) => {
                let _ = std::fs::remove_file(home.pid_file());
                return Err(e);
            }
        };
        audit
            .record(AuditEvent::HitlStart {
                pid: hitl.info().pid,
                console: hitl.info().console,
                console_error: hitl.info().console_error.clone(),
            })
            .await?;
        let host = Arc::new(Host::new(
            specs,
            config.kernel.clone(),
            audit.clone(),
            Arc::clone(&broker),
            launcher,
            memory_key.as_ref().map(|k| Arc::new(k.to_handoff_bytes())),
        ));
        // Every plugin but a model provider gets its credential in `welcome`; a tool's only
        // if its config's URLs are within the secret's host binding.
        let tokens = config
            .plugins
            .iter()
            .filter(|(_, p)| p.enabled && !p.is_provider())
            .filter_map(|(name, p)| {
                let secret = crate::host::PluginSecret {
                    name: p.credential.clone()?,
                    host_bound: !p.is_connector(),
                };
                Some((name.clone(), secret))
            })
            .collect();
        let connector_requests = host.route_connectors(tokens);
        let connectors = {
            let vault = Arc::clone(&vault);
            let settings = config.connectors.clone();
            tokio::task::spawn_blocking(move || crate::connectors::Router::load(&vault, &settings))
                .await
                .map_err(KernelError::task("reading the connectors' state"))??
        };
        host.start().await;
        let (stop, _) = watch::channel(false);
        let tool_timeout = config.kernel.tool_timeout;
        let policy = Arc::new(PolicyCell::new(policy));
        let parts = RoadParts {
            enforcer: Enforcer::new(Arc::clone(&policy)),
            broker: Arc::clone(&broker),
            audit: Arc::new(audit.clone()),
            plugins: Arc::clone(&host) as Arc<dyn crate::road::Plugins>,
            desk: Arc::clone(&hitl) as Arc<dyn crate::road::ApprovalDesk>,
            pending: Arc::clone(&pending),
            clock: Arc::new(SystemClock),
            tool_timeout,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.watch_host(Arc::clone(&host));
        metrics.watch_home(&home);
        let road = Road::new(parts)
            .with_ledger(ledger)
            .with_grants(Arc::clone(&grants))
            .with_metrics(Arc::clone(&metrics));
        let kernel = Arc::new_cyclic(|me| {
            // The kernel's own tool runs turns of other agents: it holds the kernel weakly.
            let road = road.with_builtins(Arc::new(crate::harness::KernelTools::new(me, &agents)));
            Self {
                home,
                config,
                agents,
                connectors,
                road,
                broker,
                audit,
                host,
                pending,
                hitl,
                vault,
                memory_key: std::sync::RwLock::new(memory_key),
                rekeyer,
                usage: Mutex::new(crate::control::UsageTotals::default()),
                policy,
                reload: tokio::sync::Mutex::new(()),
                grants,
                tokens: api_tokens,
                metrics,
                skills: Arc::new(skills),
                operators,
                warden,
                stop,
            }
        });
        if let Some(requests) = connector_requests {
            tokio::spawn(Arc::clone(&kernel).serve_connectors(requests));
            tokio::spawn(Arc::clone(&kernel).forward_chat_announcements());
        }
        Ok(kernel)
    }

    /// Tells the warden (when it started this kernel) that it serves: the warden then shows
    /// the operator the console's link.
    pub async fn warden_ready(&self) -> Result<(), KernelError> {
        match &self.warden {
            Some(warden) => warden.ready().await,
            None => Ok(()),
        }
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

    /// The audit log.
    #[must_use]
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The settings it started with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its home.
    #[must_use]
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The API's tokens.
    #[must_use]
    pub fn tokens(&self) -> &Arc<crate::tokens::TokenBook> {
        &self.tokens
    }

    /// The kernel's metrics (`Metrics::encode` is what `GET /metrics` serves).
    #[must_use]
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Whether `uid` is one of the operators (the people who run this kernel).
    #[must_use]
    pub fn is_operator(&self, uid: u32) -> bool {
        self.operators.contains(&uid)
    }

    /// Resolves once a stop has been requested.
    pub async fn stopping(&self) {
        let mut stop = self.stop.subscribe();
        crate::host::stopped(&mut stop).await;
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
        // Anyone may connect; the peer's uid decides (an operator need not be the kernel's
        // uid: as root the kernel runs under its own).
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).map_err(
            KernelError::io("cannot open the control socket to operators"),
        )?;
        let mut stop = self.stop.subscribe();
        let mut warden_gone = self.warden.as_ref().map(|w| w.gone());
        let schedule = tokio::spawn(Arc::clone(self).run_rekey_schedule());
        // A kernel asked to stop before it serves runs no schedule (a test's in-process kernel
        // drives its schedules itself, on a fake clock).
        let schedules = (!*stop.borrow()).then(|| {
            tokio::spawn(Arc::clone(self).run_schedules(
                Arc::new(SystemClock),
                Arc::new(crate::schedule::SystemSleeper),
            ))
        });
        let hangups = tokio::spawn(Arc::clone(self).reload_on_hangup());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let kernel = Arc::clone(self);
                        tokio::spawn(async move { kernel.handle_control(stream).await });
                    }
                }
                () = crate::host::stopped(&mut stop) => break,
                () = warden_stopped(&mut warden_gone) => {
                    tracing::error!("the warden went away: stopping");
                    break;
                }
            }
        }
        schedule.abort();
        if let Some(schedules) = schedules {
            schedules.abort();
        }
        hangups.abort();
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        self.shutdown().await
    }

    /// Re-reads `policy.yaml` on every SIGHUP (a refused one is audited and logged).
    async fn reload_on_hangup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot handle SIGHUP: `p3ak policy apply` still reloads the policy");
            return;
        };
        while hangups.recv().await.is_some() {
            match self.reload_policy().await {
                Ok(applied) => tracing::info!(
                    "policy reloaded on SIGHUP ({} rules, sha256 {})",
                    applied.rules,
                    applied.sha256
                ),
                Err(e) => tracing::error!("policy not reloaded on SIGHUP, the old one stays: {e}"),
            }
        }
    }

    async fn shutdown(&self) -> Result<(), KernelError> {
        self.hitl.shutdown().await;
        self.host.shutdown().await;
        self.audit
            .record(AuditEvent::KernelStop {
                pid: std::process::id(),
            })
            .await?;
        let _ = std::fs::remove_file(self.home.pid_file());
        Ok(())
    }

    async fn handle_control(self: Arc<Self>, mut stream: UnixStream) {
        let peer_uid = match stream.peer_cred() {
            Ok(cred) if self.operators.contains(&cred.uid()) => cred.uid(),
            Ok(cred) => {
                self.audit
                    .note(AuditEvent::ControlRefused {
                        peer_uid: cred.uid(),
                    })
                    .await;
                return;
            }
            Err(_) => return,
        };
        let request = match read_request(&mut stream).await {
            Ok(request) => request,
            Err(e) => {
                let message = e.to_string();
                let _ = write_event(&mut stream, &ControlEvent::Error { message }).await;
                return;
            }
        };
        let (events, mut receiver) = mpsc::unbounded_channel::<ControlEvent>();
        let kernel = Arc::clone(&self);
        let work = tokio::spawn(async move { kernel.control(request, events, peer_uid).await });
        while let Some(event) = receiver.recv().await {
            let last = event.is_final();
            if write_event(&mut stream, &event).await.is_err() || last {
                break;
            }
        }
        drop(receiver);
        let _ = work.await;
    }

    async fn control(
        &self,
        request: ControlRequest,
        events: mpsc::UnboundedSender<ControlEvent>,
        peer_uid: u32,
    ) {
        let operator = format!("operator (uid {peer_uid})");
        let event = match &request {
            ControlRequest::Chat {
                agent,
                conversation,
                text,
            } => {
                // `/NAME text` where a skill claims `NAME`: the skill's body, then the text.
                let text = self
                    .skills
                    .expand_command(
                        agent
                            .as_deref()
                            .unwrap_or(&self.config.kernel.default_agent),
                        text,
                    )
                    .map_or_else(|| text.clone(), |(_, expanded)| expanded);
                let mut inbound =
                    p3ak_proto::Inbound::new(conversation.clone(), operator.clone(), text);
                inbound.agent.clone_from(agent);
                match self.turn(inbound, "console", events.clone()).await {
                    Ok(text) => ControlEvent::Reply { text },
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::Bus {
                topic,
                after,
                limit,
                newest,
            } => match crate::bus::TopicPattern::parse(topic) {
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
                Ok(pattern) => {
                    let vault = Arc::clone(&self.vault);
                    let (after, limit, newest) = (*after, *limit, *newest);
                    let read = tokio::task::spawn_blocking(move || {
                        crate::bus::read(&vault, &pattern, after, limit, newest)
                    })
                    .await;
                    match read {
                        Ok(Ok(events)) => ControlEvent::Bus { events },
                        Ok(Err(e)) => ControlEvent::Error {
                            message: e.to_string(),
                        },
                        Err(e) => ControlEvent::Error {
                            message: format!("reading the bus failed: {e}"),
                        },
                    }
                }
            },
            ControlRequest::Board {
                question,
                members,
                conversation,
            } => {
                let meeting = crate::harness::Meeting {
                    question,
                    members,
                    sender: &operator,
                    channel: "console",
                    conversation,
                };
                match self.board(meeting, events.clone()).await {
                    Ok(report) => ControlEvent::Board(report),
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::CrestStart { goal, id, agent } => {
                let started = self
                    .crest_start(
                        goal,
                        id.as_deref(),
                        agent.as_deref(),
                        &operator,
                        events.clone(),
                    )
                    .await;
                match started {
                    Ok(report) => ControlEvent::CrestPhase(Box::new(report)),
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::CrestNext { id, phase, note } => {
                let request = crate::crest::PhaseRequest {
                    id,
                    phase: *phase,
                    note: note.as_deref(),
                    by: &operator,
                };
                match self.crest_next(request, events.clone()).await {
                    Ok(report) => ControlEvent::CrestPhase(Box::new(report)),
                    Err(e) => ControlEvent::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::CrestStatus { id } => match self.crest_goals(id.as_deref()).await {
                Ok(goals) => ControlEvent::Crest { goals },
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::SecretSet {
                name,
                value,
                scopes,
                hosts,
            } => {
                let broker = Arc::clone(&self.broker);
                let vault = Arc::clone(&self.vault);
                let (name, scopes, hosts) = (name.clone(), scopes.clone(), hosts.clone());
                let value = SecretValue::new(value.clone());
                let shown = name.clone();
                let result = tokio::task::spawn_blocking(move || {
                    broker.set(&vault, &name, value, scopes, hosts)
                })
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
            ControlRequest::PolicyApply { text } => self.control_policy_apply(text).await,
            ControlRequest::GrantList => self.control_grant_list(),
            ControlRequest::GrantRevoke { id } => self.control_grant_revoke(id, &operator).await,
            ControlRequest::Connectors => ControlEvent::Connectors {
                items: self.connector_status(),
                paired: self.connectors.pairings.list(),
                waiting: self.connectors.pairings.waiting(),
            },
            ControlRequest::Pair { code } => match self.pair(code, &operator).await {
                Ok(paired) => ControlEvent::Paired(paired),
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::Unpair { identity } => match self.unpair(identity, &operator).await {
                Ok(true) => ControlEvent::Done {
                    message: format!("`{identity}` is no longer paired"),
                },
                Ok(false) => ControlEvent::Error {
                    message: format!("`{identity}` is not paired"),
                },
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::TokenCreate {
                name,
                scopes,
                expires_in,
            } => {
                self.control_token_create(name, scopes, *expires_in, &operator)
                    .await
            }
            ControlRequest::TokenList => ControlEvent::Tokens {
                items: self.tokens.list(),
                now: unix_now(),
            },
            ControlRequest::TokenRevoke { id } => match self.revoke_token(id, &operator).await {
                Ok(()) => ControlEvent::Done {
                    message: format!("token `{id}` revoked"),
                },
                Err(e) => ControlEvent::Error {
                    message: e.to_string(),
                },
            },
            ControlRequest::Schedules => ControlEvent::Schedules {
                items: self.schedule_status().await,
            },
            ControlRequest::Shutdown => {
                self.request_stop();
                ControlEvent::Done {
                    message: "the kernel is shutting down".to_owned(),
                }
            }
        };
        let _ = events.send(event);
    }

    async fn control_token_create(
        &self,
        name: &str,
        scopes: &[String],
        expires_in: Option<u64>,
        by: &str,
    ) -> ControlEvent {
        match self.create_token(name, scopes, expires_in, by).await {
            Ok(issued) => ControlEvent::TokenCreated {
                info: crate::tokens::TokenInfo::from(&issued.record),
                token: crate::control::ShownOnce(issued.token),
            },
            Err(e) => ControlEvent::Error {
                message: e.to_string(),
            },
        }
    }

    /// Makes an API token, audited (`by`: who asked).
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[String],
        expires_in: Option<u64>,
        by: &str,
    ) -> Result<crate::tokens::IssuedToken, KernelError> {
        let now = unix_now();
        let expires_at =
            expires_in.map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        let tokens = Arc::clone(&self.tokens);
        let (name, scopes_owned) = (name.to_owned(), scopes.to_vec());
        let issued = tokio::task::spawn_blocking(move || {
            tokens.create(&name, &scopes_owned, expires_at, now)
        })
        .await
        .map_err(KernelError::task("the token task"))??;
        self.audit
            .record(AuditEvent::TokenCreated {
                id: issued.record.id.clone(),
                name: issued.record.name.clone(),
                scopes: issued.record.scopes.clone(),
                expires_at: issued.record.expires_at,
                by: by.to_owned(),
            })
            .await?;
        Ok(issued)
    }

    /// Revokes an API token, audited.
    pub async fn revoke_token(&self, id: &str, by: &str) -> Result<(), KernelError> {
        let tokens = Arc::clone(&self.tokens);
        let owned = id.to_owned();
        tokio::task::spawn_blocking(move || tokens.revoke(&owned))
            .await
            .map_err(KernelError::task("the token task"))??;
        self.audit
            .record(AuditEvent::TokenRevoked {
                id: id.to_owned(),
                by: by.to_owned(),
            })
            .await?;
        Ok(())
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
                "console": self.hitl.info().console,
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

pub(crate) fn check_not_running(home: &Home) -> Result<(), KernelError> {
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

/// Checks that the agents config.toml names (the default one, the plugins') have files.
pub(crate) fn check_agent_refs(
    home: &Home,
    config: &Config,
    agents: &BTreeMap<String, Agent>,
) -> Result<(), KernelError> {
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
    if let Some((name, agent)) = config
        .plugins
        .iter()
        .filter_map(|(name, p)| p.agent.as_ref().map(|a| (name, a)))
        .find(|(_, agent)| !agents.contains_key(*agent))
    {
        return Err(KernelError::Config {
            path: home.config(),
            message: format!(
                "plugin `{name}`: agent `{agent}` has no file in `{}`",
                home.agents().display()
            ),
        });
    }
    for agent in agents.values() {
        if let Some(member) = agent.members.iter().find(|m| !agents.contains_key(*m)) {
            return Err(KernelError::Config {
                path: home.agents().join(format!("{}.toml", agent.name)),
                message: format!("members: agent `{member}` has no file"),
            });
        }
    }
    if let Some((name, agent)) = config
        .schedules
        .iter()
        .filter_map(|(name, s)| s.agent.as_ref().map(|a| (name, a)))
        .find(|(_, agent)| !agents.contains_key(*agent))
    {
        return Err(KernelError::Config {
            path: home.config(),
            message: format!(
                "schedules.{name}.agent `{agent}` has no file in `{}`",
                home.agents().display()
            ),
        });
    }
    Ok(())
}

/// Reads and compiles `policy.yaml`.
pub(crate) fn load_policy(home: &Home) -> Result<Policy, KernelError> {
    let path = home.policy();
    let text = std::fs::read_to_string(&path)
        .map_err(KernelError::io(format!("cannot read `{}`", path.display())))?;
    let beside = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    Ok(Policy::from_yaml_with_files(&text, |name| {
        std::fs::read_to_string(beside.join(name))
    })?)
}

/// Seconds since the Unix epoch, by the system clock (what the road's clock says too).
fn unix_now() -> i64 {
    use crate::road::Clock as _;
    SystemClock.unix_ms() / 1000
}

fn handoff_key(key: &p3ak_proto::Credential) -> Result<VaultKey, KernelError> {
    let bytes =
        zeroize::Zeroizing::new(hex::decode(key.expose()).map_err(|_| WardenError::KeyNotHex)?);
    Ok(VaultKey::from_handoff_bytes(&bytes)?)
}

/// Resolves when the warden's channel closed (never without a warden).
async fn warden_stopped(gone: &mut Option<watch::Receiver<bool>>) {
    match gone {
        Some(gone) => {
            let _ = gone.wait_for(|g| *g).await;
        }
        None => std::future::pending().await,
    }
}

/// How the approval daemon reaches [`Kernel::assemble`].
enum DaemonSide {
    /// This kernel started it.
    Started(Box<crate::hitl::DaemonStarted>),
    /// The warden started it and handed over the channel.
    Attached {
        channel: std::os::unix::net::UnixStream,
        info: crate::hitl::HitlInfo,
    },
}

/// What differs between the two ways of starting.
struct Assembly {
    memory_key: Option<VaultKey>,
    launcher: Launcher,
    daemon: DaemonSide,
    spool_key: SpoolKey,
    writer: StageWriter,
    rekeyer: Rekeyer,
    operators: Vec<u32>,
    warden: Option<Arc<RemoteLauncher>>,
}

/// Why a control request could not be read; its text is what the client is told.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    /// The client hung up mid-request.
    #[error("closed before a whole request")]
    Closed,
    /// A frame that is not a request.
    #[error("invalid request: {0}")]
    Invalid(#[source] p3ak_proto::ProtoError),
    /// A broken frame (over the limit, cut short, unreadable).
    #[error("{0}")]
    Frame(#[source] p3ak_proto::ProtoError),
    /// Nothing came in time.
    #[error("no request in time")]
    Timeout,
}

async fn read_request(stream: &mut UnixStream) -> Result<ControlRequest, RequestError> {
    let mut reader = p3ak_proto::tokio_io::FrameReader::new(stream, MAX_CONTROL_FRAME);
    let read = async {
        match reader.read_json::<ControlRequest>().await {
            Ok(Some(request)) => Ok(request),
            Ok(None) => Err(RequestError::Closed),
            Err(e @ (p3ak_proto::ProtoError::Json(_) | p3ak_proto::ProtoError::Invalid(_))) => {
                Err(RequestError::Invalid(e))
            }
            Err(e) => Err(RequestError::Frame(e)),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| RequestError::Timeout)?
}

async fn write_event(
    stream: &mut UnixStream,
    event: &ControlEvent,
) -> Result<(), p3ak_proto::ProtoError> {
    p3ak_proto::tokio_io::write_json(stream, event, MAX_CONTROL_FRAME).await
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_bad_control_request_is_answered_with_why() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        let frame = p3ak_proto::encode_payload(b"{not json", MAX_CONTROL_FRAME).unwrap();
        client.write_all(&frame).await.unwrap();
        let Err(e) = read_request(&mut server).await else {
            panic!("a request was read");
        };
        assert!(matches!(e, RequestError::Invalid(_)), "{e:?}");
        assert!(e.to_string().starts_with("invalid request: "), "{e}");

        let (client, mut server) = UnixStream::pair().unwrap();
        drop(client);
        let Err(e) = read_request(&mut server).await else {
            panic!("a request was read");
        };
        assert!(matches!(e, RequestError::Closed), "{e:?}");
        assert_eq!(e.to_string(), "closed before a whole request");
    }
}

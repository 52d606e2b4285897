//! The warden: `p3ak up`'s own process, which keeps the privileges and gives the kernel none.
//!
//! ```text
//! p3ak up (warden: the operator's uid; root on a real install)
//!  ├─ derives the vault keys, the approval daemon's key and the connectors' approval keys
//!  │  from the passphrase
//!  ├─ p3ak hitl run          (its own uid)     ── channel ──┐
//!  ├─ p3ak kernel            (its own uid)  ◀── warden channel (SOCK_SEQPACKET, fds) ──▶ warden
//!  │     └─ asks: launch plugin NAME, kill it, rekey the memory vault      │
//!  └─ plugins                (their own uids) ◀── socket pair ── kernel ◀──┘
//! ```
//!
//! As root the kernel runs under its own uid (`[hitl] ids`, second), with no capability: it
//! reads its vault with a key the warden derived (never the passphrase), asks the warden for
//! each plugin (the warden starts only configured plugins, each in its sandbox, and hands the
//! kernel its end of the plugin's connection), and stages escalations as the spool's writer.
//! The approval daemon's socket and console refuse the kernel's uid, and its factor store is
//! sealed under a key the kernel cannot derive: a kernel that is taken over cannot approve its
//! own actions. Without root every process shares one uid: the warden still keeps the
//! passphrase from the kernel, but what a same-uid process can do to another is in
//! `docs/threat-model.md`.

pub mod channel;
mod client;
mod wire;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use p3ak_approval::spool::SpoolKey;
use p3ak_crypto::Passphrase;
use p3ak_proto::Credential;
use p3ak_vault::{Access, Unlock, Vault, VaultKey};
use tokio::sync::mpsc;

use channel::Channel;
pub use client::RemoteLauncher;
pub(crate) use wire::KernelStart;
use wire::{ToKernel, ToWarden};

use crate::config::Config;
use crate::hitl::{self, DaemonLaunch};
use crate::home::Home;
use crate::launch::{self, ExitInfo, LaunchError, LocalLauncher};
use crate::{KernelError, WardenCallError, WardenError};

/// What `p3ak up` gives the warden.
pub struct WardenOptions {
    /// The home.
    pub home: Home,
    /// The operator's passphrase.
    pub passphrase: Passphrase,
    /// The `p3ak` binary.
    pub exe: PathBuf,
    /// Extra arguments for the kernel's command line (`--json`).
    pub kernel_args: Vec<String>,
    /// The API's TCP listener, bound by whoever started the warden (systemd's socket
    /// activation): handed to the kernel, which serves it instead of binding `[api] listen`.
    pub api_listener: Option<std::net::TcpListener>,
}

/// What the warden reports to the person who started it.
#[derive(Debug)]
pub enum WardenEvent {
    /// The kernel is serving; the console's one-time link, if the console runs.
    Up {
        /// `http://localhost:7325/login?token=…`
        login_link: Option<String>,
        /// Why the console does not run, when it was asked for.
        console_error: Option<String>,
    },
}

/// The uids a kernel started by this process answers on its control socket and that the
/// approval daemon serves: whoever runs `p3ak up`, and `[hitl] operators`.
#[must_use]
pub fn operators(config: &Config) -> Vec<u32> {
    let mut operators = vec![rustix::process::getuid().as_raw()];
    operators.extend(config.hitl.operators.iter().copied());
    operators.sort_unstable();
    operators.dedup();
    operators
}

/// Runs `p3ak up`: starts the approval daemon and the kernel under their own uids (as root),
/// serves the kernel's requests, and returns when the kernel has stopped.
pub async fn run(
    options: WardenOptions,
    report: impl Fn(WardenEvent) + Send,
) -> Result<(), KernelError> {
    let WardenOptions {
        home,
        passphrase,
        exe,
        kernel_args,
        api_listener,
    } = options;
    if !home.is_initialised() {
        return Err(KernelError::NotInitialised {
            home: home.root().to_owned(),
        });
    }
    home.prepare_run_dir()?;
    crate::kernel::check_not_running(&home)?;
    let config = Config::load(&home.config())?;
    let policy = crate::kernel::load_policy(&home)?;
    let root = rustix::process::geteuid().is_root();
    let (daemon_id, kernel_id) = config.hitl.ids;
    let daemon_ids = root.then_some((daemon_id, daemon_id));
    let kernel_ids = root.then_some((kernel_id, kernel_id));
    let operators = operators(&config);

    // Everything the passphrase opens is derived here, once; the kernel gets keys.
    let keys = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || {
            derive_keys(&home, &passphrase).map(|k| (k, passphrase))
        })
        .await
        .map_err(KernelError::task("key derivation"))??
    };
    let (keys, passphrase) = keys;
    if let Some(ids) = kernel_ids {
        prepare_home(&home, ids)?;
    }

    let spool_key = SpoolKey::generate()?;
    let mut categories = vec!["kernel".to_owned()];
    categories.extend(policy.groups());
    // The connectors' keys come from it here, in the warden: the kernel never holds one.
    let approval_master = hitl::chat_master_key(&keys.state_key)?;
    let daemon = hitl::spawn_daemon(DaemonLaunch {
        home: &home,
        settings: &config.hitl,
        exe: &exe,
        categories,
        daemon: daemon_ids,
        writer: kernel_ids,
        operators: operators.clone(),
        state_key: keys.state_key,
        previous_state_key: keys.previous_state_key,
        spool_key: &spool_key,
        connectors: launch::connectors(&config),
    })
    .await?;
    let hitl::DaemonStarted {
        child: mut daemon_child,
        channel: daemon_channel,
        info: hitl_info,
        login_link,
        resealed,
    } = daemon;

    let specs = launch::plugin_specs(&home, &config);
    let kernel_gid = kernel_ids.map_or_else(|| rustix::process::getegid().as_raw(), |(_, g)| g);
    let launcher = Arc::new(
        LocalLauncher::new(specs, &config.kernel, home.root(), exe.clone(), kernel_gid)
            .with_approval_master(approval_master),
    );
    let stopping = Arc::new(AtomicBool::new(false));
    let feed = launcher.denials(Arc::clone(&stopping));
    if let (Some((uid, _)), None) = (kernel_ids, &feed.why_not) {
        // What the kernel's own uid is refused is reported too: it has no business in the
        // daemon's files.
        if let Err(e) = p3ak_sandbox::denials::watch_refusals(uid, uid, true) {
            tracing::warn!("the kernel's refused accesses are not audited: {e}");
        }
    }

    let (warden_end, kernel_end) = channel::pair().map_err(channel_error)?;
    let program =
        p3ak_sandbox::Program::open(&exe, kernel_ids).map_err(WardenError::KernelProgram)?;
    let mut command = program.command();
    command
        .arg("kernel")
        .args(&kernel_args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::from(kernel_end))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    for name in ["RUST_LOG", "LANG", "TZ"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if let Some((uid, gid)) = kernel_ids {
        // As root, std clears the supplementary groups when it sets a uid.
        command.uid(uid).gid(gid);
    }
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut kernel = command.spawn().map_err(WardenError::KernelSpawn)?;
    drop(command);
    let kernel_pid = kernel.id();
    let channel = Channel::new(warden_end).map_err(channel_error)?;

    let (refusal, missing) = (
        launcher.sandbox().refusal(),
        launcher.sandbox().missing().to_vec(),
    );
    let start = KernelStart {
        home: home.root().display().to_string(),
        kernel_key: handoff(&keys.kernel),
        memory_key: keys.memory.as_ref().map(handoff),
        spool_key: Credential::new(spool_key.to_hex().to_string()),
        hitl: hitl_info.clone(),
        forget_previous_state_key: resealed,
        operators,
        sandbox: launcher.sandbox().describe(),
        refusal,
        missing,
        denials_why_not: feed.why_not.clone(),
        permission_refusals: feed.permission_refusals,
        api_listener: api_listener.is_some(),
    };
    let mut fds = vec![daemon_channel.as_fd()];
    if let Some(listener) = &api_listener {
        fds.push(listener.as_fd());
    }
    channel
        .send(&ToKernel::Start(Box::new(start)), &fds)
        .await
        .map_err(channel_error)?;
    drop(daemon_channel);
    drop(api_listener);
    drop(keys.kernel);

    let mut warden = Warden {
        home,
        passphrase,
        launcher,
        channel,
        children: HashMap::new(),
    };
    let (exits_tx, mut exits) = mpsc::unbounded_channel::<(u32, ExitInfo)>();
    let mut denials = feed.denials;
    let mut signals = Signals::new()?;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut channel_open = true;
    let kernel_status = loop {
        let deadline = stop_deadline;
        tokio::select! {
            received = warden.channel.recv::<ToWarden>(), if channel_open => match received {
                Ok(Some((message, _fds))) => {
                    if let Some(event) = warden.handle(message, &exits_tx, &hitl_info, &login_link).await {
                        report(event);
                    }
                }
                Ok(None) => channel_open = false,
                Err(e) => {
                    // A kernel that sends what the warden cannot read is not served further.
                    tracing::error!("the kernel's channel: {e}");
                    channel_open = false;
                }
            },
            Some((pid, status)) = exits.recv() => {
                warden.children.remove(&pid);
                let _ = warden.channel.send(&ToKernel::Exited { pid, status }, &[]).await;
            }
            Some(denial) = recv_denial(&mut denials) => {
                let _ = warden.channel.send(&ToKernel::Denial(denial), &[]).await;
            }
            status = kernel.wait() => break status.ok().map(ExitInfo::from),
            () = signals.next() => {
                // The kernel stops its plugins and the daemon itself; give it time to.
                if let Some(pid) = kernel_pid {
                    signal(pid, rustix::process::Signal::TERM);
                }
                stop_deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(20));
            }
            () = until(deadline) => {
                let _ = kernel.start_kill();
            }
        }
    };
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    for pid in warden.children.keys() {
        launch::kill_group(*pid);
    }
    // The daemon stops when the kernel's end of its channel closes; make sure.
    if tokio::time::timeout(Duration::from_secs(5), daemon_child.wait())
        .await
        .is_err()
    {
        let _ = daemon_child.kill().await;
    }
    match kernel_status {
        Some(status) if status.code == Some(0) => Ok(()),
        Some(status) => Err(WardenError::KernelStopped { status }.into()),
        None => Err(WardenError::KernelUnwaitable.into()),
    }
}

/// The kernel as the warden started it, and the API listener the warden handed over, if any.
pub struct StartedKernel {
    pub kernel: Arc<crate::Kernel>,
    /// A TCP listener from the warden's starter (socket activation), to serve as the API.
    pub api_listener: Option<std::net::TcpListener>,
}

/// The kernel's end: reads the start message from the warden's channel (its standard input)
/// and starts the kernel with what it says.
pub async fn start_kernel() -> Result<StartedKernel, KernelError> {
    let fd = p3ak_proto::io::take_stdin_socket().map_err(WardenError::Stdin)?;
    let channel = Channel::new(fd).map_err(channel_error)?;
    let (message, fds) = channel
        .recv::<ToKernel>()
        .await
        .map_err(channel_error)?
        .ok_or(WardenError::Closed)?;
    let ToKernel::Start(start) = message else {
        return Err(WardenError::NotStart.into());
    };
    let mut fds = fds.into_iter();
    let daemon_channel = fds
        .next()
        .map(std::os::unix::net::UnixStream::from)
        .ok_or(WardenError::NoDaemonChannel)?;
    let api_listener = if start.api_listener {
        Some(
            fds.next()
                .map(std::net::TcpListener::from)
                .ok_or(WardenError::NoApiListener)?,
        )
    } else {
        None
    };
    let remote = RemoteLauncher::new(channel, &start);
    let kernel = crate::kernel::Kernel::start_under_warden(*start, daemon_channel, remote).await?;
    Ok(StartedKernel {
        kernel,
        api_listener,
    })
}

struct Keys {
    kernel: VaultKey,
    memory: Option<VaultKey>,
    state_key: p3ak_crypto::Key,
    previous_state_key: Option<p3ak_crypto::Key>,
}

fn derive_keys(home: &Home, passphrase: &Passphrase) -> Result<Keys, KernelError> {
    let kernel = VaultKey::derive(&home.kernel_vault(), passphrase)?;
    let previous_state_key = {
        let vault = Vault::open(&home.kernel_vault(), Unlock::Key(&kernel), Access::Read)?;
        hitl::previous_state_key(&vault)?
    };
    let memory_path = home.memory_vault();
    let memory = if memory_path.exists() {
        Some(VaultKey::derive(&memory_path, passphrase)?)
    } else {
        None
    };
    let state_key = hitl::state_key(home, passphrase)?;
    Ok(Keys {
        kernel,
        memory,
        state_key,
        previous_state_key,
    })
}

fn handoff(key: &VaultKey) -> Credential {
    Credential::new(hex::encode(key.to_handoff_bytes().expose()))
}

fn channel_error(e: channel::ChannelError) -> KernelError {
    WardenError::Channel(e).into()
}

/// As root: what the kernel's uid must own (its vault, `run/`) or read (its configuration,
/// the memory vault), and a home every user it starts may pass through.
fn prepare_home(home: &Home, (uid, gid): (u32, u32)) -> Result<(), KernelError> {
    use launch::plan::{PlanError, chown_tree, set_mode, traversable_ancestors};
    let error = |e: PlanError| KernelError::from(WardenError::Prepare(e));
    set_mode(home.root(), 0o711).map_err(error)?;
    traversable_ancestors(home.root()).map_err(error)?;
    let audit = home.kernel_vault().parent().map(PathBuf::from);
    for dir in audit.into_iter().chain([home.run()]) {
        chown_tree(&dir, uid, gid, None).map_err(error)?;
    }
    // The operators reach the control socket inside; nothing else in `run/` is theirs.
    set_mode(&home.run(), 0o711).map_err(error)?;
    let root_uid = rustix::process::geteuid().as_raw();
    for path in [home.config(), home.policy()] {
        chown_tree(&path, root_uid, gid, Some((0o750, 0o640))).map_err(error)?;
    }
    if home.agents().is_dir() {
        chown_tree(&home.agents(), root_uid, gid, Some((0o750, 0o640))).map_err(error)?;
    }
    // The skills: the kernel reads them at start; the `skills` plugin's launch lends them
    // on (its scripts keep their executable bits, so no modes are forced here).
    if home.skills().is_dir() {
        chown_tree(&home.skills(), uid, gid, None).map_err(error)?;
    }
    // The memory vault, searched for an agent's context: readable by the kernel's group (the
    // vault plugin, when it runs, owns it; its start keeps the group).
    if let Some(vaults) = home.memory_vault().parent().filter(|d| d.is_dir()) {
        chown_tree(vaults, root_uid, gid, Some((0o750, 0o640))).map_err(error)?;
    }
    Ok(())
}

/// The warden's state while the kernel runs.
struct Warden {
    home: Home,
    passphrase: Passphrase,
    launcher: Arc<LocalLauncher>,
    channel: Channel,
    /// The plugins it started and that still run, by pid.
    children: HashMap<u32, String>,
}

impl Warden {
    async fn handle(
        &mut self,
        message: ToWarden,
        exits: &mpsc::UnboundedSender<(u32, ExitInfo)>,
        hitl: &hitl::HitlInfo,
        login_link: &Option<zeroize::Zeroizing<String>>,
    ) -> Option<WardenEvent> {
        match message {
            ToWarden::Launch { id, plugin } => {
                let answer = match self.launcher.start(&plugin) {
                    Ok((started, mut child)) => {
                        let pid = started.pid;
                        self.children.insert(pid, plugin);
                        let exits = exits.clone();
                        tokio::spawn(async move {
                            let status = child.wait().await.map_or(
                                ExitInfo {
                                    code: None,
                                    signal: None,
                                    core_dumped: false,
                                },
                                ExitInfo::from,
                            );
                            let _ = exits.send((pid, status));
                        });
                        let message = ToKernel::Launched {
                            id,
                            pid,
                            uid: started.uid,
                            sandbox: started.sandbox,
                            stderr: started.stderr.is_some(),
                        };
                        let mut fds = vec![started.connection.as_fd()];
                        if let Some(stderr) = &started.stderr {
                            fds.push(stderr.as_fd());
                        }
                        self.channel.send(&message, &fds).await
                    }
                    Err(e) => {
                        let message = ToKernel::LaunchFailed {
                            id,
                            refused: matches!(e, LaunchError::Refused(_)),
                            message: e.to_string(),
                        };
                        self.channel.send(&message, &[]).await
                    }
                };
                if let Err(e) = answer {
                    tracing::error!("the kernel's channel: {e}");
                }
                None
            }
            ToWarden::Kill { plugin, pid } => {
                // Only a plugin this warden started, under the name the kernel gives.
                if self.children.get(&pid) == Some(&plugin) {
                    launch::kill_group(pid);
                }
                None
            }
            ToWarden::RekeyMemory { id } => {
                let home = self.home.clone();
                let passphrase =
                    Passphrase::new(String::from_utf8_lossy(self.passphrase.expose()).into_owned());
                let outcome = tokio::task::spawn_blocking(move || {
                    crate::maintenance::rekey_memory_vault(&home, &passphrase)
                })
                .await
                .map_err(|e| KernelError::from(WardenCallError::RekeyTask(e)))
                .and_then(|r| r);
                let message = match outcome {
                    Ok((report, key)) => ToKernel::Rekeyed {
                        id,
                        outcome: Ok(report),
                        key: Some(handoff(&key)),
                    },
                    Err(e) => ToKernel::Rekeyed {
                        id,
                        outcome: Err(wire::RemoteError {
                            message: e.to_string(),
                        }),
                        key: None,
                    },
                };
                if let Err(e) = self.channel.send(&message, &[]).await {
                    tracing::error!("the kernel's channel: {e}");
                }
                None
            }
            ToWarden::Ready => Some(WardenEvent::Up {
                login_link: login_link.as_ref().map(|l| l.to_string()),
                console_error: hitl.console_error.clone(),
            }),
        }
    }
}

async fn recv_denial(
    denials: &mut Option<mpsc::UnboundedReceiver<p3ak_sandbox::denials::Denial>>,
) -> Option<p3ak_sandbox::denials::Denial> {
    match denials {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, KernelError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())
                .map_err(KernelError::io("cannot handle SIGTERM"))?,
            int: signal(SignalKind::interrupt())
                .map_err(KernelError::io("cannot handle SIGINT"))?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

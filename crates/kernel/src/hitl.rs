//! The kernel's side of humans in the loop.
//!
//! [`spawn_daemon`] starts the approval daemon (`p3ak hitl run`, under its own uid as root)
//! with one end of a socket pair as its standard input, writes its [`Start`] frame into the
//! other end and reads its [`Started`] report from its standard output. Whoever starts it —
//! the warden for an unprivileged kernel, or the kernel itself — keeps the report (it holds the
//! console's login link) and hands only the channel to the kernel.
//!
//! [`HitlLink`] is the kernel's end of that channel: it stages escalated actions into
//! `spool/staging/` (sealed, and as a user that may create files there but not read or list
//! them), tells the daemon, records what the daemon reports in the audit log, and hands each
//! release to the waiting turn. It cannot approve, deny, read a factor or mint a console link:
//! those go from the operator to the daemon directly (`p3ak_approval::operator`, the console).

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p3ak_approval::binding::Request;
use p3ak_approval::spool::{Owners, Spool, SpoolKey};
use p3ak_approval::wire::{self, Start, Started, ToDaemon, ToKernel};
use p3ak_crypto::{KdfParams, Key, Passphrase};
use p3ak_proto::tokio_io::FrameReader;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::audit::{AuditEvent, AuditLog};
use crate::config::HitlSettings;
use crate::grants::{GrantBook, ReleaseDesk};
use crate::home::Home;
use crate::pending::PendingQueue;
use crate::road::Clock;
use crate::{DaemonError, KernelError};

/// Where round 1 kept the factor store's key: inside the kernel's vault (read once, to reseal
/// the store under the daemon's own key).
const OLD_STATE_KEY: (&str, &str) = ("hitl", "state-key");
/// The salt of the daemon's own key, beside its factor store.
const STATE_SALT: &str = "state.salt";
/// How long the daemon has to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `p3ak hitl stage` may take.
const STAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the daemon may take to answer a chat press.
#[allow(
    dead_code,
    reason = "the connector router (crates/kernel/src/connectors/) uses it"
)]
const PRESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Announcements kept for a connector router that lags behind.
const ANNOUNCEMENTS_BUFFERED: usize = 256;

/// A sealed announcement from the approval daemon for one connector: the kernel relays it to
/// that connector's plugin (an `approval` request) and can neither read nor forge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatAnnouncement {
    /// The connector plugin's configured name.
    pub(crate) connector: String,
    /// The sealed [`p3ak_approval::chat::Announcement`].
    pub(crate) sealed: String,
}

/// What `p3ak up` tells about the daemon; nothing in it is secret.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HitlInfo {
    /// The daemon's pid.
    pub pid: Option<u32>,
    /// Whether the web console runs.
    pub console: bool,
    /// Why the console does not run, when it was asked for.
    pub console_error: Option<String>,
}

/// Everything [`spawn_daemon`] needs.
pub(crate) struct DaemonLaunch<'a> {
    pub(crate) home: &'a Home,
    pub(crate) settings: &'a HitlSettings,
    pub(crate) exe: &'a Path,
    pub(crate) categories: Vec<String>,
    /// The daemon's uid and gid (as root).
    pub(crate) daemon: Option<(u32, u32)>,
    /// The uid and gid that stage requests (as root): the kernel's own when it runs under its
    /// own uid.
    pub(crate) writer: Option<(u32, u32)>,
    /// The uids that may use the operator socket.
    pub(crate) operators: Vec<u32>,
    pub(crate) state_key: Key,
    pub(crate) previous_state_key: Option<Key>,
    pub(crate) spool_key: &'a SpoolKey,
    /// The plugins that relay approvals to a chat ([`crate::launch::connectors`]).
    pub(crate) connectors: Vec<String>,
}

/// A daemon, started.
pub(crate) struct DaemonStarted {
    pub(crate) child: tokio::process::Child,
    /// The kernel's end of its channel.
    pub(crate) channel: std::os::unix::net::UnixStream,
    pub(crate) info: HitlInfo,
    /// The console's first login link: for the operator's terminal only.
    pub(crate) login_link: Option<zeroize::Zeroizing<String>>,
    pub(crate) resealed: bool,
}

/// Prepares the spool and the daemon's directory, starts the daemon and waits for its report.
pub(crate) async fn spawn_daemon(launch: DaemonLaunch<'_>) -> Result<DaemonStarted, KernelError> {
    let spool = Spool::new(launch.home.spool());
    prepare_dirs(
        launch.home,
        &spool,
        &launch.categories,
        launch.daemon,
        launch.writer,
    )?;
    let console = launch
        .settings
        .console_addr()
        .map_err(DaemonError::ConsoleAddress)?;
    let (kernel_end, daemon_end) = std::os::unix::net::UnixStream::pair()
        .map_err(KernelError::io("cannot create the daemon's channel"))?;
    let program =
        p3ak_sandbox::Program::open(launch.exe, launch.daemon).map_err(DaemonError::Program)?;
    let mut command = program.command();
    command
        .args(["hitl", "run"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(daemon_end)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((uid, gid)) = launch.daemon {
        // As root, std clears the supplementary groups when it sets a uid.
        command.uid(uid).gid(gid);
    }
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| DaemonError::Spawn {
        exe: launch.exe.to_owned(),
        source,
    })?;
    drop(command);
    let pid = child.id();
    let start = Start {
        home: launch.home.root().display().to_string(),
        spool_key: launch.spool_key.to_hex().to_string(),
        state_key: hex::encode(launch.state_key.expose()),
        previous_state_key: launch
            .previous_state_key
            .as_ref()
            .map(|k| hex::encode(k.expose())),
        categories: launch.categories,
        operators: launch.operators,
        console: console.map(|a| a.to_string()),
        console_origin: launch.settings.console_origin.clone(),
        console_public: launch.settings.console_public,
        chat_key: Some(hex::encode(chat_master_key(&launch.state_key)?.expose())),
        connectors: launch.connectors,
    };
    // The start frame goes into the kernel's end, towards the daemon: the kernel, reading from
    // this end, never sees it.
    let mut channel = kernel_end;
    write_frame_blocking(&mut channel, &start)?;
    drop(start);
    let Some(stdout) = child.stdout.take() else {
        return Err(DaemonError::NoReportPipe.into());
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let report = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let started: Started = match report {
        Ok(Ok(Some(line))) => {
            let line = zeroize::Zeroizing::new(line);
            p3ak_proto::from_slice_strict(line.as_bytes()).map_err(DaemonError::Report)?
        }
        Ok(Ok(None) | Err(_)) => {
            let status = child.wait().await.ok();
            return Err(DaemonError::StoppedStarting { status }.into());
        }
        Err(_) => {
            return Err(DaemonError::StartTimeout {
                seconds: START_TIMEOUT.as_secs(),
            }
            .into());
        }
    };
    let login_link = started
        .login_link
        .as_ref()
        .map(|l| zeroize::Zeroizing::new(l.clone()));
    Ok(DaemonStarted {
        child,
        channel,
        info: HitlInfo {
            pid,
            console: started.console.is_some(),
            console_error: started.console_error.clone(),
        },
        login_link,
        resealed: started.resealed,
    })
}

/// The key of the daemon's factor store: Argon2id of the operator's passphrase with a salt of
/// its own (`hitl/state.salt`, made on first use). Derived by whoever starts the daemon; an
/// unprivileged kernel never holds the passphrase, so it cannot derive it.
pub(crate) fn state_key(home: &Home, passphrase: &Passphrase) -> Result<Key, KernelError> {
    let dir = home.hitl();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(KernelError::io(format!(
            "cannot create `{}`",
            dir.display()
        )))?;
    let path = dir.join(STATE_SALT);
    let salt: [u8; 16] = match std::fs::read(&path) {
        Ok(bytes) => bytes
            .as_slice()
            .try_into()
            .map_err(|_| DaemonError::BadSalt { path: path.clone() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let salt = p3ak_crypto::random_array::<16>()?;
            crate::files::write_private(&path, &salt)?;
            salt
        }
        Err(e) => {
            return Err(KernelError::Io {
                context: format!("cannot read `{}`", path.display()),
                source: e,
            });
        }
    };
    Ok(p3ak_crypto::derive_key_from_passphrase(
        passphrase,
        &salt,
        KdfParams::RFC9106_SECOND,
    )?)
}

/// The chat master key, from the daemon's own key (so, like it, from the passphrase): the
/// daemon gets it in its start frame, and each connector plugin the key derived from it for its
/// name. An unprivileged kernel holds neither the passphrase nor the daemon's key, so it cannot
/// derive any of them.
pub(crate) fn chat_master_key(state_key: &Key) -> Result<Key, KernelError> {
    Ok(p3ak_crypto::derive_subkey(
        state_key,
        b"p3ak chat approvals master v1",
        b"",
    )?)
}

/// The factor store's key as round 1 kept it in the kernel's vault, if it is still there.
pub(crate) fn previous_state_key(vault: &p3ak_vault::Vault) -> Result<Option<Key>, KernelError> {
    let (space, name) = OLD_STATE_KEY;
    match vault.read_object(space, name)? {
        Some(bytes) => Ok(Some(Key::from_slice(bytes.expose())?)),
        None => Ok(None),
    }
}

/// Forgets round 1's key once the daemon resealed its store under its own.
pub(crate) fn forget_previous_state_key(vault: &p3ak_vault::Vault) -> Result<(), KernelError> {
    let (space, name) = OLD_STATE_KEY;
    if vault.read_object(space, name)?.is_some() {
        vault.transact(|tx| tx.delete_object(space, name))?;
    }
    Ok(())
}

/// How the kernel writes staged files.
#[derive(Clone)]
pub(crate) enum StageWriter {
    /// Itself: it is the spool's writer (its own uid, or no root at all).
    Direct,
    /// As root: through `p3ak hitl stage` under the writer's uid, because root passes every
    /// permission check.
    AsUser { exe: PathBuf, uid: u32, gid: u32 },
}

/// The kernel's end of a running daemon's channel.
pub struct HitlLink {
    to_daemon: mpsc::UnboundedSender<ToDaemon>,
    spool: Spool,
    key: SpoolKey,
    writer: StageWriter,
    alive: Arc<AtomicBool>,
    /// The daemon's process, when this kernel started it (the warden holds it otherwise).
    child: Mutex<Option<tokio::process::Child>>,
    info: HitlInfo,
    /// Sealed announcements for the connectors, as the daemon sends them.
    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    announcements: broadcast::Sender<ChatAnnouncement>,
    /// Presses relayed to the daemon, waiting for its answer.
    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    presses: Presses,
    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    next_press: AtomicU64,
}

type Presses = Arc<Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>>;

/// Everything [`HitlLink::attach`] needs.
pub(crate) struct Attach {
    pub(crate) channel: std::os::unix::net::UnixStream,
    pub(crate) child: Option<tokio::process::Child>,
    pub(crate) info: HitlInfo,
    pub(crate) spool: Spool,
    pub(crate) key: SpoolKey,
    pub(crate) writer: StageWriter,
    pub(crate) pending: Arc<PendingQueue>,
    pub(crate) audit: AuditLog,
    /// Where a remembered approval's grant goes.
    pub(crate) grants: Arc<GrantBook>,
    /// The time grants are minted at.
    pub(crate) clock: Arc<dyn Clock>,
}

impl HitlLink {
    /// Serves the kernel's end of the daemon's channel: the daemon's reports go to the audit
    /// log and to the waiting turns.
    pub(crate) async fn attach(attach: Attach) -> Result<Arc<Self>, KernelError> {
        let Attach {
            channel,
            child,
            info,
            spool,
            key,
            writer,
            pending,
            audit,
            grants,
            clock,
        } = attach;
        channel
            .set_nonblocking(true)
            .map_err(KernelError::io("cannot use the daemon's channel"))?;
        let channel = tokio::net::UnixStream::from_std(channel)
            .map_err(KernelError::io("cannot use the daemon's channel"))?;
        let (input, mut output) = channel.into_split();
        let (to_daemon, mut outgoing) = mpsc::unbounded_channel::<ToDaemon>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let stop = matches!(message, ToDaemon::Shutdown);
                if write_frame(&mut output, &message).await.is_err() || stop {
                    break;
                }
            }
        });
        let alive = Arc::new(AtomicBool::new(true));
        let (announcements, _) = broadcast::channel(ANNOUNCEMENTS_BUFFERED);
        let presses: Presses = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        {
            let alive = Arc::clone(&alive);
            let announcements = announcements.clone();
            let presses = Arc::clone(&presses);
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut reader = FrameReader::new(input, wire::MAX_FRAME);
                loop {
                    let message: ToKernel = match reader.read_json().await {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(e) => {
                            audit
                                .note(AuditEvent::HitlChannelError {
                                    error: e.to_string(),
                                })
                                .await;
                            break;
                        }
                    };
                    match message {
                        ToKernel::Ready { .. } => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        ToKernel::Audit { event, data } => {
                            // The daemon's events are its own: `hitl.*`, nothing else.
                            let event = match event.strip_prefix("hitl.") {
                                Some(own) => own.to_owned(),
                                None => event,
                            };
                            audit.note(AuditEvent::Hitl { event, data }).await;
                        }
                        ToKernel::Released {
                            request,
                            binding,
                            factors,
                            remember,
                        } => {
                            let desk = ReleaseDesk {
                                pending: &pending,
                                grants: &grants,
                                audit: &audit,
                                clock: clock.as_ref(),
                            };
                            let released = desk.release(&request, &binding, factors, remember);
                            if let Err(e) = released.await {
                                audit
                                    .note(AuditEvent::ApprovalReleaseRefused {
                                        id: request.id.clone(),
                                        error: e.to_string(),
                                    })
                                    .await;
                            }
                        }
                        ToKernel::Refused { id, ending } => pending.refused(&id, ending),
                        ToKernel::ChatAnnounce { connector, sealed } => {
                            // Nobody listening (no connector up) is fine: the router asks for
                            // a resend when one registers.
                            let _ = announcements.send(ChatAnnouncement { connector, sealed });
                        }
                        ToKernel::ChatAnswer { id, sealed } => {
                            let waiting = presses.lock().ok().and_then(|mut p| p.remove(&id));
                            if let Some(waiting) = waiting {
                                let _ = waiting.send(sealed);
                            }
                        }
                    }
                }
                alive.store(false, Ordering::SeqCst);
                // No answer will come: every waiting press hears so.
                if let Ok(mut waiting) = presses.lock() {
                    waiting.clear();
                }
                // Nothing can be approved any more: every waiting turn hears no.
                pending.refuse_all();
                audit.note(AuditEvent::HitlStopped {}).await;
            });
        }
        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(DaemonError::StoppedBeforeReady.into());
            }
            Err(_) => {
                return Err(DaemonError::ReadyTimeout {
                    seconds: START_TIMEOUT.as_secs(),
                }
                .into());
            }
        }
        Ok(Arc::new(Self {
            to_daemon,
            spool,
            key,
            writer,
            alive,
            child: Mutex::new(child),
            info,
            announcements,
            presses,
            next_press: AtomicU64::new(1),
        }))
    }

    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    /// The daemon's sealed announcements for the connectors, from now on.
    pub(crate) fn chat_announcements(&self) -> broadcast::Receiver<ChatAnnouncement> {
        self.announcements.subscribe()
    }

    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    /// Relays a press that connector `connector` sealed to the daemon and returns the daemon's
    /// sealed answer for the connector.
    pub(crate) async fn press_approval(
        &self,
        connector: &str,
        sealed: String,
    ) -> Result<String, KernelError> {
        let id = self.next_press.fetch_add(1, Ordering::SeqCst);
        let (answer_tx, answer_rx) = oneshot::channel();
        self.presses
            .lock()
            .map_err(|_| DaemonError::NotRunning)?
            .insert(id, answer_tx);
        let sent = self.send(ToDaemon::ChatPress {
            id,
            connector: connector.to_owned(),
            sealed,
        });
        let answer = match sent {
            Ok(()) => tokio::time::timeout(PRESS_TIMEOUT, answer_rx).await,
            Err(e) => {
                self.forget_press(id);
                return Err(e);
            }
        };
        match answer {
            Ok(Ok(Some(sealed))) => Ok(sealed),
            Ok(Ok(None)) => Err(DaemonError::NoChatKey {
                connector: connector.to_owned(),
            }
            .into()),
            Ok(Err(_)) => Err(DaemonError::NotRunning.into()),
            Err(_) => {
                self.forget_press(id);
                Err(DaemonError::PressTimeout {
                    seconds: PRESS_TIMEOUT.as_secs(),
                }
                .into())
            }
        }
    }

    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    fn forget_press(&self, id: u64) {
        if let Ok(mut waiting) = self.presses.lock() {
            waiting.remove(&id);
        }
    }

    #[allow(
        dead_code,
        reason = "the connector router (crates/kernel/src/connectors/) uses it"
    )]
    /// Asks the daemon to announce again to `connector` what waits (it has just registered).
    pub(crate) fn resend_announcements(&self, connector: &str) -> Result<(), KernelError> {
        self.send(ToDaemon::ChatResend {
            connector: connector.to_owned(),
        })
    }

    /// What `p3ak status` shows.
    #[must_use]
    pub fn info(&self) -> &HitlInfo {
        &self.info
    }

    /// Whether the daemon still runs.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Writes `request` into `staging/<category>/` (or `other/`, when the spool has no
    /// directory for its category: they are made when the daemon starts, from the policy's
    /// groups) and tells the daemon. Returns the request as staged.
    pub(crate) async fn stage(&self, request: &Request) -> Result<Request, KernelError> {
        if !self.is_alive() {
            return Err(DaemonError::NotRunning.into());
        }
        let mut request = request.clone();
        if !self.spool.category(&request.category).is_dir() {
            request.category = p3ak_approval::spool::OTHER.to_owned();
        }
        let sealed = self.key.seal(&request)?;
        match &self.writer {
            StageWriter::AsUser { exe, uid, gid } => {
                stage_as(exe, (*uid, *gid), &self.spool, &request, &sealed).await?;
            }
            StageWriter::Direct => {
                let spool = self.spool.clone();
                let (category, id) = (request.category.clone(), request.id.clone());
                tokio::task::spawn_blocking(move || {
                    p3ak_approval::spool::write_staged(&spool, &category, &id, &sealed)
                })
                .await
                .map_err(DaemonError::StageTask)??;
            }
        }
        self.send(ToDaemon::Staged {
            id: request.id.clone(),
            category: request.category.clone(),
        })?;
        Ok(request)
    }

    /// The kernel stopped waiting for `id`.
    pub(crate) fn withdraw(&self, id: &str) {
        let _ = self.send(ToDaemon::Withdraw { id: id.to_owned() });
    }

    fn send(&self, message: ToDaemon) -> Result<(), KernelError> {
        if !self.is_alive() {
            return Err(DaemonError::NotRunning.into());
        }
        self.to_daemon
            .send(message)
            .map_err(|_| DaemonError::NotRunning.into())
    }

    /// Stops the daemon (it withdraws what still waits) and, if this kernel started it, waits
    /// for it.
    pub(crate) async fn shutdown(&self) {
        let _ = self.to_daemon.send(ToDaemon::Shutdown);
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        if let Some(mut child) = child
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// What the connector router uses: the daemon's sealed announcements out, the connectors'
/// sealed presses in. The kernel only relays; it cannot read or forge either.
impl crate::Kernel {
    /// The daemon's sealed announcements for the connectors, from now on.
    pub(crate) fn chat_announcements(&self) -> broadcast::Receiver<ChatAnnouncement> {
        self.hitl.chat_announcements()
    }

    /// Relays connector `connector`'s sealed press to the daemon; its sealed answer, for the
    /// connector.
    pub(crate) async fn press_approval(
        &self,
        connector: &str,
        sealed: String,
    ) -> Result<String, KernelError> {
        self.hitl.press_approval(connector, sealed).await
    }

    /// Asks the daemon to announce what waits to `connector` again (it just registered).
    pub(crate) async fn resend_announcements(&self, connector: &str) {
        if let Err(e) = self.hitl.resend_announcements(connector) {
            tracing::warn!("approvals are not announced to `{connector}`: {e}");
        }
    }
}

/// As root: `p3ak hitl stage` under the writer's uid, which may create the file but not list,
/// read or move anything.
async fn stage_as(
    exe: &Path,
    (uid, gid): (u32, u32),
    spool: &Spool,
    request: &Request,
    sealed: &[u8],
) -> Result<(), KernelError> {
    let program =
        p3ak_sandbox::Program::open(exe, Some((uid, gid))).map_err(DaemonError::StageProgram)?;
    let mut command = program.command();
    command
        .args(["hitl", "stage", "--spool"])
        .arg(spool.root())
        .args(["--category", &request.category, "--id", &request.id])
        .env_clear()
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut child = command.spawn().map_err(DaemonError::StageIo)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sealed)
            .await
            .map_err(DaemonError::StageIo)?;
    }
    let output = tokio::time::timeout(STAGE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| DaemonError::StageTimeout {
            seconds: STAGE_TIMEOUT.as_secs(),
        })?
        .map_err(DaemonError::StageIo)?;
    if !output.status.success() {
        return Err(DaemonError::StageRefused {
            id: request.id.clone(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into());
    }
    Ok(())
}

fn write_frame_blocking<T: serde::Serialize>(
    stream: &mut std::os::unix::net::UnixStream,
    message: &T,
) -> Result<(), KernelError> {
    let payload =
        zeroize::Zeroizing::new(serde_json::to_vec(message).map_err(DaemonError::Encode)?);
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, wire::MAX_FRAME).map_err(DaemonError::Frame)?,
    );
    std::io::Write::write_all(stream, &frame).map_err(|e| DaemonError::Write(e).into())
}

async fn write_frame<T: serde::Serialize>(
    output: &mut tokio::net::unix::OwnedWriteHalf,
    message: &T,
) -> Result<(), KernelError> {
    p3ak_proto::tokio_io::write_json(output, message, wire::MAX_FRAME)
        .await
        .map_err(|e| DaemonError::Send(e).into())
}

/// The spool's layout and the daemon's own directory; as root, their owners, and a home its
/// users can pass through (0711: nothing can be listed).
fn prepare_dirs(
    home: &Home,
    spool: &Spool,
    categories: &[String],
    daemon: Option<(u32, u32)>,
    writer: Option<(u32, u32)>,
) -> Result<(), KernelError> {
    let owners = match (daemon, writer) {
        (Some(daemon), Some((_, writer_gid))) => Some(Owners { daemon, writer_gid }),
        _ => None,
    };
    let dir = home.hitl();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(KernelError::io(format!(
            "cannot create `{}`",
            dir.display()
        )))?;
    if let Some((uid, gid)) = daemon {
        for entry in std::iter::once(dir.clone()).chain(
            std::fs::read_dir(&dir)
                .map_err(KernelError::io(format!("cannot list `{}`", dir.display())))?
                .filter_map(Result::ok)
                .map(|e| e.path()),
        ) {
            std::os::unix::fs::lchown(&entry, Some(uid), Some(gid)).map_err(KernelError::io(
                format!("cannot give `{}` to the daemon", entry.display()),
            ))?;
        }
        set_mode(home.root(), 0o711)?;
        traversable_ancestors(home.root())?;
    }
    // Operators reach the daemon's socket inside; nothing else in it is theirs to read.
    set_mode(&dir, 0o711)?;
    spool.prepare(categories, owners)?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), KernelError> {
    crate::launch::plan::set_mode(path, mode).map_err(|e| DaemonError::Permissions(e).into())
}

/// Directories above the home that belong to the kernel's user get search permission for
/// others (never read), so the daemon's user can reach the spool.
fn traversable_ancestors(path: &Path) -> Result<(), KernelError> {
    crate::launch::plan::traversable_ancestors(path).map_err(|e| DaemonError::Permissions(e).into())
}

/// The verdict's reasons as the approver sees them: each rule, what it asked for, and the
/// operator's `why:`. They go to the approval daemon only, never to a model (invariant I3).
pub(crate) fn approver_reasons(
    verdict: &p3ak_policy::Verdict,
) -> Vec<p3ak_approval::binding::Reason> {
    verdict
        .reasons
        .iter()
        .map(|r| p3ak_approval::binding::Reason {
            rule: r.rule.clone(),
            effect: match &r.effect {
                p3ak_policy::Decision::Allow { tier } => format!("allow ({tier})"),
                p3ak_policy::Decision::Reject => "reject".to_owned(),
                p3ak_policy::Decision::Escalate { level, .. } => format!("level {level}"),
            },
            why: r.why.clone(),
        })
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::time::Duration;

    use p3ak_policy::{Decision, Level, Reason, Tier, Verdict};

    use super::*;

    /// A link attached to a socket pair whose other end the test plays as the daemon.
    async fn attached() -> (
        tempfile::TempDir,
        Arc<HitlLink>,
        FrameReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        use p3ak_crypto::Passphrase;
        use p3ak_vault::{KdfParams, Protection, Vault};

        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(
            Vault::create(
                &dir.path().join("kernel.vault"),
                Protection::Passphrase {
                    passphrase: &Passphrase::new("relay test".into()),
                    kdf: KdfParams {
                        memory_kib: KdfParams::MIN_MEMORY_KIB,
                        iterations: 1,
                        parallelism: 1,
                    },
                },
            )
            .unwrap(),
        );
        let broker = Arc::new(crate::broker::Broker::load(&vault).unwrap());
        let audit = AuditLog::new(Arc::clone(&vault), broker);
        let grants = Arc::new(GrantBook::load(Arc::clone(&vault), 0).unwrap());
        let (kernel_end, daemon_end) = std::os::unix::net::UnixStream::pair().unwrap();
        daemon_end.set_nonblocking(true).unwrap();
        let (input, mut output) = tokio::net::UnixStream::from_std(daemon_end)
            .unwrap()
            .into_split();
        p3ak_proto::tokio_io::write_json(
            &mut output,
            &ToKernel::Ready { console: None },
            wire::MAX_FRAME,
        )
        .await
        .unwrap();
        let link = HitlLink::attach(Attach {
            channel: kernel_end,
            child: None,
            info: HitlInfo::default(),
            spool: Spool::new(dir.path().join("spool")),
            key: SpoolKey::generate().unwrap(),
            writer: StageWriter::Direct,
            pending: Arc::new(PendingQueue::default()),
            audit,
            grants,
            clock: Arc::new(crate::road::SystemClock),
        })
        .await
        .unwrap();
        (dir, link, FrameReader::new(input, wire::MAX_FRAME), output)
    }

    #[tokio::test]
    async fn the_kernel_relays_sealed_announcements_and_presses_as_they_are() {
        let (_dir, link, mut from_kernel, mut to_kernel) = attached().await;
        let mut announcements = link.chat_announcements();
        let announce = ToKernel::ChatAnnounce {
            connector: "telegram".to_owned(),
            sealed: "c2VhbGVk".to_owned(),
        };
        p3ak_proto::tokio_io::write_json(&mut to_kernel, &announce, wire::MAX_FRAME)
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), announcements.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            heard,
            ChatAnnouncement {
                connector: "telegram".to_owned(),
                sealed: "c2VhbGVk".to_owned(),
            }
        );

        // A press goes to the daemon as it came, and its answer comes back as it went.
        let daemon = tokio::spawn(async move {
            for answer in [Some("YW5zd2Vy".to_owned()), None] {
                let Some(ToDaemon::ChatPress {
                    id,
                    connector,
                    sealed,
                }) = from_kernel.read_json::<ToDaemon>().await.unwrap()
                else {
                    panic!("not a press");
                };
                assert_eq!(
                    (connector.as_str(), sealed.as_str()),
                    ("telegram", "cHJlc3M")
                );
                let answer = ToKernel::ChatAnswer { id, sealed: answer };
                p3ak_proto::tokio_io::write_json(&mut to_kernel, &answer, wire::MAX_FRAME)
                    .await
                    .unwrap();
            }
            let resend = from_kernel.read_json::<ToDaemon>().await.unwrap();
            assert!(
                matches!(resend, Some(ToDaemon::ChatResend { connector }) if connector == "slack")
            );
        });
        let answer = link
            .press_approval("telegram", "cHJlc3M".to_owned())
            .await
            .unwrap();
        assert_eq!(answer, "YW5zd2Vy");
        // No key for that connector in the daemon: a clear error, not a hang.
        let err = link
            .press_approval("telegram", "cHJlc3M".to_owned())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no key for connector"), "{err}");
        link.resend_announcements("slack").unwrap();
        tokio::time::timeout(Duration::from_secs(5), daemon)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_approver_gets_every_rule_with_its_why() {
        let verdict = Verdict {
            decision: Decision::Reject,
            tier: Some(Tier::Commit),
            group: None,
            rules: vec!["big".to_owned()],
            reasons: vec![
                Reason {
                    rule: "big".to_owned(),
                    effect: Decision::Escalate {
                        level: Level::new(4).unwrap_or(Level::MAX),
                        crawfish: Duration::ZERO,
                        notify: Vec::new(),
                        confirm_twice: false,
                        timeout: Duration::from_secs(60),
                    },
                    why: Some("over a million".to_owned()),
                },
                Reason {
                    rule: "new-payee".to_owned(),
                    effect: Decision::Reject,
                    why: None,
                },
            ],
        };
        let reasons = approver_reasons(&verdict);
        let shown: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["big (level 4): over a million", "new-payee (reject)"]
        );
    }
}

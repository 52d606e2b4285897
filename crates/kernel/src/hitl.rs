//! The kernel's side of humans in the loop: it starts the HITL daemon (`p3ak hitl run`, under
//! its own uid as root), stages escalated actions into `spool/staging/` (through a process
//! under the kernel's spool uid as root, because root passes every permission check), relays
//! the operator's requests from the control socket, records what the daemon reports in the
//! audit log, and hands each release to the waiting turn. The daemon's pipes are the channel:
//! only the kernel holds them.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p3ak_hitl::binding::Request;
use p3ak_hitl::spool::{Owners, Spool, SpoolKey};
use p3ak_hitl::wire::{self, OperatorAnswer, OperatorRequest, Start, ToDaemon, ToKernel};
use p3ak_vault::Vault;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::KernelError;
use crate::audit::AuditLog;
use crate::config::HitlSettings;
use crate::home::Home;
use crate::pending::PendingQueue;

/// The vault object holding the key of the daemon's factor store.
const STATE_KEY_SPACE: &str = "hitl";
const STATE_KEY_NAME: &str = "state-key";
/// How long the daemon has to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an operator request may take (a PIN costs an Argon2id hash).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What `p3ak up` tells the operator about the daemon.
#[derive(Debug, Clone)]
pub struct HitlInfo {
    /// The daemon's pid.
    pub pid: Option<u32>,
    /// The console's one-time login link, when the console runs.
    pub login_link: Option<String>,
    /// Why the console does not run, when it was asked for.
    pub console_error: Option<String>,
}

/// A running daemon.
pub struct HitlLink {
    to_daemon: mpsc::UnboundedSender<ToDaemon>,
    calls: Arc<Mutex<HashMap<u64, oneshot::Sender<OperatorAnswer>>>>,
    next_call: AtomicU64,
    spool: Spool,
    key: SpoolKey,
    writer: Option<(u32, u32)>,
    owners: Option<Owners>,
    exe: PathBuf,
    alive: Arc<AtomicBool>,
    child: Mutex<Option<tokio::process::Child>>,
    info: HitlInfo,
}

/// Everything [`HitlLink::start`] needs.
pub(crate) struct HitlStart<'a> {
    pub(crate) home: &'a Home,
    pub(crate) settings: &'a HitlSettings,
    pub(crate) exe: &'a Path,
    pub(crate) vault: &'a Vault,
    pub(crate) categories: Vec<String>,
    pub(crate) pending: Arc<PendingQueue>,
    pub(crate) audit: AuditLog,
}

impl HitlLink {
    /// Prepares the spool, starts the daemon and waits until it is ready.
    pub(crate) async fn start(start: HitlStart<'_>) -> Result<Arc<Self>, KernelError> {
        let HitlStart {
            home,
            settings,
            exe,
            vault,
            categories,
            pending,
            audit,
        } = start;
        let root = rustix::process::geteuid().is_root();
        let (daemon_id, writer_id) = settings.ids;
        let daemon = root.then_some((daemon_id, daemon_id));
        let writer = root.then_some((writer_id, writer_id));
        let spool = Spool::new(home.spool());
        prepare_dirs(home, &spool, &categories, daemon, writer)?;

        let key = SpoolKey::generate()?;
        let state_key = state_key(vault)?;
        let console = settings.console_addr().map_err(KernelError::Hitl)?;
        let login_token = match console {
            Some(_) => Some(zeroize::Zeroizing::new(hex::encode(
                p3ak_crypto::random_array::<32>()?,
            ))),
            None => None,
        };

        let program = p3ak_sandbox::Program::open(exe, daemon)
            .map_err(|e| KernelError::Hitl(format!("cannot start the daemon: {e}")))?;
        let mut command = program.command();
        command
            .args(["hitl", "run"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((uid, gid)) = daemon {
            command.uid(uid).gid(gid);
        }
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            KernelError::Hitl(format!("cannot start `{} hitl run`: {e}", exe.display()))
        })?;
        let pid = child.id();
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(KernelError::Hitl("the daemon has no pipes".to_owned()));
        };

        let start_frame = Start {
            home: home.root().display().to_string(),
            spool_key: key.to_hex().to_string(),
            state_key: hex::encode(state_key.expose()),
            categories,
            console: console.map(|a| a.to_string()),
            console_origin: settings.console_origin.clone(),
            console_public: settings.console_public,
            login_token: login_token.as_ref().map(|t| t.to_string()),
        };
        write_frame(&mut stdin, &start_frame).await?;
        drop(start_frame);

        let (to_daemon, mut outgoing) = mpsc::unbounded_channel::<ToDaemon>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let stop = matches!(message, ToDaemon::Shutdown);
                if write_frame(&mut stdin, &message).await.is_err() || stop {
                    break;
                }
            }
        });

        let calls: Arc<Mutex<HashMap<u64, oneshot::Sender<OperatorAnswer>>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = oneshot::channel::<Option<String>>();
        {
            let calls = Arc::clone(&calls);
            let alive = Arc::clone(&alive);
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut reader = p3ak_hitl::daemon::FrameReader::new();
                loop {
                    let message: ToKernel = match reader.next(&mut stdout).await {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(e) => {
                            let _ = audit
                                .record("hitl.channel.error", json!({"error": e.to_string()}))
                                .await;
                            break;
                        }
                    };
                    match message {
                        ToKernel::Ready { console } => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(console);
                            }
                        }
                        ToKernel::Audit { event, data } => {
                            // The daemon's events are its own: `hitl.*`, nothing else.
                            let event = if event.starts_with("hitl.") {
                                event
                            } else {
                                format!("hitl.{event}")
                            };
                            let _ = audit.record_owned(event, data).await;
                        }
                        ToKernel::Released {
                            request,
                            binding,
                            factors,
                        } => {
                            if let Err(e) = pending.released(&request, &binding, factors) {
                                let _ = audit
                                    .record(
                                        "approval.release.refused",
                                        json!({"id": request.id, "error": e.to_string()}),
                                    )
                                    .await;
                            }
                        }
                        ToKernel::Refused { id, ending } => pending.refused(&id, &ending),
                        ToKernel::Answer { call, answer } => {
                            let waiter = calls.lock().ok().and_then(|mut c| c.remove(&call));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(answer);
                            }
                        }
                    }
                }
                alive.store(false, Ordering::SeqCst);
                // Nothing can be approved any more: every waiting turn hears no.
                pending.refuse_all("daemon stopped");
                if let Ok(mut calls) = calls.lock() {
                    calls.clear();
                }
                let _ = audit.record("hitl.stopped", json!({})).await;
            });
        }

        let console_address = match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(KernelError::Hitl(format!(
                    "the daemon stopped while starting{}",
                    status.map(|s| format!(" ({s})")).unwrap_or_default()
                )));
            }
            Err(_) => {
                return Err(KernelError::Hitl(format!(
                    "the daemon did not start within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
        };
        let (login_link, console_error) = match (&console, &console_address, &login_token) {
            (Some(_), Some(address), Some(token)) => {
                let origin = settings.console_origin.clone().unwrap_or_else(|| {
                    let port = address.rsplit(':').next().unwrap_or("7325");
                    format!("http://localhost:{port}")
                });
                (
                    Some(format!(
                        "{}/login?token={}",
                        origin.trim_end_matches('/'),
                        token.as_str()
                    )),
                    None,
                )
            }
            (Some(asked), None, _) => (
                None,
                Some(format!(
                    "the web console could not listen on {asked} (see the log); approvals that need it (levels 2, 4, 5) cannot be given"
                )),
            ),
            _ => (None, None),
        };
        Ok(Arc::new(Self {
            to_daemon,
            calls,
            next_call: AtomicU64::new(1),
            spool,
            key,
            writer,
            owners: daemon
                .zip(writer)
                .map(|(daemon, (_, writer_gid))| Owners { daemon, writer_gid }),
            exe: exe.to_owned(),
            alive,
            child: Mutex::new(Some(child)),
            info: HitlInfo {
                pid,
                login_link,
                console_error,
            },
        }))
    }

    /// What `p3ak up` prints.
    #[must_use]
    pub fn info(&self) -> &HitlInfo {
        &self.info
    }

    /// Whether the daemon still runs.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Writes `request` into `staging/<category>/` and tells the daemon.
    pub(crate) async fn stage(&self, request: &Request) -> Result<(), KernelError> {
        if !self.is_alive() {
            return Err(KernelError::Hitl("the daemon is not running".to_owned()));
        }
        self.spool
            .prepare_category(&request.category, self.owners)?;
        let sealed = self.key.seal(request)?;
        match self.writer {
            Some(ids) => self.stage_as(ids, request, &sealed).await?,
            None => {
                let spool = self.spool.clone();
                let (category, id) = (request.category.clone(), request.id.clone());
                tokio::task::spawn_blocking(move || {
                    p3ak_hitl::spool::write_staged(&spool, &category, &id, &sealed)
                })
                .await
                .map_err(|e| KernelError::Hitl(format!("staging task failed: {e}")))??;
            }
        }
        self.send(ToDaemon::Staged {
            id: request.id.clone(),
            category: request.category.clone(),
        })
    }

    /// As root: `p3ak hitl stage` under the spool writer's uid, which may create the file but
    /// not list, read or move anything.
    async fn stage_as(
        &self,
        (uid, gid): (u32, u32),
        request: &Request,
        sealed: &[u8],
    ) -> Result<(), KernelError> {
        let program = p3ak_sandbox::Program::open(&self.exe, Some((uid, gid)))
            .map_err(|e| KernelError::Hitl(format!("cannot stage: {e}")))?;
        let mut command = program.command();
        command
            .args(["hitl", "stage", "--spool"])
            .arg(self.spool.root())
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
        let mut child = command
            .spawn()
            .map_err(|e| KernelError::Hitl(format!("cannot stage: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sealed)
                .await
                .map_err(|e| KernelError::Hitl(format!("cannot stage: {e}")))?;
        }
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .map_err(|_| KernelError::Hitl("staging took longer than 20 s".to_owned()))?
            .map_err(|e| KernelError::Hitl(format!("cannot stage: {e}")))?;
        if !output.status.success() {
            return Err(KernelError::Hitl(format!(
                "cannot stage `{}`: {}",
                request.id,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// The kernel stopped waiting for `id`.
    pub(crate) fn withdraw(&self, id: &str) {
        let _ = self.send(ToDaemon::Withdraw { id: id.to_owned() });
    }

    /// Relays an operator's request and waits for the answer.
    pub async fn operator(
        &self,
        request: OperatorRequest,
        channel: &str,
    ) -> Result<OperatorAnswer, KernelError> {
        let call = self.next_call.fetch_add(1, Ordering::SeqCst);
        let (answer, receiver) = oneshot::channel();
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(call, answer);
        }
        self.send(ToDaemon::Operator {
            call,
            channel: channel.to_owned(),
            request,
        })?;
        let answer = tokio::time::timeout(CALL_TIMEOUT, receiver).await;
        if let Ok(mut calls) = self.calls.lock() {
            calls.remove(&call);
        }
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(KernelError::Hitl("the daemon stopped".to_owned())),
            Err(_) => Err(KernelError::Hitl(format!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }

    fn send(&self, message: ToDaemon) -> Result<(), KernelError> {
        if !self.is_alive() {
            return Err(KernelError::Hitl("the daemon is not running".to_owned()));
        }
        self.to_daemon
            .send(message)
            .map_err(|_| KernelError::Hitl("the daemon is not running".to_owned()))
    }

    /// Stops the daemon (it withdraws what still waits) and waits for it.
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

async fn write_frame<T: serde::Serialize>(
    stdin: &mut tokio::process::ChildStdin,
    message: &T,
) -> Result<(), KernelError> {
    let payload = zeroize::Zeroizing::new(
        serde_json::to_vec(message).map_err(|e| KernelError::Hitl(e.to_string()))?,
    );
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, wire::MAX_FRAME)
            .map_err(|e| KernelError::Hitl(e.to_string()))?,
    );
    stdin
        .write_all(&frame)
        .await
        .map_err(|e| KernelError::Hitl(format!("cannot write to the daemon: {e}")))?;
    stdin
        .flush()
        .await
        .map_err(|e| KernelError::Hitl(format!("cannot write to the daemon: {e}")))
}

/// The key of the daemon's factor store: random, kept in the kernel's (encrypted) vault.
fn state_key(vault: &Vault) -> Result<p3ak_crypto::Key, KernelError> {
    if let Some(bytes) = vault.read_object(STATE_KEY_SPACE, STATE_KEY_NAME)? {
        return Ok(p3ak_crypto::Key::from_slice(bytes.expose())?);
    }
    let key = p3ak_crypto::Key::generate()?;
    vault.transact(|tx| tx.put_object(STATE_KEY_SPACE, STATE_KEY_NAME, key.expose()))?;
    Ok(key)
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
    set_mode(&dir, 0o700)?;
    spool.prepare(categories, owners)?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), KernelError> {
    crate::host::sandboxing::set_mode(path, mode).map_err(KernelError::Hitl)
}

/// Directories above the home that belong to the kernel's user get search permission for
/// others (never read), so the daemon's user can reach the spool.
fn traversable_ancestors(path: &Path) -> Result<(), KernelError> {
    crate::host::sandboxing::traversable_ancestors(path).map_err(KernelError::Hitl)
}

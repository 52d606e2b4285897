//! The kernel's side of the warden: plugins started on request, their exits, the host's
//! denial reports and memory-vault rekeys, all over the warden's channel.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use p3ak_crypto::SecretBytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::channel::Channel;
use super::wire::{KernelStart, ToKernel, ToWarden};
use crate::launch::{DenialFeed, ExitInfo, LaunchError, Launched};
use crate::rekey::RekeyReport;
use crate::{KernelError, WardenCallError};

type LaunchAnswer = Result<(Launched, Vec<OwnedFd>), LaunchError>;
type RekeyAnswer = Result<(RekeyReport, SecretBytes), KernelError>;

/// What the warden told at start about its sandbox.
struct SandboxInfo {
    describe: serde_json::Value,
    refusal: Option<String>,
    missing: Vec<String>,
    denials_why_not: Option<String>,
    permission_refusals: bool,
}

/// Starts plugins through the warden.
pub struct RemoteLauncher {
    channel: Arc<Channel>,
    next_id: AtomicU64,
    launches: Arc<Mutex<HashMap<u64, oneshot::Sender<LaunchAnswer>>>>,
    rekeys: Arc<Mutex<HashMap<u64, oneshot::Sender<RekeyAnswer>>>>,
    denials: Mutex<Option<mpsc::UnboundedReceiver<p3ak_sandbox::denials::Denial>>>,
    info: SandboxInfo,
    gone: watch::Receiver<bool>,
}

impl RemoteLauncher {
    /// Serves the channel after the start message: answers, exits and denials are dispatched
    /// as they come. When the warden goes away, [`RemoteLauncher::gone`] turns true.
    pub(crate) fn new(channel: Channel, start: &KernelStart) -> Arc<Self> {
        let channel = Arc::new(channel);
        let launches: Arc<Mutex<HashMap<u64, oneshot::Sender<LaunchAnswer>>>> = Arc::default();
        let rekeys: Arc<Mutex<HashMap<u64, oneshot::Sender<RekeyAnswer>>>> = Arc::default();
        let (denial_tx, denial_rx) = mpsc::unbounded_channel();
        let (gone_tx, gone) = watch::channel(false);
        {
            let channel = Arc::clone(&channel);
            let launches = Arc::clone(&launches);
            let rekeys = Arc::clone(&rekeys);
            tokio::spawn(async move {
                let mut exits: HashMap<u32, oneshot::Sender<ExitInfo>> = HashMap::new();
                loop {
                    let (message, fds) = match channel.recv::<ToKernel>().await {
                        Ok(Some(received)) => received,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("the warden's channel: {e}");
                            break;
                        }
                    };
                    match message {
                        ToKernel::Launched {
                            id,
                            pid,
                            uid,
                            sandbox,
                            stderr,
                        } => {
                            let (exit_tx, exit) = oneshot::channel();
                            exits.insert(pid, exit_tx);
                            let answer = launched(pid, uid, sandbox, stderr, fds, exit);
                            let waiter = launches.lock().ok().and_then(|mut l| l.remove(&id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(answer);
                            }
                        }
                        ToKernel::LaunchFailed {
                            id,
                            refused,
                            message,
                        } => {
                            let error = if refused {
                                LaunchError::Refused(message)
                            } else {
                                LaunchError::Remote(message)
                            };
                            let waiter = launches.lock().ok().and_then(|mut l| l.remove(&id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(Err(error));
                            }
                        }
                        ToKernel::Exited { pid, status } => {
                            if let Some(exit) = exits.remove(&pid) {
                                let _ = exit.send(status);
                            }
                        }
                        ToKernel::Denial(denial) => {
                            let _ = denial_tx.send(denial);
                        }
                        ToKernel::Rekeyed { id, outcome, key } => {
                            let answer = match (outcome, key) {
                                (Ok(report), Some(key)) => hex::decode(key.expose())
                                    .map(|bytes| (report, SecretBytes::new(bytes)))
                                    .map_err(|_| WardenCallError::KeyNotHex.into()),
                                (Ok(_), None) => Err(WardenCallError::NoKey.into()),
                                (Err(remote), _) => Err(WardenCallError::Remote {
                                    message: remote.message,
                                }
                                .into()),
                            };
                            let waiter = rekeys.lock().ok().and_then(|mut r| r.remove(&id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(answer);
                            }
                        }
                        ToKernel::Start(_) => {
                            tracing::error!("the warden sent a second start message");
                            break;
                        }
                    }
                }
                // Everything waiting hears that the warden is gone (their senders drop).
                if let Ok(mut l) = launches.lock() {
                    l.clear();
                }
                if let Ok(mut r) = rekeys.lock() {
                    r.clear();
                }
                gone_tx.send_replace(true);
            });
        }
        Arc::new(Self {
            channel,
            next_id: AtomicU64::new(1),
            launches,
            rekeys,
            denials: Mutex::new(Some(denial_rx)),
            info: SandboxInfo {
                describe: start.sandbox.clone(),
                refusal: start.refusal.clone(),
                missing: start.missing.clone(),
                denials_why_not: start.denials_why_not.clone(),
                permission_refusals: start.permission_refusals,
            },
            gone,
        })
    }

    /// Turns true when the warden's channel closed: the kernel must stop.
    #[must_use]
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Asks the warden to start plugin `name`.
    pub async fn launch(&self, name: &str) -> Result<Launched, LaunchError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        if let Ok(mut launches) = self.launches.lock() {
            launches.insert(id, answer);
        }
        self.channel
            .send(
                &ToWarden::Launch {
                    id,
                    plugin: name.to_owned(),
                },
                &[],
            )
            .await
            .map_err(LaunchError::Warden)?;
        match receiver.await {
            Ok(answer) => answer.map(|(launched, _)| launched),
            Err(_) => Err(LaunchError::WardenGone),
        }
    }

    /// Asks the warden to kill a plugin's process group.
    pub fn kill(&self, name: &str, pid: u32) {
        let channel = Arc::clone(&self.channel);
        let message = ToWarden::Kill {
            plugin: name.to_owned(),
            pid,
        };
        tokio::spawn(async move {
            let _ = channel.send(&message, &[]).await;
        });
    }

    /// Asks the warden to rekey the memory vault; returns the report and the vault's new key.
    pub(crate) async fn rekey_memory(&self) -> RekeyAnswer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        if let Ok(mut rekeys) = self.rekeys.lock() {
            rekeys.insert(id, answer);
        }
        self.channel
            .send(&ToWarden::RekeyMemory { id }, &[])
            .await
            .map_err(WardenCallError::Channel)?;
        receiver.await.map_err(|_| WardenCallError::Gone)?
    }

    /// Tells the warden the kernel is serving.
    pub(crate) async fn ready(&self) -> Result<(), KernelError> {
        self.channel
            .send(&ToWarden::Ready, &[])
            .await
            .map_err(|e| WardenCallError::Channel(e).into())
    }

    /// The sandbox, as the warden described it.
    #[must_use]
    pub fn describe(&self) -> serde_json::Value {
        self.info.describe.clone()
    }

    /// Why no plugin may start, and what the host lacks.
    #[must_use]
    pub fn refusal(&self) -> (Option<String>, Vec<String>) {
        (self.info.refusal.clone(), self.info.missing.clone())
    }

    /// The warden's denial reports (taken once).
    pub fn denials(&self) -> DenialFeed {
        DenialFeed {
            why_not: self.info.denials_why_not.clone(),
            permission_refusals: self.info.permission_refusals,
            denials: self.denials.lock().ok().and_then(|mut d| d.take()),
        }
    }
}

/// A launch answer with its descriptors: the connection first, then stderr when sent.
fn launched(
    pid: u32,
    uid: u32,
    sandbox: serde_json::Value,
    has_stderr: bool,
    fds: Vec<OwnedFd>,
    exit: oneshot::Receiver<ExitInfo>,
) -> LaunchAnswer {
    let mut fds = fds.into_iter();
    let connection = fds.next().ok_or(LaunchError::NoConnection)?;
    let stderr = if has_stderr { fds.next() } else { None };
    let connection = std::os::unix::net::UnixStream::from(connection);
    connection
        .set_nonblocking(true)
        .map_err(LaunchError::Connection)?;
    let connection =
        tokio::net::UnixStream::from_std(connection).map_err(LaunchError::Connection)?;
    Ok((
        Launched {
            pid,
            uid,
            sandbox,
            connection,
            stderr,
            exit: crate::launch::ExitWatch::new(exit),
        },
        fds.collect(),
    ))
}

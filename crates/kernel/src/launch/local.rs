//! Starting plugins in this process: plan the sandbox, prepare its files, start the command
//! with one end of a socket pair as its standard input, and watch for its exit.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::plan::Sandbox;
use super::{DenialFeed, ExitInfo, LaunchError, Launched, PluginSpec};
use crate::config::KernelSettings;

/// A started plugin, before its connection is handed to the async runtime (or, by the
/// warden, to the kernel).
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) sandbox: serde_json::Value,
    pub(crate) connection: std::os::unix::net::UnixStream,
    pub(crate) stderr: Option<OwnedFd>,
}

/// Starts the configured plugins from this process.
pub struct LocalLauncher {
    specs: BTreeMap<String, PluginSpec>,
    sandbox: Sandbox,
    exe: PathBuf,
    settings: KernelSettings,
    /// The chat master key: each connector gets the key derived from it for its name.
    approval_master: Option<p3ak_crypto::Key>,
}

impl LocalLauncher {
    /// A launcher for `specs` of the home at `home`; `exe` is the `p3ak` binary first-party
    /// plugins run from, `kernel_gid` the group of the kernel that reads what they serve.
    #[must_use]
    pub fn new(
        specs: Vec<PluginSpec>,
        settings: &KernelSettings,
        home: &Path,
        exe: PathBuf,
        kernel_gid: u32,
    ) -> Self {
        let sandbox = Sandbox::new(settings, specs.iter(), home, kernel_gid);
        Self {
            specs: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
            sandbox,
            exe,
            settings: settings.clone(),
            approval_master: None,
        }
    }

    /// Hands each connector plugin (`approvals`) its key for the approval daemon's sealed
    /// messages, derived from `master`, in its environment when it starts. Only the process
    /// that holds the passphrase-derived keys (the warden, or a kernel without one) has it.
    #[must_use]
    pub fn with_approval_master(mut self, master: p3ak_crypto::Key) -> Self {
        self.approval_master = Some(master);
        self
    }

    /// The sandbox the plugins get.
    #[must_use]
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Starts plugin `name`.
    pub async fn launch(&self, name: &str) -> Result<Launched, LaunchError> {
        let (launched, mut child) = self.start(name)?;
        let (exit_tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => ExitInfo::from(status),
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                    core_dumped: false,
                },
            };
            let _ = exit_tx.send(status);
        });
        let Started {
            pid,
            uid,
            sandbox,
            connection,
            stderr,
        } = launched;
        connection
            .set_nonblocking(true)
            .map_err(LaunchError::Connection)?;
        let connection =
            tokio::net::UnixStream::from_std(connection).map_err(LaunchError::Connection)?;
        Ok(Launched {
            pid,
            uid,
            sandbox,
            connection,
            stderr,
            exit: super::ExitWatch::new(exit),
        })
    }

    /// Starts plugin `name`; the child is for the caller to wait on.
    pub(crate) fn start(
        &self,
        name: &str,
    ) -> Result<(Started, tokio::process::Child), LaunchError> {
        if let Some(refusal) = self.sandbox.refusal() {
            return Err(LaunchError::Refused(refusal));
        }
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| LaunchError::Unknown(name.to_owned()))?;
        let plan = self
            .sandbox
            .plan(spec, &self.exe)
            .map_err(LaunchError::Plan)?;
        self.sandbox
            .prepare_files(&plan)
            .map_err(LaunchError::Plan)?;
        let (kernel_end, plugin_end) =
            std::os::unix::net::UnixStream::pair().map_err(LaunchError::CreateConnection)?;
        let mut command = super::command(
            spec,
            &plan,
            &self.exe,
            self.settings.max_frame,
            OwnedFd::from(plugin_end),
        )?;
        if let Some(key) = self.approval_key(spec)? {
            command.env(p3ak_approval::chat::APPROVAL_KEY_ENV, key.as_str());
        }
        plan.prepared
            .prepare(self.sandbox.support())
            .map_err(LaunchError::Sandbox)?
            .install(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn().map_err(LaunchError::Spawn)?;
        // The command (and with it the plugin's end of the connection) is gone: only the
        // plugin holds that end now.
        drop(command);
        let pid = child.id().ok_or(LaunchError::ExitedAtOnce)?;
        let stderr = child.stderr.take().and_then(|s| s.into_owned_fd().ok());
        let started = Started {
            pid,
            uid: plan.uid(),
            sandbox: plan.describe(),
            connection: kernel_end,
            stderr,
        };
        Ok((started, child))
    }

    /// The approval key (hex) `spec` is started with: only a connector's, and only when this
    /// launcher holds the master key.
    pub(crate) fn approval_key(
        &self,
        spec: &PluginSpec,
    ) -> Result<Option<zeroize::Zeroizing<String>>, LaunchError> {
        let Some(master) = self.approval_master.as_ref().filter(|_| spec.approvals) else {
            return Ok(None);
        };
        let key = p3ak_approval::chat::ChatKey::derive(master, &spec.name)
            .map_err(LaunchError::ApprovalKey)?;
        Ok(Some(key.to_hex()))
    }

    /// Starts reading the host's audit log for refused accesses of plugins.
    pub fn denials(&self, stopping: Arc<AtomicBool>) -> DenialFeed {
        let feed = match denial_feed(self.sandbox.support()) {
            Ok(feed) => feed,
            Err(why) => {
                return DenialFeed {
                    why_not: Some(why.to_string()),
                    permission_refusals: false,
                    denials: None,
                };
            }
        };
        // What file permissions refuse never reaches Landlock: an audit rule makes Linux
        // report those failures of the plugin uids too. It stays after the kernel stops
        // (another kernel on the host may share the range; adding is idempotent) and costs
        // nothing while no plugin uid fails a call.
        let (first, last) = self.settings.plugin_ids;
        let permission_refusals = match p3ak_sandbox::denials::watch_refusals(first, last, true) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("sandbox: permission refusals are not audited: {e}");
                false
            }
        };
        let (sender, denials) = mpsc::unbounded_channel();
        let mut feed = feed;
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match feed.wait() {
                    Ok(Some(denial)) => {
                        if sender.send(denial).is_err() {
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
        DenialFeed {
            why_not: None,
            permission_refusals,
            denials: Some(denials),
        }
    }
}

/// Why the host's refused accesses cannot be reported.
#[derive(Debug, thiserror::Error)]
enum NoDenialFeed {
    #[error("the kernel is not root: it cannot read the host's audit log")]
    NotRoot,
    #[error("Landlock ABI 7 (Linux 6.15) is needed to log denials")]
    OldLandlock,
    #[error(
        "the host's audit subsystem is off: `auditctl -e 1` (or the `audit=1` boot \
         parameter) makes refused file accesses show up here"
    )]
    AuditOff,
    #[error(transparent)]
    Sandbox(#[from] p3ak_sandbox::SandboxError),
}

/// The feed of Landlock denials, or why there is none on this host.
fn denial_feed(
    support: &p3ak_sandbox::Support,
) -> Result<p3ak_sandbox::denials::DenialFeed, NoDenialFeed> {
    if !support.root {
        return Err(NoDenialFeed::NotRoot);
    }
    if support.landlock_abi.is_none_or(|abi| abi < 7) {
        return Err(NoDenialFeed::OldLandlock);
    }
    if !p3ak_sandbox::denials::host_audit_enabled()? {
        return Err(NoDenialFeed::AuditOff);
    }
    Ok(p3ak_sandbox::denials::DenialFeed::open()?)
}

//! What the warden and its kernel say to each other over their [`Channel`](super::channel).

use p3ak_proto::Credential;
use serde::{Deserialize, Serialize};

use crate::hitl::HitlInfo;
use crate::launch::ExitInfo;

/// Kernel → warden.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ToWarden {
    /// Start the configured plugin `plugin`; answered by `launched` or `launch_failed` with
    /// the same `id`.
    Launch {
        /// Correlation.
        id: u64,
        /// The plugin's configured name (the warden starts only configured plugins, each as
        /// its configuration says).
        plugin: String,
    },
    /// Kill the process group of a plugin the warden started.
    Kill {
        /// The plugin.
        plugin: String,
        /// Its pid.
        pid: u32,
    },
    /// Rewrite the memory vault under a new master key (same passphrase): the warden holds the
    /// passphrase, the kernel does not. The vault's plugins are stopped first by the kernel.
    RekeyMemory {
        /// Correlation.
        id: u64,
    },
    /// The kernel is up and serving: the warden tells the operator how to reach the console.
    Ready,
}

/// Warden → kernel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ToKernel {
    /// The first message: what the kernel runs with. Carries the approval daemon's channel.
    Start(Box<KernelStart>),
    /// A plugin is started; carries the kernel's end of its connection and its stderr.
    Launched {
        /// Correlation.
        id: u64,
        /// Its pid.
        pid: u32,
        /// Its uid.
        uid: u32,
        /// Its sandbox, for the audit log.
        sandbox: serde_json::Value,
        /// Whether a stderr descriptor follows the connection.
        stderr: bool,
    },
    /// A plugin could not be started.
    LaunchFailed {
        /// Correlation.
        id: u64,
        /// Whether the sandbox refused (an incomplete host in `enforce` mode).
        refused: bool,
        /// Why.
        message: String,
    },
    /// A plugin the warden started has exited.
    Exited {
        /// Its pid.
        pid: u32,
        /// How.
        status: ExitInfo,
    },
    /// The host's audit subsystem reported a refused access by a plugin uid.
    Denial(p3ak_sandbox::denials::Denial),
    /// The memory vault was rekeyed (or not).
    Rekeyed {
        /// Correlation.
        id: u64,
        /// The report for the audit log, or why it failed.
        outcome: Result<crate::rekey::RekeyReport, RemoteError>,
        /// The vault's new key (handoff bytes, hex), when it worked.
        key: Option<Credential>,
    },
}

/// An error from the other side, as its text. Serialized as a bare string, as the
/// plain string it replaced was: the wire does not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{message}")]
pub(crate) struct RemoteError {
    /// What went wrong.
    pub(crate) message: String,
}

/// What the kernel runs with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KernelStart {
    /// `P3AK_HOME`.
    pub(crate) home: String,
    /// The kernel vault's key (handoff bytes, hex): the kernel never sees the passphrase.
    pub(crate) kernel_key: Credential,
    /// The memory vault's key, when there is one.
    pub(crate) memory_key: Option<Credential>,
    /// This run's spool key (hex): the kernel seals what it stages with it.
    pub(crate) spool_key: Credential,
    /// The approval daemon, started by the warden.
    pub(crate) hitl: HitlInfo,
    /// Whether round 1's factor-store key may now be deleted from the kernel's vault.
    pub(crate) forget_previous_state_key: bool,
    /// The uids allowed on the control socket.
    pub(crate) operators: Vec<u32>,
    /// The sandbox the warden gives plugins, for the audit log.
    pub(crate) sandbox: serde_json::Value,
    /// Why plugins may not start, if they may not.
    pub(crate) refusal: Option<String>,
    /// The sandbox layers this host lacks.
    pub(crate) missing: Vec<String>,
    /// Why refused accesses are not audited here, if they are not.
    pub(crate) denials_why_not: Option<String>,
    /// Whether refusals by file permissions are audited too.
    pub(crate) permission_refusals: bool,
    /// Whether a TCP listener for the API follows the daemon's channel among the fds.
    #[serde(default)]
    pub(crate) api_listener: bool,
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rekey_reads_on_the_wire_as_it_always_did() {
        let failed = ToKernel::Rekeyed {
            id: 3,
            outcome: Err(RemoteError {
                message: "the vault is busy".to_owned(),
            }),
            key: None,
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"type":"rekeyed","id":3,"outcome":{"Err":"the vault is busy"},"key":null}"#
        );
        let ToKernel::Rekeyed { outcome, .. } = serde_json::from_str(&text).unwrap() else {
            panic!("not a rekey");
        };
        assert_eq!(outcome.unwrap_err().to_string(), "the vault is busy");
    }
}

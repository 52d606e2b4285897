//! Every step of the road into the kernel's audit log (invariant I5), scrubbed of secrets
//! first (I4). If the log cannot be written the step does not happen: the road fails closed.

use std::sync::Arc;

use p3ak_vault::Vault;

use crate::KernelError;
use crate::broker::Broker;

/// The kernel's log: the audit chain of the kernel's vault.
#[derive(Clone)]
pub struct AuditLog {
    vault: Arc<Vault>,
    broker: Arc<Broker>,
}

impl AuditLog {
    pub(crate) fn new(vault: Arc<Vault>, broker: Arc<Broker>) -> Self {
        Self { vault, broker }
    }

    /// Appends one entry; returns its sequence number.
    pub async fn record(
        &self,
        kind: &'static str,
        mut payload: serde_json::Value,
    ) -> Result<u64, KernelError> {
        self.broker.scrubber().scrub_value(&mut payload);
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || vault.log_event(kind, payload))
            .await
            .map_err(|e| KernelError::Control(format!("audit task failed: {e}")))?
            .map_err(KernelError::from)
    }

    /// Appends one entry whose kind is decided at run time (the approval daemon's events).
    pub async fn record_owned(
        &self,
        kind: String,
        mut payload: serde_json::Value,
    ) -> Result<u64, KernelError> {
        self.broker.scrubber().scrub_value(&mut payload);
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || vault.log_event(&kind, payload))
            .await
            .map_err(|e| KernelError::Control(format!("audit task failed: {e}")))?
            .map_err(KernelError::from)
    }

    /// Appends one entry from synchronous code.
    pub fn record_blocking(
        &self,
        kind: &'static str,
        mut payload: serde_json::Value,
    ) -> Result<u64, KernelError> {
        self.broker.scrubber().scrub_value(&mut payload);
        Ok(self.vault.log_event(kind, payload)?)
    }
}

//! Every step of the road into the kernel's audit log (invariant I5), scrubbed of secrets
//! first (I4). If the log cannot be written the step does not happen: the road fails closed.
//! Lifecycle notes ([`Durability::BestEffort`]) that cannot be written are reported in the
//! kernel's log instead.

mod event;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use p3ak_vault::Vault;

pub use event::{AuditEvent, Durability};

use crate::KernelError;
use crate::broker::Broker;

/// A boxed future, so the road's ports are object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the road writes its trail. The kernel's is [`AuditLog`]; tests use one in memory.
pub trait AuditSink: Send + Sync {
    /// Appends one entry, durably; returns its sequence number. An error means the step that
    /// wanted the entry must not happen.
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64, KernelError>>;
}

/// Records an event; a [`Durability::BestEffort`] one whose write fails is logged, not
/// returned, and a required one's failure is returned.
pub async fn note(sink: &dyn AuditSink, event: AuditEvent) {
    let kind = event.kind();
    let durability = event.durability();
    if let Err(e) = sink.append(event).await {
        match durability {
            Durability::BestEffort => tracing::error!("audit: `{kind}` not recorded: {e}"),
            Durability::Required => {
                tracing::error!("audit: required entry `{kind}` not recorded (noted only): {e}");
            }
        }
    }
}

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
    pub async fn record(&self, event: AuditEvent) -> Result<u64, KernelError> {
        let (kind, payload) = self.entry(&event);
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || vault.log_event(&kind, payload))
            .await
            .map_err(KernelError::Task)?
            .map_err(KernelError::from)
    }

    /// Appends a lifecycle note; a failure is logged (see [`note`]).
    pub async fn note(&self, event: AuditEvent) {
        note(self, event).await;
    }

    /// Appends one entry from synchronous code.
    pub fn record_blocking(&self, event: &AuditEvent) -> Result<u64, KernelError> {
        let (kind, payload) = self.entry(event);
        Ok(self.vault.log_event(&kind, payload)?)
    }

    fn entry(&self, event: &AuditEvent) -> (String, serde_json::Value) {
        let mut payload = event.payload();
        self.broker.scrubber().scrub_value(&mut payload);
        (event.kind().into_owned(), payload)
    }
}

impl AuditSink for AuditLog {
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64, KernelError>> {
        Box::pin(self.record(event))
    }
}

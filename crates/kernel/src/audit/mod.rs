//! Every step of the road into the kernel's audit log (invariant I5), scrubbed of secrets
//! first (I4). If the log cannot be written the step does not happen: the road fails closed.
//! Lifecycle notes ([`Durability::BestEffort`]) that cannot be written are reported in the
//! kernel's log instead.

mod event;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use p3ak_vault::{Vault, VaultError};
use tokio::sync::oneshot;

pub use event::{AuditEvent, Durability};

use crate::KernelError;
use crate::broker::Broker;

/// A boxed future, so the road's ports are object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the road writes its trail. The kernel's is [`AuditLog`]; tests use one in memory.
pub trait AuditSink: Send + Sync {
    /// Appends entries in one durable commit (all or none); returns the first's sequence
    /// number. An error means the step that wanted them must not happen.
    fn append_all(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<u64, KernelError>>;

    /// Appends one entry, durably.
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64, KernelError>> {
        self.append_all(vec![event])
    }
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

/// Most entries one group commit takes.
const MAX_GROUP: usize = 256;

/// Entries waiting for the writer, and who waits for them.
struct Job {
    entries: Vec<(String, serde_json::Value)>,
    done: oneshot::Sender<Result<u64, VaultError>>,
}

/// The kernel's log: the audit chain of the kernel's vault.
///
/// Writes are *group-committed*: one writer thread takes every batch that is waiting and
/// commits them together (one pair of fsyncs, one checkpoint), so concurrent turns share the
/// cost of durability. Each caller still waits until its own entries are durable.
#[derive(Clone)]
pub struct AuditLog {
    vault: Arc<Vault>,
    broker: Arc<Broker>,
    writer: Option<std::sync::mpsc::Sender<Job>>,
}

impl AuditLog {
    pub(crate) fn new(vault: Arc<Vault>, broker: Arc<Broker>) -> Self {
        let writer = spawn_writer(Arc::clone(&vault));
        Self {
            vault,
            broker,
            writer,
        }
    }

    /// Appends one entry; returns its sequence number.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, KernelError> {
        self.commit(vec![self.entry(&event)]).await
    }

    /// Appends entries in one commit; returns the first's sequence number.
    pub async fn record_all(&self, events: &[AuditEvent]) -> Result<u64, KernelError> {
        self.commit(events.iter().map(|e| self.entry(e)).collect())
            .await
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

    async fn commit(&self, entries: Vec<(String, serde_json::Value)>) -> Result<u64, KernelError> {
        if let Some(writer) = &self.writer {
            let (done, answer) = oneshot::channel();
            if writer.send(Job { entries, done }).is_ok() {
                return match answer.await {
                    Ok(result) => result.map_err(KernelError::from),
                    Err(_) => Err(KernelError::AuditWriterGone),
                };
            }
            return Err(KernelError::AuditWriterGone);
        }
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || {
            vault.log_events(entries.iter().map(|(k, p)| (k.as_str(), p.clone())))
        })
        .await
        .map_err(KernelError::task("the audit write"))?
        .map_err(KernelError::from)
    }

    /// Entries in the log.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.vault.log_len()
    }

    /// Whether the log has no entry (never, once the kernel has started).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries `from..to` (clamped to the log), oldest first.
    pub async fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<p3ak_vault::LogEntry>, KernelError> {
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || {
            let to = to.min(vault.log_len());
            vault.log_entries(from.min(to), to)
        })
        .await
        .map_err(KernelError::task("reading the audit log"))?
        .map_err(KernelError::from)
    }

    /// Checks every entry, the hash chain and the signed checkpoints (`p3ak audit verify`
    /// without the checkpoint file): the report as JSON, problems first.
    pub async fn verify(&self) -> Result<serde_json::Value, KernelError> {
        let vault = Arc::clone(&self.vault);
        let report = tokio::task::spawn_blocking(move || vault.verify(&mut |_, _| {}))
            .await
            .map_err(KernelError::task("verifying the audit log"))??;
        serde_json::to_value(&report).map_err(|source| KernelError::Encode {
            what: "the verify report",
            source,
        })
    }

    /// Entry `seq` with its inclusion proof against the latest signed checkpoint, as JSON.
    pub async fn prove(&self, seq: u64) -> Result<serde_json::Value, KernelError> {
        let vault = Arc::clone(&self.vault);
        let proof = tokio::task::spawn_blocking(move || vault.log_inclusion_proof(seq))
            .await
            .map_err(KernelError::task("proving an audit entry"))??;
        serde_json::to_value(&proof).map_err(|source| KernelError::Encode {
            what: "the proof",
            source,
        })
    }

    fn entry(&self, event: &AuditEvent) -> (String, serde_json::Value) {
        let mut payload = event.payload();
        // An entry written inside a turn says which (and who handed it the work).
        if let (Some(turn), Some(map)) = (crate::harness::audit_turn(), payload.as_object_mut()) {
            map.insert("turn".to_owned(), turn);
        }
        self.broker.scrubber().scrub_value(&mut payload);
        (event.kind().into_owned(), payload)
    }
}

impl AuditSink for AuditLog {
    fn append_all(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<u64, KernelError>> {
        Box::pin(async move { self.record_all(&events).await })
    }
}

/// Starts the group-commit writer; `None` (each write then commits alone) if no thread can
/// be started.
fn spawn_writer(vault: Arc<Vault>) -> Option<std::sync::mpsc::Sender<Job>> {
    let (sender, jobs) = std::sync::mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("p3ak-audit".to_owned())
        .spawn(move || {
            // Ends when every `AuditLog` is gone.
            while let Ok(first) = jobs.recv() {
                let mut size = first.entries.len();
                let mut group = vec![first];
                while size < MAX_GROUP {
                    let Ok(job) = jobs.try_recv() else { break };
                    size += job.entries.len();
                    group.push(job);
                }
                commit_group(&vault, group);
            }
        });
    match spawned {
        Ok(_) => Some(sender),
        Err(e) => {
            tracing::warn!("audit: no group-commit writer ({e}); each entry commits alone");
            None
        }
    }
}

/// Commits a group at once; if that fails, each job alone, so that one job's failure is not
/// another's.
fn commit_group(vault: &Vault, group: Vec<Job>) {
    let all = group
        .iter()
        .flat_map(|job| job.entries.iter().map(|(k, p)| (k.as_str(), p.clone())));
    match vault.log_events(all) {
        Ok(mut seq) => {
            // A caller that stopped waiting (its turn was cancelled) needs no answer.
            for job in group {
                let count = job.entries.len() as u64;
                let _ = job.done.send(Ok(seq));
                seq += count;
            }
        }
        Err(_) if group.len() > 1 => {
            for job in group {
                let result =
                    vault.log_events(job.entries.iter().map(|(k, p)| (k.as_str(), p.clone())));
                let _ = job.done.send(result);
            }
        }
        Err(e) => {
            if let Some(job) = group.into_iter().next() {
                let _ = job.done.send(Err(e));
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use p3ak_crypto::Passphrase;
    use p3ak_vault::{KdfParams, Protection};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn invariant_i5_concurrent_turns_share_commits_and_keep_their_entries_together() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(
            Vault::create(
                &dir.path().join("kernel.vault"),
                Protection::Passphrase {
                    passphrase: &Passphrase::new("audit test".into()),
                    kdf: KdfParams {
                        memory_kib: KdfParams::MIN_MEMORY_KIB,
                        iterations: 1,
                        parallelism: 1,
                    },
                },
            )
            .unwrap(),
        );
        let broker = Arc::new(Broker::load(&vault).unwrap());
        let log = AuditLog::new(Arc::clone(&vault), broker);
        let before = vault.log_len();
        let turns = (0..16).map(|turn| {
            let log = log.clone();
            tokio::spawn(async move {
                let events: Vec<AuditEvent> = (0..3)
                    .map(|step| AuditEvent::PluginRestart {
                        plugin: format!("turn{turn}-step{step}"),
                    })
                    .collect();
                (turn, log.record_all(&events).await.unwrap())
            })
        });
        let mut firsts = Vec::new();
        for turn in turns {
            firsts.push(turn.await.unwrap());
        }
        assert_eq!(vault.log_len(), before + 16 * 3);
        for (turn, first) in firsts {
            // A turn's entries are contiguous and in order, starting where it was told.
            let entries = vault.log_entries(first, first + 3).unwrap();
            for (step, entry) in entries.iter().enumerate() {
                assert_eq!(entry.kind, "plugin.restart");
                assert_eq!(entry.payload["plugin"], format!("turn{turn}-step{step}"));
            }
        }
        let report = vault.verify(&mut |_, _| {}).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.log_entries, vault.log_len());
    }
}

//! Every step of the road into the kernel's audit log (invariant I5), scrubbed of secrets
//! first (I4). If the log cannot be written the step does not happen: the road fails closed.
//! Lifecycle notes ([`Durability::BestEffort`]) that cannot be written are reported in the
//! kernel's log instead.

mod event;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

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

    /// Appends entries behind every earlier one without waiting for them to be durable: they
    /// are durable before any later append returns, and a later append fails if they cannot
    /// be written. For what follows a step that already happened (a tool's result), so that
    /// the step's caller does not wait for a commit that guards nothing.
    fn append_after(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move { self.append_all(events).await.map(|_| ()) })
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

/// How often held entries may fail to be written alone before an `audit.unwritten` entry
/// takes their place.
const HELD_ATTEMPTS: u32 = 3;

/// Entries nobody waits for that could not be written yet: they go before anything else.
#[derive(Default)]
struct Held {
    entries: Vec<Entry>,
    /// Failed attempts to write them alone.
    failures: u32,
}

impl Held {
    fn clear(&mut self) {
        self.entries.clear();
        self.failures = 0;
    }
}

/// One audit entry: its kind and its (scrubbed) payload.
type Entry = (String, serde_json::Value);

/// Entries waiting for the writer, and who waits for them.
struct Job {
    entries: Vec<Entry>,
    /// `None` for entries appended with [`AuditSink::append_after`]: nobody waits.
    done: Option<oneshot::Sender<Result<u64, VaultError>>>,
}

/// The kernel's log: the audit chain of the kernel's vault.
///
/// Writes are *group-committed*: one writer thread takes every batch that is waiting and
/// commits them together (one fsync, one checkpoint), so concurrent turns share the
/// cost of durability. Each caller of [`AuditLog::record`] waits until its entries are durable;
/// entries appended with [`AuditSink::append_after`] are committed in order with the next
/// group, waiting up to [`LINGER`] for one, and entries that could not be written are kept and
/// written before anything later (whose callers get the error while they cannot be).
#[derive(Clone)]
pub struct AuditLog {
    vault: Arc<Vault>,
    broker: Arc<Broker>,
    writer: Option<std::sync::mpsc::Sender<Job>>,
}

impl AuditLog {
    pub(crate) fn new(vault: Arc<Vault>, broker: Arc<Broker>) -> Self {
        let writer = spawn_writer(Arc::clone(&vault) as Arc<dyn LogStore>, LINGER);
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

    /// Waits until every entry appended before is durable (or could not be written: then the
    /// error).
    pub async fn flush(&self) -> Result<(), KernelError> {
        self.commit(Vec::new()).await.map(|_| ())
    }

    /// Queues entries behind every earlier one; nobody waits for them (see
    /// [`AuditSink::append_after`]).
    fn commit_later(&self, entries: Vec<Entry>) -> BoxFuture<'_, Result<(), KernelError>> {
        if let Some(writer) = &self.writer {
            let sent = writer.send(Job {
                entries,
                done: None,
            });
            return Box::pin(async move { sent.map_err(|_| KernelError::AuditWriterGone) });
        }
        Box::pin(async move { self.commit(entries).await.map(|_| ()) })
    }

    async fn commit(&self, entries: Vec<Entry>) -> Result<u64, KernelError> {
        if let Some(writer) = &self.writer {
            let (done, answer) = oneshot::channel();
            let job = Job {
                entries,
                done: Some(done),
            };
            if writer.send(job).is_ok() {
                return match answer.await {
                    Ok(result) => result.map_err(KernelError::from),
                    Err(_) => Err(KernelError::AuditWriterGone),
                };
            }
            return Err(KernelError::AuditWriterGone);
        }
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || {
            vault.log_events(
                entries
                    .iter()
                    .map(|(kind, payload)| (kind.as_str(), payload)),
            )
        })
        .await
        .map_err(KernelError::task("the audit write"))?
        .map_err(KernelError::from)
    }

    /// Durable entries in the log (entries appended with [`AuditSink::append_after`] count
    /// once they are).
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
        self.flush().await?;
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
        self.flush().await?;
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
        self.flush().await?;
        let vault = Arc::clone(&self.vault);
        let proof = tokio::task::spawn_blocking(move || vault.log_inclusion_proof(seq))
            .await
            .map_err(KernelError::task("proving an audit entry"))??;
        serde_json::to_value(&proof).map_err(|source| KernelError::Encode {
            what: "the proof",
            source,
        })
    }

    fn entry(&self, event: &AuditEvent) -> Entry {
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

    fn append_after(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<(), KernelError>> {
        self.commit_later(events.iter().map(|e| self.entry(e)).collect())
    }
}

/// What the writer commits to: the kernel vault's log (a fake in tests, to make writes fail).
trait LogStore: Send + Sync {
    /// Appends entries in one durable commit; returns the first's sequence number.
    fn commit(&self, entries: &[&Entry]) -> Result<u64, VaultError>;
}

impl LogStore for Vault {
    fn commit(&self, entries: &[&Entry]) -> Result<u64, VaultError> {
        self.log_events(
            entries
                .iter()
                .map(|(kind, payload)| (kind.as_str(), payload)),
        )
    }
}

/// How long entries nobody waits for (a tool's result) may wait to share a commit with the
/// next entries somebody waits for. A turn's next step then pays for one commit, not two: its
/// result rides with the next decision. Reading the log, a later step, or the kernel's stop
/// commits them at once; a crash inside this window can lose only results of tools that ran,
/// never a decision (the road's guarantee).
const LINGER: Duration = Duration::from_millis(20);

/// Starts the group-commit writer; `None` (each write then commits alone) if no thread can
/// be started.
fn spawn_writer(
    store: Arc<dyn LogStore>,
    linger: Duration,
) -> Option<std::sync::mpsc::Sender<Job>> {
    let (sender, jobs) = std::sync::mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("p3ak-audit".to_owned())
        .spawn(move || {
            let mut held = Held::default();
            // Jobs nobody waits for, until a job somebody waits for joins them or `linger`
            // has passed since the first of them arrived.
            let mut lingering: Vec<Job> = Vec::new();
            let mut deadline = Instant::now();
            loop {
                let next = if lingering.is_empty() {
                    jobs.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    jobs.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                };
                let first = match next {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        commit_group(store.as_ref(), &mut held, std::mem::take(&mut lingering));
                        continue;
                    }
                    // Every `AuditLog` is gone.
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                if lingering.is_empty() {
                    deadline = Instant::now() + linger;
                }
                let mut group = std::mem::take(&mut lingering);
                group.push(first);
                let mut size: usize = group.iter().map(|job| job.entries.len()).sum();
                while size < MAX_GROUP {
                    let Ok(job) = jobs.try_recv() else { break };
                    size += job.entries.len();
                    group.push(job);
                }
                if size < MAX_GROUP && group.iter().all(|job| job.done.is_none()) {
                    lingering = group;
                    continue;
                }
                commit_group(store.as_ref(), &mut held, group);
            }
            if !lingering.is_empty() {
                commit_group(store.as_ref(), &mut held, lingering);
            }
            if !held.entries.is_empty() {
                tracing::error!(
                    "audit: {} entries appended after their step were never written",
                    held.entries.len()
                );
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

/// Commits `held` (entries nobody waited for, not written yet) and a group at once. If that
/// fails, `held` alone and then each job alone, so that one job's failure is not another's;
/// while `held` cannot be written, nothing after it is.
fn commit_group(store: &dyn LogStore, held: &mut Held, group: Vec<Job>) {
    let all: Vec<&Entry> = held
        .entries
        .iter()
        .chain(group.iter().flat_map(|job| job.entries.iter()))
        .collect();
    let first = match store.commit(&all) {
        Ok(first) => first,
        Err(e) if group.len() == 1 && held.entries.is_empty() => {
            if let Some(job) = group.into_iter().next() {
                fail(held, job, e);
            }
            return;
        }
        Err(_) => {
            for job in group {
                commit_alone(store, held, job);
            }
            return;
        }
    };
    let mut seq = first + held.entries.len() as u64;
    held.clear();
    for job in group {
        let count = job.entries.len() as u64;
        // A caller that stopped waiting (its turn was cancelled) needs no answer.
        if let Some(done) = job.done {
            let _ = done.send(Ok(seq));
        }
        seq += count;
    }
}

/// Commits `held`, then one job. Held entries that have failed [`HELD_ATTEMPTS`] times alone
/// give way to one entry that says what was lost, so that one unwritable entry cannot stop
/// the log for good; if even that cannot be written, the job fails.
fn commit_alone(store: &dyn LogStore, held: &mut Held, job: Job) {
    if !held.entries.is_empty() {
        match store.commit(&held.entries.iter().collect::<Vec<_>>()) {
            Ok(_) => held.clear(),
            Err(e) => {
                held.failures += 1;
                if held.failures < HELD_ATTEMPTS {
                    fail(held, job, e);
                    return;
                }
                tracing::error!(
                    "audit: {} entries could not be written, recorded as lost: {e}",
                    held.entries.len()
                );
                let lost = lost_entries(&held.entries, &e);
                if let Err(e) = store.commit(&[&lost]) {
                    held.entries = vec![lost];
                    fail(held, job, e);
                    return;
                }
                held.clear();
            }
        }
    }
    match store.commit(&job.entries.iter().collect::<Vec<_>>()) {
        Ok(seq) => {
            if let Some(done) = job.done {
                let _ = done.send(Ok(seq));
            }
        }
        Err(e) => fail(held, job, e),
    }
}

/// The entry that stands for entries that could not be written: their kinds and the error.
fn lost_entries(held: &[Entry], error: &VaultError) -> Entry {
    let event = AuditEvent::AuditUnwritten {
        kinds: held.iter().map(|(kind, _)| kind.clone()).collect(),
        error: error.to_string(),
    };
    (event.kind().into_owned(), event.payload())
}

/// A job whose entries could not be written: its caller gets the error; entries nobody waits
/// for are kept, to be written before anything else.
fn fail(held: &mut Held, job: Job, error: VaultError) {
    match job.done {
        Some(done) => {
            let _ = done.send(Err(error));
        }
        None => {
            tracing::error!(
                "audit: {} entries not written yet, kept for the next commit: {error}",
                job.entries.len()
            );
            held.entries.extend(job.entries);
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

    /// A log store that fails while told to, or refuses entries of one kind.
    #[derive(Default)]
    struct FlakyStore {
        down: std::sync::atomic::AtomicBool,
        refused: std::sync::Mutex<Option<&'static str>>,
        log: std::sync::Mutex<Vec<Entry>>,
        /// Successful commits.
        commits: std::sync::atomic::AtomicUsize,
    }

    impl LogStore for FlakyStore {
        fn commit(&self, entries: &[&Entry]) -> Result<u64, VaultError> {
            let refused = *self.refused.lock().unwrap();
            if self.down.load(std::sync::atomic::Ordering::SeqCst)
                || entries
                    .iter()
                    .any(|(kind, _)| Some(kind.as_str()) == refused)
            {
                return Err(VaultError::Damaged("the disk said no".into()));
            }
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut log = self.log.lock().unwrap();
            let first = log.len() as u64;
            log.extend(entries.iter().map(|&entry| entry.clone()));
            Ok(first)
        }
    }

    impl FlakyStore {
        fn kinds(&self) -> Vec<String> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .map(|(k, _)| k.clone())
                .collect()
        }
    }

    fn entry(kind: &str) -> Entry {
        (kind.to_owned(), serde_json::json!({}))
    }

    async fn required(
        writer: &std::sync::mpsc::Sender<Job>,
        kind: &str,
    ) -> Result<u64, VaultError> {
        let (done, answer) = oneshot::channel();
        writer
            .send(Job {
                entries: vec![entry(kind)],
                done: Some(done),
            })
            .unwrap();
        answer.await.unwrap()
    }

    fn later(writer: &std::sync::mpsc::Sender<Job>, kind: &str) {
        writer
            .send(Job {
                entries: vec![entry(kind)],
                done: None,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn invariant_i5_an_entry_appended_after_its_step_is_durable_before_any_later_one_returns()
    {
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
        let event = |plugin: &str| AuditEvent::PluginRestart {
            plugin: plugin.to_owned(),
        };
        log.append_after(vec![event("after")]).await.unwrap();
        let seq = log.record(event("next")).await.unwrap();
        assert_eq!(
            seq,
            before + 1,
            "the later entry comes after the deferred one"
        );
        let entries = vault.log_entries(before, vault.log_len()).unwrap();
        let plugins: Vec<_> = entries
            .iter()
            .map(|e| e.payload["plugin"].clone())
            .collect();
        assert_eq!(plugins, ["after", "next"]);
        // Reading the log through the kernel sees a deferred entry at once.
        log.append_after(vec![event("read")]).await.unwrap();
        let read = log.entries(0, u64::MAX).await.unwrap();
        assert_eq!(read.last().unwrap().payload["plugin"], "read");
    }

    #[tokio::test]
    async fn invariant_i5_a_result_shares_the_next_steps_commit_and_comes_first() {
        let store = Arc::new(FlakyStore::default());
        // A linger no test machine outlasts: the result can only be written with the step.
        let writer = spawn_writer(
            Arc::clone(&store) as Arc<dyn LogStore>,
            Duration::from_secs(600),
        )
        .unwrap();
        later(&writer, "result");
        later(&writer, "result");
        assert_eq!(required(&writer, "proposal").await.unwrap(), 2);
        assert_eq!(store.kinds(), ["result", "result", "proposal"]);
        assert_eq!(store.commits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invariant_i5_a_result_no_step_follows_is_written_after_the_linger_or_at_stop() {
        let store = Arc::new(FlakyStore::default());
        let writer = spawn_writer(
            Arc::clone(&store) as Arc<dyn LogStore>,
            Duration::from_millis(10),
        )
        .unwrap();
        later(&writer, "result");
        let start = std::time::Instant::now();
        while store.kinds().is_empty() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.kinds(), ["result"]);

        let store = Arc::new(FlakyStore::default());
        let writer = spawn_writer(
            Arc::clone(&store) as Arc<dyn LogStore>,
            Duration::from_secs(600),
        )
        .unwrap();
        later(&writer, "result");
        // The last `AuditLog` goes (the kernel stops): the writer commits what it holds.
        drop(writer);
        let start = std::time::Instant::now();
        while store.kinds().is_empty() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.kinds(), ["result"]);
    }

    #[tokio::test]
    async fn invariant_i5_a_result_that_cannot_be_written_stops_every_later_step_until_it_is() {
        let store = Arc::new(FlakyStore::default());
        let writer = spawn_writer(Arc::clone(&store) as Arc<dyn LogStore>, LINGER).unwrap();
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        later(&writer, "result");
        assert!(required(&writer, "proposal").await.is_err());
        store.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(required(&writer, "proposal").await.unwrap(), 1);
        assert_eq!(store.kinds(), ["result", "proposal"]);
    }

    #[tokio::test]
    async fn invariant_i5_an_entry_that_can_never_be_written_is_recorded_as_unwritten() {
        let store = Arc::new(FlakyStore::default());
        *store.refused.lock().unwrap() = Some("result");
        let writer = spawn_writer(Arc::clone(&store) as Arc<dyn LogStore>, LINGER).unwrap();
        later(&writer, "result");
        // While it is retried, the steps after it fail (the road fails closed)...
        for _ in 1..HELD_ATTEMPTS {
            assert!(required(&writer, "proposal").await.is_err());
        }
        // ...then a note of what was lost takes its place and the log goes on.
        assert_eq!(required(&writer, "proposal").await.unwrap(), 1);
        assert_eq!(store.kinds(), ["audit.unwritten", "proposal"]);
        let note = store.log.lock().unwrap()[0].1.clone();
        assert_eq!(note["kinds"], serde_json::json!(["result"]));
        assert!(note["error"].as_str().unwrap().contains("the disk said no"));
    }
}

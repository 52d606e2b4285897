//! [`embed_pending`]: the embedding run that follows an ingest (`p3ak vault embed`), in batches
//! so that the vault's writer lock is held only while a batch commits.

use std::path::Path;
use std::time::Duration;

use p3ak_vault::{Access, Unlock, Vault};

use crate::{EmbedderLock, EmbeddingBatch, IndexPlan, Memory, MemoryError, Result, TextEmbedder};

/// How an embedding run reaches its vault.
#[derive(Clone, Copy)]
pub struct EmbedTarget<'a> {
    pub path: &'a Path,
    pub unlock: Unlock<'a>,
    /// Who the vault's log names for the commits.
    pub actor: &'a str,
    /// How long a commit waits for another writer (an ingest) to let go of the vault.
    pub lock_wait: Duration,
}

impl EmbedTarget<'_> {
    fn open(&self, access: Access) -> Result<Vault> {
        let mut vault = Vault::open_waiting(self.path, self.unlock, access, self.lock_wait)?;
        vault.set_actor(self.actor);
        Ok(vault)
    }
}

/// How many commits' worth of pending chunks one opening of the index reads: opening it
/// loads the whole index (seconds at a million chunks), so it is not done for every commit.
const BATCHES_PER_READ: usize = 16;

/// Embeds every pending chunk of the vault, committing every `batch_chunks` chunks; the vault
/// is opened for writing only to commit, so ingests and searches go on meanwhile. The caller
/// holds the embedding lock throughout. `progress` gets (chunks stored, chunks in all) before
/// each batch. When every chunk is embedded, brings the approximate index of a large table up
/// to date (built with the vault open for reading, committed with it open for writing).
/// Returns the chunks stored.
///
/// # Errors
///
/// The vault does not open or commit, the index does not load, or the embedder fails
/// ([`MemoryError::Embedding`]).
pub fn embed_pending(
    target: EmbedTarget<'_>,
    _lock: &EmbedderLock,
    embedder: &dyn TextEmbedder,
    batch_chunks: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<usize> {
    let batch_chunks = batch_chunks.max(1);
    let mut stored = 0;
    loop {
        let vault = target.open(Access::Read)?;
        let memory = Memory::open(&vault)?;
        let mut pending_chunks = memory.status().pending_chunks;
        let pending = memory.pending_embeddings(batch_chunks.saturating_mul(BATCHES_PER_READ))?;
        if pending.is_empty() {
            progress(stored as u64, stored as u64);
            let plan = memory.plan_approximate_index()?;
            drop(memory);
            drop(vault);
            if !matches!(plan, IndexPlan::Keep) {
                crate::save_approximate_index(&target.open(Access::Write)?, plan)?;
            }
            return Ok(stored);
        }
        drop(memory);
        drop(vault);
        // Commits of about `batch_chunks` chunks each, whole documents.
        let mut documents = pending.into_iter().peekable();
        while documents.peek().is_some() {
            progress(stored as u64, (stored + pending_chunks) as u64);
            let mut batch = EmbeddingBatch::default();
            let mut chunks = 0;
            while chunks < batch_chunks
                && let Some(doc) = documents.next()
            {
                let texts: Vec<&str> = doc.texts.iter().map(String::as_str).collect();
                let vectors = embedder.embed(&texts).map_err(MemoryError::Embedding)?;
                batch.push(doc.id, embedder.model(), &vectors);
                chunks += texts.len();
            }
            // Documents deleted meanwhile are skipped; the rest is stored.
            stored += crate::store_embeddings(&target.open(Access::Write)?, &batch)?;
            pending_chunks = pending_chunks.saturating_sub(chunks);
        }
    }
}

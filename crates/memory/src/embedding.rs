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
    let mut stored = 0;
    loop {
        let vault = target.open(Access::Read)?;
        let memory = Memory::open(&vault)?;
        let status = memory.status();
        progress(stored as u64, (stored + status.pending_chunks) as u64);
        let pending = memory.pending_embeddings(batch_chunks)?;
        if pending.is_empty() {
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
        let mut batch = EmbeddingBatch::default();
        for doc in &pending {
            let texts: Vec<&str> = doc.texts.iter().map(String::as_str).collect();
            let vectors = embedder.embed(&texts).map_err(MemoryError::Embedding)?;
            batch.push(doc.id, embedder.model(), &vectors);
        }
        let vault = target.open(Access::Write)?;
        let done = crate::store_embeddings(&vault, &batch)?;
        if done == 0 && batch.chunks() > 0 {
            // Every document of the batch was deleted meanwhile; go on with the rest.
            continue;
        }
        stored += done;
    }
}

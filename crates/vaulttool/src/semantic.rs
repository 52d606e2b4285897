//! The embedding model inside the vault plugin: query vectors for `semantic` and `hybrid`
//! searches, and vectors for what the plugin's own writes add.
//!
//! The model is the one `p3ak models install` put in the home's `models/` (the kernel passes
//! that directory as `models` and lets the plugin read it). It is loaded at the first call
//! that needs it, not at start: a vault that is only ever listed and read never pays its
//! memory. Without an installed model, searches rank by words and headings and say so.
//!
//! After a write or an ingest, one background thread embeds the chunks still without a
//! vector (`p3ak_memory::embed_pending`, the run `p3ak memory embed` does), under the vault's
//! embedding lock: when the operator's own run holds it, that run embeds them instead.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use p3ak_memory::{EmbedTarget, MiniLm, TextEmbedder as _};
use p3ak_vault::{Unlock, VaultKey};

/// Chunks embedded per commit of the background run.
const BATCH_CHUNKS: usize = 64;
/// How long a background commit waits for another writer.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The model, once loaded, and the background embedding run.
pub struct Semantic {
    models: Option<PathBuf>,
    model: OnceLock<Option<Arc<MiniLm>>>,
    /// Wakes the background run; created with it, at the first write.
    wake: Mutex<Option<mpsc::SyncSender<()>>>,
}

impl Semantic {
    /// The model of `models` (the home's `models/`), if one is installed there.
    #[must_use]
    pub fn new(models: Option<PathBuf>) -> Self {
        Self {
            models,
            model: OnceLock::new(),
            wake: Mutex::new(None),
        }
    }

    /// The model, loaded at the first call; `None` when none is installed or it does not
    /// load (then every search says semantic ranking is off).
    pub fn model(&self) -> Option<Arc<MiniLm>> {
        self.model
            .get_or_init(|| {
                let models = self.models.as_deref()?;
                let installed = p3ak_embed::installed(models).ok()??;
                let embedder = p3ak_embed::Embedder::load(&installed.dir).ok()?;
                Some(Arc::new(MiniLm::new(embedder)))
            })
            .clone()
    }

    /// The query's vector, or why there is none.
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>, String> {
        let model = self.model().ok_or_else(|| {
            "semantic ranking is off: no embedding model is installed (`p3ak models install`), \
             so this search was ranked by words and headings"
                .to_owned()
        })?;
        model
            .embed(&[query])
            .map_err(|e| format!("semantic ranking is off: the query could not be embedded: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| "semantic ranking is off: the model returned no vector".to_owned())
    }

    /// Asks the background run to embed what is pending in the vault at `path` (started at
    /// the first call, when a model is installed).
    pub fn embed_pending_later(&self, path: &Path, key: &Arc<VaultKey>) {
        if self.models.is_none() {
            return;
        }
        let mut wake = self
            .wake
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if wake.is_none() {
            let Some(model) = self.model() else { return };
            // One pending wake is enough: the run embeds everything pending when it wakes.
            let (sender, receiver) = mpsc::sync_channel(1);
            let path = path.to_owned();
            let key = Arc::clone(key);
            let started = std::thread::Builder::new()
                .name("p3ak-vault-embed".to_owned())
                .spawn(move || {
                    while receiver.recv().is_ok() {
                        embed_all(&path, &key, &model);
                    }
                });
            if started.is_err() {
                return;
            }
            *wake = Some(sender);
        }
        if let Some(sender) = wake.as_ref() {
            let _ = sender.try_send(());
        }
    }
}

/// Embeds every pending chunk, unless another process holds the embedding lock (it is
/// embedding them). A failure is left for the next write or the operator's run: the chunks
/// stay pending and searchable by words.
fn embed_all(path: &Path, key: &VaultKey, model: &MiniLm) {
    let Ok(Some(lock)) = p3ak_memory::lock_embedder(path) else {
        return;
    };
    let target = EmbedTarget {
        path,
        unlock: Unlock::Key(key),
        actor: "p3ak-plugins vault (embeddings)",
        lock_wait: LOCK_WAIT,
    };
    let _ = p3ak_memory::embed_pending(target, &lock, model, BATCH_CHUNKS, &mut |_, _| {});
}

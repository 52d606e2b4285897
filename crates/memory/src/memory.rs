//! [`Memory`]: a vault's search index and embeddings, loaded for searching and updating.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use p3ak_vault::{DocId, DocInfo, Transaction, Vault};
use serde::Serialize;
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::approximate::{
    APPROXIMATE_KEEP_ROWS, APPROXIMATE_MIN_ROWS, Approximate, IndexPlan, OBJECT,
};
use crate::directory::MemoryDirectory;
use crate::schema::{self, Fields, SCHEMA_VERSION};
use crate::vectors::{DocVectors, VectorTable, quantize};
use crate::{MemoryError, Result, SPACE_APPROXIMATE, SPACE_INDEX, SPACE_VECTORS};

/// Object in [`SPACE_INDEX`] describing the index (not one of tantivy's files).
const INDEX_INFO: &str = "p3ak-index.json";

/// Computes sentence embeddings; implemented over the real model by the binary, and by small
/// deterministic fakes in tests and benchmarks.
pub trait TextEmbedder: Send + Sync {
    /// The model's name, stored with every vector so vectors of two models never mix.
    fn model(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, String>;
}

#[derive(Serialize, serde::Deserialize)]
struct IndexInfo {
    schema_version: u32,
}

/// What a vault's memory holds and what is still to do.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub documents: usize,
    /// Documents with their chunks in the search index.
    pub indexed_documents: usize,
    /// Documents stored without being indexed (`vault put`, `vault import`); the next ingest
    /// or `reindex` indexes them.
    pub unindexed_documents: usize,
    pub chunks: usize,
    /// Chunks with an embedding, and chunks waiting for one.
    pub embedded_chunks: usize,
    pub pending_chunks: usize,
    /// The model of the stored embeddings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub index_bytes: u64,
    pub vector_bytes: u64,
    /// Size of the stored approximate index (0: none; semantic search scans every chunk).
    pub approximate_bytes: u64,
    /// Pid of the background embedding process, when one is running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder_pid: Option<u32>,
}

/// A document whose chunks need embeddings.
#[derive(Debug, Clone)]
pub struct PendingDocument {
    pub id: DocId,
    /// The text to embed for each chunk, in chunk order.
    pub texts: Vec<String>,
}

/// Embeddings computed for some documents, to be stored by [`store_embeddings`].
#[derive(Default)]
pub struct EmbeddingBatch {
    pub(crate) docs: Vec<(DocId, DocVectors)>,
}

impl EmbeddingBatch {
    /// Adds the vectors of one document (one per chunk, in order).
    pub fn push(&mut self, id: DocId, model: &str, vectors: &[Vec<f32>]) {
        let dims = vectors.first().map_or(0, Vec::len);
        let rows = vectors.iter().map(|v| quantize(v)).collect();
        self.docs.push((
            id,
            DocVectors {
                model: model.to_owned(),
                dims,
                rows,
            },
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn chunks(&self) -> usize {
        self.docs.iter().map(|(_, v)| v.rows.len()).sum()
    }
}

/// A vault's memory: its index (searchable, and writable when the vault is), its embeddings,
/// and what it knows about the vault's documents.
pub struct Memory<'v> {
    pub(crate) vault: &'v Vault,
    pub(crate) index: Index,
    pub(crate) dir: MemoryDirectory,
    pub(crate) fields: Fields,
    pub(crate) reader: IndexReader,
    /// Names of tantivy files stored as vault objects.
    pub(crate) persisted: HashSet<String>,
    /// The vault's documents, by key.
    pub(crate) docs: HashMap<u128, DocInfo>,
    /// Every indexed chunk: `(document, ordinal)` → its address in the index.
    pub(crate) chunks: HashMap<(u128, u32), DocAddress>,
    /// Chunks per indexed document.
    pub(crate) indexed: HashMap<u128, u32>,
    pub(crate) vectors: VectorTable,
    pub(crate) vectors_model: Option<String>,
    /// Documents with stored vectors (whether or not they match the index).
    pub(crate) embedded: HashMap<u128, u32>,
    /// The approximate index of a large table, loaded at the first semantic search; `None` when
    /// the table is small or none is stored (the table is then scanned exactly).
    pub(crate) approximate: OnceLock<Option<Approximate>>,
    /// Set by [`Memory::scan_exactly`]: the approximate index is not used.
    pub(crate) exact: bool,
}

/// A document id as a number, the key used throughout the index.
pub(crate) fn key(id: &DocId) -> u128 {
    u128::from_str_radix(&id.to_hex(), 16).unwrap_or_default()
}

pub(crate) fn id_of(key: u128) -> Option<DocId> {
    format!("{key:032x}").parse().ok()
}

impl<'v> Memory<'v> {
    /// Loads the memory of an open vault: decrypts the index and the embeddings into memory.
    pub fn open(vault: &'v Vault) -> Result<Self> {
        Self::load(vault, false)
    }

    /// Opens with an empty index, ignoring the stored one (which the next commit replaces):
    /// the way out of a damaged index, for [`Memory::reindex`].
    pub fn open_for_rebuild(vault: &'v Vault) -> Result<Self> {
        Self::load(vault, true)
    }

    fn load(vault: &'v Vault, discard_index: bool) -> Result<Self> {
        let docs: HashMap<u128, DocInfo> = vault
            .list()
            .into_iter()
            .filter(|d| d.damaged.is_none())
            .map(|d| (key(&d.id), d))
            .collect();
        let (index, dir, persisted, outdated) = load_index(vault, discard_index)?;
        let fields = fields_of(&index)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut memory = Self {
            vault,
            index,
            dir,
            fields,
            reader,
            persisted,
            docs,
            chunks: HashMap::new(),
            indexed: HashMap::new(),
            vectors: VectorTable::default(),
            vectors_model: None,
            embedded: HashMap::new(),
            approximate: OnceLock::new(),
            exact: false,
        };
        memory.map_chunks()?;
        if outdated {
            memory.rebuild_in_memory()?;
        }
        memory.load_vectors()?;
        Ok(memory)
    }

    pub fn vault(&self) -> &'v Vault {
        self.vault
    }

    /// Reads the chunk addresses from the index's fast fields.
    pub(crate) fn map_chunks(&mut self) -> Result<()> {
        self.chunks.clear();
        self.indexed.clear();
        let searcher = self.reader.searcher();
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let fast = segment.fast_fields();
            let hi = fast.u64("doc_hi")?;
            let lo = fast.u64("doc_lo")?;
            let ord = fast.u64("ord")?;
            let alive = segment.alive_bitset();
            for doc in 0..segment.max_doc() {
                if alive.is_some_and(|a| !a.is_alive(doc)) {
                    continue;
                }
                let (Some(hi), Some(lo), Some(ord)) =
                    (hi.first(doc), lo.first(doc), ord.first(doc))
                else {
                    continue;
                };
                let key = (u128::from(hi) << 64) | u128::from(lo);
                let ord = u32::try_from(ord).unwrap_or(u32::MAX);
                let segment_ord = u32::try_from(segment_ord).unwrap_or(u32::MAX);
                self.chunks
                    .insert((key, ord), DocAddress::new(segment_ord, doc));
                *self.indexed.entry(key).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Loads the embedding table: vectors of live, indexed documents whose chunk count matches.
    fn load_vectors(&mut self) -> Result<()> {
        self.embedded.clear();
        let mut table: Option<VectorTable> = None;
        for object in self.vault.objects(SPACE_VECTORS) {
            let Ok(id) = object.name.parse::<DocId>() else {
                continue;
            };
            let key = key(&id);
            let Some(bytes) = self.vault.read_object(SPACE_VECTORS, &object.name)? else {
                continue;
            };
            let vectors = DocVectors::decode(bytes.expose())?;
            let crc = crc32fast::hash(bytes.expose());
            self.embedded
                .insert(key, u32::try_from(vectors.rows.len()).unwrap_or(u32::MAX));
            let usable = self.docs.contains_key(&key)
                && self.indexed.get(&key).copied() == u32::try_from(vectors.rows.len()).ok()
                && self
                    .vectors_model
                    .as_ref()
                    .is_none_or(|m| *m == vectors.model);
            if !usable {
                continue;
            }
            let table = table.get_or_insert_with(|| VectorTable::with_dims(vectors.dims));
            if table.push(key, &vectors, crc) {
                self.vectors_model.get_or_insert(vectors.model);
            }
        }
        self.vectors = table.unwrap_or_default();
        Ok(())
    }

    pub fn status(&self) -> Status {
        let live_indexed: Vec<(&u128, &u32)> = self
            .indexed
            .iter()
            .filter(|(k, _)| self.docs.contains_key(k))
            .collect();
        let chunks: usize = live_indexed.iter().map(|(_, n)| **n as usize).sum();
        let embedded = self.vectors.len();
        Status {
            documents: self.docs.len(),
            indexed_documents: live_indexed.len(),
            unindexed_documents: self.docs.len().saturating_sub(live_indexed.len()),
            chunks,
            embedded_chunks: embedded,
            pending_chunks: chunks.saturating_sub(embedded),
            model: self.vectors_model.clone(),
            index_bytes: self.vault.objects(SPACE_INDEX).iter().map(|o| o.size).sum(),
            vector_bytes: self
                .vault
                .objects(SPACE_VECTORS)
                .iter()
                .map(|o| o.size)
                .sum(),
            approximate_bytes: self
                .vault
                .objects(SPACE_APPROXIMATE)
                .iter()
                .map(|o| o.size)
                .sum(),
            embedder_pid: embedder_pid(self.vault.path()),
        }
    }

    /// The approximate index searches use; `None` below [`APPROXIMATE_MIN_ROWS`] (less a tenth
    /// once one is stored), when none is
    /// stored, when it cannot be used (another model, too far behind, damaged: the next
    /// embedding run rebuilds it) or when it measured too low a recall. Searches then scan
    /// exactly.
    fn approximate(&self) -> Option<&Approximate> {
        self.stored_approximate().filter(|a| a.usable())
    }

    /// The stored approximate index, fitted to the table, whether or not it is usable.
    fn stored_approximate(&self) -> Option<&Approximate> {
        self.approximate
            .get_or_init(|| {
                if self.vectors.len() < APPROXIMATE_KEEP_ROWS {
                    return None;
                }
                let model = self.vectors_model.as_deref()?;
                let bytes = self
                    .vault
                    .read_object(SPACE_APPROXIMATE, OBJECT)
                    .ok()
                    .flatten()?;
                Approximate::load(bytes.expose(), &self.vectors, model)
                    .ok()
                    .flatten()
            })
            .as_ref()
    }

    /// The `k` rows nearest a query vector, best first, among live documents that `keep`
    /// accepts: through the approximate index when there is one and no filter, else by the
    /// exact scan. Scores are the exact scan's either way.
    pub(crate) fn nearest_rows(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u128) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        if keep.is_none()
            && !self.exact
            && query.len() == self.vectors.dims
            && let Some(approximate) = self.approximate()
        {
            let (q_scale, q) = quantize(query);
            if let Some(hits) = approximate.nearest(&self.vectors, &q, q_scale, k) {
                return hits;
            }
        }
        self.vectors.nearest(query, k, keep)
    }

    /// With `true`, semantic searches scan every row even when an approximate index is there
    /// (to compare, or when recall must be exact).
    pub fn scan_exactly(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Recall@10 against the exact scan that the stored approximate index measured when it was
    /// written (searches use it only from 0.95); `None` when there is none to use.
    pub fn approximate_index_recall(&self) -> Option<f64> {
        self.stored_approximate().map(Approximate::measured_recall)
    }

    /// Whether semantic searches go through an approximate index (loading it if need be).
    pub fn uses_approximate_index(&self) -> bool {
        self.approximate().is_some()
    }

    /// Recall@`k` of the stored approximate index (used or not) against the exact scan over some
    /// query vectors: the share of the exact top `k` it also returns. `None` without one.
    pub fn approximate_recall(&self, queries: &[Vec<f32>], k: usize) -> Option<f64> {
        let approximate = self.stored_approximate()?;
        let (mut found, mut wanted) = (0usize, 0usize);
        for query in queries {
            let exact = self.vectors.nearest(query, k, None);
            let (q_scale, q) = quantize(query);
            let approx = approximate.nearest(&self.vectors, &q, q_scale, k)?;
            wanted += exact.len();
            found += exact
                .iter()
                .filter(|(row, _)| approx.iter().any(|(r, _)| r == row))
                .count();
        }
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        Some(if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        })
    }

    /// What the stored approximate index needs: nothing, removal (the table shrank a tenth
    /// below [`APPROXIMATE_MIN_ROWS`]), or to be written (none yet, many rows added since, or a
    /// tenth of its rows gone, then rebuilt). Building takes a while (about 8,000 rows a second
    /// on two cores), so [`crate::embed_pending`] plans with the vault open for reading and
    /// only commits with it open for writing.
    ///
    /// # Errors
    ///
    /// The graph cannot be built or serialised.
    pub fn plan_approximate_index(&self) -> Result<IndexPlan> {
        let stored = self
            .vault
            .objects(SPACE_APPROXIMATE)
            .iter()
            .any(|o| o.name == OBJECT);
        let Some(model) = self.vectors_model.as_deref() else {
            return Ok(if stored {
                IndexPlan::Remove
            } else {
                IndexPlan::Keep
            });
        };
        if self.vectors.len() < APPROXIMATE_KEEP_ROWS {
            return Ok(if stored {
                IndexPlan::Remove
            } else {
                IndexPlan::Keep
            });
        }
        if self.vectors.len() < APPROXIMATE_MIN_ROWS && !stored {
            return Ok(IndexPlan::Keep);
        }
        Approximate::plan(self.stored_approximate(), &self.vectors, model)
    }

    /// Documents whose chunks have no usable embeddings yet, oldest first, until `max_chunks`
    /// chunks are collected (at least one document, however large).
    pub fn pending_embeddings(&self, max_chunks: usize) -> Result<Vec<PendingDocument>> {
        let mut order: Vec<&DocInfo> = self
            .docs
            .iter()
            .filter(|(k, _)| {
                self.indexed.contains_key(k) && self.embedded.get(k) != self.indexed.get(k)
            })
            .map(|(_, d)| d)
            .collect();
        order.sort_by_key(|d| (d.created, d.id));
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        let mut total = 0usize;
        for info in order {
            if total >= max_chunks && !out.is_empty() {
                break;
            }
            let key = key(&info.id);
            let count = self.indexed.get(&key).copied().unwrap_or(0);
            let mut texts = Vec::with_capacity(count as usize);
            for ord in 0..count {
                let Some(address) = self.chunks.get(&(key, ord)) else {
                    return Err(MemoryError::Corrupt(format!(
                        "chunk {ord} of document `{}` is missing",
                        info.id
                    )));
                };
                let doc: TantivyDocument = searcher.doc(*address)?;
                texts.push(crate::search::embedding_text(&doc, &self.fields));
            }
            total += texts.len();
            out.push(PendingDocument { id: info.id, texts });
        }
        Ok(out)
    }

    /// Writes the index's new files into `tx` and removes files it no longer uses. Returns the
    /// set of stored files, to adopt once the transaction commits.
    pub(crate) fn persist(&self, tx: &mut Transaction<'_, '_>) -> Result<HashSet<String>> {
        let metas = self.index.load_metas()?;
        let mut wanted: Vec<PathBuf> = metas.list_segment_files().into_iter().collect();
        wanted.sort();
        let mut stored = HashSet::new();
        for path in &wanted {
            let Some(name) = path.to_str() else {
                continue;
            };
            if self.persisted.contains(name) {
                stored.insert(name.to_owned());
                continue;
            }
            let bytes = self
                .dir
                .bytes(path)
                .map_err(|e| MemoryError::Index(e.to_string()))?;
            // A component a segment does not have (no deletes yet, say) is simply absent.
            if let Some(bytes) = bytes {
                tx.put_object(SPACE_INDEX, name, &bytes)?;
                stored.insert(name.to_owned());
            }
        }
        let meta = self
            .dir
            .bytes(Path::new("meta.json"))
            .map_err(|e| MemoryError::Index(e.to_string()))?
            .ok_or_else(|| MemoryError::Index("the index has no meta.json".into()))?;
        let stored_meta = self.vault.read_object(SPACE_INDEX, "meta.json")?;
        if stored_meta.as_ref().map(|m| m.expose()) != Some(&meta[..]) {
            tx.put_object(SPACE_INDEX, "meta.json", &meta)?;
        }
        stored.insert("meta.json".to_owned());
        for name in self.persisted.difference(&stored) {
            tx.delete_object(SPACE_INDEX, name)?;
        }
        let info = serde_json::to_vec(&IndexInfo {
            schema_version: SCHEMA_VERSION,
        })
        .map_err(|e| MemoryError::Index(e.to_string()))?;
        let stored_info = self.vault.read_object(SPACE_INDEX, INDEX_INFO)?;
        if stored_info.as_ref().map(|i| i.expose()) != Some(&info[..]) {
            tx.put_object(SPACE_INDEX, INDEX_INFO, &info)?;
        }
        Ok(stored)
    }

    pub(crate) fn doc_term(&self, id: &DocId) -> Term {
        Term::from_field_text(self.fields.doc, &id.to_hex())
    }
}

fn fields_of(index: &Index) -> Result<Fields> {
    let schema = index.schema();
    let field = |name: &str| {
        schema
            .get_field(name)
            .map_err(|_| MemoryError::Corrupt(format!("index has no field `{name}`")))
    };
    Ok(Fields {
        doc: field("doc")?,
        doc_hi: field("doc_hi")?,
        doc_lo: field("doc_lo")?,
        ord: field("ord")?,
        title: field("title")?,
        heading: field("heading")?,
        body: field("body")?,
        tag: field("tag")?,
        location: field("location")?,
    })
}

/// Loads the index from the vault's objects, or makes an empty one.
/// Also says whether a stored index of another schema version was set aside (to rebuild).
fn load_index(
    vault: &Vault,
    discard: bool,
) -> Result<(Index, MemoryDirectory, HashSet<String>, bool)> {
    let objects = vault.objects(SPACE_INDEX);
    let info = if discard {
        None
    } else {
        vault.read_object(SPACE_INDEX, INDEX_INFO)?
    };
    let current = !discard
        && match &info {
            Some(bytes) => serde_json::from_slice::<IndexInfo>(bytes.expose())
                .map(|i| i.schema_version == SCHEMA_VERSION)
                .map_err(|e| MemoryError::Corrupt(format!("`{INDEX_INFO}`: {e}")))?,
            None => true,
        };
    let mut files = Vec::new();
    if current {
        for object in objects.iter().filter(|o| o.name != INDEX_INFO) {
            if let Some(bytes) = vault.read_object(SPACE_INDEX, &object.name)? {
                files.push((object.name.clone(), bytes.expose().to_vec()));
            }
        }
    }
    let persisted: HashSet<String> = if current {
        files.iter().map(|(n, _)| n.clone()).collect()
    } else {
        // An index of another schema version: start empty, rebuild in memory at open; the
        // next write replaces the stored one.
        objects
            .iter()
            .filter(|o| o.name != INDEX_INFO)
            .map(|o| o.name.clone())
            .collect()
    };
    let has_meta = files.iter().any(|(n, _)| n == "meta.json");
    let dir = MemoryDirectory::with_files(files);
    let index = if has_meta {
        Index::open(dir.clone()).map_err(|e| MemoryError::Corrupt(e.to_string()))?
    } else {
        let (schema, _) = schema::schema();
        Index::create(dir.clone(), schema, tantivy::IndexSettings::default())?
    };
    schema::register(&index);
    Ok((index, dir, persisted, !discard && !current))
}

/// Stores computed embeddings in one commit, skipping documents deleted meanwhile. Takes the
/// vault open for writing. Returns the number of chunks stored.
pub fn store_embeddings(vault: &Vault, batch: &EmbeddingBatch) -> Result<usize> {
    let live: HashSet<DocId> = vault.list().into_iter().map(|d| d.id).collect();
    let stored = vault.transact(|tx| {
        let mut chunks = 0usize;
        for (id, vectors) in batch.docs.iter().filter(|(id, _)| live.contains(id)) {
            tx.put_object(SPACE_VECTORS, &id.to_hex(), &vectors.encode())?;
            chunks += vectors.rows.len();
        }
        if chunks > 0 {
            tx.log(
                "memory.embed",
                serde_json::json!({ "documents": batch.docs.len(), "chunks": chunks }),
            )?;
        }
        Ok(chunks)
    })?;
    Ok(stored)
}

/// Carries out a plan from [`Memory::plan_approximate_index`] in one commit. Takes the vault
/// open for writing.
///
/// # Errors
///
/// The vault does not commit.
pub fn save_approximate_index(vault: &Vault, plan: IndexPlan) -> Result<()> {
    match plan {
        IndexPlan::Keep => Ok(()),
        IndexPlan::Remove => {
            vault.transact(|tx| {
                if !tx.delete_object(SPACE_APPROXIMATE, OBJECT)? {
                    return Ok(());
                }
                tx.log("memory.approximate_index", serde_json::json!({ "rows": 0 }))
            })?;
            Ok(())
        }
        IndexPlan::Write { bytes, rows } => {
            vault.transact(|tx| {
                tx.put_object(SPACE_APPROXIMATE, OBJECT, &bytes)?;
                tx.log(
                    "memory.approximate_index",
                    serde_json::json!({ "rows": rows, "bytes": bytes.len() }),
                )
            })?;
            Ok(())
        }
    }
}

/// Plans and saves the approximate index with the vault open for writing (the embedding run
/// does the two apart, see [`Memory::plan_approximate_index`]). Returns whether it changed.
///
/// # Errors
///
/// As [`Memory::open`], [`Memory::plan_approximate_index`] and [`save_approximate_index`].
pub fn update_approximate_index(vault: &Vault) -> Result<bool> {
    let plan = Memory::open(vault)?.plan_approximate_index()?;
    let changed = !matches!(plan, IndexPlan::Keep);
    save_approximate_index(vault, plan)?;
    Ok(changed)
}

/// The lock that keeps one embedding process per vault: `<vault>.embed.lock`.
pub struct EmbedderLock {
    _file: File,
}

fn embed_lock_path(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".embed.lock");
    vault.with_file_name(name)
}

/// Takes the embedding lock; `None` when another process holds it.
pub fn lock_embedder(vault: &Path) -> Result<Option<EmbedderLock>> {
    let path = embed_lock_path(vault);
    let io =
        |e: std::io::Error| MemoryError::Invalid(format!("cannot lock `{}`: {e}", path.display()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Some(EmbedderLock { _file: file }))
}

/// The pid of the process holding the embedding lock, if one does.
fn embedder_pid(vault: &Path) -> Option<u32> {
    let mut file = File::open(embed_lock_path(vault)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
    }
}

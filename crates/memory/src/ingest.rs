//! Ingest: files in, documents stored and indexed.
//!
//! Each batch of files is one vault commit holding the documents, the index files that find
//! them and the log entries that record them; a crash keeps all of a batch or none of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use p3ak_convert::{ChunkOptions, Converted, Input, Limits, Location};
use p3ak_vault::{DocId, NewDocument, PutStatus};
use serde::Serialize;
use tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use tantivy::{IndexWriter, TantivyDocument};

use crate::memory::{Memory, key};
use crate::{MemoryError, Result, SPACE_VECTORS};

/// What to ingest.
pub enum IngestItem {
    /// A file on disk (already expanded from directories and globs).
    File(PathBuf),
    /// Bytes (standard input, a collection), with the name that stands for their source and
    /// an optional title.
    Bytes {
        name: String,
        title: Option<String>,
        bytes: Vec<u8>,
    },
}

impl IngestItem {
    fn display(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Bytes { name, .. } => name.clone(),
        }
    }
}

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Tags put on every document of this ingest.
    pub tags: BTreeMap<String, String>,
    pub limits: Limits,
    pub chunking: ChunkOptions,
    /// One conversion may take this long; a file over it fails and the batch goes on.
    pub convert_timeout: Duration,
    /// A commit is made after this many bytes of input, or files.
    pub batch_bytes: u64,
    pub batch_files: usize,
    /// Index writer threads (each gets `writer_memory_per_thread` bytes of buffer).
    pub writer_threads: usize,
    pub writer_memory_per_thread: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            tags: BTreeMap::new(),
            limits: Limits::default(),
            chunking: ChunkOptions::default(),
            convert_timeout: Duration::from_secs(60),
            batch_bytes: 64 << 20,
            batch_files: 2000,
            writer_threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(2),
            writer_memory_per_thread: 64 << 20,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    /// Stored and indexed for the first time.
    Ingested,
    /// Already stored with this content: nothing written.
    Unchanged,
    /// Its content changed since the last ingest: the old version was replaced.
    Updated,
    /// Not a document this build reads (an image, a binary, a directory entry of no use).
    Skipped,
    /// Could not be read or parsed; nothing of it was stored.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub item: String,
    pub status: IngestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<DocId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    pub chunks: usize,
    pub bytes: u64,
    /// Why it failed or was skipped, or what the converter warned about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The summary of one ingest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub ingested: usize,
    pub unchanged: usize,
    pub updated: usize,
    pub skipped: usize,
    pub failed: usize,
    pub chunks: usize,
    pub bytes: u64,
    /// Documents already in the vault that were not indexed (stored by `put` or `import`)
    /// and were indexed now.
    pub caught_up: usize,
    pub files: Vec<FileOutcome>,
}

impl IngestReport {
    fn count(&mut self, outcome: FileOutcome) {
        match outcome.status {
            IngestStatus::Ingested => self.ingested += 1,
            IngestStatus::Unchanged => self.unchanged += 1,
            IngestStatus::Updated => self.updated += 1,
            IngestStatus::Skipped => self.skipped += 1,
            IngestStatus::Failed => self.failed += 1,
        }
        self.chunks += outcome.chunks;
        self.bytes += outcome.bytes;
        self.files.push(outcome);
    }
}

/// Progress of an ingest, for a progress bar.
pub enum IngestEvent<'a> {
    /// Work is known: this many items and bytes.
    Planned { items: u64, bytes: u64 },
    /// One item is done.
    Done(&'a FileOutcome),
    /// A batch is being committed.
    Committing { documents: usize },
}

/// Expands paths into files: directories recursively (hidden entries skipped), glob patterns
/// (`*`, `?`, `[…]`) matched. A path that matches nothing is reported as failed.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<FileOutcome>) {
    let mut files = Vec::new();
    let mut failed = Vec::new();
    let mut seen = HashSet::new();
    let fail = |item: &Path, reason: String| FileOutcome {
        item: item.display().to_string(),
        status: IngestStatus::Failed,
        id: None,
        format: None,
        chunks: 0,
        bytes: 0,
        reason: Some(reason),
    };
    for path in paths {
        let text = path.to_string_lossy();
        let matches: Vec<PathBuf> = if !path.exists() && text.contains(['*', '?', '[']) {
            match glob::glob(&text) {
                Ok(paths) => paths.filter_map(std::result::Result::ok).collect(),
                Err(e) => {
                    failed.push(fail(path, format!("invalid pattern: {}", e.msg)));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        if matches.is_empty() {
            failed.push(fail(path, "no file matches".into()));
        }
        for found in matches {
            match std::fs::metadata(&found) {
                Ok(meta) if meta.is_dir() => walk(&found, &mut files, &mut failed, &mut seen),
                Ok(_) => {
                    if seen.insert(canonical(&found)) {
                        files.push(found);
                    }
                }
                Err(e) => failed.push(fail(&found, io_reason(&e))),
            }
        }
    }
    (files, failed)
}

fn walk(
    root: &Path,
    files: &mut Vec<PathBuf>,
    failed: &mut Vec<FileOutcome>,
    seen: &mut HashSet<PathBuf>,
) {
    let hidden = |e: &walkdir::DirEntry| {
        e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'))
    };
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !hidden(e));
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() => {
                if seen.insert(canonical(e.path())) {
                    files.push(e.into_path());
                }
            }
            Ok(_) => {}
            Err(e) => failed.push(FileOutcome {
                item: e
                    .path()
                    .map_or_else(|| root.display().to_string(), |p| p.display().to_string()),
                status: IngestStatus::Failed,
                id: None,
                format: None,
                chunks: 0,
                bytes: 0,
                reason: Some(e.io_error().map_or_else(|| e.to_string(), io_reason)),
            }),
        }
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

/// A file read and converted, ready to store.
struct Prepared {
    outcome: FileOutcome,
    source: String,
    bytes: Vec<u8>,
    title: String,
    tags: BTreeMap<String, String>,
    chunks: Vec<IndexedChunk>,
    /// The document this one replaces (same source, other content).
    replaces: Option<DocId>,
}

/// A chunk as the index stores it.
pub(crate) struct IndexedChunk {
    pub(crate) heading: Vec<String>,
    pub(crate) text: String,
    pub(crate) location: Option<String>,
}

impl<'v> Memory<'v> {
    /// Ingests `items`: converts, chunks, stores and indexes them in batches, and first
    /// indexes documents of the vault that are not indexed yet (stored by `put` or `import`).
    /// The vault must be open for writing.
    pub fn ingest(
        &mut self,
        items: Vec<IngestItem>,
        options: &IngestOptions,
        progress: &mut dyn FnMut(IngestEvent<'_>),
    ) -> Result<IngestReport> {
        for (k, v) in &options.tags {
            p3ak_vault::validate_tag(k, v)?;
        }
        let planned_bytes = items
            .iter()
            .map(|i| match i {
                IngestItem::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
                IngestItem::Bytes { bytes, .. } => bytes.len() as u64,
            })
            .sum();
        progress(IngestEvent::Planned {
            items: items.len() as u64,
            bytes: planned_bytes,
        });
        let mut writer = self.writer(options)?;
        let mut report = IngestReport {
            caught_up: self.catch_up(&mut writer, options)?,
            ..IngestReport::default()
        };
        let by_source: HashMap<String, DocId> = self
            .docs
            .values()
            .filter_map(|d| Some((d.source.clone()?, d.id)))
            .collect();
        let mut batch: Vec<Prepared> = Vec::new();
        let mut batch_bytes = 0u64;
        // Sources handled in this ingest, so a file named twice is read once.
        let mut done_sources = HashSet::new();
        for item in items {
            let prepared = self.prepare(item, options, &by_source, &mut done_sources);
            match prepared {
                Ok(p) => {
                    batch_bytes += p.outcome.bytes;
                    batch.push(p);
                }
                Err(outcome) => {
                    progress(IngestEvent::Done(&outcome));
                    report.count(*outcome);
                }
            }
            if batch.len() >= options.batch_files || batch_bytes >= options.batch_bytes {
                self.commit_prepared(
                    &mut writer,
                    std::mem::take(&mut batch),
                    &mut report,
                    progress,
                )?;
                batch_bytes = 0;
            }
        }
        self.commit_prepared(&mut writer, batch, &mut report, progress)?;
        self.finish_writer(writer)?;
        Ok(report)
    }

    /// Rebuilds the index from the stored documents (after damage, or a schema change). Open
    /// the memory with [`Memory::open_for_rebuild`] when the stored index cannot be read.
    pub fn reindex(&mut self, options: &IngestOptions) -> Result<usize> {
        let mut writer = self.writer(options)?;
        writer.delete_all_documents()?;
        self.indexed.clear();
        self.chunks.clear();
        let n = self.catch_up(&mut writer, options)?;
        self.finish_writer(writer)?;
        Ok(n)
    }

    /// Deletes a document with its index entries and embeddings, in one commit.
    pub fn delete_document(&mut self, id: &DocId, options: &IngestOptions) -> Result<()> {
        if !self.docs.contains_key(&key(id)) {
            return Err(MemoryError::Vault(p3ak_vault::VaultError::NotFound(
                id.to_string(),
            )));
        }
        let mut writer = self.writer(options)?;
        writer.delete_term(self.doc_term(id));
        writer.commit()?;
        self.commit_vault(|tx| {
            tx.delete(id)?;
            tx.delete_object(SPACE_VECTORS, &id.to_hex())?;
            Ok(())
        })?;
        self.docs.remove(&key(id));
        self.vectors.forget(key(id));
        self.finish_writer(writer)
    }

    fn writer(&self, options: &IngestOptions) -> Result<IndexWriter<TantivyDocument>> {
        let threads = options.writer_threads.max(1);
        let writer = self.index.writer_with_num_threads(
            threads,
            threads * options.writer_memory_per_thread.max(15 << 20),
        )?;
        // Merges run only at the end (`finish_writer`), so the files a batch persists are never
        // collected under it.
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(writer)
    }

    /// Merges segments as tantivy's log policy advises, waits for the merges, and persists.
    fn finish_writer(&mut self, writer: IndexWriter<TantivyDocument>) -> Result<()> {
        writer.set_merge_policy(Box::new(LogMergePolicy::default()));
        let mut writer = writer;
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.commit_vault(|_| Ok(()))
    }

    /// Commits a vault transaction that also persists the index as it now is, then reloads
    /// the reader and the chunk map.
    fn commit_vault(
        &mut self,
        build: impl FnOnce(&mut p3ak_vault::Transaction<'_, '_>) -> p3ak_vault::Result<()>,
    ) -> Result<()> {
        let stored = transact(self.vault, |tx| {
            build(tx)?;
            self.persist(tx)
        })?;
        self.persisted = stored;
        self.reader.reload()?;
        self.map_chunks()
    }

    /// Indexes live documents that are not in the index and drops index entries of
    /// documents that are gone. Returns how many documents were indexed.
    fn catch_up(
        &mut self,
        writer: &mut IndexWriter<TantivyDocument>,
        options: &IngestOptions,
    ) -> Result<usize> {
        let stale: Vec<u128> = self
            .indexed
            .keys()
            .filter(|k| !self.docs.contains_key(k))
            .copied()
            .collect();
        let missing: Vec<DocId> = self
            .docs
            .iter()
            .filter(|(k, _)| !self.indexed.contains_key(k))
            .map(|(_, d)| d.id)
            .collect();
        let stale_vectors: Vec<String> = self
            .embedded
            .keys()
            .filter(|k| !self.docs.contains_key(k))
            .filter_map(|k| crate::memory::id_of(*k).map(|id| id.to_hex()))
            .collect();
        if stale.is_empty() && missing.is_empty() && stale_vectors.is_empty() {
            return Ok(0);
        }
        for k in &stale {
            if let Some(id) = crate::memory::id_of(*k) {
                writer.delete_term(self.doc_term(&id));
            }
        }
        let indexed = self.index_documents(writer, &missing, options)?;
        writer.commit()?;
        self.commit_vault(|tx| {
            for name in &stale_vectors {
                tx.delete_object(SPACE_VECTORS, name)?;
            }
            if indexed > 0 {
                tx.log("memory.index", serde_json::json!({ "documents": indexed }))?;
            }
            Ok(())
        })?;
        for k in stale {
            self.embedded.remove(&k);
        }
        Ok(indexed)
    }

    /// Converts and indexes stored documents (not committed). Returns how many.
    fn index_documents(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        ids: &[DocId],
        options: &IngestOptions,
    ) -> Result<usize> {
        let mut indexed = 0;
        for id in ids {
            let (meta, content) = self.vault.get(id)?;
            let name = meta.source.clone().or(meta.title.clone());
            let chunks = match convert_with_timeout(content.expose(), name.as_deref(), options) {
                Ok((_, chunks)) => chunks,
                // Stored but unreadable as a document: it stays findable by its title.
                Err(_) => Vec::new(),
            };
            let title = meta.title.clone().unwrap_or_default();
            let chunks = if chunks.is_empty() {
                vec![IndexedChunk {
                    heading: Vec::new(),
                    text: title.clone(),
                    location: None,
                }]
            } else {
                chunks
            };
            self.add_chunks(writer, id, &title, &meta.tags, &chunks)?;
            indexed += 1;
        }
        Ok(indexed)
    }

    /// Indexes every stored document into the in-memory index, persisting nothing: how an
    /// index of another schema version is replaced when a vault is opened, so that a vault
    /// opened read-only searches with the current analysis at once. The next ingest, delete or
    /// `reindex` on a writable vault persists the new index.
    pub(crate) fn rebuild_in_memory(&mut self) -> Result<()> {
        let options = IngestOptions {
            writer_threads: 1,
            ..IngestOptions::default()
        };
        let mut writer = self.writer(&options)?;
        writer.delete_all_documents()?;
        let mut ids: Vec<DocId> = self.docs.values().map(|d| d.id).collect();
        ids.sort_by_key(DocId::to_hex);
        self.index_documents(&writer, &ids, &options)?;
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        self.map_chunks()
    }

    fn add_chunks(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        id: &DocId,
        title: &str,
        tags: &BTreeMap<String, String>,
        chunks: &[IndexedChunk],
    ) -> Result<()> {
        let f = self.fields;
        let k = key(id);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the high and low halves of a u128"
        )]
        let (hi, lo) = ((k >> 64) as u64, k as u64);
        for (ord, chunk) in chunks.iter().enumerate() {
            let mut doc = TantivyDocument::new();
            doc.add_text(f.doc, id.to_hex());
            doc.add_u64(f.doc_hi, hi);
            doc.add_u64(f.doc_lo, lo);
            doc.add_u64(f.ord, ord as u64);
            doc.add_text(f.title, title);
            doc.add_text(
                f.heading,
                chunk.heading.join(crate::search::HEADING_SEPARATOR),
            );
            doc.add_text(f.body, &chunk.text);
            for (k, v) in tags {
                doc.add_text(f.tag, format!("{k}={v}"));
            }
            if let Some(location) = &chunk.location {
                doc.add_text(f.location, location);
            }
            writer.add_document(doc)?;
        }
        Ok(())
    }

    /// Reads and converts one item. `Err` carries an outcome that needs no commit.
    fn prepare(
        &self,
        item: IngestItem,
        options: &IngestOptions,
        by_source: &HashMap<String, DocId>,
        done_sources: &mut HashSet<String>,
    ) -> std::result::Result<Prepared, Box<FileOutcome>> {
        let display = item.display();
        let outcome = |status, reason: Option<String>, bytes: u64| {
            Box::new(FileOutcome {
                item: display.clone(),
                status,
                id: None,
                format: None,
                chunks: 0,
                bytes,
                reason,
            })
        };
        let mut explicit_title = None;
        let (source, bytes, name) = match item {
            IngestItem::File(path) => {
                let source = canonical(&path).display().to_string();
                if !done_sources.insert(source.clone()) {
                    return Err(outcome(
                        IngestStatus::Unchanged,
                        Some("named twice".into()),
                        0,
                    ));
                }
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if size > options.limits.max_input_bytes as u64 {
                    return Err(outcome(
                        IngestStatus::Failed,
                        Some(format!(
                            "file is {size} bytes, over the limit of {}",
                            options.limits.max_input_bytes
                        )),
                        size,
                    ));
                }
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                        (source, bytes, name)
                    }
                    Err(e) => return Err(outcome(IngestStatus::Failed, Some(io_reason(&e)), size)),
                }
            }
            IngestItem::Bytes { name, title, bytes } => {
                explicit_title = title;
                (name.clone(), bytes, Some(name))
            }
        };
        let size = bytes.len() as u64;
        let existing = by_source.get(&source).copied();
        if let Some(id) = self.vault.find_content(&bytes) {
            let mut o = outcome(IngestStatus::Unchanged, None, size);
            o.id = Some(id);
            if existing.is_some_and(|e| e != id) {
                o.reason = Some("same content as another stored document".into());
            }
            return Err(o);
        }
        let (converted, chunks) = match convert_with_timeout(&bytes, name.as_deref(), options) {
            Ok(done) => done,
            Err(ConvertFailure::Unsupported) => {
                return Err(outcome(
                    IngestStatus::Skipped,
                    Some("not a document format this build reads".into()),
                    size,
                ));
            }
            Err(ConvertFailure::Failed(reason)) => {
                return Err(outcome(IngestStatus::Failed, Some(reason), size));
            }
        };
        let title = explicit_title
            .or(converted.title)
            .filter(|t| !t.trim().is_empty())
            .or(name)
            .unwrap_or_else(|| source.clone());
        let warnings = (!converted.warnings.is_empty()).then(|| converted.warnings.join("; "));
        let chunks = if chunks.is_empty() {
            // An empty document is still stored and findable by its title.
            vec![IndexedChunk {
                heading: Vec::new(),
                text: title.clone(),
                location: None,
            }]
        } else {
            chunks
        };
        let status = if existing.is_some() {
            IngestStatus::Updated
        } else {
            IngestStatus::Ingested
        };
        Ok(Prepared {
            outcome: FileOutcome {
                item: display,
                status,
                id: None,
                format: Some(converted.format.name()),
                chunks: chunks.len(),
                bytes: size,
                reason: warnings,
            },
            source,
            bytes,
            title,
            tags: options.tags.clone(),
            chunks,
            replaces: existing,
        })
    }

    /// Stores a batch of prepared files and their index entries in one commit.
    fn commit_prepared(
        &mut self,
        writer: &mut IndexWriter<TantivyDocument>,
        batch: Vec<Prepared>,
        report: &mut IngestReport,
        progress: &mut dyn FnMut(IngestEvent<'_>),
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        progress(IngestEvent::Committing {
            documents: batch.len(),
        });
        let mut outcomes: Vec<FileOutcome> = Vec::with_capacity(batch.len());
        let mut new_docs = Vec::new();
        let stored = transact(self.vault, |tx| {
            for p in &batch {
                let put = tx.put(NewDocument {
                    title: Some(p.title.clone()),
                    tags: p.tags.clone(),
                    source: Some(p.source.clone()),
                    content: &p.bytes,
                })?;
                let mut outcome = p.outcome.clone();
                outcome.id = Some(put.id);
                if put.status == PutStatus::Unchanged {
                    // The same content came twice in this batch.
                    outcome.status = IngestStatus::Unchanged;
                    outcome.chunks = 0;
                    outcomes.push(outcome);
                    continue;
                }
                if let Some(old) = p.replaces {
                    tx.delete(&old)?;
                    tx.delete_object(SPACE_VECTORS, &old.to_hex())?;
                }
                new_docs.push((put.id, p));
                outcomes.push(outcome);
            }
            tx.log(
                "memory.ingest",
                serde_json::json!({
                    "documents": new_docs.len(),
                    "chunks": new_docs.iter().map(|(_, p)| p.chunks.len()).sum::<usize>(),
                }),
            )?;
            for (id, p) in &new_docs {
                if let Some(old) = p.replaces {
                    writer.delete_term(self.doc_term(&old));
                }
                self.add_chunks(writer, id, &p.title, &p.tags, &p.chunks)?;
            }
            writer.commit()?;
            self.persist(tx)
        })?;
        self.persisted = stored;
        self.refresh_docs();
        self.reader.reload()?;
        self.map_chunks()?;
        for outcome in outcomes {
            progress(IngestEvent::Done(&outcome));
            report.count(outcome);
        }
        Ok(())
    }
}

/// Why a conversion produced nothing.
enum ConvertFailure {
    Unsupported,
    Failed(String),
}

/// What ingest keeps of a conversion besides the chunks.
struct ConvertedSummary {
    format: p3ak_convert::Format,
    title: Option<String>,
    warnings: Vec<String>,
}

/// Converts and chunks on a worker thread, giving up after the time limit. A conversion
/// that overruns is left to finish on its own; its result is dropped.
fn convert_with_timeout(
    bytes: &[u8],
    name: Option<&str>,
    options: &IngestOptions,
) -> std::result::Result<(ConvertedSummary, Vec<IndexedChunk>), ConvertFailure> {
    let (send, receive) = mpsc::sync_channel(1);
    let owned = bytes.to_vec();
    let name = name.map(str::to_owned);
    let limits = options.limits.clone();
    let chunking = options.chunking;
    let spawned = std::thread::Builder::new()
        .name("p3ak-convert".into())
        .spawn(move || {
            let mut input = Input::new(&owned);
            if let Some(name) = &name {
                input = input.with_name(name);
            }
            let result = p3ak_convert::convert(&input, &limits).map(|converted| {
                let chunks = p3ak_convert::chunk(&converted, &chunking)
                    .into_iter()
                    .map(|c| IndexedChunk {
                        location: describe_location(&c.location),
                        heading: c.heading_path,
                        text: c.text,
                    })
                    .collect();
                (summary(converted), chunks)
            });
            let _ = send.send(result);
        });
    if let Err(e) = spawned {
        return Err(ConvertFailure::Failed(format!(
            "cannot start a converter: {e}"
        )));
    }
    match receive.recv_timeout(options.convert_timeout) {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(p3ak_convert::ConvertError::Unsupported)) => Err(ConvertFailure::Unsupported),
        Ok(Err(e)) => Err(ConvertFailure::Failed(e.to_string())),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ConvertFailure::Failed(format!(
            "conversion took longer than {} s",
            options.convert_timeout.as_secs()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConvertFailure::Failed(
            "the converter stopped without a result".into(),
        )),
    }
}

fn summary(converted: Converted) -> ConvertedSummary {
    ConvertedSummary {
        format: converted.format,
        title: converted.title,
        warnings: converted.warnings,
    }
}

/// A location for people: `page 3`, `lines 10-24`, `sheet Q3 rows 2-40`, …
pub(crate) fn describe_location(location: &Location) -> Option<String> {
    match location {
        Location::Document => None,
        Location::Lines { start, end } if start == end => Some(format!("line {start}")),
        Location::Lines { start, end } => Some(format!("lines {start}-{end}")),
        Location::Page { page } => Some(format!("page {page}")),
        Location::Sheet {
            sheet,
            first_row,
            last_row,
        } => Some(format!("sheet {sheet} rows {first_row}-{last_row}")),
        Location::Slide { slide } => Some(format!("slide {slide}")),
        Location::Email { message, part } => Some(format!("message {message} {part}")),
        _ => None,
    }
}

impl Memory<'_> {
    /// Re-reads the vault's document list after a commit.
    pub(crate) fn refresh_docs(&mut self) {
        self.docs = self
            .vault
            .list()
            .into_iter()
            .filter(|d| d.damaged.is_none())
            .map(|d| (key(&d.id), d))
            .collect();
    }
}

/// Runs `work` in one vault transaction. An error of the memory layer aborts the transaction
/// (nothing is committed) and is returned as it is.
fn transact<T>(
    vault: &p3ak_vault::Vault,
    work: impl FnOnce(&mut p3ak_vault::Transaction<'_, '_>) -> Result<T>,
) -> Result<T> {
    let mut failure = None;
    let outcome = vault.transact(|tx| {
        work(tx).map_err(|e| {
            failure = Some(e);
            // Any error aborts the vault transaction; the real one is `failure`.
            p3ak_vault::VaultError::ReadOnly
        })
    });
    match (outcome, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
        (Ok(value), None) => Ok(value),
    }
}

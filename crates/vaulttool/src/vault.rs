//! `vault`: the agents' memory — search, read, list, write, ingest and delete in the memory
//! vault through `p3ak-memory`.
//!
//! Config: `vault` (absolute path of the vault file) and `models` (optional: the home's
//! `models/`, for semantic search — see [`crate::semantic`]). The key arrives in `welcome` as
//! [`VaultKey::to_handoff_bytes`] in hex ([`crate::vault_key`]); the memory vault is always
//! encrypted, so no key is an error.
//!
//! Reads (`search`, `read`, `list`) run at the same time. Writes (`write`, `ingest`, `delete`)
//! run one at a time in a write session: the vault opened for writing (its writer lock held)
//! with its memory loaded, kept while writes keep coming and closed 200 ms after the last
//! one, so that the operator's `p3ak vault ingest` and the embedding run get their turn
//! (another process holding the lock makes a write wait up to five seconds, then fail
//! `transient`). Reads use the session while it is open, and otherwise a read-only
//! [`Snapshot`] of the vault kept between calls and opened anew when the file changes — no
//! lock, so what the operator ingests shows up at the next search. Loading the memory
//! decrypts the whole index, so neither is done per call.
//!
//! | action | arguments | output | tier |
//! |---|---|---|---|
//! | `search` | `query`, `k?` (1–50, default 5), `mode?` (`bm25`/`semantic`/`hybrid`), `tags?`, `explain?` | `{hits: [{id, title, snippet, highlights, score, chunk, heading_path, signals?}], mode, notes, embedded_chunks?, chunks?}` | observe |
//! | `read` | `id` (4–32 hex digits) | `{id, title, content, truncated}` | observe |
//! | `list` | `after?` (an id), `limit?` (1–200, default 50) | `{documents: [{id, title, media_type, size, created, tags}], next?}` | observe |
//! | `write` | `title`, `content`, `tags?`, `source?` | `{id, status}` (`created` or `unchanged`) | act |
//! | `ingest` | `name`, `data` (base64), `media_type?`, `title?`, `tags?` | `{id, status, chunks}` | act |
//! | `delete` | `id` | `{id, deleted}` | commit |
//!
//! Search ranks with BM25 and the title/heading signal (the semantic signal needs the
//! embedding model, which this plugin does not load: a `semantic` or `hybrid` search says so
//! in `notes`). `write` stores the text as a Markdown document and indexes it in the same
//! commit, tagged `agent=<agent>` (a `tags.agent` given by the model is replaced); the same
//! content written twice is stored once. `ingest` converts a file as `p3ak memory ingest`
//! does; a whole call must fit in one frame (`[kernel] max_frame`, 1 MiB by default), so the
//! file's base64 does too. `delete` removes the document, its passages and its embeddings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use p3ak_memory::{
    IngestItem, IngestOptions, IngestStatus, Memory, MemoryError, Mode, SearchRequest,
};
use p3ak_proto::{ActionSpec, Tier};
use p3ak_vault::{Access, Unlock, Vault, VaultError, VaultKey};
use serde::Deserialize;
use serde_json::{Value, json};

use p3ak_sdk::PluginError;
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{SharedTool, ToolFailure};

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::semantic::Semantic;
use crate::snapshot::{Snapshot, Snapshots};

/// Most results a search returns.
pub const MAX_K: u64 = 50;
/// Largest document `write` accepts, in bytes.
pub const MAX_WRITE_BYTES: usize = 1 << 20;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 512;
/// How long `write` waits for another writer to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most tags on a written document.
pub const MAX_TAGS: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    vault: PathBuf,
    /// The home's `models/`, where `p3ak models install` puts the embedding model.
    #[serde(default)]
    models: Option<PathBuf>,
}

/// How long the write session outlives the last write before the writer lock is let go
/// (for the operator's `p3ak vault ingest`, the background embedding run).
const SESSION_IDLE: Duration = Duration::from_millis(200);

/// The vault opened for writing, with its memory.
struct Session {
    open: Snapshot,
    last_write: Instant,
}

/// Ends the write session once it has been idle for [`SESSION_IDLE`]; stops when the tool is
/// gone.
fn close_idle_sessions(session: std::sync::Weak<RwLock<Option<Session>>>) {
    loop {
        std::thread::sleep(SESSION_IDLE / 2);
        let Some(session) = session.upgrade() else {
            return;
        };
        let idle = session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|s| s.last_write.elapsed() >= SESSION_IDLE);
        if idle {
            let mut session = session.write().unwrap_or_else(PoisonError::into_inner);
            if session
                .as_ref()
                .is_some_and(|s| s.last_write.elapsed() >= SESSION_IDLE)
            {
                *session = None;
            }
        }
    }
}

/// The `vault` tool.
pub struct VaultTool {
    path: PathBuf,
    key: std::sync::Arc<VaultKey>,
    max_read: usize,
    semantic: Semantic,
    /// What reads read.
    snapshots: Snapshots,
    /// The vault opened for writing, kept while writes keep coming: reads use it meanwhile.
    session: Arc<RwLock<Option<Session>>>,
}

impl VaultTool {
    /// Builds the tool from its `welcome` config and the handed-over key, checking that the
    /// vault opens with it. `read` returns at most half of `max_frame` bytes of content.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] when `vault` is missing or the vault does not open (absent,
    /// damaged, wrong key).
    pub fn from_config(
        config: &Value,
        key: VaultKey,
        max_frame: usize,
    ) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        let tool = Self {
            path: config.vault,
            key: std::sync::Arc::new(key),
            max_read: max_frame / 2,
            semantic: Semantic::new(config.models),
            snapshots: Snapshots::default(),
            session: Arc::new(RwLock::new(None)),
        };
        let session = Arc::downgrade(&tool.session);
        std::thread::Builder::new()
            .name("p3ak-vault-session".to_owned())
            .spawn(move || close_idle_sessions(session))
            .map_err(|e| PluginError::Config(format!("cannot start a thread: {e}")))?;
        tool.snapshot().map_err(|e| {
            PluginError::Config(format!(
                "cannot open the vault `{}`: {}",
                tool.path.display(),
                e.message
            ))
        })?;
        Ok(tool)
    }

    /// The vault as it is now, for reading.
    fn snapshot(&self) -> Result<std::sync::Arc<Snapshot>, ToolFailure> {
        self.snapshots.current(
            &self.path,
            || {
                let vault = self.open(Access::Read, "p3ak-plugins vault")?;
                Snapshot::try_new(vault, |vault| Memory::open(vault).map_err(memory_failure))
            },
            |e| ToolFailure::permanent(format!("cannot read the vault file: {e}")),
        )
    }

    /// Runs `read` on the vault as it is now: the write session's while there is one (it
    /// holds the writer lock, so nothing else changed the vault), else the kept snapshot.
    fn read_with<T>(
        &self,
        read: impl FnOnce(&Vault, &Memory<'_>) -> Result<T, ToolFailure>,
    ) -> Result<T, ToolFailure> {
        let session = self.session.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = session.as_ref() {
            return session
                .open
                .with_dependent(|vault, memory| read(vault, memory));
        }
        drop(session);
        self.snapshot()?
            .with_dependent(|vault, memory| read(vault, memory))
    }

    /// Runs `write` for `agent` alone among this plugin's writes, on the write session (opened
    /// if there is none), then lets the background run embed what it stored.
    fn exclusive<T>(
        &self,
        agent: &str,
        write: impl FnOnce(&Vault, &mut Memory<'_>) -> Result<T, ToolFailure>,
    ) -> Result<T, ToolFailure> {
        let mut session = self.session.write().unwrap_or_else(PoisonError::into_inner);
        let current = match session.take() {
            Some(current) => current,
            None => {
                let vault = self.open(Access::Write, "p3ak-plugins vault")?;
                Session {
                    open: Snapshot::try_new(vault, |vault| {
                        Memory::open(vault).map_err(memory_failure)
                    })?,
                    last_write: Instant::now(),
                }
            }
        };
        let mut current = current;
        let outcome = current.open.with_dependent_mut(|vault, memory| {
            vault.act_as(actor(agent));
            write(vault, memory)
        });
        current.last_write = Instant::now();
        // A failure other than bad arguments may leave the memory behind the file: the next
        // write opens the vault anew.
        if outcome
            .as_ref()
            .err()
            .is_none_or(|f| f.kind == p3ak_proto::ErrorKind::Invalid)
        {
            *session = Some(current);
        }
        drop(session);
        self.snapshots.forget();
        if outcome.is_ok() {
            self.semantic.embed_pending_later(&self.path, &self.key);
        }
        outcome
    }

    fn open(&self, access: Access, actor: &str) -> Result<Vault, ToolFailure> {
        // Another writer (an ingest, say) may be committing: wait a little for it.
        let mut vault = Vault::open_waiting(&self.path, Unlock::Key(&self.key), access, LOCK_WAIT)
            .map_err(vault_failure)?;
        vault.set_actor(actor);
        Ok(vault)
    }

    fn search(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("search", args, &["query", "k", "mode", "tags", "explain"])?;
        let query = args.string("query")?;
        let k = args.opt_int("k", 1, MAX_K)?.unwrap_or(5);
        let explain = args.opt_bool("explain")?.unwrap_or(false);
        let mode = match args.opt_string("mode")? {
            None | Some("hybrid") => Mode::Hybrid,
            Some("bm25") => Mode::Bm25,
            Some("semantic") => Mode::Semantic,
            Some(other) => {
                return Err(ToolFailure::invalid(format!(
                    "`search`: unknown mode `{}` (bm25, semantic or hybrid)",
                    shorten(other)
                )));
            }
        };
        let mut tags = BTreeMap::new();
        for (k, v) in args.opt_string_map("tags")?.unwrap_or_default() {
            tags.insert(k.to_owned(), v.to_owned());
        }
        if tags.len() > MAX_TAGS {
            return Err(ToolFailure::invalid(format!(
                "`search`: more than {MAX_TAGS} tags"
            )));
        }
        if query.trim().is_empty() {
            return Err(ToolFailure::invalid("`search`: the query is empty"));
        }
        if query.len() > 4096 {
            return Err(ToolFailure::invalid(
                "`search`: the query is over 4096 bytes",
            ));
        }
        self.read_with(|vault, memory| {
            let mut request = SearchRequest::new(query);
            request.k = usize::try_from(k).unwrap_or(5);
            request.tags = tags;
            request.mode = mode;
            let mut notes = Vec::new();
            let vector = if mode == Mode::Bm25 {
                None
            } else {
                match self.semantic.embed_query(query) {
                    Ok(vector) => Some(vector),
                    Err(why) => {
                        // No model: a semantic search is ranked by words and headings instead.
                        if mode == Mode::Semantic {
                            request.mode = Mode::Hybrid;
                        }
                        notes.push(why);
                        None
                    }
                }
            };
            let results = memory
                .search(&request, vector.as_deref())
                .map_err(memory_failure)?;
            let said_why = !notes.is_empty();
            notes.extend(
                results
                    .notes
                    .iter()
                    .filter(|n| !(said_why && n.starts_with("semantic ranking is off")))
                    .cloned(),
            );
            let hits: Vec<Value> = results
                .hits
                .iter()
                .map(|hit| {
                    let mut out = json!({
                        "id": hit.id.to_hex(),
                        "title": hit.title,
                        "snippet": hit.snippet.text,
                        "highlights": hit.snippet.highlights.iter().map(|&(s, e)| [s, e]).collect::<Vec<_>>(),
                        "score": hit.score,
                        "chunk": hit.chunk,
                        "heading_path": hit.heading_path,
                    });
                    // Which tools' output the document was written from (the kernel labels
                    // recalled passages by it, for the policy's provenance tests).
                    let origin = vault
                        .doc_info(&hit.id)
                        .and_then(|d| d.tags.get(p3ak_memory::ORIGIN_TAG).cloned());
                    if let (Some(origin), Some(object)) = (origin, out.as_object_mut()) {
                        object.insert("origin".to_owned(), Value::String(origin));
                    }
                    if explain && let Some(object) = out.as_object_mut() {
                        let signals: Vec<Value> = hit
                            .signals
                            .iter()
                            .map(|p| {
                                json!({
                                    "signal": p.signal,
                                    "rank": p.rank,
                                    "score": p.score,
                                    "contribution": p.contribution,
                                })
                            })
                            .collect();
                        object.insert("signals".to_owned(), Value::Array(signals));
                    }
                    out
                })
                .collect();
            let mut out = json!({"hits": hits, "mode": results.mode, "notes": notes});
            if explain && let Some(object) = out.as_object_mut() {
                object.insert("embedded_chunks".to_owned(), json!(results.embedded_chunks));
                object.insert("chunks".to_owned(), json!(results.chunks));
            }
            Ok(out)
        })
    }

    fn list(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("list", args, &["after", "limit"])?;
        let limit = args.opt_int("limit", 1, MAX_LIST)?.unwrap_or(50);
        let limit = usize::try_from(limit).unwrap_or(50);
        let after = args.opt_string("after")?;
        self.read_with(|vault, _| {
            let mut documents = vault.list();
            documents.reverse();
            let start = match after {
                None => 0,
                Some(after) => {
                    let id = vault.resolve(after).map_err(vault_failure)?;
                    documents
                        .iter()
                        .position(|d| d.id == id)
                        .map_or(documents.len(), |at| at + 1)
                }
            };
            let page: Vec<&p3ak_vault::DocInfo> =
                documents.iter().skip(start).take(limit).collect();
            let more = start.saturating_add(page.len()) < documents.len();
            let next = if more {
                page.last().map(|d| d.id.to_hex())
            } else {
                None
            };
            let listed: Vec<Value> = page
                .iter()
                .map(|d| {
                    let mut entry = json!({
                        "id": d.id.to_hex(),
                        "title": d.title,
                        "size": d.size,
                        "created": d.created,
                        "tags": d.tags,
                    });
                    let media = d
                        .source
                        .as_deref()
                        .or(d.title.as_deref())
                        .and_then(media_type_of);
                    if let (Some(media), Some(object)) = (media, entry.as_object_mut()) {
                        object.insert("media_type".to_owned(), json!(media));
                    }
                    entry
                })
                .collect();
            let mut out = json!({"documents": listed});
            if let (Some(next), Some(object)) = (next, out.as_object_mut()) {
                object.insert("next".to_owned(), json!(next));
            }
            Ok(out)
        })
    }

    fn delete(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("delete", args, &["id"])?;
        let id = args.string("id")?;
        p3ak_sdk::args::check_agent(agent)?;
        self.exclusive(agent, |vault, memory| {
            let id = vault.resolve(id).map_err(vault_failure)?;
            memory
                .delete_document(&id, &write_options(BTreeMap::new()))
                .map_err(memory_failure)?;
            Ok(json!({"id": id.to_hex(), "deleted": true}))
        })
    }

    fn ingest(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new(
            "ingest",
            args,
            &["name", "data", "media_type", "title", "tags"],
        )?;
        let name = args.string("name")?;
        let data = args.string("data")?;
        let media_type = args.opt_string("media_type")?;
        let title = args.opt_string("title")?;
        if name.trim().is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
            || name == "."
            || name == ".."
        {
            return Err(ToolFailure::invalid(format!(
                "`ingest`: the name must be a file name of at most {MAX_NAME_CHARS} characters, without `/`"
            )));
        }
        if let Some(title) = title
            && (title.trim().is_empty()
                || title.chars().count() > MAX_TITLE_CHARS
                || title.chars().any(char::is_control))
        {
            return Err(ToolFailure::invalid(format!(
                "`ingest`: the title must be one line of at most {MAX_TITLE_CHARS} characters"
            )));
        }
        if let Some(media) = media_type
            && (media.len() > 255
                || !media.split(';').next().unwrap_or_default().contains('/')
                || media.starts_with(char::is_whitespace)
                || media.chars().any(char::is_control))
        {
            return Err(ToolFailure::invalid(format!(
                "`ingest`: `{}` is not a media type",
                shorten(media)
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| ToolFailure::invalid("`ingest`: `data` is not base64"))?;
        if bytes.is_empty() {
            return Err(ToolFailure::invalid("`ingest`: the file is empty"));
        }
        let tags = caller_tags("ingest", &args, agent)?;
        p3ak_sdk::args::check_agent(agent)?;
        // The converter picks its format from the name: a declared media type helps a name
        // without a known extension.
        let mut file_name = name.to_owned();
        if media_type_of(name).is_none()
            && let Some(extension) = media_type.and_then(extension_of)
        {
            file_name = format!("{file_name}.{extension}");
        }
        let report = self.exclusive(agent, |vault, memory| {
            // A source of its own: an upload never replaces a document of the same name (that
            // would be a delete, which the policy asks about on its own). The same content twice
            // is still stored once.
            let taken: std::collections::HashSet<String> =
                vault.list().into_iter().filter_map(|d| d.source).collect();
            let file_name = unique_name(&file_name, &taken);
            let item = IngestItem::Bytes {
                name: file_name,
                title: title.map(str::to_owned),
                bytes,
            };
            memory
                .ingest(vec![item], &write_options(tags), &mut |_| {})
                .map_err(memory_failure)
        })?;
        let Some(outcome) = report.files.first() else {
            return Err(ToolFailure::permanent("the document was not stored"));
        };
        let status = match outcome.status {
            IngestStatus::Ingested | IngestStatus::Updated => "created",
            IngestStatus::Unchanged => "unchanged",
            IngestStatus::Skipped | IngestStatus::Failed => {
                return Err(ToolFailure::invalid(format!(
                    "`{}` was not stored: {}",
                    shorten(name),
                    outcome.reason.as_deref().unwrap_or("unreadable")
                )));
            }
        };
        let Some(id) = outcome.id else {
            return Err(ToolFailure::permanent(
                "the document was stored without an id",
            ));
        };
        let mut out = json!({"id": id.to_hex(), "status": status, "chunks": outcome.chunks});
        if outcome.status == IngestStatus::Unchanged
            && let Some(object) = out.as_object_mut()
        {
            object.remove("chunks");
            object.insert(
                "message".to_owned(),
                json!(format!(
                    "the same content is already stored as `{}`",
                    id.to_hex()
                )),
            );
        }
        Ok(out)
    }

    fn read(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("read", args, &["id"])?;
        let id = args.string("id")?;
        self.read_with(|vault, _| {
            let id = vault.resolve(id).map_err(vault_failure)?;
            let (meta, content) = vault.get(&id).map_err(vault_failure)?;
            let bytes = content.expose();
            let text = std::str::from_utf8(bytes).map_err(|_| {
                ToolFailure::invalid(format!(
                    "document `{id}` is not text (a PDF or office file, say): search finds its passages"
                ))
            })?;
            let mut end = text.len().min(self.max_read);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Ok(json!({
                "id": id.to_hex(),
                "title": meta.title,
                "content": text.get(..end).unwrap_or_default(),
                "truncated": end < text.len(),
            }))
        })
    }

    fn write(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new(
            "write",
            args,
            &["title", "content", "tags", "source", "origin"],
        )?;
        let title = args.string("title")?;
        let content = args.string("content")?;
        let source = args.opt_string("source")?;
        if let Some(source) = source
            && (source.chars().count() > MAX_SOURCE_CHARS || source.chars().any(char::is_control))
        {
            return Err(ToolFailure::invalid(format!(
                "`write`: the source must be one line of at most {MAX_SOURCE_CHARS} characters"
            )));
        }
        let origin = match args.opt_value("origin") {
            None => Vec::new(),
            Some(value) => origin_list(value)?,
        };
        if title.trim().is_empty() {
            return Err(ToolFailure::invalid("`write`: the title is empty"));
        }
        if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(ToolFailure::invalid(format!(
                "`write`: the title must be one line of at most {MAX_TITLE_CHARS} characters"
            )));
        }
        if content.len() > MAX_WRITE_BYTES {
            return Err(ToolFailure::invalid(format!(
                "`write`: the content is {} bytes, over the limit of {MAX_WRITE_BYTES}",
                content.len()
            )));
        }
        let mut tags = caller_tags("write", &args, agent)?;
        if let Some(source) = source {
            tags.insert(p3ak_memory::SOURCE_TAG.to_owned(), source.to_owned());
        }
        if !origin.is_empty() {
            tags.insert(p3ak_memory::ORIGIN_TAG.to_owned(), origin.join(","));
        }
        if tags.len() > MAX_TAGS {
            return Err(ToolFailure::invalid(format!(
                "`write`: more than {MAX_TAGS} tags"
            )));
        }
        p3ak_sdk::args::check_agent(agent)?;
        let options = write_options(tags);
        let report = self.exclusive(agent, |_, memory| {
            // A source of its own, so a later write never replaces this one.
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let item = IngestItem::Bytes {
                name: format!("agent-{agent}-{stamp}.md"),
                title: Some(title.to_owned()),
                bytes: content.as_bytes().to_vec(),
            };
            memory
                .ingest(vec![item], &options, &mut |_| {})
                .map_err(memory_failure)
        })?;
        let Some(outcome) = report.files.first() else {
            return Err(ToolFailure::permanent("the document was not stored"));
        };
        let status = match outcome.status {
            IngestStatus::Ingested | IngestStatus::Updated => "created",
            IngestStatus::Unchanged => "unchanged",
            IngestStatus::Skipped | IngestStatus::Failed => {
                return Err(ToolFailure::invalid(format!(
                    "the document was not stored: {}",
                    outcome.reason.as_deref().unwrap_or("unreadable")
                )));
            }
        };
        let Some(id) = outcome.id else {
            return Err(ToolFailure::permanent(
                "the document was stored without an id",
            ));
        };
        Ok(json!({"id": id.to_hex(), "status": status}))
    }
}

/// Tags a caller may not set in `tags`.
const RESERVED_TAGS: &[&str] = &[p3ak_memory::SOURCE_TAG, p3ak_memory::ORIGIN_TAG];
/// Longest `source` of a write.
const MAX_SOURCE_CHARS: usize = 1000;
/// Most actions in an `origin`.
const MAX_ORIGINS: usize = 32;

/// Most documents `list` returns at once.
pub const MAX_LIST: u64 = 200;
/// Longest file name `ingest` accepts, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// How a write, an ingest and a delete commit: one small writer, as the plugin's limits allow.
fn write_options(tags: BTreeMap<String, String>) -> IngestOptions {
    IngestOptions {
        tags,
        writer_threads: 1,
        writer_memory_per_thread: 16 << 20,
        ..IngestOptions::default()
    }
}

/// The caller's `tags`, checked, with `agent` set to the calling agent (whatever was given).
fn caller_tags(
    action: &str,
    args: &Args,
    agent: &str,
) -> Result<BTreeMap<String, String>, ToolFailure> {
    let mut tags = BTreeMap::new();
    for (k, v) in args.opt_string_map("tags")?.unwrap_or_default() {
        if RESERVED_TAGS.contains(&k) {
            return Err(ToolFailure::invalid(format!(
                "`{action}`: the tag `{k}` is set by the vault, not by the caller"
            )));
        }
        p3ak_vault::validate_tag(k, v).map_err(|_| {
            ToolFailure::invalid(format!("`{action}`: invalid tag `{}`", shorten(k)))
        })?;
        tags.insert(k.to_owned(), v.to_owned());
    }
    tags.insert("agent".to_owned(), agent.to_owned());
    if tags.len() > MAX_TAGS {
        return Err(ToolFailure::invalid(format!(
            "`{action}`: more than {MAX_TAGS} tags"
        )));
    }
    Ok(tags)
}

/// File extensions and the media types they stand for (for listings, and to name an upload
/// whose name has no extension).
const MEDIA_TYPES: &[(&str, &str)] = &[
    ("md", "text/markdown"),
    ("markdown", "text/markdown"),
    ("txt", "text/plain"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("pdf", "application/pdf"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("eml", "message/rfc822"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("odt", "application/vnd.oasis.opendocument.text"),
];

/// `name`, or `name` with `-2`, `-3`, … before its extension when a document already came
/// from that name.
fn unique_name(name: &str, taken: &std::collections::HashSet<String>) -> String {
    if !taken.contains(name) {
        return name.to_owned();
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, Some(extension)),
        _ => (name, None),
    };
    (2u64..)
        .map(|n| match extension {
            Some(extension) => format!("{stem}-{n}.{extension}"),
            None => format!("{stem}-{n}"),
        })
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name.to_owned())
}

/// The media type a file name's extension stands for, if known.
fn media_type_of(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    MEDIA_TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(extension))
        .map(|(_, m)| *m)
}

/// The extension for a media type (parameters such as `; charset=utf-8` ignored), if known.
fn extension_of(media_type: &str) -> Option<&'static str> {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    MEDIA_TYPES
        .iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(essence))
        .map(|(e, _)| *e)
}

/// `origin`: action names (`mail.read`), at most [`MAX_ORIGINS`].
fn origin_list(value: &Value) -> Result<Vec<String>, ToolFailure> {
    let bad = || {
        ToolFailure::invalid(format!(
            "`write`: `origin` must be a list of at most {MAX_ORIGINS} action names"
        ))
    };
    let items = value.as_array().ok_or_else(bad)?;
    if items.len() > MAX_ORIGINS {
        return Err(bad());
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let name = item.as_str().ok_or_else(bad)?;
        let valid = !name.is_empty()
            && name.len() <= 130
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(bad());
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn actor(agent: &str) -> String {
    format!("agent {} via the vault plugin", shorten(agent))
}

fn vault_failure(e: VaultError) -> ToolFailure {
    match e {
        VaultError::NotFound(_) | VaultError::InvalidId(_) | VaultError::AmbiguousId(_) => {
            ToolFailure::invalid(e.to_string())
        }
        VaultError::InvalidTag(_) | VaultError::TooLarge { .. } => {
            ToolFailure::invalid(e.to_string())
        }
        VaultError::Locked { .. } => {
            ToolFailure::transient("the vault is busy with another writer; try again")
        }
        other => ToolFailure::permanent(other.to_string()),
    }
}

fn memory_failure(e: MemoryError) -> ToolFailure {
    match e {
        MemoryError::Vault(v) => vault_failure(v),
        MemoryError::Invalid(message) => ToolFailure::invalid(message),
        other => ToolFailure::permanent(other.to_string()),
    }
}

impl SharedTool for VaultTool {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            ActionSpec {
                name: "search".to_owned(),
                description: "Search the memory vault; returns the best passages.".to_owned(),
                parameters: schema(
                    json!({
                        "query": {"type": "string", "minLength": 1, "maxLength": 4096},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
                        "mode": {"type": "string", "enum": ["bm25", "semantic", "hybrid"], "default": "hybrid"},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"},
                                 "maxProperties": MAX_TAGS,
                                 "description": "only documents carrying all these tags"},
                        "explain": {"type": "boolean", "default": false,
                                    "description": "include how each signal ranked each passage"},
                    }),
                    &["query"],
                ),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "read".to_owned(),
                description: "Read a text document of the memory vault by its id.".to_owned(),
                parameters: schema(
                    json!({"id": {"type": "string", "pattern": "^[0-9a-fA-F]{4,32}$"}}),
                    &["id"],
                ),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "write".to_owned(),
                description: "Store a text (Markdown) document in the memory vault and index it."
                    .to_owned(),
                parameters: schema(
                    json!({
                        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                        "content": {"type": "string"},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "source": {"type": "string", "maxLength": MAX_SOURCE_CHARS,
                                   "description": "where the content came from: a URL, a mail's Message-ID"},
                        "origin": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ORIGINS,
                                   "description": "set by the kernel: the tools whose output the conversation had read"},
                    }),
                    &["title", "content"],
                ),
                tier: Tier::Act,
            },
            ActionSpec {
                name: "list".to_owned(),
                description: "List the memory vault's documents, newest first.".to_owned(),
                parameters: schema(
                    json!({
                        "after": {"type": "string", "pattern": "^[0-9a-fA-F]{4,32}$",
                                  "description": "the `next` of the previous page"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 50},
                    }),
                    &[],
                ),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "delete".to_owned(),
                description: "Delete a document of the memory vault, with its search entries."
                    .to_owned(),
                parameters: schema(
                    json!({"id": {"type": "string", "pattern": "^[0-9a-fA-F]{4,32}$"}}),
                    &["id"],
                ),
                tier: Tier::Commit,
            },
            ActionSpec {
                name: "ingest".to_owned(),
                description: "Store a file (PDF, office, HTML, e-mail, Markdown, text) in the memory vault: converted, chunked and indexed."
                    .to_owned(),
                parameters: schema(
                    json!({
                        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS,
                                 "description": "the file's name; its extension picks the converter"},
                        "data": {"type": "string", "contentEncoding": "base64",
                                 "description": "the file's bytes, base64"},
                        "media_type": {"type": "string", "maxLength": 255},
                        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    }),
                    &["name", "data"],
                ),
                tier: Tier::Act,
            },
        ]
    }

    fn invoke(&self, agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "search" => self.search(args),
            "read" => self.read(args),
            "write" => self.write(agent, args),
            "list" => self.list(args),
            "delete" => self.delete(agent, args),
            "ingest" => self.ingest(agent, args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(other)
            ))),
        }
    }
}

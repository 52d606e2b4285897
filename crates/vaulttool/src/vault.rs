//! `vault`: the agents' memory — search, read and write the memory vault through
//! `p3ak-memory`.
//!
//! Config: `vault` (absolute path of the vault file). The key arrives in `welcome` as
//! [`VaultKey::to_handoff_bytes`] in hex ([`crate::vault_key`]); the memory vault is always
//! encrypted, so no key is an error.
//!
//! The vault is reopened for each call rather than held: reads open it read-only (no lock, so
//! the operator's `p3ak vault ingest` runs beside the plugin and its documents show up at the
//! next search), and `write` takes the writer lock only for its own commit, failing
//! `transient` while another writer holds it.
//!
//! | action | arguments | output | tier |
//! |---|---|---|---|
//! | `search` | `query`, `k?` (1–50, default 5) | `{hits: [{id, title, snippet, score, chunk, heading_path}]}` | observe |
//! | `read` | `id` (4–32 hex digits) | `{id, title, content, truncated}` | observe |
//! | `write` | `title`, `content`, `tags?` | `{id, status}` (`created` or `unchanged`) | act |
//!
//! Search ranks with BM25 and the title/heading signal (the semantic signal needs the
//! embedding model, which this plugin does not load). `write` stores the text as a Markdown
//! document and indexes it in the same commit, tagged `agent=<agent>` (a `tags.agent` given
//! by the model is replaced); the same content written twice is stored once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use p3ak_memory::{
    IngestItem, IngestOptions, IngestStatus, Memory, MemoryError, Mode, SearchRequest,
};
use p3ak_proto::{ActionSpec, Tier};
use p3ak_vault::{Access, Unlock, Vault, VaultError, VaultKey};
use serde::Deserialize;
use serde_json::{Value, json};

use p3ak_sdk::PluginError;
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};

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
}

/// The `vault` tool.
pub struct VaultTool {
    path: PathBuf,
    key: VaultKey,
    max_read: usize,
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
            key,
            max_read: max_frame / 2,
        };
        tool.open(Access::Read, "p3ak-plugins vault").map_err(|e| {
            PluginError::Config(format!(
                "cannot open the vault `{}`: {}",
                tool.path.display(),
                e.message
            ))
        })?;
        Ok(tool)
    }

    fn open(&self, access: Access, actor: &str) -> Result<Vault, ToolFailure> {
        // Another writer (an ingest, say) may be committing: wait a little for it.
        let mut vault = Vault::open_waiting(&self.path, Unlock::Key(&self.key), access, LOCK_WAIT)
            .map_err(vault_failure)?;
        vault.set_actor(actor);
        Ok(vault)
    }

    fn search(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("search", args, &["query", "k"])?;
        let query = args.string("query")?;
        let k = args.opt_int("k", 1, MAX_K)?.unwrap_or(5);
        if query.trim().is_empty() {
            return Err(ToolFailure::invalid("`search`: the query is empty"));
        }
        if query.len() > 4096 {
            return Err(ToolFailure::invalid(
                "`search`: the query is over 4096 bytes",
            ));
        }
        let vault = self.open(Access::Read, &actor(agent))?;
        let memory = Memory::open(&vault).map_err(memory_failure)?;
        let mut request = SearchRequest::new(query);
        request.k = usize::try_from(k).unwrap_or(5);
        request.mode = Mode::Hybrid;
        let results = memory.search(&request, None).map_err(memory_failure)?;
        let hits: Vec<Value> = results
            .hits
            .iter()
            .map(|hit| {
                json!({
                    "id": hit.id.to_hex(),
                    "title": hit.title,
                    "snippet": hit.snippet.text,
                    "score": hit.score,
                    "chunk": hit.chunk,
                    "heading_path": hit.heading_path,
                })
            })
            .collect();
        Ok(json!({"hits": hits}))
    }

    fn read(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("read", args, &["id"])?;
        let id = args.string("id")?;
        let vault = self.open(Access::Read, &actor(agent))?;
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
        let mut tags = BTreeMap::new();
        for (k, v) in args.opt_string_map("tags")?.unwrap_or_default() {
            if RESERVED_TAGS.contains(&k) {
                return Err(ToolFailure::invalid(format!(
                    "`write`: the tag `{k}` is set by the vault, not by the caller"
                )));
            }
            p3ak_vault::validate_tag(k, v).map_err(|_| {
                ToolFailure::invalid(format!("`write`: invalid tag `{}`", shorten(k)))
            })?;
            tags.insert(k.to_owned(), v.to_owned());
        }
        tags.insert("agent".to_owned(), agent.to_owned());
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
        let vault = self.open(Access::Write, &actor(agent))?;
        let mut memory = Memory::open(&vault).map_err(memory_failure)?;
        let options = IngestOptions {
            tags,
            writer_threads: 1,
            writer_memory_per_thread: 16 << 20,
            ..IngestOptions::default()
        };
        // A source of its own, so a later write never replaces this one.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let item = IngestItem::Bytes {
            name: format!("agent-{agent}-{stamp}.md"),
            title: Some(title.to_owned()),
            bytes: content.as_bytes().to_vec(),
        };
        let report = memory
            .ingest(vec![item], &options, &mut |_| {})
            .map_err(memory_failure)?;
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

impl Tool for VaultTool {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            ActionSpec {
                name: "search".to_owned(),
                description: "Search the memory vault by words; returns the best passages."
                    .to_owned(),
                parameters: schema(
                    json!({
                        "query": {"type": "string", "minLength": 1, "maxLength": 4096},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
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
        ]
    }

    fn invoke(&mut self, agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "search" => self.search(agent, args),
            "read" => self.read(agent, args),
            "write" => self.write(agent, args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(other)
            ))),
        }
    }
}

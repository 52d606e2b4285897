//! The API's JSON shapes, shared by the REST routes, the MCP server and the OpenAPI document.
//! Requests refuse unknown fields, so a misspelt option is an error rather than ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which signals rank a search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Words only (BM25).
    Bm25,
    /// Meaning only (embeddings; needs the model installed).
    Semantic,
    /// Both, fused.
    #[default]
    Hybrid,
}

/// A search of the memory vault.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What to look for (1 to 4096 bytes).
    pub query: String,
    /// Ranking signals (default `hybrid`).
    #[serde(default)]
    pub mode: SearchMode,
    /// Results wanted, 1 to 50 (default 10).
    #[serde(default)]
    pub k: Option<u32>,
    /// Only documents carrying all these tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Include how each signal placed each result.
    #[serde(default)]
    pub explain: bool,
}

/// How one signal placed a result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalPart {
    /// `bm25` or `semantic`.
    pub signal: String,
    /// 1-based rank within the signal.
    pub rank: u32,
    /// The signal's own score (BM25 score, cosine).
    pub score: f32,
    /// What it added to the fused score.
    pub contribution: f32,
}

/// One result: a passage (chunk) of a document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// The document's id (hex).
    pub id: String,
    /// The chunk's position in its document.
    pub chunk: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Headings above the passage.
    #[serde(default)]
    pub heading_path: Vec<String>,
    /// The passage's text (shortened).
    pub snippet: String,
    /// Byte ranges of `snippet` that matched the query's words.
    #[serde(default)]
    pub highlights: Vec<[u32; 2]>,
    pub score: f32,
    /// Present when `explain` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<SignalPart>>,
}

/// Search results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// The mode that ran (a semantic search without a model says so in `notes`).
    pub mode: SearchMode,
    /// Why a signal was left out or is partial.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Chunks with embeddings, and all chunks (semantic coverage); with `explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_chunks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
}

/// A document in the vault, without its content.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DocumentInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The stored object's media type (`text/markdown`, `application/pdf`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Creation time, Unix seconds.
    pub created: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A page of documents, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A text document's content.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DocumentText {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub content: String,
    /// The content was cut at the read limit.
    pub truncated: bool,
}

/// A note to store (Markdown), indexed for search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub title: String,
    pub content: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where the content came from (a URL, a mail's Message-ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A document that was stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stored {
    pub id: String,
    /// Passages indexed for search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
}

/// A file to ingest: converted (PDF, Office, HTML, e-mail, Markdown, text, …), chunked and
/// indexed like `p3ak memory ingest` does.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The file's name (its extension helps pick the converter).
    pub name: String,
    /// The media type the client declared, if any.
    pub media_type: Option<String>,
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Tags to put on the document.
    pub tags: BTreeMap<String, String>,
}

/// A document that was removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// A write that waits for a human's approval (HTTP 202): it runs once approved, and not at all
/// if refused or timed out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The approval's id (`p3ak pending`, the console).
    pub approval: String,
    /// The approval level asked for.
    pub level: u8,
    pub message: String,
}

/// A question for an agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The agent (default: the kernel's default agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The conversation (letters, digits, `-`, `_`, `.`; default: a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    pub text: String,
}

/// An agent's whole answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatReply {
    pub conversation: String,
    pub text: String,
}

/// Every error the API answers with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_large`, `unsupported_media_type`, `rate_limited`, `too_many_waiting`,
    /// `not_permitted`, `unavailable`, `timeout`, `internal`.
    pub error: String,
    /// One line for a person.
    pub message: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the kernel's process answers.
    pub status: String,
}

/// `GET /readyz`: 200 when everything configured runs, 503 otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    /// Plugins configured and running.
    pub plugins_running: u32,
    /// Plugins configured and not running, by name.
    pub plugins_down: Vec<String>,
    /// Whether the approval daemon runs.
    pub approvals: bool,
}

/// `GET /v1/whoami`: who the API takes the caller for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `uid:1000` (a peer on the Unix socket) or `token:<id>`: the sender the policy and the
    /// audit log see.
    pub principal: String,
    /// What the caller may do.
    pub scopes: Vec<String>,
}

/// The kernel's state (`p3ak status`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub pid: u32,
    /// Agents by name.
    pub agents: Vec<String>,
    /// Each plugin: name, kind, state, detail, restarts.
    #[schema(value_type = Vec<Object>)]
    pub plugins: Vec<serde_json::Value>,
    /// Approvals waiting.
    pub pending: u64,
    /// The approval daemon: pid, running, console.
    #[schema(value_type = Object)]
    pub hitl: serde_json::Value,
    /// Model tokens used since the start, by provider plugin.
    #[schema(value_type = Object)]
    pub usage_by_provider: serde_json::Value,
}

/// A vault file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VaultInfo {
    /// `kernel` (the audit log, secrets, sessions) or `memory` (documents).
    pub name: String,
    /// Size on disk, bytes (encrypted).
    pub bytes: u64,
    /// Last change, Unix seconds.
    pub modified: i64,
}

/// An approval waiting (read-only here: approving stays with the approval daemon).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: String,
    pub agent: String,
    pub action: String,
    pub level: u8,
    /// Unix milliseconds.
    pub asked_ms: i64,
    /// Unix milliseconds; then it is refused.
    pub expires_ms: i64,
}

/// An audit log entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// What happened (`kernel.decision`, `token.created`, …; see docs/audit.md).
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The entry's fields, secrets scrubbed.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Hex leaf hash of the previous entry (the hash chain).
    pub prev: String,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Entries in the whole log.
    pub len: u64,
}

/// The audit log's check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerified {
    /// No problem found.
    pub ok: bool,
    /// Entries, checkpoint coverage, problems (first first), warnings.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// An entry with its inclusion proof against the latest signed checkpoint (RFC 9162).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditProof {
    #[schema(value_type = Object)]
    pub entry: serde_json::Value,
    pub leaf_hash: String,
    pub tree_size: u64,
    /// The audit path, hex hashes from the leaf up.
    pub proof: Vec<String>,
    /// The signed checkpoint: size, root, time, signature, public key.
    #[schema(value_type = Object)]
    pub checkpoint: serde_json::Value,
}

/// A token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A token to make: its scopes must be among the caller's own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// `status`, `vault:read`, `vault:write`, `chat`, `audit:read`, `tokens`.
    pub scopes: Vec<String>,
    /// Seconds until it expires; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A token just made: `token` is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    pub token: String,
    pub info: Token,
}

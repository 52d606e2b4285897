//! What the REST routes and the MCP server ask of the kernel, for one authenticated caller.
//! The kernel implements it ([`crate::KernelBackend`] once wired); tests may use their own.

use std::future::Future;

use crate::model::{
    ChatReply, ChatRequest, Deleted, DocumentList, DocumentText, NewNote, SearchQuery,
    SearchResults, Stored, Upload,
};

/// Who is calling, as the policy and the audit log see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `uid:1000` for a Unix-socket peer, `token:<id>` for a bearer token.
    pub principal: String,
    /// What the caller may do (`vault:read`, `vault:write`, `chat`, `audit:read`, `status`,
    /// `tokens`).
    pub scopes: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `scope`.
    #[must_use]
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a backend call failed; each maps to one HTTP status and one MCP error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The request is wrong (bad id, empty query, …): 400.
    #[error("{0}")]
    Invalid(String),
    /// No such document, agent or entry: 404.
    #[error("{0}")]
    NotFound(String),
    /// The policy refused it (the same opaque words an agent gets): 403.
    #[error("action not permitted")]
    NotPermitted,
    /// The caller lacks a scope: 403.
    #[error("this needs the `{0}` scope")]
    Scope(String),
    /// A human must approve it first; it waits as `approval` and runs once approved: 202.
    #[error("waiting for approval `{approval}` (level {level})")]
    Pending {
        /// The approval's id.
        approval: String,
        /// The level asked for.
        level: u8,
    },
    /// The body or file is over a limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// The caller is over a rate limit; it may retry in `retry_after` seconds: 429
    /// (`rate_limited`).
    #[error("{message}")]
    RateLimited {
        /// One line, saying when to retry.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The caller already has `api.max_waiting_approvals` calls waiting for a human; nothing
    /// more of theirs reaches the road until a person answers some: 429
    /// (`too_many_waiting`).
    #[error("{message}")]
    TooManyWaiting {
        /// One line: how many wait, and that a person must answer them first.
        message: String,
        /// Seconds after which trying again makes sense.
        retry_after: u64,
    },
    /// The kernel or a plugin cannot serve it now: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500 (details go to the log, not the caller).
    #[error("{0}")]
    Internal(String),
}

/// The kernel as the API and the MCP server see it.
pub trait Backend: Send + Sync + 'static {
    /// Searches the memory vault (`vault:read`).
    fn search(
        &self,
        caller: &Caller,
        query: SearchQuery,
    ) -> impl Future<Output = Result<SearchResults, BackendError>> + Send;

    /// Reads a text document (`vault:read`).
    fn read(
        &self,
        caller: &Caller,
        id: String,
    ) -> impl Future<Output = Result<DocumentText, BackendError>> + Send;

    /// Lists documents, newest first, `limit` at most, after the id `after` (`vault:read`).
    fn list(
        &self,
        caller: &Caller,
        after: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<DocumentList, BackendError>> + Send;

    /// Stores a note through the road (`vault:write`).
    fn write(
        &self,
        caller: &Caller,
        note: NewNote,
    ) -> impl Future<Output = Result<Stored, BackendError>> + Send;

    /// Removes a document and its passages through the road (`vault:write`).
    fn delete(
        &self,
        caller: &Caller,
        id: String,
    ) -> impl Future<Output = Result<Deleted, BackendError>> + Send;

    /// Converts, chunks and stores a file through the road (`vault:write`).
    fn ingest(
        &self,
        caller: &Caller,
        upload: Upload,
    ) -> impl Future<Output = Result<Stored, BackendError>> + Send;

    /// Asks an agent and waits for its whole reply (`chat`).
    fn ask(
        &self,
        caller: &Caller,
        request: ChatRequest,
    ) -> impl Future<Output = Result<ChatReply, BackendError>> + Send;
}

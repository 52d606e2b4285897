//! P3AK as an MCP server: MCP clients (desktop assistants, coding agents) search and read the
//! owner's vault, add notes and ask an agent, each as the [`Caller`] it authenticated as.
//!
//! The handler only calls a [`Backend`]; the backend takes the kernel's road, so the policy
//! decides and the audit log records every call as for the REST API. Two transports:
//! - streamable HTTP at `/mcp` ([`http_service`]), the caller taken from each HTTP request (the
//!   API's auth layer puts it in the request's extensions; no caller, no answer);
//! - stdio ([`serve_stdio`], `p3ak mcp`), with one fixed caller; its backend is usually
//!   [`crate::remote::RemoteBackend`], the REST API over the kernel's Unix socket.
//!
//! A tool is listed only when the caller holds its scope, and calling an unlisted one is a
//! protocol error. A [`BackendError`] is a tool error (`isError: true`, one line); a note that
//! waits for a human's approval is a result, not an error.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::SessionConfig;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend::{Backend, BackendError, Caller};
use crate::model::{ChatRequest, NewNote, SearchMode, SearchQuery};

mod sessions;

pub use sessions::BoundedSessions;

/// What the server tells a client it is (`initialize`'s `instructions`).
pub const INSTRUCTIONS: &str = "P3AK is the owner's private AI kernel. Its encrypted memory \
vault holds the owner's notes and documents: `search` finds passages, `list_documents` pages \
through documents and `read_document` reads one; `add_note` stores a Markdown note (it may wait \
for the owner's approval); `ask_agent` asks one of the owner's agents. Every call is checked \
by the owner's policy and recorded in the audit log; the tools listed are those your access \
allows.";

/// The scopes the tools need.
const READ: &str = "vault:read";
const WRITE: &str = "vault:write";
const CHAT: &str = "chat";

/// The tools, with the scope each needs.
const TOOLS: [(&str, &str); 5] = [
    ("search", READ),
    ("read_document", READ),
    ("list_documents", READ),
    ("add_note", WRITE),
    ("ask_agent", CHAT),
];

/// Where the handler finds who is calling.
#[derive(Debug, Clone)]
enum Who {
    /// One caller for the whole connection (stdio).
    Fixed(Caller),
    /// The [`Caller`] the HTTP request carries in its extensions.
    FromRequest,
}

/// The MCP server: a [`ServerHandler`] over a [`Backend`], for one caller or per request.
pub struct P3akMcp<B: Backend> {
    backend: Arc<B>,
    who: Who,
}

impl<B: Backend> Clone for P3akMcp<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            who: self.who.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for P3akMcp<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P3akMcp")
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> P3akMcp<B> {
    /// A server that acts for `caller` on every request (stdio, tests).
    pub fn for_caller(backend: Arc<B>, caller: Caller) -> Self {
        Self {
            backend,
            who: Who::Fixed(caller),
        }
    }

    /// A server that acts for the [`Caller`] in each HTTP request's extensions, and refuses a
    /// request without one.
    pub fn per_request(backend: Arc<B>) -> Self {
        Self {
            backend,
            who: Who::FromRequest,
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        match &self.who {
            Who::Fixed(caller) => Ok(caller.clone()),
            Who::FromRequest => context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Caller>())
                .cloned()
                .ok_or_else(|| McpError::invalid_request("not authenticated", None)),
        }
    }

    async fn run(&self, caller: &Caller, name: &str, args: JsonObject) -> CallToolResult {
        let args = Value::Object(args);
        let outcome = match name {
            "search" => match parse::<SearchArgs>(args) {
                Ok(a) => {
                    let query = SearchQuery {
                        query: a.query,
                        mode: a.mode.unwrap_or_default(),
                        k: a.k,
                        tags: a.tags,
                        explain: false,
                    };
                    json_result(self.backend.search(caller, query).await)
                }
                Err(e) => Err(e),
            },
            "read_document" => match parse::<ReadArgs>(args) {
                Ok(a) => match self.backend.read(caller, a.id).await {
                    Ok(doc) => {
                        let structured = serde_json::to_value(&doc).unwrap_or(Value::Null);
                        Ok(result(doc.content, structured))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            "list_documents" => match parse::<ListArgs>(args) {
                Ok(a) => match a.limit.unwrap_or(50) {
                    limit @ 1..=200 => json_result(self.backend.list(caller, a.after, limit).await),
                    _ => Err(BackendError::Invalid(
                        "`limit` must be between 1 and 200".into(),
                    )),
                },
                Err(e) => Err(e),
            },
            "add_note" => match parse::<NewNote>(args) {
                Ok(note) => match self.backend.write(caller, note).await {
                    Err(BackendError::Pending { approval, level }) => Ok(result(
                        format!(
                            "The note waits for the owner's approval `{approval}` (level \
                             {level}); it is stored once approved, and not at all if refused."
                        ),
                        json!({ "pending": true, "approval": approval, "level": level }),
                    )),
                    other => json_result(other),
                },
                Err(e) => Err(e),
            },
            "ask_agent" => match parse::<ChatRequest>(args) {
                Ok(request) => match self.backend.ask(caller, request).await {
                    Ok(reply) => {
                        let structured = serde_json::to_value(&reply).unwrap_or(Value::Null);
                        Ok(result(reply.text, structured))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            _ => Err(BackendError::NotFound(format!("no tool `{name}`"))),
        };
        outcome.unwrap_or_else(|e| CallToolResult::error(vec![ContentBlock::text(message(&e))]))
    }
}

impl<B: Backend> ServerHandler for P3akMcp<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("p3ak", env!("CARGO_PKG_VERSION")).with_title("P3AK"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&context)?;
        Ok(ListToolsResult::with_all_items(tools_for(&caller)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&context)?;
        let name = request.name.as_ref();
        let listed = TOOLS
            .iter()
            .any(|(tool, scope)| *tool == name && caller.may(scope));
        if !listed {
            return Err(McpError::invalid_params(
                format!("no tool `{}`", one_line(name)),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        Ok(self.run(&caller, name, args).await.into())
    }
}

/// The tools `caller` may use, in a stable order.
#[must_use]
pub fn tools_for(caller: &Caller) -> Vec<Tool> {
    TOOLS
        .iter()
        .filter(|(_, scope)| caller.may(scope))
        .filter_map(|(name, _)| tool(name))
        .collect()
}

fn tool(name: &str) -> Option<Tool> {
    let read_only = ToolAnnotations::new()
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false);
    let (title, description, schema, annotations) = match name {
        "search" => (
            "Search the vault",
            "Searches the owner's memory vault and returns the best passages (id, chunk, \
             title, snippet, score). Read a whole document with `read_document`.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 4096,
                              "description": "What to look for."},
                    "mode": {"type": "string", "enum": ["bm25", "semantic", "hybrid"],
                             "description": "Words (bm25), meaning (semantic) or both (hybrid, the default)."},
                    "k": {"type": "integer", "minimum": 1, "maximum": 50,
                          "description": "How many passages (default 10)."},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "Only documents carrying all these tags."}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            read_only.clone(),
        ),
        "read_document" => (
            "Read a document",
            "Reads a text document of the vault by its id (from `search` or `list_documents`).",
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 128,
                           "description": "The document's id (hex)."}
                },
                "required": ["id"],
                "additionalProperties": false
            }),
            read_only.clone(),
        ),
        "list_documents" => (
            "List documents",
            "Lists the vault's documents, newest first, without their content. Pass the \
             answer's `next` as `after` for the next page.",
            json!({
                "type": "object",
                "properties": {
                    "after": {"type": "string", "minLength": 1, "maxLength": 128,
                              "description": "List the documents after this id."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200,
                              "description": "At most this many (default 50)."}
                },
                "additionalProperties": false
            }),
            read_only,
        ),
        "add_note" => (
            "Add a note",
            "Stores a Markdown note in the vault, indexed for search. It only adds (it never \
             changes or removes a document); the owner's policy may make it wait for approval.",
            json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "description": "The note's title."},
                    "content": {"type": "string", "description": "The note, in Markdown."},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "Tags to put on the note."},
                    "source": {"type": "string",
                               "description": "Where the content came from (a URL, a mail's Message-ID)."}
                },
                "required": ["title", "content"],
                "additionalProperties": false
            }),
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(false),
        ),
        "ask_agent" => (
            "Ask an agent",
            "Asks one of the owner's agents and returns its whole answer. The agent may use \
             its own tools under the owner's policy. Pass the answer's `conversation` to go on \
             with it.",
            json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1, "description": "The question."},
                    "agent": {"type": "string", "minLength": 1,
                              "description": "The agent (default: the kernel's default agent)."},
                    "conversation": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$",
                                     "description": "Continue this conversation (default: a new one)."}
                },
                "required": ["text"],
                "additionalProperties": false
            }),
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        _ => return None,
    };
    let Value::Object(schema) = schema else {
        return None;
    };
    let mut tool = Tool::new(Cow::Owned(name.to_owned()), description, schema);
    tool.title = Some(title.to_owned());
    let mut annotations = annotations;
    annotations.title = Some(title.to_owned());
    tool.annotations = Some(annotations);
    Some(tool)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    k: Option<u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

fn parse<T: for<'de> Deserialize<'de>>(args: Value) -> Result<T, BackendError> {
    serde_json::from_value(args)
        .map_err(|e| BackendError::Invalid(format!("invalid arguments: {e}")))
}

fn result(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

fn json_result<T: serde::Serialize>(
    outcome: Result<T, BackendError>,
) -> Result<CallToolResult, BackendError> {
    let value = serde_json::to_value(outcome?)
        .map_err(|e| BackendError::Internal(format!("cannot encode a result: {e}")))?;
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| BackendError::Internal(format!("cannot encode a result: {e}")))?;
    Ok(result(text, value))
}

/// The one line a client sees for `error`; internal details go to the log only.
#[must_use]
pub fn message(error: &BackendError) -> String {
    match error {
        BackendError::Internal(detail) => {
            tracing::error!("mcp: {detail}");
            "the kernel could not do this; its log says why".to_owned()
        }
        other => one_line(&other.to_string()),
    }
}

fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    line.trim().to_owned()
}

/// How `/mcp` bounds what clients hold open.
#[derive(Debug, Clone)]
pub struct McpHttpConfig {
    /// Sessions open at once; a new one beyond it is refused (503) until one ends.
    pub max_sessions: usize,
    /// A session idle this long is closed.
    pub session_idle: Duration,
    /// `Host` values accepted (DNS-rebinding guard); empty accepts any (a public listener
    /// behind TLS and tokens lists its own names).
    pub allowed_hosts: Vec<String>,
    /// The largest JSON-RPC body accepted.
    pub max_body_bytes: usize,
}

impl Default for McpHttpConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            session_idle: Duration::from_secs(300),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_body_bytes: 4 << 20,
        }
    }
}

/// The `/mcp` endpoint: a tower service to mount with `Router::nest_service("/mcp", …)`
/// behind the API's auth layer, which puts the [`Caller`] in each request's extensions.
pub fn http_service<B: Backend>(
    backend: Arc<B>,
    config: &McpHttpConfig,
) -> StreamableHttpService<P3akMcp<B>, BoundedSessions> {
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(config.session_idle);
    session_config.init_timeout = Some(Duration::from_secs(30));
    let sessions = BoundedSessions::new(session_config, config.max_sessions);
    let mut http = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts.iter().cloned())
        .with_max_request_body_bytes(config.max_body_bytes);
    if config.allowed_hosts.is_empty() {
        http = http.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(P3akMcp::per_request(Arc::clone(&backend))),
        Arc::new(sessions),
        http,
    )
}

/// Why the stdio server stopped early.
#[derive(Debug, thiserror::Error)]
#[error("the MCP session failed: {0}")]
pub struct StdioError(String);

/// Serves MCP on stdin/stdout for `caller` until the client closes stdin.
///
/// # Errors
/// When the client's handshake fails or the session's task dies.
pub async fn serve_stdio<B: Backend>(backend: B, caller: Caller) -> Result<(), StdioError> {
    let server = P3akMcp::for_caller(Arc::new(backend), caller);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| StdioError(one_line(&e.to_string())))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| StdioError(one_line(&e.to_string())))
}

//! The REST routes. Each documents itself for the OpenAPI file (`crate::openapi`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use p3ak_kernel::control::ControlEvent;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::App;
use crate::backend::{Backend, BackendError, Caller};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, document_id};
use crate::model::{
    Accepted, Approval, AuditEntry, AuditPage, AuditProof, AuditVerified, ChatReply, ChatRequest,
    Deleted, DocumentList, DocumentText, ErrorBody, Health, IssuedToken, NewNote, NewToken, Ready,
    SearchQuery, SearchResults, Status, Stored, Token, Upload, VaultInfo, WhoAmI,
};

type AppState<B> = State<Arc<App<B>>>;

/// A write's answer: 201 with what was stored, or 202 when it waits for approval.
fn written<T: serde::Serialize>(result: Result<T, BackendError>, done: StatusCode) -> Response {
    match result {
        Ok(value) => (done, Json(value)).into_response(),
        Err(BackendError::Pending { approval, level }) => (
            StatusCode::ACCEPTED,
            Json(Accepted {
                message: format!(
                    "waiting for approval `{approval}` (level {level}); it runs once approved"
                ),
                approval,
                level,
            }),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The kernel's process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Everything configured runs: plugins and the approval daemon.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = Ready),
    (status = 503, description = "not ready (what is down is listed)", body = Ready)))]
pub(crate) async fn readyz<B: Backend>(State(app): AppState<B>) -> Response {
    let status = app.kernel.status();
    let mut running = 0u32;
    let mut down = Vec::new();
    for plugin in &status.plugins {
        let name = plugin.get("name").and_then(|v| v.as_str()).unwrap_or("?");
        match plugin.get("state").and_then(|v| v.as_str()) {
            Some("running") => running += 1,
            Some("disabled") => {}
            _ => down.push(name.to_owned()),
        }
    }
    let approvals = status
        .hitl
        .get("running")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let ready = down.is_empty() && approvals;
    let body = Ready {
        ready,
        plugins_running: running,
        plugins_down: down,
        approvals,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Who the API takes the caller for, and its scopes (any authenticated caller; counted
/// against the `status` rate).
#[utoipa::path(get, path = "/v1/whoami", tag = "status", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        principal: caller.principal,
        scopes: caller.scopes,
    })
}

/// The kernel's state: plugins, agents, approvals waiting, model usage.
#[utoipa::path(get, path = "/v1/status", tag = "status", security(("bearer" = ["status"])),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn status<B: Backend>(State(app): AppState<B>) -> Json<Status> {
    let s = app.kernel.status();
    Json(Status {
        pid: s.pid,
        agents: s.agents,
        plugins: s.plugins,
        pending: u64::try_from(s.pending).unwrap_or(u64::MAX),
        hitl: s.hitl,
        usage_by_provider: serde_json::to_value(&s.usage_by_provider).unwrap_or_default(),
    })
}

/// The kernel's metrics in the OpenMetrics text format (Prometheus scrapes it): road latency
/// by step, decisions, approvals, plugin restarts, vault sizes, search latency, model tokens,
/// API requests. `docs/operations.md` lists every family.
#[utoipa::path(get, path = "/metrics", tag = "status", security(("bearer" = ["status"])),
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics<B: Backend>(State(app): AppState<B>) -> Response {
    (
        [(header::CONTENT_TYPE, p3ak_kernel::metrics::CONTENT_TYPE)],
        app.kernel.metrics().encode(),
    )
        .into_response()
}

/// Approvals waiting, oldest first (read-only: approve with `p3ak approve` or the console).
#[utoipa::path(get, path = "/v1/approvals", tag = "status", security(("bearer" = ["status"])),
    responses((status = 200, body = Vec<Approval>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn approvals<B: Backend>(State(app): AppState<B>) -> Json<Vec<Approval>> {
    Json(
        app.kernel
            .pending()
            .list()
            .into_iter()
            .map(|p| Approval {
                id: p.id,
                agent: p.agent,
                action: p.action,
                level: p.level,
                asked_ms: p.asked_ms,
                expires_ms: p.expires_ms,
            })
            .collect(),
    )
}

fn vault_files<B: Backend>(app: &App<B>) -> Vec<VaultInfo> {
    let home = app.kernel.home();
    [
        ("kernel", home.kernel_vault()),
        ("memory", home.memory_vault()),
    ]
    .into_iter()
    .filter_map(|(name, path)| {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Some(VaultInfo {
            name: name.to_owned(),
            bytes: meta.len(),
            modified,
        })
    })
    .collect()
}

/// The vaults: `kernel` (audit log, secrets, sessions) and `memory` (documents).
#[utoipa::path(get, path = "/v1/vaults", tag = "vault", security(("bearer" = ["vault:read"])),
    responses((status = 200, body = Vec<VaultInfo>), (status = 401, body = ErrorBody)))]
pub(crate) async fn vaults<B: Backend>(State(app): AppState<B>) -> Json<Vec<VaultInfo>> {
    Json(vault_files(&app))
}

/// One vault.
#[utoipa::path(get, path = "/v1/vaults/{name}", tag = "vault",
    security(("bearer" = ["vault:read"])),
    params(("name" = String, Path, description = "`kernel` or `memory`")),
    responses((status = 200, body = VaultInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn vault<B: Backend>(
    State(app): AppState<B>,
    Path(name): Path<String>,
) -> Result<Json<VaultInfo>, ApiError> {
    vault_files(&app)
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such vault (there are `kernel` and `memory`)"))
}

/// Paging of documents.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// The `next` of the previous page.
    after: Option<String>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
}

/// Documents in the memory vault, newest first.
#[utoipa::path(get, path = "/v1/documents", tag = "vault",
    security(("bearer" = ["vault:read"])), params(ListParams),
    responses((status = 200, body = DocumentList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn list_documents<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<DocumentList>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 200"));
    }
    let after = params.after.as_deref().map(document_id).transpose()?;
    Ok(Json(app.backend.list(&caller, after, limit).await?))
}

/// A text document's content (a converted file's passages are found by search).
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "vault",
    security(("bearer" = ["vault:read"])),
    params(("id" = String, Path, description = "hex id or a unique prefix (4+)")),
    responses((status = 200, body = DocumentText), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get_document<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DocumentText>, ApiError> {
    let id = document_id(&id)?;
    Ok(Json(app.backend.read(&caller, id).await?))
}

/// Stores a note through the kernel's road: the policy decides (channel `api`).
#[utoipa::path(post, path = "/v1/documents", tag = "vault",
    security(("bearer" = ["vault:write"])), request_body = NewNote,
    responses((status = 201, body = Stored),
        (status = 202, description = "waits for a human's approval", body = Accepted),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(crate) async fn put_document<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    ApiJson(note): ApiJson<NewNote>,
) -> Response {
    written(app.backend.write(&caller, note).await, StatusCode::CREATED)
}

/// Removes a document and its passages through the road.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "vault",
    security(("bearer" = ["vault:write"])),
    params(("id" = String, Path, description = "hex id or a unique prefix (4+)")),
    responses((status = 200, body = Deleted),
        (status = 202, description = "waits for a human's approval", body = Accepted),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_document<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match document_id(&id) {
        Ok(id) => written(app.backend.delete(&caller, id).await, StatusCode::OK),
        Err(e) => e.into_response(),
    }
}

/// Tags of an upload, as a JSON object in the `tags` field.
fn upload_tags(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    serde_json::from_str(text)
        .map_err(|_| ApiError::bad_request("`tags` must be a JSON object of strings"))
}

/// Converts, chunks and stores a file (PDF, Office, HTML, e-mail, Markdown, text, …) through
/// the road. `multipart/form-data` with a `file` part and an optional `tags` part (a JSON
/// object).
#[utoipa::path(post, path = "/v1/documents/ingest", tag = "vault",
    security(("bearer" = ["vault:write"])),
    request_body(content_type = "multipart/form-data", description = "`file`, and `tags` (JSON object)"),
    responses((status = 201, body = Stored),
        (status = 202, description = "waits for a human's approval", body = Accepted),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub(crate) async fn ingest<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let upload = match read_upload(&app, &headers, multipart).await {
        Ok(upload) => upload,
        Err(e) => return e.into_response(),
    };
    written(
        app.backend.ingest(&caller, upload).await,
        StatusCode::CREATED,
    )
}

async fn read_upload<B: Backend>(
    app: &App<B>,
    headers: &HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Upload, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = app.kernel.config().api.max_upload_bytes;
    if declared.is_some_and(|n| n > limit.saturating_add(64 << 10)) {
        return Err(ApiError::too_large(format!(
            "the file is over {limit} bytes (`api.max_upload_bytes`)"
        )));
    }
    let mut multipart = multipart.map_err(|_| {
        ApiError::media_type("send the file as `multipart/form-data` with a `file` part")
    })?;
    let mut file = None;
    let mut tags = BTreeMap::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::too_large(format!(
                    "the file is over {limit} bytes (`api.max_upload_bytes`)"
                )));
            }
            Err(e) => return Err(ApiError::bad_request(e.body_text())),
        };
        match field.name() {
            Some("file") => {
                let name = field
                    .file_name()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("the `file` part needs a file name"))?;
                let media_type = field.content_type().map(str::to_owned);
                let data = field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::too_large(format!(
                            "the file is over {limit} bytes (`api.max_upload_bytes`)"
                        ))
                    } else {
                        ApiError::bad_request(e.body_text())
                    }
                })?;
                if data.len() > limit {
                    return Err(ApiError::too_large(format!(
                        "the file is {} bytes, over {limit} (`api.max_upload_bytes`)",
                        data.len()
                    )));
                }
                if file.is_some() {
                    return Err(ApiError::bad_request("send one `file` part"));
                }
                file = Some((name, media_type, data.to_vec()));
            }
            Some("tags") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request(e.body_text()))?;
                tags = upload_tags(&text)?;
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unknown part `{}` (send `file` and `tags`)",
                    other.chars().take(64).collect::<String>()
                )));
            }
            None => return Err(ApiError::bad_request("a part without a name")),
        }
    }
    let (name, media_type, data) = file.ok_or_else(|| ApiError::bad_request("no `file` part"))?;
    Ok(Upload {
        name,
        media_type,
        data,
        tags,
    })
}

/// Searches the memory vault: words (BM25), meaning (embeddings) or both fused.
#[utoipa::path(post, path = "/v1/search", tag = "vault",
    security(("bearer" = ["vault:read"])), request_body = SearchQuery,
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(crate) async fn search<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    ApiJson(query): ApiJson<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    if query.query.trim().is_empty() || query.query.len() > 4096 {
        return Err(ApiError::bad_request(
            "`query` must have 1 to 4096 bytes of text",
        ));
    }
    if query.k.is_some_and(|k| !(1..=50).contains(&k)) {
        return Err(ApiError::bad_request("`k` must be between 1 and 50"));
    }
    Ok(Json(app.backend.search(&caller, query).await?))
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// A fresh conversation id.
fn new_conversation() -> Result<String, ApiError> {
    let bytes: [u8; 8] = p3ak_crypto::random_array().map_err(|e| ApiError::internal(&e))?;
    Ok(format!("api-{}", hex::encode(bytes)))
}

/// Asks an agent. With `Accept: text/event-stream` the answer streams as server-sent events:
/// `chunk` (`{"text"}`, as the model writes), `approval` (`{"id","level","text"}`: an action
/// waits for a human), `notice` (`{"text"}`), then `reply` (`{"conversation","text"}`) or
/// `error` (`{"error","message"}`). Otherwise one JSON `ChatReply`.
#[utoipa::path(post, path = "/v1/chat", tag = "chat", security(("bearer" = ["chat"])),
    request_body = ChatRequest,
    responses((status = 200, description = "the reply (JSON), or its events (`text/event-stream`)",
        body = ChatReply),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn chat<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    if request.text.trim().is_empty() {
        return Err(ApiError::bad_request("`text` is empty"));
    }
    if request.conversation.is_none() {
        request.conversation = Some(new_conversation()?);
    }
    if !wants_stream(&headers) {
        let reply = app.backend.ask(&caller, request).await?;
        return Ok(Json(reply).into_response());
    }
    let conversation = request.conversation.clone().unwrap_or_default();
    let mut inbound =
        p3ak_proto::Inbound::new(conversation.clone(), caller.principal.clone(), request.text);
    inbound.agent = request.agent;
    let (events, receiver) = mpsc::unbounded_channel();
    let kernel = Arc::clone(&app.kernel);
    let finals = events.clone();
    tokio::spawn(async move {
        let last = match kernel.turn(inbound, "api", events).await {
            Ok(text) => ControlEvent::Reply { text },
            Err(e) => ControlEvent::Error {
                message: e.to_string(),
            },
        };
        let _ = finals.send(last);
    });
    Ok(Sse::new(chat_events(receiver, conversation))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn chat_events(
    receiver: mpsc::UnboundedReceiver<ControlEvent>,
    conversation: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (receiver, conversation, false),
        |(mut receiver, conversation, ended)| async move {
            if ended {
                return None;
            }
            let event = receiver.recv().await?;
            let (name, data, last) = match event {
                ControlEvent::Chunk { text } => ("chunk", serde_json::json!({"text": text}), false),
                ControlEvent::Notice { text } => {
                    ("notice", serde_json::json!({"text": text}), false)
                }
                ControlEvent::Approval {
                    id, level, text, ..
                } => (
                    "approval",
                    serde_json::json!({"id": id, "level": level, "text": text}),
                    false,
                ),
                ControlEvent::Reply { text } => (
                    "reply",
                    serde_json::json!({"conversation": conversation, "text": text}),
                    true,
                ),
                ControlEvent::Error { message } => (
                    "error",
                    serde_json::json!({"error": "turn_failed", "message": message}),
                    true,
                ),
                _ => ("notice", serde_json::json!({"text": ""}), false),
            };
            let event = Event::default().event(name).data(data.to_string());
            Some((Ok(event), (receiver, conversation, last)))
        },
    )
}

/// Which audit entries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// The first entry (from 0); absent: the last `limit` entries.
    from: Option<u64>,
    /// 1 to 1000 (default 50).
    limit: Option<u64>,
}

/// Entries of the kernel's audit log.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = ["audit:read"])),
    params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn audit<B: Backend>(
    State(app): AppState<B>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    let log = app.kernel.audit();
    let len = log.len();
    let from = params.from.unwrap_or_else(|| len.saturating_sub(limit));
    let entries = log
        .entries(from, from.saturating_add(limit))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntry {
                seq: e.seq,
                time_ms: e.time_ms,
                kind: e.kind,
                actor: e.actor,
                payload: e.payload,
                prev: e.prev,
            })
            .collect(),
        len,
    }))
}

/// Checks every entry, the hash chain and the signed checkpoints.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = ["audit:read"])),
    responses((status = 200, body = AuditVerified)))]
pub(crate) async fn audit_verify<B: Backend>(
    State(app): AppState<B>,
) -> Result<Json<AuditVerified>, ApiError> {
    let report = app
        .kernel
        .audit()
        .verify()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let ok = report
        .get("problems")
        .and_then(serde_json::Value::as_array)
        .is_some_and(Vec::is_empty);
    Ok(Json(AuditVerified { ok, report }))
}

/// An entry with its inclusion proof against the latest signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/{seq}/proof", tag = "audit",
    security(("bearer" = ["audit:read"])),
    params(("seq" = u64, Path, description = "the entry's number, from 0")),
    responses((status = 200, body = AuditProof), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn audit_proof<B: Backend>(
    State(app): AppState<B>,
    Path(seq): Path<String>,
) -> Result<Json<AuditProof>, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("the entry number must be a whole number"))?;
    let log = app.kernel.audit();
    if seq >= log.len() {
        return Err(ApiError::not_found(format!(
            "no entry {seq}: the log has {}",
            log.len()
        )));
    }
    let proof = log
        .prove(seq)
        .await
        .map_err(|e| ApiError::not_found(format!("entry {seq} has no proof yet: {e}")))?;
    serde_json::from_value(proof)
        .map(Json)
        .map_err(|e| ApiError::internal(&e))
}

fn token_view(t: p3ak_kernel::tokens::TokenInfo) -> Token {
    Token {
        id: t.id,
        name: t.name,
        scopes: t.scopes,
        created_at: t.created_at,
        expires_at: t.expires_at,
    }
}

/// The API tokens (never their secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = ["tokens"])),
    responses((status = 200, body = Vec<Token>)))]
pub(crate) async fn tokens<B: Backend>(State(app): AppState<B>) -> Json<Vec<Token>> {
    Json(
        app.kernel
            .tokens()
            .list()
            .into_iter()
            .map(token_view)
            .collect(),
    )
}

/// Makes a token, with scopes among the caller's own; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = ["tokens"])),
    request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn create_token<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    if let Some(scope) = new.scopes.iter().find(|s| !caller.may(s)) {
        return Err(ApiError::scope(scope));
    }
    let issued = app
        .kernel
        .create_token(&new.name, &new.scopes, new.expires_in, &caller.principal)
        .await
        .map_err(|e| match e {
            p3ak_kernel::KernelError::Token(t) => ApiError::bad_request(t.to_string()),
            other => ApiError::internal(&other),
        })?;
    let info = p3ak_kernel::tokens::TokenInfo::from(&issued.record);
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            token: issued.token.to_string(),
            info: token_view(info),
        }),
    ))
}

/// Revokes a token: it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    security(("bearer" = ["tokens"])),
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token<B: Backend>(
    State(app): AppState<B>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.kernel
        .revoke_token(&id, &caller.principal)
        .await
        .map_err(|e| match e {
            p3ak_kernel::KernelError::Token(p3ak_kernel::tokens::TokenError::Unknown(_)) => {
                ApiError::not_found(format!(
                    "no token `{}`",
                    id.chars().take(32).collect::<String>()
                ))
            }
            other => ApiError::internal(&other),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

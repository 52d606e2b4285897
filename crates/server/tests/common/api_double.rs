//! A test double of P3AK's own REST API on a Unix socket, with fixed JSON answers, for
//! `RemoteBackend`'s tests (the real server is tested in its own crate's tests).

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the double saw: `Authorization` headers, request lines.
#[derive(Default)]
pub struct Seen {
    pub auth: Mutex<Vec<Option<String>>>,
    pub lines: Mutex<Vec<String>>,
}

type S = Arc<Seen>;

fn saw(seen: &S, headers: &HeaderMap, line: String) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.auth.lock().unwrap().push(auth);
    seen.lines.lock().unwrap().push(line);
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

async fn search(State(seen): State<S>, headers: HeaderMap, Json(q): Json<Value>) -> Response {
    saw(&seen, &headers, format!("POST /v1/search {q}"));
    match q["query"].as_str() {
        Some("slow-down") => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests");
            r.headers_mut().insert(header::RETRY_AFTER, 7.into());
            r
        }
        Some("too-many-waiting") => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_waiting",
                "16 of your calls wait for a person's approval",
            );
            r.headers_mut().insert(header::RETRY_AFTER, 60.into());
            r
        }
        Some("crash") => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the kernel could not do this; its log says why",
        ),
        Some("busy") => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the memory plugin is restarting"),
        Some("bad") => (StatusCode::BAD_REQUEST, "<html>not json</html>").into_response(),
        other => Json(json!({
            "hits": [{"id": "ab12", "chunk": 0, "title": "Plans", "snippet": format!("about {}", other.unwrap_or("")), "score": 1.0}],
            "mode": q["mode"].as_str().unwrap_or("hybrid"),
            "notes": []
        }))
        .into_response(),
    }
}

async fn list(State(seen): State<S>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    saw(
        &seen,
        &headers,
        format!("GET /v1/documents?{}", query.unwrap_or_default()),
    );
    Json(json!({"documents": [{"id": "ab12", "title": "Plans", "size": 30, "created": 1, "tags": {}}]}))
        .into_response()
}

async fn read(State(seen): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    saw(&seen, &headers, format!("GET /v1/documents/{id}"));
    if id == "nope" {
        return error(StatusCode::NOT_FOUND, "not_found", "no document `nope`");
    }
    Json(json!({"id": id, "title": "Plans", "content": "Sail to Hydra.", "truncated": false}))
        .into_response()
}

async fn delete(
    State(seen): State<S>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    saw(&seen, &headers, format!("DELETE /v1/documents/{id}"));
    Json(json!({"id": id, "deleted": true})).into_response()
}

async fn write(State(seen): State<S>, headers: HeaderMap, Json(note): Json<Value>) -> Response {
    saw(&seen, &headers, format!("POST /v1/documents {note}"));
    match note["title"].as_str() {
        Some("wait") => (
            StatusCode::ACCEPTED,
            Json(json!({"approval": "ap-7", "level": 3, "message": "waiting for approval"})),
        )
            .into_response(),
        Some("huge") => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the note is over 1048576 bytes",
        ),
        Some("read-only") => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs the `vault:write` scope",
        ),
        Some("policy") => error(
            StatusCode::FORBIDDEN,
            "not_permitted",
            "action not permitted",
        ),
        _ => (StatusCode::CREATED, Json(json!({"id": "n1", "chunks": 1}))).into_response(),
    }
}

async fn ingest(State(seen): State<S>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data",
        );
    };
    let text = String::from_utf8_lossy(&body);
    let parts = text.split(&format!("--{boundary}")).count();
    saw(
        &seen,
        &headers,
        format!(
            "POST /v1/documents/ingest parts={parts} {}",
            text.contains("filename=\"notes.md\"")
                && text.contains("# Notes")
                && text.contains("{\"k\":\"v\"}")
        ),
    );
    (StatusCode::CREATED, Json(json!({"id": "f1", "chunks": 2}))).into_response()
}

async fn chat(State(seen): State<S>, headers: HeaderMap, Json(request): Json<Value>) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    saw(
        &seen,
        &headers,
        format!("POST /v1/chat accept={accept} {request}"),
    );
    if accept != "application/json" {
        return (StatusCode::OK, "data: streaming\n\n").into_response();
    }
    if request["text"] == "forbidden" {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs the `chat` scope",
        );
    }
    Json(
        json!({"conversation": request["conversation"].as_str().unwrap_or("c-1"),
                "text": format!("You asked: {}", request["text"].as_str().unwrap_or(""))}),
    )
    .into_response()
}

/// Who the caller is (not recorded): the owner with every scope, or, for the bearer token
/// `read-only`, a token that may only read.
async fn whoami(headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer == Some("Bearer read-only") {
        return Json(json!({"principal": "token:ro", "scopes": ["vault:read"]})).into_response();
    }
    Json(json!({"principal": "uid:1000", "scopes":
        ["status", "vault:read", "vault:write", "chat", "audit:read", "tokens"]}))
    .into_response()
}

/// Serves the double on `socket` until the test's runtime ends.
pub fn serve(socket: &Path) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/whoami", get(whoami))
        .route("/v1/search", post(search))
        .route("/v1/documents", get(list).post(write))
        .route("/v1/documents/ingest", post(ingest))
        .route("/v1/documents/{id}", get(read).delete(delete))
        .route("/v1/chat", post(chat))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the socket");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    seen
}

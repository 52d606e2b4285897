//! `p3ak-server`: the one HTTP surface of a running kernel — the REST API, the MCP server,
//! rate limits, metrics and the console's non-approval pages.
//!
//! It runs inside the kernel's process (`p3ak up`, `p3ak serve`) and reaches the kernel only
//! through its public methods: every vault write, and every read an agent could also make,
//! takes the kernel's road as channel `api`, so the policy decides and the audit log records it
//! exactly as for an agent's call.
//!
//! ```text
//! run/api.sock (peer uid) ─┐                 ┌─ /healthz /readyz /openapi.json   (no caller)
//! 127.0.0.1:PORT (tokens) ─┼─ limits ─ auth ─┼─ /v1/… scope ─ rate ─ timeout ─ handler ─ Backend ─ road
//! TLS when public ─────────┘  (head size,    └─ /v1/chat (SSE, the turn's own timeout)
//!                              read time)
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
mod console;
pub mod error;
pub mod extract;
mod kernel_backend;
pub mod limits;
mod listen;
pub mod mcp;
pub mod model;
pub mod openapi;
mod rated;
pub mod remote;
mod routes;
pub mod waiting;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use p3ak_kernel::Kernel;
use p3ak_kernel::config::ApiSettings;

pub use auth::Peer;
pub use backend::{Backend, BackendError, Caller};
pub use kernel_backend::KernelBackend;
pub use listen::{Listening, ServeError, bind, bind_with, serve};

use crate::auth::{Needs, authenticate, rated, require};
use crate::error::ApiError;
use crate::limits::RateLimits;

/// What every handler shares.
pub struct App<B: Backend> {
    /// The running kernel.
    pub kernel: Arc<Kernel>,
    /// How vault and chat calls reach it.
    pub backend: Arc<B>,
    /// The token buckets.
    pub limits: RateLimits,
    /// `[api]`.
    pub settings: ApiSettings,
}

impl<B: Backend> App<B> {
    /// The shared state for `kernel` with `backend`, under the kernel's `[api]` settings.
    pub fn new(kernel: Arc<Kernel>, backend: B) -> Arc<Self> {
        let settings = kernel.config().api.clone();
        Self::with_settings(kernel, backend, settings)
    }

    /// The same under other settings (`p3ak serve --listen`).
    pub fn with_settings(kernel: Arc<Kernel>, backend: B, settings: ApiSettings) -> Arc<Self> {
        Arc::new(Self {
            limits: RateLimits::new(&settings),
            kernel,
            backend: Arc::new(backend),
            settings,
        })
    }
}

/// Answers 504 when a request takes longer than `api.request_timeout` (its body included, so
/// a client that sends slowly is cut off too).
async fn deadline<B: Backend>(
    State(app): State<Arc<App<B>>>,
    req: Request,
    next: Next,
) -> Response {
    let limit = app.settings.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(format!(
            "the request took over {} (`api.request_timeout`)",
            humanize(limit)
        ))
        .into_response(),
    }
}

fn humanize(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Counts every answer by route template (never the path itself: ids would make the label
/// set unbounded) and status, with its time.
async fn counted<B: Backend>(State(app): State<Arc<App<B>>>, req: Request, next: Next) -> Response {
    let route = auth::route_of(&req);
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    app.kernel
        .metrics()
        .http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The routes of `scope`, behind its check and rate limit.
fn scoped<B: Backend>(
    app: &Arc<App<B>>,
    scope: &'static str,
    routes: Router<Arc<App<B>>>,
) -> Router<Arc<App<B>>> {
    routes.route_layer(from_fn_with_state(
        Needs {
            app: Arc::clone(app),
            scope,
        },
        require::<B>,
    ))
}

/// Routes any authenticated caller may use, rate-limited under the quota `quota`.
fn rated_only<B: Backend>(
    app: &Arc<App<B>>,
    quota: &'static str,
    routes: Router<Arc<App<B>>>,
) -> Router<Arc<App<B>>> {
    routes.layer(from_fn_with_state(
        Needs {
            app: Arc::clone(app),
            scope: quota,
        },
        rated::<B>,
    ))
}

/// The whole router.
pub fn router<B: Backend>(app: &Arc<App<B>>) -> Router {
    let settings = &app.settings;
    let timed = Router::new()
        .merge(scoped(
            app,
            "status",
            Router::new()
                .route("/v1/status", get(routes::status::<B>))
                .route("/metrics", get(routes::metrics::<B>))
                .route("/v1/approvals", get(routes::approvals::<B>)),
        ))
        // Who the caller is, for any caller (`p3ak mcp` offers only the tools it may use).
        .merge(rated_only(
            app,
            "status",
            Router::new().route("/v1/whoami", get(routes::whoami)),
        ))
        .merge(scoped(
            app,
            "vault:read",
            Router::new()
                .route("/v1/vaults", get(routes::vaults::<B>))
                .route("/v1/vaults/{name}", get(routes::vault::<B>))
                .route("/v1/documents", get(routes::list_documents::<B>))
                .route("/v1/documents/{id}", get(routes::get_document::<B>))
                .route("/v1/search", post(routes::search::<B>)),
        ))
        .merge(scoped(
            app,
            "vault:write",
            Router::new()
                .route("/v1/documents", post(routes::put_document::<B>))
                .route("/v1/documents/{id}", delete(routes::delete_document::<B>))
                .route(
                    "/v1/documents/ingest",
                    post(routes::ingest::<B>).layer(DefaultBodyLimit::max(
                        settings.max_upload_bytes.saturating_add(64 << 10),
                    )),
                ),
        ))
        .merge(scoped(
            app,
            "audit:read",
            Router::new()
                .route("/v1/audit", get(routes::audit::<B>))
                .route("/v1/audit/verify", get(routes::audit_verify::<B>))
                .route("/v1/audit/{seq}/proof", get(routes::audit_proof::<B>)),
        ))
        .merge(scoped(
            app,
            "tokens",
            Router::new()
                .route(
                    "/v1/tokens",
                    get(routes::tokens::<B>).post(routes::create_token::<B>),
                )
                .route("/v1/tokens/{id}", delete(routes::revoke_token::<B>)),
        ))
        .layer(from_fn_with_state(Arc::clone(app), deadline::<B>));
    // A streamed chat lasts as long as its turn (`kernel.turn_timeout`).
    let streamed = scoped(
        app,
        "chat",
        Router::new().route("/v1/chat", post(routes::chat::<B>)),
    );
    // MCP over streamable HTTP: each tool checks its own scope and takes from its rate, each
    // HTTP request from the caller's `mcp` quota; sessions are long-lived, so no request
    // deadline.
    let mcp = rated_only(
        app,
        limits::MCP,
        Router::new().nest_service(
            "/mcp",
            mcp::http_service(
                Arc::new(rated::Rated {
                    app: Arc::clone(app),
                }),
                &mcp::McpHttpConfig::default(),
            ),
        ),
    );
    let authenticated = timed
        .merge(streamed)
        .merge(mcp)
        .layer(from_fn_with_state(Arc::clone(app), authenticate::<B>));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<B>))
        .route("/openapi.json", get(openapi_json))
        .merge(console::routes())
        .merge(authenticated)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(from_fn_with_state(Arc::clone(app), counted::<B>))
        .with_state(Arc::clone(app))
}

async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

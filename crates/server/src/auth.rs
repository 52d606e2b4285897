//! Who is calling: the Unix socket's peer uid (an operator holds every scope) or a bearer
//! token (its scopes); then, per route, the scope it needs and its rate limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use p3ak_kernel::audit::AuditEvent;
use p3ak_kernel::config::API_SCOPES;
use p3ak_kernel::tokens::TokenRefusal;

use crate::App;
use crate::backend::{Backend, Caller};
use crate::error::ApiError;
use crate::limits::UNAUTHENTICATED;

/// The other end of a connection, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A Unix-socket peer, by the uid the kernel read with `SO_PEERCRED`.
    Unix {
        /// Its uid.
        uid: u32,
    },
    /// A TCP peer.
    Tcp {
        /// Its address.
        addr: SocketAddr,
    },
}

impl Peer {
    /// How the peer shows in the audit log and rate limits.
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Self::Unix { uid } => format!("uid:{uid}"),
            Self::Tcp { addr } => format!("ip:{}", addr.ip()),
        }
    }
}

/// Why a request is not authenticated.
enum Refusal {
    NoCredential,
    NotOperator(u32),
    Token(TokenRefusal),
}

impl Refusal {
    fn reason(&self) -> String {
        match self {
            Self::NoCredential => "no bearer token".to_owned(),
            Self::NotOperator(uid) => format!("uid {uid} is not an operator and sent no token"),
            Self::Token(r) => r.to_string(),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::NoCredential | Self::NotOperator(_) => {
                "send `Authorization: Bearer <token>` (make one with `p3ak tokens create`)"
            }
            // Malformed, unknown and revoked read the same: no oracle for token ids.
            Self::Token(TokenRefusal::Malformed | TokenRefusal::Unknown) => {
                "the token is not valid"
            }
            Self::Token(TokenRefusal::Expired) => "the token has expired",
        }
    }
}

pub(crate) fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<B: Backend> App<B> {
    fn authenticate(&self, peer: Option<&Peer>, req: &Request) -> Result<Caller, Refusal> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(presented) = bearer {
            let record = self
                .kernel
                .tokens()
                .verify(presented, unix_now())
                .map_err(Refusal::Token)?;
            return Ok(Caller {
                principal: format!("token:{}", record.id),
                scopes: record.scopes,
            });
        }
        match peer {
            Some(Peer::Unix { uid }) if self.kernel.is_operator(*uid) => Ok(Caller {
                principal: format!("uid:{uid}"),
                scopes: API_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            }),
            Some(Peer::Unix { uid }) => Err(Refusal::NotOperator(*uid)),
            _ => Err(Refusal::NoCredential),
        }
    }

    pub(crate) async fn rate_limited(&self, principal: &str, scope: &'static str, route: String) {
        self.kernel.metrics().rate_limited(scope);
        if self.limits.should_audit(scope, principal) {
            self.kernel
                .audit()
                .note(AuditEvent::ApiRateLimited {
                    principal: principal.to_owned(),
                    scope: scope.to_owned(),
                    route,
                })
                .await;
        }
    }

    async fn refused(&self, peer: &str, route: &str, reason: String) {
        self.kernel
            .audit()
            .note(AuditEvent::ApiRefused {
                peer: peer.to_owned(),
                route: route.to_owned(),
                reason,
            })
            .await;
    }
}

/// Puts the [`Caller`] in the request, or answers 401 (429 when a peer keeps failing).
pub(crate) async fn authenticate<B: Backend>(
    State(app): State<Arc<App<B>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req.extensions().get::<Peer>().cloned();
    match app.authenticate(peer.as_ref(), &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            let key = peer
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), Peer::key);
            let route = route_of(&req);
            if let Err(wait) = app.limits.check(UNAUTHENTICATED, &key) {
                app.rate_limited(&key, UNAUTHENTICATED, route).await;
                return ApiError::rate_limited(wait).into_response();
            }
            app.refused(&key, &route, refusal.reason()).await;
            ApiError::unauthorized(refusal.message()).into_response()
        }
    }
}

/// The scope a group of routes needs.
pub(crate) struct Needs<B: Backend> {
    pub(crate) app: Arc<App<B>>,
    pub(crate) scope: &'static str,
}

impl<B: Backend> Clone for Needs<B> {
    fn clone(&self) -> Self {
        Self {
            app: Arc::clone(&self.app),
            scope: self.scope,
        }
    }
}

/// 429 when the caller is over the rate of the quota `needs.scope` (audited), without
/// requiring the scope itself: for routes any caller may use (`/v1/whoami`, `/mcp`).
pub(crate) async fn rated<B: Backend>(
    State(needs): State<Needs<B>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError::unauthorized("not authenticated").into_response();
    };
    if let Err(wait) = needs.app.limits.check(needs.scope, &caller.principal) {
        needs
            .app
            .rate_limited(&caller.principal, needs.scope, route_of(&req))
            .await;
        return ApiError::rate_limited(wait).into_response();
    }
    next.run(req).await
}

/// 403 without the scope, 429 over its rate; both audited.
pub(crate) async fn require<B: Backend>(
    State(needs): State<Needs<B>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError::unauthorized("not authenticated").into_response();
    };
    let route = route_of(&req);
    if !caller.may(needs.scope) {
        needs
            .app
            .refused(
                &caller.principal,
                &route,
                format!("missing scope `{}`", needs.scope),
            )
            .await;
        return ApiError::scope(needs.scope).into_response();
    }
    if let Err(wait) = needs.app.limits.check(needs.scope, &caller.principal) {
        needs
            .app
            .rate_limited(&caller.principal, needs.scope, route)
            .await;
        return ApiError::rate_limited(wait).into_response();
    }
    next.run(req).await
}

//! The console's non-approval pages (status, vault, chat, audit, tokens): one static page and
//! its script, which call the REST API with a bearer token the owner pastes. Same look as the
//! approvals console (its stylesheet is shared), and the same strict headers: a CSP without
//! inline script or style, no framing, no sniffing, no referrer, nothing cached.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
/// The approvals console's stylesheet, so both consoles look alike.
const BASE_STYLE: &str = include_str!("../../hitl/src/console/console.css");
const EXTRA_STYLE: &str = include_str!("console/extra.css");

/// `connect-src 'self'`: the script talks to this API only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn typed(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `/console/…`, with its headers, for a router of any state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let mut router = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { typed("text/html; charset=utf-8", PAGE.to_owned()) }),
        )
        .route(
            "/console/console.js",
            get(|| async { typed("text/javascript; charset=utf-8", SCRIPT.to_owned()) }),
        )
        .route(
            "/console/console.css",
            get(|| async {
                typed(
                    "text/css; charset=utf-8",
                    format!("{BASE_STYLE}\n{EXTRA_STYLE}"),
                )
            }),
        );
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

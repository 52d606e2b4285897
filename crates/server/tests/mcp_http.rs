//! `/mcp` over streamable HTTP on a loopback port: rmcp's client, the caller from the request
//! (a stand-in for the API's auth layer puts it in the request's extensions), bounded sessions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use common::{Fake, caller};
use p3ak_server::Caller;
use p3ak_server::mcp::{McpHttpConfig, http_service};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

/// The test's auth layer: the bearer token names the scopes (`read`, `all`); none, no caller.
async fn auth(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let who: Option<Caller> = match token.as_deref() {
        Some("read") => Some(Caller {
            principal: "token:read".into(),
            ..caller(&["vault:read"])
        }),
        Some("all") => Some(Caller {
            principal: "token:all".into(),
            ..caller(&["vault:read", "vault:write", "chat"])
        }),
        _ => None,
    };
    if let Some(who) = who {
        req.extensions_mut().insert(who);
    }
    next.run(req).await
}

async fn start(config: McpHttpConfig) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .nest_service("/mcp", http_service(Arc::clone(&fake), &config))
        .layer(from_fn(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/mcp",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, fake)
}

async fn connect(url: &str, token: Option<&str>) -> Result<RunningService<RoleClient, ()>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    tokio::time::timeout(Duration::from_secs(10), ().serve(transport))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn each_request_acts_as_the_caller_its_credentials_name() {
    let (url, fake) = start(McpHttpConfig::default()).await;
    let reader = connect(&url, Some("read")).await.unwrap();
    let names: Vec<_> = reader
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    assert_eq!(names, ["search", "read_document", "list_documents"]);
    let mut params = CallToolRequestParams::new("search");
    params.arguments = json!({"query": "sailing"}).as_object().cloned();
    let result = reader.call_tool(params).await.unwrap();
    assert_eq!(
        result.structured_content.unwrap()["hits"][0]["snippet"],
        "about sailing"
    );

    let writer = connect(&url, Some("all")).await.unwrap();
    assert_eq!(writer.list_all_tools().await.unwrap().len(), 5);
    let mut params = CallToolRequestParams::new("add_note");
    params.arguments = json!({"title": "Idea", "content": "x"})
        .as_object()
        .cloned();
    assert_ne!(writer.call_tool(params).await.unwrap().is_error, Some(true));

    let calls = fake.calls.lock().unwrap().clone();
    assert!(
        calls[0].starts_with("token:read search sailing"),
        "{calls:?}"
    );
    assert!(calls[1].starts_with("token:all write Idea"), "{calls:?}");
}

#[tokio::test]
async fn a_request_without_a_caller_is_refused() {
    let (url, fake) = start(McpHttpConfig::default()).await;
    let anonymous = connect(&url, None).await.unwrap();
    let err = anonymous.list_all_tools().await.expect_err("refused");
    assert!(err.to_string().contains("not authenticated"), "{err}");
    let mut params = CallToolRequestParams::new("search");
    params.arguments = json!({"query": "x"}).as_object().cloned();
    let err = anonymous.call_tool(params).await.expect_err("refused");
    assert!(err.to_string().contains("not authenticated"), "{err}");
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused() {
    let config = McpHttpConfig {
        max_sessions: 2,
        ..McpHttpConfig::default()
    };
    let (url, _) = start(config).await;
    let first = connect(&url, Some("read")).await.unwrap();
    let second = connect(&url, Some("read")).await.unwrap();
    let third = connect(&url, Some("read")).await;
    assert!(third.is_err(), "a third session was opened");
    // The open ones keep working.
    assert_eq!(first.list_all_tools().await.unwrap().len(), 3);
    assert_eq!(second.list_all_tools().await.unwrap().len(), 3);
}

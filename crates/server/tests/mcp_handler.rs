//! The MCP server in-process: rmcp's own client over an in-memory pipe, a fake backend.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fake, SECRET_DETAIL, caller};
use p3ak_server::Caller;
use p3ak_server::mcp::{INSTRUCTIONS, P3akMcp};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

async fn connect(who: Caller) -> (Client, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let server = P3akMcp::for_caller(Arc::clone(&fake), who);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = tokio::time::timeout(Duration::from_secs(10), ().serve(client_io))
        .await
        .expect("handshake in time")
        .expect("handshake");
    (client, fake)
}

async fn call(client: &Client, name: &'static str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let mut params = CallToolRequestParams::new(name);
    params.arguments = Some(args);
    tokio::time::timeout(Duration::from_secs(10), client.call_tool(params))
        .await
        .expect("answer in time")
        .expect("a tool result")
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_server_says_it_is_p3ak_and_what_it_offers() {
    let (client, _) = connect(caller(&["vault:read"])).await;
    let info = client.peer_info().expect("server info");
    let server = info.server_info.clone().expect("server identity");
    assert_eq!(server.name, "p3ak");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.instructions.as_deref(), Some(INSTRUCTIONS));
    assert!(info.capabilities.tools.is_some());
}

#[tokio::test]
async fn tools_are_listed_only_for_the_scopes_the_caller_holds() {
    let names = |tools: Vec<rmcp::model::Tool>| {
        tools
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect::<Vec<_>>()
    };
    let (client, _) = connect(caller(&["vault:read"])).await;
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        ["search", "read_document", "list_documents"]
    );
    let (client, _) = connect(caller(&["vault:write", "chat"])).await;
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        ["add_note", "ask_agent"]
    );
    let (client, _) = connect(caller(&["audit:read", "status"])).await;
    assert!(client.list_all_tools().await.unwrap().is_empty());
}

#[tokio::test]
async fn reads_are_annotated_read_only_and_add_note_not_destructive() {
    let (client, _) = connect(caller(&["vault:read", "vault:write", "chat"])).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 5);
    for tool in &tools {
        let hints = tool.annotations.clone().expect("annotations");
        let read_only = ["search", "read_document", "list_documents"].contains(&tool.name.as_ref());
        assert_eq!(hints.read_only_hint, Some(read_only), "{}", tool.name);
        assert_eq!(hints.destructive_hint, Some(false), "{}", tool.name);
        // Strict schemas: a misspelt argument is refused, not ignored.
        assert_eq!(
            tool.input_schema.get("additionalProperties"),
            Some(&json!(false))
        );
    }
    let ask = tools.iter().find(|t| t.name == "ask_agent").unwrap();
    assert_eq!(ask.annotations.clone().unwrap().open_world_hint, Some(true));
}

#[tokio::test]
async fn each_tool_calls_the_backend_as_the_caller_and_returns_its_answer() {
    let (client, fake) = connect(caller(&["vault:read", "vault:write", "chat"])).await;

    let r = call(
        &client,
        "search",
        json!({"query": "sailing", "mode": "bm25", "k": 3,
                                          "tags": {"topic": "travel"}}),
    )
    .await;
    assert_ne!(r.is_error, Some(true));
    let found = r.structured_content.clone().unwrap();
    assert_eq!(found["hits"][0]["snippet"], "about sailing");
    assert!(text(&r).contains("about sailing"));

    let r = call(&client, "read_document", json!({"id": "ab12"})).await;
    assert_eq!(text(&r), "# Plans\nSail to Hydra in June.");
    assert_eq!(r.structured_content.unwrap()["id"], "ab12");

    let r = call(
        &client,
        "list_documents",
        json!({"after": "ff00", "limit": 5}),
    )
    .await;
    assert_eq!(r.structured_content.unwrap()["next"], "ab12");

    let r = call(
        &client,
        "add_note",
        json!({"title": "Idea", "content": "Sail more.",
                                            "tags": {"k": "v"}, "source": "https://x.test"}),
    )
    .await;
    assert_ne!(r.is_error, Some(true));
    assert_eq!(r.structured_content.unwrap()["id"], "n1");

    let r = call(
        &client,
        "ask_agent",
        json!({"text": "hello?", "conversation": "c-9"}),
    )
    .await;
    assert_eq!(text(&r), "You asked: hello?");
    assert_eq!(r.structured_content.unwrap()["conversation"], "c-9");

    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            r#"token:test search sailing Bm25 Some(3) {"topic": "travel"}"#,
            "token:test read ab12",
            r#"token:test list Some("ff00") 5"#,
            r#"token:test write Idea {"k": "v"} Some("https://x.test")"#,
            r#"token:test ask None Some("c-9") hello?"#,
        ]
    );
}

#[tokio::test]
async fn a_note_waiting_for_approval_is_a_result_naming_the_approval() {
    let (client, _) = connect(caller(&["vault:write"])).await;
    let r = call(
        &client,
        "add_note",
        json!({"title": "needs approval", "content": "x"}),
    )
    .await;
    assert_ne!(r.is_error, Some(true));
    assert!(text(&r).contains("approval `ap-1`"), "{}", text(&r));
    let s = r.structured_content.unwrap();
    assert_eq!(
        (
            s["pending"].clone(),
            s["approval"].clone(),
            s["level"].clone()
        ),
        (json!(true), json!("ap-1"), json!(2))
    );
}

#[tokio::test]
async fn backend_errors_are_one_line_tool_errors_without_internal_details() {
    let (client, _) = connect(caller(&["vault:read"])).await;
    let r = call(&client, "read_document", json!({"id": "missing"})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(text(&r), "no document `missing`");

    let r = call(&client, "search", json!({"query": "blocked"})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(text(&r), "action not permitted");

    let r = call(&client, "read_document", json!({"id": "boom"})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        !text(&r).contains("sqlite") && !text(&r).contains(SECRET_DETAIL),
        "{}",
        text(&r)
    );
    assert!(!format!("{r:?}").contains("4242"));
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_and_reach_no_backend() {
    let (client, fake) = connect(caller(&["vault:read", "vault:write"])).await;
    let r = call(&client, "search", json!({"query": "x", "kk": 3})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("invalid arguments: unknown field `kk`"),
        "{}",
        text(&r)
    );
    let r = call(&client, "add_note", json!({"title": "no content"})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("missing field `content`"), "{}", text(&r));
    let r = call(&client, "list_documents", json!({"limit": 0})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn calling_a_tool_outside_the_callers_scopes_is_refused() {
    let (client, fake) = connect(caller(&["vault:read"])).await;
    let mut params = CallToolRequestParams::new("add_note");
    params.arguments = Some(
        json!({"title": "t", "content": "c"})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let err = client.call_tool(params).await.expect_err("refused");
    assert!(err.to_string().contains("no tool `add_note`"), "{err}");
    let err = client
        .call_tool(CallToolRequestParams::new("delete_everything"))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("no tool `delete_everything`"),
        "{err}"
    );
    assert!(fake.calls.lock().unwrap().is_empty());
}

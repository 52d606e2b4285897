//! The API's vault calls (`Kernel::api_call`) through a real kernel, the real `vault` plugin
//! (its own process) and the policy `p3ak init` writes: agent `api`, channel `api`, the caller
//! as sender, every step in the audit log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use p3ak_kernel::api::{ApiCaller, ApiOutcome, ingest_args};
use p3ak_kernel::control::ControlEvent;
use p3ak_kernel::{Kernel, KernelOptions};
use p3ak_testkit::home::Home;
use p3ak_vault::Passphrase;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const PASS: &str = "api vault passphrase";

async fn start(home: &Home) -> Arc<Kernel> {
    // The road is under test here, not the sandbox (the red team's job).
    std::fs::write(
        home.home().join("config.toml"),
        "[kernel]\nsandbox = \"degraded\"\n\n[plugins.vault]\nbuiltin = \"vault\"\n",
    )
    .unwrap();
    Kernel::start(KernelOptions {
        home: p3ak_kernel::home::Home::new(home.home()),
        passphrase: Passphrase::new(PASS.to_owned()),
        exe: env!("CARGO_BIN_EXE_p3ak").into(),
    })
    .await
    .unwrap()
}

async fn call(kernel: &Kernel, action: &str, args: Value) -> ApiOutcome {
    let (events, _notices) = mpsc::unbounded_channel();
    let caller = ApiCaller {
        principal: "uid:1000".to_owned(),
    };
    kernel
        .api_call(&caller, action, args, events)
        .await
        .unwrap()
}

async fn done(kernel: &Kernel, action: &str, args: Value) -> Value {
    match call(kernel, action, args.clone()).await {
        ApiOutcome::Done(value) => value,
        other => panic!("{action} {args}: {other:?}"),
    }
}

async fn invalid(kernel: &Kernel, action: &str, args: Value) -> String {
    match call(kernel, action, args.clone()).await {
        ApiOutcome::Invalid(message) => message,
        other => panic!("{action} {args}: {other:?}"),
    }
}

/// The audit log's entries of `kind` (payloads), oldest first.
async fn audited(kernel: &Kernel, kind: &str) -> Vec<Value> {
    let audit = kernel.audit();
    audit
        .entries(0, audit.len())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_vault_calls_run_on_the_road_as_agent_api_with_the_caller_as_sender() {
    let home = Home::init(PASS);
    let kernel = start(&home).await;

    // A note: level 0 from the API under the default policy.
    let stored = done(
        &kernel,
        "write",
        json!({"title": "Boiler", "content": "The boiler service is due in March.",
               "tags": {"topic": "house"}}),
    )
    .await;
    assert_eq!(stored["status"], "created", "{stored}");
    let id = stored["id"].as_str().unwrap().to_owned();

    let found = done(&kernel, "search", json!({"query": "boiler", "k": 10})).await;
    assert_eq!(found["hits"][0]["id"], id.as_str(), "{found}");
    let listed = done(&kernel, "list", json!({})).await;
    assert_eq!(listed["documents"][0]["id"], id.as_str(), "{listed}");
    let read = done(&kernel, "read", json!({"id": id})).await;
    assert!(
        read["content"].as_str().unwrap().contains("March"),
        "{read}"
    );

    // A file: converted and indexed by the plugin.
    let html = b"<h1>Garden</h1><p>Prune the wisteria in August.</p>";
    let stored = done(
        &kernel,
        "ingest",
        ingest_args("garden.html", None, html, &Default::default()),
    )
    .await;
    assert!(stored["chunks"].as_u64().unwrap() >= 1, "{stored}");
    let found = done(&kernel, "search", json!({"query": "wisteria"})).await;
    assert_eq!(found["hits"][0]["id"], stored["id"], "{found}");

    // Every step of the write was audited as the API's, with the caller.
    for kind in ["proposal", "decision", "execution", "result"] {
        let entries = audited(&kernel, kind).await;
        let write = entries
            .iter()
            .find(|e| e["action"] == "vault.write")
            .unwrap_or_else(|| panic!("no {kind} of vault.write: {entries:?}"));
        assert_eq!(write["agent"], "api", "{kind}: {write}");
        assert_eq!(write["channel"], "api", "{kind}: {write}");
        assert_eq!(write["sender"], "uid:1000", "{kind}: {write}");
    }

    // Bad requests: clear, and nothing proposed.
    let proposals = audited(&kernel, "proposal").await.len();
    let message = invalid(&kernel, "run", json!({"command": "id"})).await;
    assert!(message.contains("no action `run`"), "{message}");
    let big = vec![b'a'; 1 << 20];
    let message = invalid(
        &kernel,
        "ingest",
        ingest_args("big.txt", None, &big, &Default::default()),
    )
    .await;
    assert!(message.contains("`[kernel] max_frame`"), "{message}");
    assert_eq!(audited(&kernel, "proposal").await.len(), proposals);
    // Arguments against the schema, and the plugin's own `invalid`: the caller is told.
    invalid(&kernel, "write", json!({"title": "t"})).await;
    let message = invalid(
        &kernel,
        "read",
        json!({"id": "0123456789abcdef0123456789abcdef"}),
    )
    .await;
    assert!(message.starts_with("no document `"), "{message}");

    kernel.request_stop();
    kernel.serve().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_delete_waits_for_a_human_and_a_denied_one_deletes_nothing() {
    let home = Home::init(PASS);
    let kernel = start(&home).await;
    let stored = done(
        &kernel,
        "write",
        json!({"title": "Keep", "content": "The spare key is with the neighbour."}),
    )
    .await;
    let id = stored["id"].as_str().unwrap().to_owned();

    // The server runs the call in a task and answers its client at the approval notice.
    let (events, mut notices) = mpsc::unbounded_channel();
    let task = {
        let kernel = Arc::clone(&kernel);
        let id = id.clone();
        tokio::spawn(async move {
            let caller = ApiCaller {
                principal: "token:ab12cd34".to_owned(),
            };
            kernel
                .api_call(&caller, "delete", json!({"id": id}), events)
                .await
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let approval = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, notices.recv()).await {
            Ok(Some(ControlEvent::Approval { id, level, .. })) => {
                assert_eq!(level, 1);
                break id;
            }
            Ok(Some(_)) => {}
            other => panic!("no approval notice: {other:?}"),
        }
    };
    // The client is gone; the call waits on. Nothing is deleted yet.
    drop(notices);
    assert_eq!(
        done(&kernel, "read", json!({"id": id})).await["title"],
        "Keep"
    );
    let out = home.run(&["deny", &approval]);
    assert!(out.status.success(), "{out:?}");
    let outcome = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, ApiOutcome::NotPermitted);
    assert_eq!(
        done(&kernel, "read", json!({"id": id})).await["title"],
        "Keep"
    );
    let escalation = audited(&kernel, "escalation").await;
    assert_eq!(escalation[0]["agent"], "api", "{escalation:?}");
    assert_eq!(escalation[0]["action"], "vault.delete", "{escalation:?}");
    let decision = audited(&kernel, "decision").await;
    let decided = decision
        .iter()
        .find(|d| d["action"] == "vault.delete")
        .unwrap();
    assert_eq!(decided["sender"], "token:ab12cd34", "{decided}");
    assert_eq!(audited(&kernel, "denial").await.len(), 1);

    kernel.request_stop();
    kernel.serve().await.unwrap();
}

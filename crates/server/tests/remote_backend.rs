//! `RemoteBackend` against a test double of the REST API on a Unix socket: each call's
//! request, each answer's mapping, errors as the MCP server will show them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/api_double.rs"]
mod api_double;

use std::time::{Duration, Instant};

use p3ak_server::model::{ChatRequest, NewNote, SearchMode, SearchQuery, Upload};
use p3ak_server::remote::RemoteBackend;
use p3ak_server::{Backend, BackendError, Caller};
use zeroize::Zeroizing;

fn owner() -> Caller {
    Caller {
        principal: "uid:1000".into(),
        scopes: vec!["vault:read".into()],
    }
}

fn query(q: &str) -> SearchQuery {
    SearchQuery {
        query: q.into(),
        mode: SearchMode::Bm25,
        k: Some(3),
        tags: Default::default(),
        explain: false,
    }
}

fn note(title: &str) -> NewNote {
    NewNote {
        title: title.into(),
        content: "text".into(),
        tags: Default::default(),
        source: None,
    }
}

#[tokio::test]
async fn every_call_reaches_its_route_and_decodes_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let seen = api_double::serve(&socket);
    let api = RemoteBackend::new(&socket);
    let who = owner();

    api.health().await.expect("healthy");
    let found = api.search(&who, query("sailing")).await.unwrap();
    assert_eq!(found.hits[0].snippet, "about sailing");
    assert_eq!(found.mode, SearchMode::Bm25);
    let page = api.list(&who, Some("ff 00/1".into()), 5).await.unwrap();
    assert_eq!(page.documents[0].id, "ab12");
    let doc = api.read(&who, "ab/12".into()).await.unwrap();
    assert_eq!(
        (doc.id.as_str(), doc.content.as_str()),
        ("ab/12", "Sail to Hydra.")
    );
    let stored = api.write(&who, note("Idea")).await.unwrap();
    assert_eq!((stored.id.as_str(), stored.chunks), ("n1", Some(1)));
    let deleted = api.delete(&who, "ab12".into()).await.unwrap();
    assert!(deleted.deleted);
    let upload = Upload {
        name: "notes.md".into(),
        media_type: Some("text/markdown".into()),
        data: b"# Notes\nhello".to_vec(),
        tags: [("k".to_owned(), "v".to_owned())].into(),
    };
    let ingested = api.ingest(&who, upload).await.unwrap();
    assert_eq!(ingested.id, "f1");
    let request = ChatRequest {
        agent: None,
        conversation: Some("c-9".into()),
        text: "hi".into(),
    };
    let reply = api.ask(&who, request).await.unwrap();
    assert_eq!(
        (reply.conversation.as_str(), reply.text.as_str()),
        ("c-9", "You asked: hi")
    );

    let lines = seen.lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            r#"POST /v1/search {"query":"sailing","mode":"bm25","k":3,"tags":{},"explain":false}"#,
            "GET /v1/documents?limit=5&after=ff%2000%2F1",
            // `ab/12` travelled as one path segment (`ab%2F12`).
            "GET /v1/documents/ab/12",
            r#"POST /v1/documents {"title":"Idea","content":"text","tags":{}}"#,
            "DELETE /v1/documents/ab12",
            "POST /v1/documents/ingest parts=4 true",
            r#"POST /v1/chat accept=application/json {"conversation":"c-9","text":"hi"}"#,
        ]
    );
    // No token configured: the kernel knows the socket's owner by uid.
    assert!(seen.auth.lock().unwrap().iter().all(Option::is_none));
}

#[tokio::test]
async fn a_configured_token_is_sent_as_a_bearer_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let seen = api_double::serve(&socket);
    let api = RemoteBackend::new(&socket).with_token(Zeroizing::new("p3ak_tok_secret".into()));
    api.read(&owner(), "ab12".into()).await.unwrap();
    assert_eq!(
        seen.auth.lock().unwrap().clone(),
        [Some("Bearer p3ak_tok_secret".to_owned())]
    );
    assert!(!format!("{api:?}").contains("secret"));
}

#[tokio::test]
async fn error_answers_map_to_backend_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    api_double::serve(&socket);
    let api = RemoteBackend::new(&socket);
    let who = owner();

    let e = api.read(&who, "nope".into()).await.unwrap_err();
    assert!(matches!(e, BackendError::NotFound(_)), "{e:?}");
    assert_eq!(e.to_string(), "no document `nope`");
    let e = api.search(&who, query("slow-down")).await.unwrap_err();
    assert!(
        matches!(e, BackendError::RateLimited { retry_after: 7, .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "too many requests; retry in 7 s");
    let e = api
        .search(&who, query("too-many-waiting"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::TooManyWaiting {
                retry_after: 60,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "16 of your calls wait for a person's approval"
    );
    let e = api.search(&who, query("busy")).await.unwrap_err();
    assert_eq!(e.to_string(), "the memory plugin is restarting");
    let e = api.search(&who, query("crash")).await.unwrap_err();
    assert!(matches!(e, BackendError::Internal(_)), "{e:?}");
    let e = api.search(&who, query("bad")).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Invalid(ref m) if m == "the kernel answered HTTP 400"),
        "{e:?}"
    );
    let e = api.write(&who, note("wait")).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Pending { ref approval, level: 3 } if approval == "ap-7"),
        "{e:?}"
    );
    let e = api.write(&who, note("huge")).await.unwrap_err();
    assert!(matches!(e, BackendError::TooLarge(_)), "{e:?}");
    let e = api.write(&who, note("read-only")).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Scope(ref s) if s == "vault:write"),
        "{e:?}"
    );
    let e = api.write(&who, note("policy")).await.unwrap_err();
    assert!(matches!(e, BackendError::NotPermitted), "{e:?}");
    let request = ChatRequest {
        agent: None,
        conversation: None,
        text: "forbidden".into(),
    };
    let e = api.ask(&who, request).await.unwrap_err();
    assert_eq!(e.to_string(), "this needs the `chat` scope");
}

#[tokio::test]
async fn no_kernel_on_the_socket_is_a_quick_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let api = RemoteBackend::new(&socket);
    let started = Instant::now();
    let e = api.health().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the kernel is not running (nothing answers on {}); start it with `p3ak up`",
            socket.display()
        )
    );
    // A socket file nobody listens on (a kernel that died) says the same.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let e = api.search(&owner(), query("x")).await.unwrap_err();
    assert!(
        e.to_string().starts_with("the kernel is not running"),
        "{e}"
    );
}

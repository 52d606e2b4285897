//! `cargo bench -p p3ak-memory --bench ingest`: ingest throughput of the memory layer into a
//! real encrypted vault, for Markdown and PDF files, without and with embedding.
//!
//! The documents are generated: 2,000 Markdown files of ~4 KB (a title, four sections of two
//! paragraphs) and 200 five-page PDFs (Helvetica text, ~40 lines a page) built with lopdf, all
//! of synthetic English-like text (a Zipf-distributed vocabulary of 4,000 made-up words). They
//! go through `Memory::ingest` as files, as `p3ak memory ingest` feeds them.
//!
//! "With embedding" ingests a subset (100 Markdown files, 20 PDFs) and then embeds every
//! pending chunk with the real model (`P3AK_TEST_MODEL_DIR`, else the per-user cache; skipped
//! when it is unavailable), in batches of 64 chunks as the CLI does.
//!
//! Prints one `bench ingest/…` line per figure (machine-readable) and a table at the end.
//! MB are 10^6 bytes of input files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "benchmark program"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use p3ak_memory::{
    EmbeddingBatch, IngestItem, IngestOptions, Memory, MiniLm, TextEmbedder, store_embeddings,
};
use p3ak_testkit::corpus::{Rng, Words};
use p3ak_vault::{KdfParams, Passphrase, Protection, Vault};

const KDF: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    iterations: 1,
    parallelism: 1,
};
const VOCABULARY: usize = 4000;
const MARKDOWN_FILES: usize = 2000;
const PDF_FILES: usize = 200;
const PDF_PAGES: usize = 5;
const PDF_LINES: usize = 40;
const PDF_LINE_CHARS: usize = 75;
const EMBED_MARKDOWN_FILES: usize = 100;
const EMBED_PDF_FILES: usize = 20;
/// Chunks per embedding commit, as `p3ak memory embed` does.
const EMBED_BATCH_CHUNKS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and text

/// What the corpus is made of, on top of [`Words`].
trait Text {
    fn prose(&self, rng: &mut Rng, chars: usize) -> String;
    fn phrase(&self, rng: &mut Rng) -> String;
}

impl Text for Words {
    /// Sentences of Zipf words, about `chars` characters.
    fn prose(&self, rng: &mut Rng, chars: usize) -> String {
        let mut out = String::with_capacity(chars + 16);
        let mut sentence_left = 0;
        while out.len() < chars {
            let w = self.zipf(rng);
            if sentence_left == 0 {
                if !out.is_empty() {
                    out.push_str(". ");
                }
                let mut letters = w.chars();
                if let Some(first) = letters.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(letters.as_str());
                }
                sentence_left = rng.range(8, 18);
            } else {
                out.push(' ');
                out.push_str(w);
            }
            sentence_left -= 1;
        }
        out.push('.');
        out
    }

    /// A heading or title of 2–4 words of middling frequency.
    fn phrase(&self, rng: &mut Rng) -> String {
        let n = rng.range(2, 4);
        (0..n)
            .map(|_| self.vocab[rng.range(20, VOCABULARY - 1)].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// ~4 KB of Markdown: a title, then four sections of two paragraphs.
fn markdown(words: &Words, rng: &mut Rng) -> String {
    let mut doc = format!("# {}\n\n", words.phrase(rng));
    for _ in 0..4 {
        doc.push_str(&format!("## {}\n\n", words.phrase(rng)));
        for _ in 0..2 {
            doc.push_str(&words.prose(rng, 470));
            doc.push_str("\n\n");
        }
    }
    doc
}

/// A PDF of `PDF_PAGES` pages of `PDF_LINES` lines of text each, Helvetica, compressed streams.
fn pdf(words: &Words, rng: &mut Rng) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids: Vec<Object> = Vec::new();
    for _ in 0..PDF_PAGES {
        let text = words.prose(rng, PDF_LINES * PDF_LINE_CHARS);
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 11.into()]),
            Operation::new("TL", vec![14.into()]),
            Operation::new("Td", vec![56.into(), 780.into()]),
        ];
        let mut line = String::new();
        for word in text.split(' ') {
            if line.len() + word.len() + 1 > PDF_LINE_CHARS {
                ops.push(Operation::new(
                    "Tj",
                    vec![Object::string_literal(line.as_str())],
                ));
                ops.push(Operation::new("T*", vec![]));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        ops.push(Operation::new("Tj", vec![Object::string_literal(line)]));
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops }.encode().unwrap();
        let content_id = doc.add_object(Stream::new(dictionary! {}, content));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = i64::try_from(kids.len()).unwrap();
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let info_id = doc.add_object(dictionary! {
        "Title" => Object::string_literal(words.phrase(rng)),
        "Author" => Object::string_literal("Bench Suite"),
    });
    doc.trailer.set("Info", info_id);
    doc.compress();
    let mut buf = Vec::new();
    doc.save_to(&mut buf).unwrap();
    buf
}

/// Writes `n` generated files into `dir` and returns their paths.
fn write_files(dir: &Path, n: usize, ext: &str, mut make: impl FnMut() -> Vec<u8>) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("doc-{i:05}.{ext}"));
            std::fs::write(&path, make()).unwrap();
            path
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Figures

fn new_vault(dir: &Path, name: &str) -> Vault {
    Vault::create(
        &dir.join(format!("{name}.vault")),
        Protection::Passphrase {
            passphrase: &Passphrase::new("correct horse battery staple".into()),
            kdf: KDF,
        },
    )
    .unwrap()
}

fn size_of(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// Ingests `files` into `vault`; returns the chunks indexed.
fn ingest(vault: &Vault, files: &[PathBuf]) -> usize {
    let mut memory = Memory::open(vault).unwrap();
    let items = files.iter().cloned().map(IngestItem::File).collect();
    let report = memory
        .ingest(items, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(
        report.ingested,
        files.len(),
        "every file ingested: {:?}",
        report.files.iter().find(|f| f.reason.is_some())
    );
    report.chunks
}

/// Embeds every pending chunk as `p3ak memory embed` does; returns (chunks, time embedding).
fn embed_all(vault: &Vault, embedder: &MiniLm) -> (usize, Duration) {
    let mut stored = 0;
    let mut embedding = Duration::ZERO;
    loop {
        let memory = Memory::open(vault).unwrap();
        let pending = memory.pending_embeddings(EMBED_BATCH_CHUNKS).unwrap();
        drop(memory);
        if pending.is_empty() {
            return (stored, embedding);
        }
        let mut batch = EmbeddingBatch::default();
        for doc in &pending {
            let texts: Vec<&str> = doc.texts.iter().map(String::as_str).collect();
            let start = Instant::now();
            let vectors = embedder.embed(&texts).unwrap();
            embedding += start.elapsed();
            batch.push(doc.id, embedder.model(), &vectors);
        }
        stored += store_embeddings(vault, &batch).unwrap();
    }
}

#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.0.push((figure.into(), value.into()));
    }

    fn print(&self) {
        let width = self.0.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        println!();
        println!("{:<width$}  value", "figure");
        println!("{:-<width$}  {:-<40}", "", "");
        for (f, v) in &self.0 {
            println!("{f:<width$}  {v}");
        }
    }
}

/// Ingest only: docs/s, MB/s, chunks/s.
fn throughput(dir: &Path, kind: &str, files: &[PathBuf], table: &mut Table) {
    let vault = new_vault(dir, kind);
    let bytes = size_of(files);
    let start = Instant::now();
    let chunks = ingest(&vault, files);
    let secs = start.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    let docs = files.len();
    println!(
        "bench ingest/{kind} docs={docs} chunks={chunks} input_mb={mb:.2} secs={secs:.2} \
         docs_per_s={:.0} mb_per_s={:.2} chunks_per_s={:.0}",
        docs as f64 / secs,
        mb / secs,
        chunks as f64 / secs
    );
    table.row(
        format!("ingest {kind}"),
        format!(
            "{:.0} docs/s, {:.2} MB/s, {:.0} chunks/s ({docs} docs, {mb:.2} MB, {chunks} chunks in {secs:.2} s)",
            docs as f64 / secs,
            mb / secs,
            chunks as f64 / secs
        ),
    );
}

/// Ingest, then embed every chunk with the real model.
fn with_embedding(dir: &Path, kind: &str, files: &[PathBuf], model: &MiniLm, table: &mut Table) {
    let vault = new_vault(dir, &format!("{kind}-embedded"));
    let bytes = size_of(files);
    let start = Instant::now();
    let chunks = ingest(&vault, files);
    let ingested = start.elapsed();
    let (embedded, embedding) = embed_all(&vault, model);
    let total = start.elapsed();
    assert_eq!(embedded, chunks, "every chunk embedded");
    let secs = total.as_secs_f64();
    let mb = bytes as f64 / 1e6;
    let docs = files.len();
    let per_chunk = embedding.as_secs_f64() * 1e3 / chunks.max(1) as f64;
    let per_chunk_all = total.saturating_sub(ingested).as_secs_f64() * 1e3 / chunks.max(1) as f64;
    println!(
        "bench ingest/{kind}+embed docs={docs} chunks={chunks} input_mb={mb:.2} secs={secs:.2} \
         docs_per_s={:.1} mb_per_s={:.3} ingest_s={:.2} embed_s={:.2} \
         embed_ms_per_chunk={per_chunk:.1} embed_pass_ms_per_chunk={per_chunk_all:.1}",
        docs as f64 / secs,
        mb / secs,
        ingested.as_secs_f64(),
        total.saturating_sub(ingested).as_secs_f64(),
    );
    table.row(
        format!("ingest {kind} + embed"),
        format!(
            "{:.1} docs/s, {:.3} MB/s ({docs} docs, {mb:.2} MB, {chunks} chunks in {secs:.1} s)",
            docs as f64 / secs,
            mb / secs,
        ),
    );
    table.row(
        format!("  embedding, {kind}"),
        format!(
            "{per_chunk:.1} ms/chunk in the model, {per_chunk_all:.1} ms/chunk with reading and storing"
        ),
    );
}

fn main() {
    let started = Instant::now();
    // Other work on the machine skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut table = Table::default();
    let mut rng = Rng(0x1a6e57);
    let words = Words::new(&mut rng, VOCABULARY);
    let dir = tempfile::tempdir().unwrap();

    let md = write_files(&dir.path().join("md"), MARKDOWN_FILES, "md", || {
        markdown(&words, &mut rng).into_bytes()
    });
    let pdfs = write_files(&dir.path().join("pdf"), PDF_FILES, "pdf", || {
        pdf(&words, &mut rng)
    });

    throughput(dir.path(), "markdown", &md, &mut table);
    throughput(dir.path(), "pdf", &pdfs, &mut table);

    match p3ak_embed::test_support::model_dir() {
        Some(model_dir) => {
            let model = MiniLm::new(p3ak_embed::Embedder::load(&model_dir).unwrap());
            with_embedding(
                dir.path(),
                "markdown",
                &md[..EMBED_MARKDOWN_FILES],
                &model,
                &mut table,
            );
            with_embedding(
                dir.path(),
                "pdf",
                &pdfs[..EMBED_PDF_FILES],
                &model,
                &mut table,
            );
        }
        None => {
            println!("bench ingest/+embed skipped: no embedding model available");
            table.row("ingest + embed", "skipped: no model");
        }
    }

    table.print();
    println!(
        "\n(total bench time {:.0} s; MB = 10^6 bytes of input files)",
        started.elapsed().as_secs_f64()
    );
}

//! `p3ak vault ingest | search | status | embed | reindex | eval`: the vault as a searchable
//! memory (the work is in `p3ak-memory`; embeddings from `p3ak-embed`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use p3ak_memory::eval::{Collection, EvalEvent};
use p3ak_memory::{
    EmbedTarget, Fusion, IngestEvent, IngestItem, IngestOptions, IngestReport, IngestStatus,
    Memory, MiniLm, Mode, SearchRequest, TextEmbedder, expand_paths, lock_embedder,
};
use p3ak_vault::{Access, Unlock, Vault, VaultKey};
use serde_json::json;

use crate::output::{Output, bytes, sanitize};

/// How long a writer waits for the vault's lock (held briefly by the embedding process).
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Chunks embedded between two commits of the embedding process.
const EMBED_BATCH_CHUNKS: usize = 64;

/// The unlocked vault's key, kept so the vault can be reopened (and handed to the background
/// embedding process) without asking again.
pub enum VaultAccess {
    Key(VaultKey),
    Unencrypted,
}

impl VaultAccess {
    fn unlock(&self) -> Unlock<'_> {
        match self {
            Self::Key(key) => Unlock::Key(key),
            Self::Unencrypted => Unlock::Unencrypted,
        }
    }

    /// Opens for writing, waiting up to [`LOCK_WAIT`] for another writer to finish.
    pub fn open_writer(&self, path: &Path) -> anyhow::Result<Vault> {
        let mut vault = Vault::open_waiting(path, self.unlock(), Access::Write, LOCK_WAIT)?;
        vault.set_actor(crate::commands::operator_actor());
        Ok(vault)
    }
}

/// Which signals rank (`--mode`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Bm25,
    Semantic,
    Hybrid,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Bm25 => Mode::Bm25,
            ModeArg::Semantic => Mode::Semantic,
            ModeArg::Hybrid => Mode::Hybrid,
        }
    }
}

/// How signals are fused (`--fusion`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FusionArg {
    /// Normalised scores, weighted (default).
    Convex,
    /// Reciprocal rank fusion, k = 60.
    Rrf,
}

impl From<FusionArg> for Fusion {
    fn from(f: FusionArg) -> Self {
        match f {
            FusionArg::Convex => Fusion::Convex,
            FusionArg::Rrf => Fusion::Rrf { k: 60.0 },
        }
    }
}

fn models_dir() -> anyhow::Result<PathBuf> {
    Ok(super::kernel::home()?.models())
}

/// Whether the embedding model is installed.
fn model_installed() -> anyhow::Result<bool> {
    Ok(p3ak_embed::installed(&models_dir()?)?.is_some())
}

/// Loads the installed model, or `None` when there is none.
pub fn load_embedder() -> anyhow::Result<Option<MiniLm>> {
    let Some(model) = p3ak_embed::installed(&models_dir()?)? else {
        return Ok(None);
    };
    let embedder =
        p3ak_embed::Embedder::load(&model.dir).context("cannot load the embedding model")?;
    Ok(Some(MiniLm::new(embedder)))
}

/// What to do about embeddings after an ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedAfter {
    /// Start a background process and return (the default).
    Background,
    /// Embed before returning.
    Wait,
    /// Leave them pending.
    No,
}

pub struct IngestArgs {
    pub vault: PathBuf,
    pub paths: Vec<PathBuf>,
    pub tags: Vec<(String, String)>,
    pub embed: EmbedAfter,
}

pub fn ingest(args: IngestArgs, access: &VaultAccess, out: &Output) -> anyhow::Result<()> {
    let vault = access.open_writer(&args.vault)?;
    let mut items = Vec::new();
    let mut stdin_used = false;
    let mut file_args = Vec::new();
    for path in &args.paths {
        if path.as_os_str() == "-" {
            if stdin_used {
                bail!("`-` (standard input) can be given once");
            }
            stdin_used = true;
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            items.push(IngestItem::Bytes {
                name: "stdin".into(),
                title: None,
                bytes,
            });
        } else {
            file_args.push(path.clone());
        }
    }
    let (files, mut expand_failures) = expand_paths(&file_args);
    items.extend(files.into_iter().map(IngestItem::File));
    let options = IngestOptions {
        tags: args.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..IngestOptions::default()
    };
    let bar = out.progress_bytes("ingest");
    let mut files_total = 0u64;
    let mut files_done = 0u64;
    let mut memory = Memory::open(&vault)?;
    let mut report = memory.ingest(items, &options, &mut |event| match event {
        IngestEvent::Planned { items, bytes } => {
            files_total = items;
            bar.set_length(bytes);
            bar.set_message(format!("0/{items} files"));
        }
        IngestEvent::Done(outcome) => {
            files_done += 1;
            bar.inc(outcome.bytes);
            bar.set_message(format!("{files_done}/{files_total} files"));
            if outcome.status == IngestStatus::Failed {
                bar.suspend(|| print_failure(out, &outcome.item, outcome.reason.as_deref()));
            }
        }
        IngestEvent::Committing { documents } => {
            bar.set_message(format!(
                "{files_done}/{files_total} files, committing {documents}"
            ));
        }
    })?;
    bar.finish_and_clear();
    for failure in expand_failures.drain(..) {
        print_failure(out, &failure.item, failure.reason.as_deref());
        report.failed += 1;
        report.files.push(failure);
    }
    let status = memory.status();
    drop(memory);
    drop(vault);
    let embedding = after_ingest(&args.vault, access, args.embed, status.pending_chunks, out)?;
    print_ingest_summary(&report, &embedding, out);
    if report.failed > 0 {
        bail!("{} of {} files failed", report.failed, report.files.len());
    }
    Ok(())
}

fn print_failure(out: &Output, item: &str, reason: Option<&str>) {
    if !out.is_json() {
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: {}: {}",
            sanitize(item),
            sanitize(reason.unwrap_or("failed"))
        );
    }
}

fn print_ingest_summary(report: &IngestReport, embedding: &serde_json::Value, out: &Output) {
    out.json(&json!({ "report": report, "embedding": embedding }));
    for file in &report.files {
        if let (IngestStatus::Ingested | IngestStatus::Updated, Some(reason)) =
            (file.status, &file.reason)
        {
            out.line(format!(
                "note: {}: {}",
                sanitize(&file.item),
                sanitize(reason)
            ));
        }
    }
    let mut line = format!(
        "ingested {}, unchanged {}, updated {}, skipped {}, failed {} ({} chunks, {})",
        report.ingested,
        report.unchanged,
        report.updated,
        report.skipped,
        report.failed,
        report.chunks,
        bytes(report.bytes)
    );
    if report.caught_up > 0 {
        line.push_str(&format!("; indexed {} stored documents", report.caught_up));
    }
    out.line(line);
    if let Some(message) = embedding.get("message").and_then(|m| m.as_str()) {
        out.line(message);
    }
}

/// Starts, runs or skips the embedding of pending chunks. Returns what happened, as JSON.
fn after_ingest(
    path: &Path,
    access: &VaultAccess,
    embed: EmbedAfter,
    pending: usize,
    out: &Output,
) -> anyhow::Result<serde_json::Value> {
    if pending == 0 {
        return Ok(json!({ "pending": 0 }));
    }
    if !model_installed()? {
        return Ok(json!({
            "pending": pending,
            "message": "semantic search is off until an embedding model is installed: `p3ak models install`",
        }));
    }
    match embed {
        EmbedAfter::No => Ok(json!({
            "pending": pending,
            "message": format!("{pending} chunks wait for embeddings: `p3ak vault embed` computes them"),
        })),
        EmbedAfter::Wait => {
            let done = embed_pending(path, access, out)?;
            Ok(json!({ "pending": 0, "embedded": done }))
        }
        EmbedAfter::Background => {
            let pid = spawn_embedder(path, access)?;
            Ok(json!({
                "pending": pending,
                "pid": pid,
                "message": format!(
                    "embedding {pending} chunks in the background (pid {pid}); `p3ak vault status` shows progress"
                ),
            }))
        }
    }
}

fn embed_log_path(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".embed.log");
    vault.with_file_name(name)
}

/// Starts `p3ak vault embed --key-stdin` in its own process group, handing it the vault key on
/// a pipe (never argv or the environment), or `--no-encrypt` and no key for a vault the operator
/// opened as unencrypted. Its errors go to `<vault>.embed.log`.
fn spawn_embedder(path: &Path, access: &VaultAccess) -> anyhow::Result<u32> {
    use std::os::unix::fs::OpenOptionsExt;
    let exe = std::env::current_exe().context("cannot find the p3ak binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(embed_log_path(path))
        .context("cannot open the embedding log")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("vault")
        .arg("embed")
        .arg(path)
        .arg("--key-stdin");
    if matches!(access, VaultAccess::Unencrypted) {
        command.arg("--no-encrypt");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the embedding process")?;
    if let (Some(mut stdin), VaultAccess::Key(key)) = (child.stdin.take(), access) {
        stdin
            .write_all(key.to_handoff_bytes().expose())
            .context("cannot hand the key to the embedding process")?;
    }
    Ok(child.id())
}

/// Reads the key handed over by [`spawn_embedder`]; with `no_encrypt` (the vault was opened as
/// unencrypted, explicitly) there is none.
pub fn key_from_stdin(no_encrypt: bool) -> anyhow::Result<VaultAccess> {
    let mut bytes = p3ak_crypto::SecretBytes::with_capacity(64);
    std::io::stdin()
        .read_to_end(bytes.expose_mut())
        .context("cannot read the key from standard input")?;
    match (bytes.is_empty(), no_encrypt) {
        (true, true) => return Ok(VaultAccess::Unencrypted),
        (true, false) => bail!("no vault key on standard input"),
        (false, true) => bail!("a vault key on standard input and `--no-encrypt`: give one"),
        (false, false) => {}
    }
    Ok(VaultAccess::Key(VaultKey::from_handoff_bytes(
        bytes.expose(),
    )?))
}

/// Embeds every pending chunk, committing every [`EMBED_BATCH_CHUNKS`]; holds the embedding
/// lock throughout and the vault's writer lock only while committing. Returns the chunks stored.
pub fn embed_pending(path: &Path, access: &VaultAccess, out: &Output) -> anyhow::Result<usize> {
    let Some(lock) = lock_embedder(path)? else {
        out.line("another process is embedding this vault's chunks");
        return Ok(0);
    };
    let Some(embedder) = load_embedder()? else {
        bail!("no embedding model is installed: run `p3ak models install`");
    };
    let actor = crate::commands::operator_actor();
    let target = EmbedTarget {
        path,
        unlock: access.unlock(),
        actor: &actor,
        lock_wait: LOCK_WAIT,
    };
    let bar = out.progress("embed");
    let stored = p3ak_memory::embed_pending(
        target,
        &lock,
        &embedder,
        EMBED_BATCH_CHUNKS,
        &mut crate::output::track(&bar),
    )?;
    bar.finish_and_clear();
    Ok(stored)
}

pub fn embed(path: &Path, access: &VaultAccess, out: &Output) -> anyhow::Result<()> {
    let stored = embed_pending(path, access, out)?;
    out.json(&json!({ "embedded": stored }));
    out.line(format!("embedded {stored} chunks"));
    Ok(())
}

pub struct SearchArgs {
    pub query: String,
    pub k: usize,
    pub mode: Mode,
    pub tags: Vec<(String, String)>,
    pub explain: bool,
    pub fusion: Fusion,
}

pub fn search(vault: &Vault, args: SearchArgs, out: &Output) -> anyhow::Result<()> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let mut memory = Memory::open(vault)?;
    // One search per opening: loading the approximate index costs more than one exact scan
    // (docs/search.md, "Approximate from 50K chunks").
    memory.scan_exactly(true);
    let wants_vector = args.mode != Mode::Bm25 && memory.status().embedded_chunks > 0;
    let embedder = if wants_vector || args.mode == Mode::Semantic {
        load_embedder()?
    } else {
        None
    };
    let started = Instant::now();
    let vector = match &embedder {
        Some(e) => Some(
            e.embed(&[args.query.as_str()])
                .map_err(|e| anyhow::anyhow!("embedding failed: {e}"))?
                .into_iter()
                .next()
                .unwrap_or_default(),
        ),
        None => None,
    };
    let embed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut request = SearchRequest::new(&args.query);
    request.k = args.k;
    request.mode = args.mode;
    request.tags = args.tags.into_iter().collect();
    request.fusion = args.fusion;
    let started = Instant::now();
    let results = memory.search(&request, vector.as_deref())?;
    let search_ms = started.elapsed().as_secs_f64() * 1000.0;
    if out.is_json() {
        out.json(&json!({
            "results": results,
            "timing_ms": { "query_embedding": embed_ms, "search": search_ms },
        }));
        return Ok(());
    }
    for note in &results.notes {
        out.warn(note);
    }
    if results.hits.is_empty() {
        out.line("no results");
    }
    for (i, hit) in results.hits.iter().enumerate() {
        let title = hit
            .title
            .as_deref()
            .or(hit.source.as_deref())
            .unwrap_or("(untitled)");
        let mut head = format!("{}. {}", i + 1, sanitize(title));
        if !hit.heading_path.is_empty() {
            head.push_str(&format!(" › {}", sanitize(&hit.heading_path.join(" › "))));
        }
        if let Some(location) = &hit.location {
            head.push_str(&format!(" ({})", sanitize(location)));
        }
        out.line(head);
        out.line(format!(
            "   id {}  score {:.3}",
            hit.id.to_hex().get(..12).unwrap_or_default(),
            hit.score
        ));
        let snippet = hit.snippet.marked("**", "**").replace('\n', " ");
        out.line(format!("   {}", sanitize(&snippet)));
        if args.explain {
            let parts: Vec<String> = results
                .signals
                .iter()
                .map(
                    |signal| match hit.signals.iter().find(|p| p.signal == *signal) {
                        Some(p) => format!(
                            "{} #{} score {:.3} (+{:.3})",
                            signal.name(),
                            p.rank,
                            p.score,
                            p.contribution
                        ),
                        None => format!("{} —", signal.name()),
                    },
                )
                .collect();
            out.line(format!("   {}: {}", results.fusion, parts.join(" | ")));
        }
    }
    Ok(())
}

pub fn status(vault: &Vault, out: &Output) -> anyhow::Result<()> {
    let memory = Memory::open(vault)?;
    let status = memory.status();
    let model = model_installed()?;
    let log = std::fs::read_to_string(embed_log_path(vault.path())).unwrap_or_default();
    let last_error = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .map(str::to_owned);
    out.json(&json!({
        "status": status,
        "model_installed": model,
        "embedder_last_error": if status.embedder_pid.is_none() { last_error.clone() } else { None },
    }));
    out.line(format!(
        "documents {} (indexed {}, not indexed {})",
        status.documents, status.indexed_documents, status.unindexed_documents
    ));
    out.line(format!(
        "chunks    {} (embedded {}, pending {})",
        status.chunks, status.embedded_chunks, status.pending_chunks
    ));
    out.line(format!(
        "index     {}, embeddings {}",
        bytes(status.index_bytes),
        bytes(status.vector_bytes)
    ));
    if status.approximate_bytes > 0 {
        out.line(format!(
            "semantic  approximate index {} (HNSW; candidates scored exactly)",
            bytes(status.approximate_bytes)
        ));
    } else if status.embedded_chunks >= p3ak_memory::APPROXIMATE_MIN_ROWS {
        out.line(
            "semantic  exact scan: the approximate index is built by the next `p3ak vault embed`",
        );
    }
    match (status.embedder_pid, model) {
        (Some(pid), _) => out.line(format!("embedding in the background (pid {pid})")),
        (None, false) => {
            out.line("semantic search is off: no embedding model (`p3ak models install`)")
        }
        (None, true) if status.pending_chunks > 0 => {
            out.line("embeddings pending: run `p3ak vault embed` (or the next ingest starts it)");
        }
        (None, true) => {}
    }
    if status.embedder_pid.is_none()
        && let Some(error) = last_error
    {
        out.line(format!("last embedding run failed: {}", sanitize(&error)));
    }
    Ok(())
}

pub fn reindex(vault: &Vault, out: &Output) -> anyhow::Result<()> {
    let mut memory = Memory::open_for_rebuild(vault)?;
    let indexed = memory.reindex(&IngestOptions::default())?;
    out.json(&json!({ "indexed": indexed }));
    out.line(format!("indexed {indexed} documents"));
    Ok(())
}

/// After `put`/`import`: index what is not indexed yet.
pub fn index_stored(vault: &Vault) -> anyhow::Result<usize> {
    let mut memory = Memory::open(vault)?;
    Ok(memory
        .ingest(Vec::new(), &IngestOptions::default(), &mut |_| {})?
        .caught_up)
}

/// Deletes a document with its index entries and embeddings.
pub fn delete(vault: &Vault, id: &p3ak_vault::DocId) -> anyhow::Result<()> {
    let mut memory = Memory::open(vault)?;
    memory.delete_document(id, &IngestOptions::default())?;
    Ok(())
}

pub fn eval(dir: &Path, fusion: Fusion, out: &Output) -> anyhow::Result<()> {
    let collection = Collection::load(dir)?;
    let embedder = load_embedder()?;
    let work = tempfile::Builder::new()
        .prefix("p3ak-eval-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let bar = out.progress("eval");
    let report = p3ak_memory::eval::evaluate(
        &collection,
        work.path(),
        embedder.as_ref().map(|e| e as &dyn TextEmbedder),
        fusion,
        &mut |event| match event {
            EvalEvent::Ingested { chunks, .. } => {
                bar.set_message("embed");
                bar.set_length(chunks as u64);
            }
            EvalEvent::Embedded { done, total } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            EvalEvent::Searched { mode, done, total } => {
                bar.set_message(format!("{mode:?}").to_lowercase());
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
    )?;
    bar.finish_and_clear();
    out.json(&report);
    out.line(format!(
        "{} documents, {} chunks, {} queries; ingest {:.1} s, embedding {:.1} s",
        report.documents,
        report.chunks,
        report.queries,
        report.ingest_seconds,
        report.embed_seconds
    ));
    out.line(format!(
        "{:<10} {:>8} {:>8} {:>11} {:>10}",
        "mode", "nDCG@10", "MRR@10", "Recall@100", "ms/query"
    ));
    for m in &report.modes {
        out.line(format!(
            "{:<10} {:>8.3} {:>8.3} {:>11.3} {:>10.2}",
            format!("{:?}", m.mode).to_lowercase(),
            m.scores.ndcg_at_10,
            m.scores.mrr_at_10,
            m.scores.recall_at_100,
            m.mean_search_ms
        ));
    }
    if embedder.is_some() {
        out.line(format!(
            "query embedding: {:.1} ms per query (not included above)",
            report.mean_query_embedding_ms
        ));
    }
    if let Some(note) = &report.note {
        out.warn(note);
    }
    Ok(())
}

//! An open vault as the SDK holds it: the path and the Argon2id-derived key, never the
//! passphrase. Each call opens the vault for as long as it needs it, as each `p3ak vault`
//! command does, so two Python objects (or a Python program and the CLI) can share a vault.
//!
//! Everything here is plain Rust (no Python types), so it is tested without an interpreter;
//! `lib.rs` wraps it for Python. Answers are JSON text: the Python package parses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p3ak_memory::{
    EmbedTarget, Fusion, IngestItem, IngestOptions, IngestStatus, Memory, MiniLm, Mode,
    SearchRequest, TextEmbedder, expand_paths, lock_embedder,
};
use p3ak_vault::{
    Access, KdfParams, ListFilter, NewDocument, Passphrase, Protection, Unlock, Vault, VaultError,
    VaultKey,
};
use serde_json::json;

use crate::error::{Result, SdkError};
use crate::models;

/// How long a writer waits for the vault's lock (another writer commits briefly), as the CLI.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Chunks embedded between two commits, as the CLI's embedding process.
const EMBED_BATCH_CHUNKS: usize = 64;

/// How the vault is unlocked each time it is opened.
enum Unlocking {
    /// Zeroized on drop (`VaultKey` has no `Debug`, no `Clone`).
    Key(VaultKey),
    /// Opened as plaintext because the caller said so (`unencrypted=True`).
    Unencrypted,
}

/// A vault the caller unlocked; [`VaultHandle::close`] forgets the key.
pub struct VaultHandle {
    path: PathBuf,
    unlocking: Mutex<Option<Unlocking>>,
    /// The embedding model, loaded on the first search that needs it.
    embedder: Mutex<Option<Arc<MiniLm>>>,
}

/// How the audit log names the Python program.
fn actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string());
    format!("python uid={uid} pid={}", std::process::id())
}

/// Checks, before any key is derived, that the header agrees with the caller: encrypted
/// without `unencrypted`, plaintext with it (as the CLI's `--no-encrypt`).
fn check_encryption(path: &Path, unencrypted: bool) -> Result<()> {
    let header = p3ak_vault::peek(path)?;
    match (header.is_encrypted(), unencrypted) {
        (false, false) => Err(SdkError::Invalid(format!(
            "`{}` is not encrypted, and it was left untouched: if you created it unencrypted, \
             open it with `unencrypted=True`; otherwise it is not your encrypted vault",
            path.display()
        ))),
        (true, true) => Err(SdkError::Invalid(format!(
            "`{}` is encrypted: give its passphrase instead of `unencrypted=True`",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn no_passphrase() -> SdkError {
    SdkError::Invalid("a passphrase is needed (or `unencrypted=True`)".into())
}

/// Parses a search mode as the CLI's `--mode` does.
pub fn parse_mode(text: &str) -> Result<Mode> {
    match text {
        "bm25" => Ok(Mode::Bm25),
        "semantic" => Ok(Mode::Semantic),
        "hybrid" => Ok(Mode::Hybrid),
        _ => Err(SdkError::Invalid(format!(
            "unknown mode `{text}` (bm25, semantic, hybrid)"
        ))),
    }
}

/// Parses a fusion as the CLI's `--fusion` does (reciprocal rank fusion with k = 60).
pub fn parse_fusion(text: &str) -> Result<Fusion> {
    match text {
        "convex" => Ok(Fusion::Convex),
        "rrf" => Ok(Fusion::Rrf { k: 60.0 }),
        _ => Err(SdkError::Invalid(format!(
            "unknown fusion `{text}` (convex, rrf)"
        ))),
    }
}

/// Checks tags as the CLI's `--tag KEY=VALUE` does.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in tags {
        p3ak_vault::validate_tag(key, value)?;
    }
    Ok(())
}

/// A search's parameters, as `p3ak vault search` takes them.
pub struct SearchArgs<'a> {
    pub query: &'a str,
    pub k: usize,
    pub mode: &'a str,
    pub fusion: &'a str,
    pub tags: BTreeMap<String, String>,
}

impl VaultHandle {
    /// Creates a vault: encrypted with `passphrase` (Argon2id, RFC 9106's second option, as
    /// the CLI), or plaintext when `passphrase` is `None` and `unencrypted` is set.
    pub fn create(path: &Path, passphrase: Option<Passphrase>, unencrypted: bool) -> Result<Self> {
        let access = match (passphrase, unencrypted) {
            (Some(_), true) => {
                return Err(SdkError::Invalid(
                    "a passphrase and `unencrypted=True`: give one".into(),
                ));
            }
            (None, true) => {
                Vault::create(path, Protection::Unencrypted)?;
                Unlocking::Unencrypted
            }
            (Some(passphrase), false) => {
                Vault::create(
                    path,
                    Protection::Passphrase {
                        passphrase: &passphrase,
                        kdf: KdfParams::RFC9106_SECOND,
                    },
                )?;
                // The created handle is dropped (its lock with it); the key is derived again
                // so that later calls reopen without the passphrase.
                Unlocking::Key(VaultKey::derive(path, &passphrase)?)
            }
            (None, false) => return Err(no_passphrase()),
        };
        Ok(Self::new(path, access))
    }

    /// Opens an existing vault: one Argon2id run checks the passphrase and keeps the key.
    pub fn open(path: &Path, passphrase: Option<Passphrase>, unencrypted: bool) -> Result<Self> {
        check_encryption(path, unencrypted)?;
        let access = match passphrase {
            Some(passphrase) => Unlocking::Key(VaultKey::derive(path, &passphrase)?),
            None if unencrypted => Unlocking::Unencrypted,
            None => return Err(no_passphrase()),
        };
        Ok(Self::new(path, access))
    }

    fn new(path: &Path, access: Unlocking) -> Self {
        Self {
            path: path.to_path_buf(),
            unlocking: Mutex::new(Some(access)),
            embedder: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_closed(&self) -> bool {
        self.unlocking
            .lock()
            .map_or(true, |access| access.is_none())
    }

    /// Forgets the key (zeroized as it drops). Later calls fail with "the vault is closed".
    pub fn close(&self) {
        if let Ok(mut access) = self.unlocking.lock() {
            access.take();
        }
        if let Ok(mut embedder) = self.embedder.lock() {
            embedder.take();
        }
    }

    /// Runs `work` with the vault opened for `access` (a writer waits for the lock).
    fn with_vault<T>(&self, access: Access, work: impl FnOnce(&Vault) -> Result<T>) -> Result<T> {
        let vault = self.open_vault(access)?;
        work(&vault)
    }

    /// Runs `work` with what unlocks the vault; "closed" once `close` forgot the key.
    fn with_unlock<T>(&self, work: impl FnOnce(Unlock<'_>) -> Result<T>) -> Result<T> {
        let guard = self.unlocking.lock().map_err(|_| self.closed())?;
        match guard.as_ref() {
            Some(Unlocking::Key(key)) => work(Unlock::Key(key)),
            Some(Unlocking::Unencrypted) => work(Unlock::Unencrypted),
            None => Err(self.closed()),
        }
    }

    fn open_vault(&self, access: Access) -> Result<Vault> {
        let mut vault = self.with_unlock(|unlock| {
            Ok(match access {
                Access::Write => Vault::open_waiting(&self.path, unlock, access, LOCK_WAIT)?,
                _ => Vault::open(&self.path, unlock, access)?,
            })
        })?;
        vault.set_actor(actor());
        Ok(vault)
    }

    fn closed(&self) -> SdkError {
        SdkError::Closed {
            path: self.path.clone(),
        }
    }

    /// Stores a document and indexes it; `{"id", "status"}`.
    pub fn put(
        &self,
        content: &[u8],
        title: Option<String>,
        source: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<String> {
        check_tags(&tags)?;
        self.with_vault(Access::Write, |vault| {
            let outcome = vault.put(NewDocument {
                content,
                title: title.or_else(|| source.clone()),
                tags,
                source,
            })?;
            // As `p3ak vault put`: what is stored is searchable.
            Memory::open(vault)?.ingest(Vec::new(), &IngestOptions::default(), &mut |_| {})?;
            Ok(json!({ "id": outcome.id, "status": outcome.status }).to_string())
        })
    }

    /// Stores a file's bytes, titled with its name.
    pub fn put_file(
        &self,
        path: &Path,
        title: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<String> {
        let content =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| SdkError::Read {
                path: path.to_path_buf(),
                source,
            })?);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.put(&content, title, name, tags)
    }

    /// A document's metadata (JSON) and content. `id` may be a unique prefix.
    pub fn get(&self, id: &str) -> Result<(String, p3ak_vault::SecretBytes)> {
        self.with_vault(Access::Read, |vault| {
            let id = vault.resolve(id)?;
            let (meta, content) = vault.get(&id)?;
            Ok((serde_json::to_string(&meta)?, content))
        })
    }

    /// The documents, filtered as `p3ak vault list --match --tag`.
    pub fn list(&self, matching: Option<&str>, tags: BTreeMap<String, String>) -> Result<String> {
        check_tags(&tags)?;
        self.with_vault(Access::Read, |vault| {
            let docs = vault.list_matching(&ListFilter::new(matching, tags.into_iter().collect()));
            Ok(serde_json::to_string(&docs)?)
        })
    }

    /// Deletes a document with its index entries and embeddings; returns its full id.
    pub fn delete(&self, id: &str) -> Result<String> {
        self.with_vault(Access::Write, |vault| {
            let id = vault.resolve(id)?;
            Memory::open(vault)?.delete_document(&id, &IngestOptions::default())?;
            Ok(id.to_string())
        })
    }

    /// The vault's summary, as `p3ak vault info --json`.
    pub fn info(&self) -> Result<String> {
        self.with_vault(Access::Read, |vault| {
            Ok(serde_json::to_string(&vault.info()?)?)
        })
    }

    /// What is indexed and embedded, as `p3ak vault status --json` (without the background
    /// process's log, which the SDK never starts).
    pub fn status(&self) -> Result<String> {
        let model_installed = p3ak_embed::installed(&models::models_dir()?)?.is_some();
        self.with_vault(Access::Read, |vault| {
            let status = Memory::open(vault)?.status();
            Ok(json!({ "status": status, "model_installed": model_installed }).to_string())
        })
    }

    /// Ingests files, directories (recursively) and globs, as `p3ak vault ingest`; with
    /// `embed`, computes the embeddings before returning (the CLI's `--wait`; the SDK starts no
    /// background process). `{"report", "embedding"}`; when a file failed, the others are
    /// ingested all the same and [`SdkError::Ingest`] carries that JSON.
    pub fn ingest(
        &self,
        paths: &[PathBuf],
        tags: BTreeMap<String, String>,
        embed: bool,
    ) -> Result<String> {
        check_tags(&tags)?;
        let (files, expand_failures) = expand_paths(paths);
        let items = files.into_iter().map(IngestItem::File).collect();
        let options = IngestOptions {
            tags,
            ..IngestOptions::default()
        };
        let (mut report, pending) = self.with_vault(Access::Write, |vault| {
            let mut memory = Memory::open(vault)?;
            let report = memory.ingest(items, &options, &mut |_| {})?;
            Ok((report, memory.status().pending_chunks))
        })?;
        for failure in expand_failures {
            report.failed += 1;
            report.files.push(failure);
        }
        let embedding = self.after_ingest(embed, pending)?;
        let answer = json!({ "report": report, "embedding": embedding }).to_string();
        let first_failure = report
            .files
            .iter()
            .find(|f| f.status == IngestStatus::Failed);
        match first_failure {
            None => Ok(answer),
            Some(failure) => Err(SdkError::Ingest {
                first: format!(
                    "{}: {}",
                    failure.item,
                    failure.reason.as_deref().unwrap_or("failed")
                ),
                failed: report.failed,
                total: report.files.len(),
                report: answer,
            }),
        }
    }

    /// Embeds or leaves pending what an ingest left, and says so as the CLI does.
    fn after_ingest(&self, embed: bool, pending: usize) -> Result<serde_json::Value> {
        if pending == 0 {
            return Ok(json!({ "pending": 0 }));
        }
        if p3ak_embed::installed(&models::models_dir()?)?.is_none() {
            return Ok(json!({
                "pending": pending,
                "message": "semantic search is off until an embedding model is installed: `p3ak models install`",
            }));
        }
        if !embed {
            return Ok(json!({
                "pending": pending,
                "message": format!("{pending} chunks wait for embeddings: `Vault.embed()` computes them"),
            }));
        }
        match self.embed()? {
            Some(done) => Ok(json!({ "pending": 0, "embedded": done })),
            None => Ok(json!({
                "pending": pending,
                "message": "another process is embedding this vault's chunks",
            })),
        }
    }

    /// Computes the pending embeddings now; returns how many chunks were embedded, or `None`
    /// when another process is embedding this vault's chunks (it holds their lock).
    pub fn embed(&self) -> Result<Option<usize>> {
        let Some(lock) = lock_embedder(&self.path)? else {
            return Ok(None);
        };
        let Some(embedder) = self.embedder()? else {
            return Err(SdkError::Invalid(
                "no embedding model is installed: run `p3ak models install`".into(),
            ));
        };
        let actor = actor();
        self.with_unlock(|unlock| {
            let target = EmbedTarget {
                path: &self.path,
                unlock,
                actor: &actor,
                lock_wait: LOCK_WAIT,
            };
            Ok(Some(p3ak_memory::embed_pending(
                target,
                &lock,
                embedder.as_ref(),
                EMBED_BATCH_CHUNKS,
                &mut |_, _| {},
            )?))
        })
    }

    /// The installed model, loaded once per handle; `None` when none is installed.
    fn embedder(&self) -> Result<Option<Arc<MiniLm>>> {
        let mut cached = self.embedder.lock().map_err(|_| self.closed())?;
        if let Some(embedder) = cached.as_ref() {
            return Ok(Some(Arc::clone(embedder)));
        }
        let Some(model) = p3ak_embed::installed(&models::models_dir()?)? else {
            return Ok(None);
        };
        let embedder = Arc::new(MiniLm::new(p3ak_embed::Embedder::load(&model.dir)?));
        *cached = Some(Arc::clone(&embedder));
        Ok(Some(embedder))
    }

    /// Searches as `p3ak vault search --json`: `{"results", "timing_ms"}`, each hit with its
    /// signals' ranks, scores and contributions (what `--explain` prints).
    pub fn search(&self, args: SearchArgs<'_>) -> Result<String> {
        let mode = parse_mode(args.mode)?;
        let fusion = parse_fusion(args.fusion)?;
        if args.k == 0 {
            return Err(SdkError::Invalid("k must be at least 1".into()));
        }
        check_tags(&args.tags)?;
        self.with_vault(Access::Read, |vault| {
            let mut memory = Memory::open(vault)?;
            // One search per opening: loading the approximate index costs more than one exact scan
            // (docs/search.md, "Approximate from 50K chunks").
            memory.scan_exactly(true);
            let wants_vector = mode != Mode::Bm25 && memory.status().embedded_chunks > 0;
            let embedder = if wants_vector || mode == Mode::Semantic {
                self.embedder()?
            } else {
                None
            };
            let started = Instant::now();
            let vector = match &embedder {
                Some(e) => Some(
                    e.embed(&[args.query])
                        .map_err(|e| SdkError::Invalid(format!("embedding failed: {e}")))?
                        .into_iter()
                        .next()
                        .unwrap_or_default(),
                ),
                None => None,
            };
            let embed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut request = SearchRequest::new(args.query);
            request.k = args.k;
            request.mode = mode;
            request.tags = args.tags;
            request.fusion = fusion;
            let started = Instant::now();
            let results = memory.search(&request, vector.as_deref())?;
            let search_ms = started.elapsed().as_secs_f64() * 1000.0;
            Ok(json!({
                "results": results,
                "timing_ms": { "query_embedding": embed_ms, "search": search_ms },
            })
            .to_string())
        })
    }

    /// The vault's audit log: the last `count` entries, or all.
    pub fn log(&self, count: Option<u64>) -> Result<String> {
        self.with_vault(Access::Read, |vault| {
            let len = vault.log_len();
            let from = count.map_or(0, |n| len.saturating_sub(n));
            Ok(serde_json::to_string(&vault.log_entries(from, len)?)?)
        })
    }

    /// Authenticates every record and the audit log, as `p3ak vault verify`: recorded in the
    /// log when the vault can take a writer; [`SdkError::Damaged`] naming the first problem.
    pub fn verify(&self) -> Result<String> {
        let (vault, loggable) = match self.open_vault(Access::Write) {
            Ok(vault) => (vault, true),
            Err(SdkError::Vault(VaultError::Locked { .. } | VaultError::Damaged(_))) => {
                (self.open_vault(Access::Read)?, false)
            }
            Err(e) => return Err(e),
        };
        let report = vault.verify(&mut |_, _| {})?;
        if loggable {
            vault.log_event(
                "vault.verify",
                json!({ "ok": report.is_ok(), "problems": report.problems.len() }),
            )?;
        }
        let answer = json!({ "report": report, "logged": loggable }).to_string();
        match report.problems.first() {
            None => Ok(answer),
            Some(first) => Err(SdkError::Damaged {
                message: format!(
                    "vault is damaged: {first}{}",
                    match report.problems.len() {
                        1 => String::new(),
                        n => format!(" (and {} more problems)", n - 1),
                    }
                ),
                report: answer,
            }),
        }
    }
}

impl VaultHandle {
    /// Verifies the kernel's audit log (a vault) as `p3ak audit verify`: every entry, the hash
    /// chain, the signed checkpoints, and the checkpoint file published outside the log.
    /// `{"log", "checkpoint_file"}`; [`SdkError::Damaged`] naming the first problem.
    pub fn verify_audit_log(&self, checkpoint: &Path) -> Result<String> {
        let vault = self.open_vault(Access::Read)?;
        let report = vault.verify(&mut |_, _| {})?;
        let external = p3ak_vault::external::check_external_checkpoint(&vault, checkpoint)?;
        let answer = json!({ "log": report, "checkpoint_file": external }).to_string();
        match report.problems.iter().chain(&external.problems).next() {
            None => Ok(answer),
            Some(first) => Err(SdkError::Damaged {
                message: format!("audit log is damaged: {first}"),
                report: answer,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn passphrase() -> Option<Passphrase> {
        Some(Passphrase::new("correct horse battery staple".into()))
    }

    #[test]
    fn create_put_get_search_and_verify_without_python() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vault");
        let vault = VaultHandle::create(&path, passphrase(), false).unwrap();
        let put: serde_json::Value = serde_json::from_str(
            &vault
                .put(
                    b"the quick brown fox",
                    Some("fox".into()),
                    None,
                    BTreeMap::new(),
                )
                .unwrap(),
        )
        .unwrap();
        let id = put["id"].as_str().unwrap();
        let (_, content) = vault.get(id).unwrap();
        assert_eq!(content.expose(), b"the quick brown fox");
        let results = vault
            .search(SearchArgs {
                query: "fox",
                k: 5,
                mode: "bm25",
                fusion: "convex",
                tags: BTreeMap::new(),
            })
            .unwrap();
        assert!(results.contains(id));
        vault.verify().unwrap();
        vault.close();
        assert_eq!(vault.info().unwrap_err().kind(), Kind::Closed);
    }

    #[test]
    fn wrong_passphrase_and_bad_mode_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vault");
        drop(VaultHandle::create(&path, passphrase(), false).unwrap());
        let wrong = VaultHandle::open(&path, Some(Passphrase::new("nope".into())), false);
        assert_eq!(wrong.err().unwrap().kind(), Kind::WrongPassphrase);
        assert_eq!(
            parse_mode("fuzzy").unwrap_err().line(),
            "unknown mode `fuzzy` (bm25, semantic, hybrid)"
        );
    }
}

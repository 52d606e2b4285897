//! `p3ak vault …`: the encrypted document store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use p3ak_vault::{
    Access, KdfParams, ListFilter, NewDocument, NewKeys, Passphrase, Protection, Unlock, Vault,
    VaultKey,
};

use super::memory;
use serde_json::json;

use crate::output::{Output, bytes, sanitize, timestamp};
use crate::secrets::{self, ENV_NEW_PASSPHRASE, ENV_PASSPHRASE, PassphraseArgs, Source};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Walk a temporary vault through its whole life and print each step.
    Demo(super::vault_demo::Args),
    /// Create a new vault (encrypted unless --no-encrypt).
    Create {
        #[command(flatten)]
        target: VaultArg,
    },
    /// Store a document; prints its id.
    Put {
        #[command(flatten)]
        target: VaultArg,
        /// File to store (`-` for standard input).
        #[arg(required_unless_present = "text", conflicts_with = "text")]
        file: Option<PathBuf>,
        /// Store this text instead of a file.
        #[arg(long)]
        text: Option<String>,
        /// Title (default: the file name).
        #[arg(long)]
        title: Option<String>,
        /// A tag, as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Write a document's content to standard output.
    Get {
        #[command(flatten)]
        target: VaultArg,
        /// Document id (or a unique prefix of at least 4 hex digits).
        id: String,
    },
    /// List documents, optionally filtered.
    List {
        #[command(flatten)]
        target: VaultArg,
        /// Only documents whose title or source contains this text (case-insensitive).
        #[arg(long = "match", value_name = "TEXT")]
        matching: Option<String>,
        /// Only documents with this tag; repeatable (all must match).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Delete a document (space is reclaimed by `compact`).
    Delete {
        #[command(flatten)]
        target: VaultArg,
        id: String,
    },
    /// Show the header (format, encryption status, KDF) and contents summary.
    Info {
        #[command(flatten)]
        target: VaultArg,
        /// Read only the header; no passphrase needed.
        #[arg(long)]
        header_only: bool,
    },
    /// Write every document as a plaintext file into a new directory (0700, files 0600).
    Export {
        #[command(flatten)]
        target: VaultArg,
        dir: PathBuf,
    },
    /// Import a directory: an export (ids, titles and tags kept) or any tree of files.
    Import {
        #[command(flatten)]
        target: VaultArg,
        dir: PathBuf,
    },
    /// Ingest files, directories (recursively) and globs, or `-` for standard input:
    /// convert, chunk, store and index them; embeddings follow in the background.
    Ingest {
        #[command(flatten)]
        target: VaultArg,
        /// Files, directories or glob patterns; `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A tag for every document, as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Compute the embeddings before returning instead of in the background.
        #[arg(long, conflicts_with = "no_embed")]
        wait: bool,
        /// Leave the embeddings pending (`p3ak vault embed` computes them later).
        #[arg(long)]
        no_embed: bool,
    },
    /// Search the vault's documents: BM25, semantic and structure signals, fused.
    Search {
        #[command(flatten)]
        target: VaultArg,
        query: String,
        /// Number of results.
        #[arg(short = 'k', default_value_t = 10)]
        k: usize,
        #[arg(long, value_enum, default_value_t = memory::ModeArg::Hybrid)]
        mode: memory::ModeArg,
        /// Only documents with this tag; repeatable (all must match).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Show each signal's rank, score and contribution.
        #[arg(long)]
        explain: bool,
        #[arg(long, value_enum, default_value_t = memory::FusionArg::Convex)]
        fusion: memory::FusionArg,
    },
    /// What is indexed and embedded, what is pending, whether the embedder runs.
    Status {
        #[command(flatten)]
        target: VaultArg,
    },
    /// Compute the pending embeddings now (what `ingest` starts in the background).
    Embed {
        #[command(flatten)]
        target: VaultArg,
        /// Read the vault key from standard input (how `ingest` starts this command).
        #[arg(long, hide = true)]
        key_stdin: bool,
    },
    /// Rebuild the search index from the stored documents.
    Reindex {
        #[command(flatten)]
        target: VaultArg,
    },
    /// Measure retrieval on a judged collection (docs.jsonl, queries.jsonl, qrels.tsv):
    /// nDCG@10, MRR@10 and Recall@100 per mode, in a temporary vault.
    Eval {
        /// The collection's directory.
        collection: PathBuf,
        #[arg(long, value_enum, default_value_t = memory::FusionArg::Convex)]
        fusion: memory::FusionArg,
    },
    /// Rewrite the vault without deleted or damaged documents, under a fresh master key.
    Compact {
        #[command(flatten)]
        target: VaultArg,
    },
    /// Authenticate every record and the audit log; exit 1 naming the first problem.
    Verify {
        #[command(flatten)]
        target: VaultArg,
    },
    /// Show the vault's own audit log (what was done to it, when, by whom).
    Log {
        #[command(flatten)]
        target: VaultArg,
        /// Only the last N entries.
        #[arg(short = 'n')]
        count: Option<u64>,
    },
    /// New passphrase and new master key; everything re-encrypted, atomically.
    Rekey {
        #[command(flatten)]
        target: VaultArg,
        /// Read the new passphrase from this file. Otherwise P3AK_NEW_PASSPHRASE, then a
        /// terminal prompt (asked twice).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct VaultArg {
    /// Path of the vault file.
    vault: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// The vault is unencrypted: `create` stores documents in plaintext (integrity-checked
    /// only, and the header says so); every other command opens such a vault, without a
    /// passphrase. Without this flag a vault whose header says unencrypted is refused.
    #[arg(long)]
    no_encrypt: bool,
}

/// What the operator is told when a vault is not what the command line says it is.
fn refuse_mismatch(target: &VaultArg, error: anyhow::Error) -> anyhow::Error {
    use p3ak_vault::VaultError;
    let path = target.vault.display();
    match error.downcast_ref::<VaultError>().map(VaultError::root) {
        Some(VaultError::NotEncrypted { .. }) => anyhow::anyhow!(
            "`{path}` is not encrypted, and it was left untouched: if you created it with \
             `--no-encrypt`, pass `--no-encrypt` to use it; otherwise it is not your encrypted \
             vault (`p3ak vault info --header-only` shows its header)"
        ),
        Some(VaultError::PassphraseRequired) => {
            anyhow::anyhow!("`{path}` is encrypted: drop `--no-encrypt` and give its passphrase")
        }
        _ => error,
    }
}

/// Checks, before any passphrase is asked for, that the vault's header agrees with the command
/// line: encrypted without `--no-encrypt`, unencrypted with it. The header never chooses how
/// the vault is opened; the library checks again when it opens it.
fn check_encryption(target: &VaultArg) -> anyhow::Result<()> {
    let header = p3ak_vault::peek(&target.vault)?;
    let result = match (header.is_encrypted(), target.no_encrypt) {
        (false, false) => Err(p3ak_vault::VaultError::NotEncrypted {
            path: target.vault.clone(),
        }),
        (true, true) => Err(p3ak_vault::VaultError::PassphraseRequired),
        (true, false) | (false, true) => Ok(()),
    };
    result.map_err(|e| refuse_mismatch(target, e.into()))
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    p3ak_vault::validate_tag(key, value).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

fn passphrase(target: &VaultArg) -> anyhow::Result<Passphrase> {
    secrets::read(Source {
        file: target.passphrase.passphrase_file.as_ref(),
        env: ENV_PASSPHRASE,
        prompt: "Vault passphrase: ",
        new: false,
    })
}

/// The vault's key (one Argon2id run), for commands that reopen the vault; with
/// `--no-encrypt`, no key.
fn vault_access(target: &VaultArg) -> anyhow::Result<memory::VaultAccess> {
    check_encryption(target)?;
    if target.no_encrypt {
        return Ok(memory::VaultAccess::Unencrypted);
    }
    let passphrase = passphrase(target)?;
    let key = VaultKey::derive(&target.vault, &passphrase)
        .map_err(|e| refuse_mismatch(target, e.into()))?;
    Ok(memory::VaultAccess::Key(key))
}

/// Opens a vault with its passphrase, or as plaintext with `--no-encrypt`.
fn open(target: &VaultArg, access: Access, out: &Output) -> anyhow::Result<Vault> {
    check_encryption(target)?;
    let opened = if target.no_encrypt {
        Vault::open(&target.vault, Unlock::Unencrypted, access)
    } else {
        let passphrase = passphrase(target)?;
        Vault::open(&target.vault, Unlock::Passphrase(&passphrase), access)
    };
    let mut vault = opened.map_err(|e| refuse_mismatch(target, e.into()))?;
    vault.set_actor(crate::commands::operator_actor());
    let report = vault.open_report();
    if report.torn_tail_bytes > 0 {
        let action = if access == Access::Write {
            "dropped"
        } else {
            "ignored"
        };
        out.warn(format!(
            "{action} {} bytes of an interrupted write at the end of the vault",
            report.torn_tail_bytes
        ));
    }
    if report.recovered_records > 0 {
        out.warn(format!(
            "recovered {} complete records written after the last commit",
            report.recovered_records
        ));
    }
    if access == Access::Read
        && let Some(damage) = report.damage_summary()
    {
        out.warn(format!(
            "vault is damaged ({damage}); run `p3ak vault verify`"
        ));
    }
    Ok(vault)
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => super::vault_demo::run(args, out),
        Command::Create { target } => create(&target, out),
        Command::Put {
            target,
            file,
            text,
            title,
            tags,
        } => put(&target, file, text, title, tags, out),
        Command::Get { target, id } => {
            let vault = open(&target, Access::Read, out)?;
            let id = vault.resolve(&id)?;
            let (meta, content) = vault.get(&id)?;
            if out.is_json() {
                let Ok(text) = std::str::from_utf8(content.expose()) else {
                    bail!("document `{id}` is not UTF-8 text; run without --json to get its bytes");
                };
                out.json(&json!({ "meta": meta, "content": text }));
                Ok(())
            } else {
                out.bytes(content.expose())
                    .context("cannot write to standard output")
            }
        }
        Command::List {
            target,
            matching,
            tags,
        } => list(&target, matching, tags, out),
        Command::Delete { target, id } => {
            let vault = open(&target, Access::Write, out)?;
            let id = vault.resolve(&id)?;
            memory::delete(&vault, &id)?;
            out.json(&json!({ "deleted": id }));
            out.line(format!("deleted {id}"));
            Ok(())
        }
        Command::Info {
            target,
            header_only,
        } => info(&target, header_only, out),
        Command::Export { target, dir } => {
            let vault = open(&target, Access::Write, out)?;
            let bar = out.progress("export");
            let report = vault.export(&dir, &mut crate::output::track(&bar))?;
            bar.finish_and_clear();
            vault.log_event(
                "vault.export",
                json!({ "dir": dir, "documents": report.created, "failed": report.failed.len() }),
            )?;
            transfer_summary(&report, "exported", &dir, out)
        }
        Command::Import { target, dir } => {
            let vault = open(&target, Access::Write, out)?;
            let bar = out.progress("import");
            let report = vault.import(&dir, &mut crate::output::track(&bar))?;
            bar.finish_and_clear();
            vault.log_event(
                "vault.import",
                json!({
                    "dir": dir,
                    "created": report.created,
                    "unchanged": report.unchanged,
                    "failed": report.failed.len(),
                }),
            )?;
            memory::index_stored(&vault)?;
            transfer_summary(&report, "imported", &dir, out)
        }
        Command::Ingest {
            target,
            paths,
            tags,
            wait,
            no_embed,
        } => {
            let access = vault_access(&target)?;
            let embed = match (wait, no_embed) {
                (true, _) => memory::EmbedAfter::Wait,
                (_, true) => memory::EmbedAfter::No,
                _ => memory::EmbedAfter::Background,
            };
            let args = memory::IngestArgs {
                vault: target.vault.clone(),
                paths,
                tags,
                embed,
            };
            memory::ingest(args, &access, out)
        }
        Command::Search {
            target,
            query,
            k,
            mode,
            tags,
            explain,
            fusion,
        } => {
            let vault = open(&target, Access::Read, out)?;
            let args = memory::SearchArgs {
                query,
                k,
                mode: mode.into(),
                tags,
                explain,
                fusion: fusion.into(),
            };
            memory::search(&vault, args, out)
        }
        Command::Status { target } => {
            let vault = open(&target, Access::Read, out)?;
            memory::status(&vault, out)
        }
        Command::Embed { target, key_stdin } => {
            let access = if key_stdin {
                memory::key_from_stdin(target.no_encrypt)?
            } else {
                vault_access(&target)?
            };
            memory::embed(&target.vault, &access, out)
        }
        Command::Reindex { target } => {
            let vault = open(&target, Access::Write, out)?;
            memory::reindex(&vault, out)
        }
        Command::Eval { collection, fusion } => memory::eval(&collection, fusion.into(), out),
        Command::Log { target, count } => {
            let vault = open(&target, Access::Read, out)?;
            let len = vault.log_len();
            let from = count.map_or(0, |n| len.saturating_sub(n));
            let entries = vault.log_entries(from, len)?;
            crate::commands::audit::print_entries(&entries, out);
            Ok(())
        }
        Command::Compact { target } => {
            let vault = open(&target, Access::Repair, out)?;
            rewrite(vault, NewKeys::SamePassphrase, "compacted", out)
        }
        Command::Verify { target } => verify(&target, out),
        Command::Rekey {
            target,
            new_passphrase_file,
        } => {
            check_encryption(&target)?;
            if target.no_encrypt {
                bail!(
                    "`{}` is not encrypted, so it has no passphrase to change: export it and import it into a new encrypted vault",
                    target.vault.display()
                );
            }
            let vault = open(&target, Access::Write, out)?;
            let new = secrets::read(Source {
                file: new_passphrase_file.as_ref(),
                env: ENV_NEW_PASSPHRASE,
                prompt: "New passphrase: ",
                new: true,
            })?;
            let keys = NewKeys::Passphrase {
                passphrase: &new,
                kdf: KdfParams::RFC9106_SECOND,
            };
            rewrite(vault, keys, "rekeyed", out)
        }
    }
}

fn create(target: &VaultArg, out: &Output) -> anyhow::Result<()> {
    let vault = if target.no_encrypt {
        out.warn("creating an UNENCRYPTED vault: its content is stored in plaintext");
        Vault::create(&target.vault, Protection::Unencrypted)?
    } else {
        let passphrase = secrets::read(Source {
            file: target.passphrase.passphrase_file.as_ref(),
            env: ENV_PASSPHRASE,
            prompt: "New vault passphrase: ",
            new: true,
        })?;
        Vault::create(
            &target.vault,
            Protection::Passphrase {
                passphrase: &passphrase,
                kdf: KdfParams::RFC9106_SECOND,
            },
        )?
    };
    let info = vault.info()?;
    out.json(&info);
    out.line(format!(
        "created {} (encryption: {})",
        sanitize(&target.vault.display().to_string()),
        info.encryption
    ));
    Ok(())
}

fn put(
    target: &VaultArg,
    file: Option<PathBuf>,
    text: Option<String>,
    title: Option<String>,
    tags: Vec<(String, String)>,
    out: &Output,
) -> anyhow::Result<()> {
    let (content, source) = match (&file, text) {
        (_, Some(text)) => (zeroize::Zeroizing::new(text.into_bytes()), None),
        (Some(path), None) if path == Path::new("-") => {
            let mut buf = zeroize::Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            (buf, None)
        }
        (Some(path), None) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            (zeroize::Zeroizing::new(bytes), name)
        }
        (None, None) => bail!("give a file or --text"),
    };
    let vault = open(target, Access::Write, out)?;
    let outcome = vault.put(NewDocument {
        content: &content,
        title: title.or_else(|| source.clone()),
        tags: tags.into_iter().collect::<BTreeMap<_, _>>(),
        source,
    })?;
    memory::index_stored(&vault)?;
    out.json(&json!({ "id": outcome.id, "status": outcome.status }));
    out.line(outcome.id);
    if outcome.status == p3ak_vault::PutStatus::Unchanged {
        out.warn(format!(
            "the same content is already stored as {}; nothing was written",
            outcome.id
        ));
    }
    Ok(())
}

fn list(
    target: &VaultArg,
    matching: Option<String>,
    tags: Vec<(String, String)>,
    out: &Output,
) -> anyhow::Result<()> {
    let vault = open(target, Access::Read, out)?;
    let docs = vault.list_matching(&ListFilter::new(matching.as_deref(), tags));
    out.json(&docs);
    for d in &docs {
        let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.line(format!(
            "{}  {:>10}  {}  {}{}{}",
            d.id,
            bytes(d.size),
            timestamp(d.created),
            sanitize(d.title.as_deref().unwrap_or("(untitled)")),
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", sanitize(&tags.join(", ")))
            },
            d.damaged
                .as_ref()
                .map(|r| format!("  DAMAGED: {}", sanitize(r)))
                .unwrap_or_default(),
        ));
    }
    Ok(())
}

fn info(target: &VaultArg, header_only: bool, out: &Output) -> anyhow::Result<()> {
    let header = p3ak_vault::peek(&target.vault)?;
    let kdf_line = header.kdf.map(|k| {
        format!(
            "{} (memory {} KiB, {} passes, {} lanes)",
            k.algorithm, k.memory_kib, k.iterations, k.parallelism
        )
    });
    if header_only {
        out.json(&header);
        out.line(format!("format version  {}", header.format_version));
        out.line(format!("encryption      {}", header.encryption));
        if let Some(kdf) = kdf_line {
            out.line(format!("key derivation  {kdf}"));
        }
        out.line(format!("vault id        {}", header.vault_id));
        out.line(format!("created         {}", timestamp(header.created)));
        out.line(format!("file size       {}", bytes(header.file_bytes)));
        return Ok(());
    }
    let vault = open(target, Access::Read, out)?;
    let info = vault.info()?;
    out.json(&info);
    out.line(format!("format version  {}", info.format_version));
    out.line(format!("encryption      {}", info.encryption));
    if let Some(kdf) = kdf_line {
        out.line(format!("key derivation  {kdf}"));
    }
    out.line(format!("vault id        {}", info.vault_id));
    out.line(format!("created         {}", timestamp(info.created)));
    out.line(format!("documents       {}", info.documents));
    out.line(format!("content         {}", bytes(info.content_bytes)));
    out.line(format!(
        "search data     {} ({} objects: index and embeddings)",
        bytes(info.object_bytes),
        info.objects
    ));
    let ahead = vault.open_report().preallocated_bytes;
    if ahead > 0 {
        // A writer (the kernel) has it open: the zeros it wrote ahead go when it closes.
        out.line(format!(
            "file size       {} ({} of zeros written ahead by the open writer)",
            bytes(info.file_bytes),
            bytes(ahead)
        ));
    } else {
        out.line(format!("file size       {}", bytes(info.file_bytes)));
    }
    out.line(format!("records         {}", info.records));
    out.line(format!(
        "last commit     {} (generation {})",
        timestamp(info.last_commit),
        info.generation
    ));
    Ok(())
}

fn verify(target: &VaultArg, out: &Output) -> anyhow::Result<()> {
    // Verification is recorded in the vault's log when the vault can take a writer; a vault in
    // use, or too damaged to append to, is verified all the same.
    let (vault, loggable) = match open(target, Access::Write, out) {
        Ok(vault) => (vault, true),
        Err(e) => match e.downcast_ref::<p3ak_vault::VaultError>() {
            Some(p3ak_vault::VaultError::Locked { .. } | p3ak_vault::VaultError::Damaged(_)) => {
                (open(target, Access::Read, out)?, false)
            }
            _ => return Err(e),
        },
    };
    let bar = out.progress("verify");
    let report = vault.verify(&mut crate::output::track(&bar))?;
    bar.finish_and_clear();
    if loggable {
        vault.log_event(
            "vault.verify",
            json!({ "ok": report.is_ok(), "problems": report.problems.len() }),
        )?;
    } else {
        out.warn("this verification is not recorded in the vault's log (vault in use or damaged)");
    }
    out.json(&report);
    for warning in &report.warnings {
        out.warn(warning);
    }
    match report.problems.first() {
        None if vault.is_encrypted() => {
            out.line(format!(
                "ok: {} documents, {} records, {} authenticated",
                report.documents,
                report.records,
                bytes(report.bytes)
            ));
            Ok(())
        }
        None => {
            out.line(format!(
                "ok (unencrypted): {} documents, {} records, {} checked",
                report.documents,
                report.records,
                bytes(report.bytes)
            ));
            Ok(())
        }
        Some(first) => {
            for problem in report.problems.iter().skip(1) {
                out.warn(problem);
            }
            bail!(
                "vault is damaged: {first}{}",
                match report.problems.len() {
                    1 => String::new(),
                    n => format!(" (and {} more problems)", n - 1),
                }
            )
        }
    }
}

fn rewrite(vault: Vault, keys: NewKeys<'_>, verb: &str, out: &Output) -> anyhow::Result<()> {
    let bar = out.progress(verb);
    let report = vault.rewrite(keys, &mut crate::output::track(&bar))?;
    bar.finish_and_clear();
    out.json(&report);
    for dropped in &report.dropped {
        out.warn(format!(
            "dropped damaged document {}: {}",
            dropped.id, dropped.reason
        ));
    }
    out.line(format!(
        "{verb}: {} documents, {} -> {}",
        report.documents,
        bytes(report.bytes_before),
        bytes(report.bytes_after)
    ));
    Ok(())
}

fn transfer_summary(
    report: &p3ak_vault::TransferReport,
    verb: &str,
    dir: &Path,
    out: &Output,
) -> anyhow::Result<()> {
    out.json(report);
    for failure in &report.failed {
        out.warn(format!(
            "{}: {}",
            sanitize(&failure.item),
            sanitize(&failure.reason)
        ));
    }
    out.line(format!(
        "{verb} {} documents ({} unchanged, {} failed) {} `{}`",
        report.created,
        report.unchanged,
        report.failed.len(),
        if verb == "exported" { "to" } else { "from" },
        sanitize(&dir.display().to_string())
    ));
    if !report.failed.is_empty() {
        bail!("{} documents failed", report.failed.len());
    }
    Ok(())
}

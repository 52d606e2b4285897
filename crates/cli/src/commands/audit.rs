//! `p3ak audit …`: the kernel's audit log under `P3AK_HOME/audit/`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use p3ak_vault::external::{check_external_checkpoint, publish_checkpoint};
use p3ak_vault::{Access, KdfParams, LogEntry, Protection, Unlock, Vault};

use crate::output::{Output, sanitize, timestamp_ms};
use crate::secrets::{self, ENV_PASSPHRASE, PassphraseArgs, Source};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the kernel's audit log (encrypted with the kernel's passphrase).
    Init {
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Show the last entries.
    Tail {
        /// How many entries.
        #[arg(short = 'n', default_value_t = 20)]
        count: u64,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Check every entry, the hash chain, the signed checkpoints and the checkpoint file;
    /// exit 1 naming the first bad entry.
    Verify {
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Print entry N with its inclusion proof against the latest signed checkpoint.
    Prove {
        /// Entry number (from 0).
        entry: u64,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Sign a checkpoint, record it in the log and write it to `audit/checkpoint.json`; keep
    /// a copy somewhere else too.
    Checkpoint {
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

struct Paths {
    log: PathBuf,
    checkpoint: PathBuf,
}

fn paths() -> anyhow::Result<Paths> {
    let home = super::kernel::home()?;
    Ok(Paths {
        log: home.kernel_vault(),
        checkpoint: home.checkpoint(),
    })
}

fn open(passphrase: &PassphraseArgs, access: Access) -> anyhow::Result<Vault> {
    let paths = paths()?;
    if !paths.log.exists() {
        bail!(
            "no audit log at `{}`: run `p3ak audit init` first",
            paths.log.display()
        );
    }
    let pass = secrets::read(Source {
        file: passphrase.passphrase_file.as_ref(),
        env: ENV_PASSPHRASE,
        prompt: "Kernel passphrase: ",
        new: false,
    })?;
    let mut vault = Vault::open(&paths.log, Unlock::Passphrase(&pass), access)?;
    vault.set_actor(crate::commands::operator_actor());
    Ok(vault)
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Init { passphrase } => {
            let paths = paths()?;
            let dir = paths.log.parent().context("audit path has no parent")?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let pass = secrets::read(Source {
                file: passphrase.passphrase_file.as_ref(),
                env: ENV_PASSPHRASE,
                prompt: "New kernel passphrase: ",
                new: true,
            })?;
            Vault::create(
                &paths.log,
                Protection::Passphrase {
                    passphrase: &pass,
                    kdf: KdfParams::RFC9106_SECOND,
                },
            )?;
            out.json(&serde_json::json!({ "log": paths.log }));
            out.line(format!("created the audit log at {}", paths.log.display()));
            Ok(())
        }
        Command::Tail { count, passphrase } => {
            let vault = open(&passphrase, Access::Read)?;
            let len = vault.log_len();
            let entries = vault.log_entries(len.saturating_sub(count), len)?;
            print_entries(&entries, out);
            Ok(())
        }
        Command::Verify { passphrase } => verify(&passphrase, out),
        Command::Prove { entry, passphrase } => {
            let vault = open(&passphrase, Access::Read)?;
            let proof = vault.log_inclusion_proof(entry)?;
            out.json(&proof);
            out.line(format!(
                "entry {} ({}) is in the log of {} entries signed at {}",
                entry,
                sanitize(&proof.entry.kind),
                proof.tree_size,
                timestamp_ms(proof.checkpoint.time_ms)
            ));
            out.line(format!("leaf hash  {}", proof.leaf_hash));
            for (i, hash) in proof.proof.0.iter().enumerate() {
                out.line(format!("path[{i:>2}]   {hash}"));
            }
            out.line(format!("root       {}", proof.checkpoint.root));
            out.line(format!("signature  {}", proof.checkpoint.signature));
            out.line(format!("public key {}", proof.checkpoint.public_key));
            out.line("verified: the path leads from the leaf to the signed root");
            Ok(())
        }
        Command::Checkpoint { passphrase } => {
            let vault = open(&passphrase, Access::Write)?;
            let paths = paths()?;
            let json = publish_checkpoint(&vault, &paths.checkpoint)?;
            out.json(&json);
            out.line(format!(
                "checkpoint: {} entries, root {}",
                json.size, json.root
            ));
            out.line(format!("written to {}", paths.checkpoint.display()));
            out.line("keep a copy off this machine: it proves later logs extend this one");
            Ok(())
        }
    }
}

fn verify(passphrase: &PassphraseArgs, out: &Output) -> anyhow::Result<()> {
    let vault = open(passphrase, Access::Read)?;
    let bar = out.progress("verify");
    let report = vault.verify(&mut crate::output::track(&bar))?;
    bar.finish_and_clear();
    let external = check_external_checkpoint(&vault, &paths()?.checkpoint)?;
    out.json(&serde_json::json!({ "log": report, "checkpoint_file": external }));
    let problems: Vec<&String> = report
        .problems
        .iter()
        .chain(external.problems.iter())
        .collect();
    for warning in report.warnings.iter().chain(external.warnings.iter()) {
        out.warn(warning);
    }
    match problems.split_first() {
        None => {
            out.line(format!(
                "ok: {} entries, checkpoint covers {}",
                report.log_entries,
                report.log_checkpoint.unwrap_or(0)
            ));
            Ok(())
        }
        Some((first, rest)) => {
            for problem in rest {
                out.warn(problem);
            }
            bail!("audit log is damaged: {first}")
        }
    }
}

/// Prints log entries, one per line (text) or as a JSON array.
pub fn print_entries(entries: &[LogEntry], out: &Output) {
    out.json(&entries);
    for e in entries {
        out.line(format!(
            "{:>6}  {}  {:<22} {}  {}",
            e.seq,
            timestamp_ms(e.time_ms),
            sanitize(&e.kind),
            sanitize(&e.actor),
            sanitize(&e.payload.to_string())
        ));
    }
}

use std::os::unix::fs::DirBuilderExt;

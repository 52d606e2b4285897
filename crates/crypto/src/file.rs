//! The one way to replace a small private file (keys, sealed stores, checkpoints, salts): a
//! temporary file beside it (0600, from `tempfile`), written and synced, renamed over the
//! target, and the directory synced, so that a crash leaves the old file or the new one, never
//! a torn mix, and the rename itself survives a power cut. Here because this is the lowest
//! crate that the vault, the approval daemon and the kernel all depend on.

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Which step of [`write_private`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// Creating the temporary file in the target's directory.
    Create,
    /// Writing or syncing the temporary file.
    Write,
    /// Renaming it over the target.
    Replace,
    /// Syncing the directory.
    SyncDirectory,
}

impl fmt::Display for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "cannot create a temporary file in",
            Self::Write => "cannot write",
            Self::Replace => "cannot replace",
            Self::SyncDirectory => "cannot sync directory",
        })
    }
}

/// A failed [`write_private`]: the step, the path it concerned, and the system's error.
#[derive(Debug, thiserror::Error)]
#[error("{step} `{}`", path.display())]
pub struct WriteError {
    /// The step that failed.
    pub step: WriteStep,
    /// The file, or for [`WriteStep::Create`] and [`WriteStep::SyncDirectory`] its directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// This error's message without its source, and the source: for an error type that keeps
    /// a context string beside an `io::Error`.
    #[must_use]
    pub fn into_parts(self) -> (String, io::Error) {
        (self.to_string(), self.source)
    }
}

/// Replaces `path` with `bytes`, atomically and durably, readable by its owner only (0600).
///
/// # Errors
///
/// [`WriteError`] naming the step that failed; the old file is then untouched and no
/// temporary file is left behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => {
            return Err(WriteError {
                step: WriteStep::Create,
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory"),
            });
        }
    };
    let fail = |step, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { step, path, source }
    };
    // A leftover of a crash is recognisable: `.<name>.XXXXXX.tmp` beside the file.
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(fail(WriteStep::Create, dir))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(fail(WriteStep::Write, path))?;
    file.persist(path)
        .map_err(|e| fail(WriteStep::Replace, path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(WriteStep::SyncDirectory, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_replaces_the_old_one_with_mode_0600_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_names_its_step_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("salt");
        let err = write_private(&missing, b"x").unwrap_err();
        assert_eq!(err.step, WriteStep::Create);
        assert!(
            err.to_string()
                .starts_with("cannot create a temporary file in `")
        );
        // A directory in the way of the rename: the rename fails, nothing is left behind.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"keep").unwrap();
        let err = write_private(&blocked, b"x").unwrap_err();
        assert_eq!(err.step, WriteStep::Replace);
        assert_eq!(std::fs::read(blocked.join("inside")).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

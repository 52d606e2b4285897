//! The kernel's one way to write a small private file: a temporary file beside it (0600, from
//! `tempfile`), written and synced, renamed over the target, and the directory synced, so that
//! a crash leaves the old file or the new one, never a torn mix.

use std::io::Write;
use std::path::Path;

use crate::KernelError;

/// Replaces `path` with `bytes`, atomically and durably, readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    let dir = path
        .parent()
        .ok_or_else(|| KernelError::Home(format!("`{}` has no directory", path.display())))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(KernelError::io(format!(
        "cannot write in `{}`",
        dir.display()
    )))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(KernelError::io(format!(
            "cannot write `{}`",
            path.display()
        )))?;
    file.persist(path).map_err(|e| KernelError::Io {
        context: format!("cannot replace `{}`", path.display()),
        source: e.error,
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(KernelError::io(format!("cannot sync `{}`", dir.display())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_private_file_replaces_the_old_one_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! The kernel's one way to write a small private file: `p3ak_crypto::write_private` (0600,
//! atomic, file and directory synced), with the kernel's error.

use std::path::Path;

use crate::KernelError;

/// Replaces `path` with `bytes`, atomically and durably, readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    p3ak_crypto::write_private(path, bytes).map_err(|e| {
        let (context, source) = e.into_parts();
        KernelError::Io { context, source }
    })
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

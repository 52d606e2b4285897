//! The one-writer rule across processes: an advisory lock on `<vault>.lock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, VaultError};

/// Held by the single writer of a vault. The operating system releases the lock when the
/// process ends, however it ends, so a crash never leaves a vault locked.
pub(crate) struct WriterLock {
    _file: File,
}

pub(crate) fn lock_path(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    vault.with_file_name(name)
}

impl WriterLock {
    pub(crate) fn acquire(vault: &Path) -> Result<Self> {
        let path = lock_path(vault);
        let context = || format!("cannot open lock file `{}`", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(VaultError::io(context()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(VaultError::Locked {
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.chars().take(20).collect()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(VaultError::io(context())(e)),
        }
        file.set_len(0).map_err(VaultError::io(context()))?;
        file.rewind().map_err(VaultError::io(context()))?;
        write!(file, "{}", std::process::id()).map_err(VaultError::io(context()))?;
        Ok(Self { _file: file })
    }
}

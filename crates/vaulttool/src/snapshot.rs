//! The vault as the plugin last read it, kept between calls while the file is unchanged.
//!
//! Opening the memory decrypts the whole search index and every embedding: doing that for
//! each search costs time in proportion to the vault, however small the answer. A
//! [`Snapshot`] is an open read-only vault with its memory, shared by the calls that run at
//! the same time and replaced when the vault file changes — a commit by this plugin, by the
//! operator's `p3ak vault ingest`, by a compaction. The file is looked at (`stat`) before it
//! is opened, so a commit that lands in between makes the next call open it again rather
//! than keep a stale view.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use p3ak_memory::Memory;
use p3ak_vault::Vault;

self_cell::self_cell!(
    /// An open read-only vault and its memory.
    pub struct Snapshot {
        owner: Vault,
        #[covariant]
        dependent: Memory,
    }
);

/// What identifies one state of the vault file: a commit appends and rewrites the header
/// (size, times), a compaction replaces the file (inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    /// The fingerprint of the file at `path` now.
    ///
    /// # Errors
    ///
    /// The file cannot be looked at.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The latest snapshot, and the fingerprint of the file it was opened from.
#[derive(Default)]
pub struct Snapshots {
    latest: Mutex<Option<(Fingerprint, Arc<Snapshot>)>>,
}

impl Snapshots {
    /// The snapshot of the vault as it is now: the kept one while the file is unchanged,
    /// otherwise a new one from `open` (kept for the next call). Calls that run at the same
    /// time share one; two that both find it stale may both open (rare, and harmless).
    ///
    /// # Errors
    ///
    /// `open`'s error, or the file's, as `E`.
    pub fn current<E>(
        &self,
        path: &Path,
        open: impl FnOnce() -> Result<Snapshot, E>,
        io_error: impl FnOnce(std::io::Error) -> E,
    ) -> Result<Arc<Snapshot>, E> {
        let now = Fingerprint::of(path).map_err(io_error)?;
        if let Some((seen, snapshot)) = self.lock().as_ref()
            && *seen == now
        {
            return Ok(Arc::clone(snapshot));
        }
        let snapshot = Arc::new(open()?);
        *self.lock() = Some((now, Arc::clone(&snapshot)));
        Ok(snapshot)
    }

    /// Forgets the kept snapshot (after this plugin committed: the next read opens anew
    /// even if the file's times did not move).
    pub fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Fingerprint, Arc<Snapshot>)>> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

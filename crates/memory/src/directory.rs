//! Tantivy's storage, held in memory and persisted as objects of the vault.
//!
//! Tantivy writes through a [`Directory`]. This one keeps every file in memory; the index's
//! files reach the disk only as vault objects (AES-256-GCM records, committed atomically with
//! the documents they index), so no index byte is ever written in plaintext (invariant I6).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tantivy::directory::error::{DeleteError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, FileHandle, FileSlice, TerminatingWrite, WatchCallback,
    WatchCallbackList, WatchHandle, WritePtr,
};

/// An in-memory tantivy directory. Cloning shares the files.
#[derive(Clone, Default)]
pub(crate) struct MemoryDirectory {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<PathBuf, FileSlice>,
    writing: HashSet<PathBuf>,
    watchers: WatchCallbackList,
}

impl std::fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryDirectory")
    }
}

fn poisoned() -> io::Error {
    io::Error::other("index directory lock poisoned")
}

impl MemoryDirectory {
    /// A directory holding `files` (name, bytes), as loaded from the vault.
    pub(crate) fn with_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let inner = Inner {
            files: files
                .into_iter()
                .map(|(name, bytes)| (PathBuf::from(name), FileSlice::from(bytes)))
                .collect(),
            ..Inner::default()
        };
        Self {
            inner: Arc::new(RwLock::new(inner)),
        }
    }

    fn read_lock(&self) -> io::Result<RwLockReadGuard<'_, Inner>> {
        self.inner.read().map_err(|_| poisoned())
    }

    fn write_lock(&self) -> io::Result<RwLockWriteGuard<'_, Inner>> {
        self.inner.write().map_err(|_| poisoned())
    }

    /// The bytes of one file.
    pub(crate) fn bytes(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let slice = self.read_lock()?.files.get(path).cloned();
        slice
            .map(|s| s.read_bytes().map(|b| b.as_slice().to_vec()))
            .transpose()
    }
}

/// Error conversion for tantivy's per-operation error types.
fn read_error(path: &Path, e: io::Error) -> OpenReadError {
    OpenReadError::IoError {
        io_error: Arc::new(e),
        filepath: path.to_owned(),
    }
}

impl Directory for MemoryDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(self.open_read(path)?))
    }

    fn open_read(&self, path: &Path) -> Result<FileSlice, OpenReadError> {
        self.read_lock()
            .map_err(|e| read_error(path, e))?
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_owned()))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        let mut inner = self.write_lock().map_err(|e| DeleteError::IoError {
            io_error: Arc::new(e),
            filepath: path.to_owned(),
        })?;
        match inner.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(DeleteError::FileDoesNotExist(path.to_owned())),
        }
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        let inner = self.read_lock().map_err(|e| read_error(path, e))?;
        Ok(inner.files.contains_key(path) || inner.writing.contains(path))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let mut inner = self.write_lock().map_err(|e| OpenWriteError::IoError {
            io_error: Arc::new(e),
            filepath: path.to_owned(),
        })?;
        if inner.files.contains_key(path) || !inner.writing.insert(path.to_owned()) {
            return Err(OpenWriteError::FileAlreadyExists(path.to_owned()));
        }
        drop(inner);
        let writer = MemoryWriter {
            path: path.to_owned(),
            directory: self.clone(),
            data: Vec::new(),
        };
        Ok(BufWriter::new(Box::new(writer)))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.bytes(path)
            .map_err(|e| read_error(path, e))?
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_owned()))
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut inner = self.write_lock()?;
        inner
            .files
            .insert(path.to_owned(), FileSlice::from(data.to_vec()));
        if path == Path::new("meta.json") {
            // The returned future only tells when the callbacks ran; nobody waits on it.
            drop(inner.watchers.broadcast());
        }
        Ok(())
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(self.write_lock()?.watchers.subscribe(watch_callback))
    }

    fn sync_directory(&self) -> io::Result<()> {
        // Durability comes from the vault commit that persists these files.
        Ok(())
    }
}

/// A file being written; visible to readers once terminated.
struct MemoryWriter {
    path: PathBuf,
    directory: MemoryDirectory,
    data: Vec<u8>,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for MemoryWriter {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        let data = std::mem::take(&mut self.data);
        let mut inner = self.directory.write_lock()?;
        inner.writing.remove(&self.path);
        inner.files.insert(self.path.clone(), FileSlice::from(data));
        Ok(())
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.directory.write_lock() {
            inner.writing.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn files_are_visible_once_terminated() {
        let dir = MemoryDirectory::default();
        let path = Path::new("seg.idx");
        let mut w = dir.open_write(path).unwrap();
        w.write_all(b"postings").unwrap();
        assert!(dir.open_read(path).is_err(), "not visible while written");
        assert!(dir.open_write(path).is_err(), "one writer per file");
        w.terminate().unwrap();
        assert_eq!(dir.atomic_read(path).unwrap(), b"postings");
        dir.delete(path).unwrap();
        assert!(!dir.exists(path).unwrap());
        assert!(dir.delete(path).is_err());
    }

    #[test]
    fn loaded_files_read_back() {
        let dir = MemoryDirectory::with_files([("meta.json".to_owned(), b"{}".to_vec())]);
        assert_eq!(dir.bytes(Path::new("meta.json")).unwrap().unwrap(), b"{}");
    }
}

//! `export` (vault → plaintext directory, an explicit operator action) and `import`
//! (directory → vault).

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::doc::{DocId, NewDocument, PutStatus};
use crate::error::{Result, VaultError};
use crate::store::Vault;

const MANIFEST: &str = "manifest.json";
const DOCUMENTS: &str = "documents";
const EXPORT_FORMAT: &str = "p3ak-vault-export";
/// Import commits after this many bytes, so a long import keeps what it has done.
const BATCH_BYTES: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    vault_id: String,
    documents: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    id: DocId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    created: i64,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    sha256: String,
}

/// What an export or import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    pub created: usize,
    pub unchanged: usize,
    /// Documents that could not be carried over, with the reason.
    pub failed: Vec<TransferFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransferFailure {
    pub item: String,
    pub reason: String,
}

fn err(path: &Path, reason: impl Into<String>) -> VaultError {
    VaultError::Transfer {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(VaultError::io(format!(
            "cannot create `{}`",
            path.display()
        )))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(VaultError::io(format!("cannot write `{}`", path.display())))
}

impl Vault {
    /// Writes every document as a plaintext file under `dir/documents/` with a
    /// `manifest.json`. `dir` must not exist or be empty; it is created 0700, files 0600.
    pub fn export(&self, dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<TransferReport> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(err(dir, "directory is not empty"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(VaultError::io(format!("cannot create `{}`", dir.display())))?;
            }
            Err(e) => {
                return Err(VaultError::io(format!("cannot read `{}`", dir.display()))(
                    e,
                ));
            }
        }
        let docs_dir = dir.join(DOCUMENTS);
        DirBuilder::new()
            .mode(0o700)
            .create(&docs_dir)
            .map_err(VaultError::io(format!(
                "cannot create `{}`",
                docs_dir.display()
            )))?;
        let list = self.list();
        let total = list.len() as u64;
        let mut report = TransferReport::default();
        let mut documents = Vec::new();
        for (done, info) in list.into_iter().enumerate() {
            match self.get(&info.id) {
                Ok((meta, content)) => {
                    write_private(&docs_dir.join(meta.id.to_hex()), content.expose())?;
                    documents.push(ManifestEntry {
                        id: meta.id,
                        title: meta.title,
                        tags: meta.tags,
                        created: meta.created,
                        size: meta.size,
                        source: meta.source,
                        sha256: hex::encode(p3ak_crypto::sha256(&[content.expose()])),
                    });
                    report.created += 1;
                }
                Err(e) => report.failed.push(TransferFailure {
                    item: info.id.to_hex(),
                    reason: e.to_string(),
                }),
            }
            progress(done as u64 + 1, total);
        }
        let manifest = Manifest {
            format: EXPORT_FORMAT.into(),
            version: 1,
            vault_id: hex::encode(self.header.prefix.vault_id),
            documents,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| err(dir, format!("cannot encode manifest: {e}")))?;
        write_private(&dir.join(MANIFEST), &bytes)?;
        Ok(report)
    }

    /// Imports a directory: an export (with its manifest: ids, titles and tags are kept and
    /// every file's checksum is checked), or any directory tree (each regular file becomes a
    /// document titled by its name). Identical content already stored is left as it is.
    pub fn import(&self, dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<TransferReport> {
        let manifest_path = dir.join(MANIFEST);
        let items = if manifest_path.is_file() {
            manifest_items(dir, &manifest_path)?
        } else if dir.is_dir() {
            let mut files = Vec::new();
            walk(dir, dir, &mut files)?;
            files.sort();
            files
                .into_iter()
                .map(|(path, rel)| ImportItem {
                    path,
                    id_created: None,
                    title: Some(rel.clone()),
                    tags: BTreeMap::new(),
                    source: Some(rel),
                    sha256: None,
                })
                .collect()
        } else {
            return Err(err(dir, "not a directory"));
        };
        let total = items.len() as u64;
        let mut report = TransferReport::default();
        let mut batch: Vec<(ImportItem, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        for (done, item) in items.into_iter().enumerate() {
            match std::fs::read(&item.path) {
                Ok(content) => {
                    let actual = hex::encode(p3ak_crypto::sha256(&[&content]));
                    if item.sha256.as_ref().is_some_and(|want| *want != actual) {
                        report.failed.push(TransferFailure {
                            item: item.path.display().to_string(),
                            reason: "checksum does not match the manifest".into(),
                        });
                    } else {
                        batch_bytes += content.len();
                        batch.push((item, content));
                    }
                }
                Err(e) => report.failed.push(TransferFailure {
                    item: item.path.display().to_string(),
                    reason: e.to_string(),
                }),
            }
            if batch_bytes >= BATCH_BYTES {
                self.import_batch(&mut batch, &mut report)?;
                batch_bytes = 0;
            }
            progress(done as u64 + 1, total);
        }
        self.import_batch(&mut batch, &mut report)?;
        Ok(report)
    }

    fn import_batch(
        &self,
        batch: &mut Vec<(ImportItem, Vec<u8>)>,
        report: &mut TransferReport,
    ) -> Result<()> {
        let docs = batch.iter().map(|(item, content)| {
            (
                item.id_created,
                NewDocument {
                    content,
                    title: item.title.clone(),
                    tags: item.tags.clone(),
                    source: item.source.clone(),
                },
            )
        });
        for outcome in self.put_batch_with_ids(docs, true)? {
            match outcome.status {
                PutStatus::Created => report.created += 1,
                PutStatus::Unchanged => report.unchanged += 1,
            }
        }
        batch.clear();
        Ok(())
    }
}

struct ImportItem {
    path: PathBuf,
    id_created: Option<(DocId, i64)>,
    title: Option<String>,
    tags: BTreeMap<String, String>,
    source: Option<String>,
    sha256: Option<String>,
}

fn manifest_items(dir: &Path, manifest_path: &Path) -> Result<Vec<ImportItem>> {
    let bytes = std::fs::read(manifest_path).map_err(VaultError::io(format!(
        "cannot read `{}`",
        manifest_path.display()
    )))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| err(manifest_path, format!("invalid manifest: {e}")))?;
    if manifest.format != EXPORT_FORMAT || manifest.version != 1 {
        return Err(err(
            manifest_path,
            format!(
                "unknown manifest format `{}` version {}",
                manifest.format, manifest.version
            ),
        ));
    }
    // File names come from the ids, never from the manifest, so a crafted manifest cannot
    // point outside the directory.
    Ok(manifest
        .documents
        .into_iter()
        .map(|entry| ImportItem {
            path: dir.join(DOCUMENTS).join(entry.id.to_hex()),
            id_created: Some((entry.id, entry.created)),
            title: entry.title,
            tags: entry.tags,
            source: entry.source,
            sha256: Some(entry.sha256),
        })
        .collect())
}

/// Regular files under `dir`, recursively; symbolic links are not followed.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(VaultError::io(format!("cannot read `{}`", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(VaultError::io(format!("cannot read `{}`", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(VaultError::io(format!("cannot read `{}`", path.display())))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push((path, rel));
        }
    }
    Ok(())
}

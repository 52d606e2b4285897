//! Rewriting a vault into a new file: `compact` (drop deleted and damaged documents, fresh
//! master key) and `rekey` (new passphrase and new master key). Atomic: the new vault is
//! written beside the old one, synced, and renamed over it; a crash at any point leaves the old
//! vault or the new one, complete.

use std::path::{Path, PathBuf};

use p3ak_crypto::{KdfParams, Key, Passphrase};
use serde::Serialize;

use crate::doc::{DocId, NewDocument};
use crate::error::{Result, VaultError};
use crate::format::{Encryption, Prefix};
use crate::scan::DocEntry;
use crate::seal::Sealer;
use crate::store::{Access, Vault, new_key_slots, sync_parent};

/// Documents are committed in batches of this many bytes during a rewrite.
const BATCH_BYTES: u64 = 64 << 20;

/// The temporary file a rewrite or create writes before renaming it into place.
pub(crate) fn temp_path(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".p3ak-tmp");
    vault.with_file_name(name)
}

/// Removes a temporary file left by a rewrite that crashed. Only called under the writer lock.
pub(crate) fn remove_stale_temp(vault: &Path) {
    let _ = std::fs::remove_file(temp_path(vault));
}

/// Which keys the rewritten vault gets.
pub enum NewKeys<'a> {
    /// Same passphrase (its derived key is reused), fresh master key.
    SamePassphrase,
    /// New passphrase with fresh salt and these Argon2id parameters, fresh master key.
    Passphrase {
        passphrase: &'a Passphrase,
        kdf: KdfParams,
    },
}

/// What a rewrite did.
#[derive(Debug, Clone, Serialize)]
pub struct RewriteReport {
    pub documents: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Damaged documents that could not be carried over.
    pub dropped: Vec<DroppedDocument>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedDocument {
    pub id: DocId,
    pub reason: String,
}

impl Vault {
    /// Rewrites the vault into a fresh file under new keys and replaces the old one atomically.
    /// Reports progress as (documents done, documents total).
    pub fn rewrite(
        self,
        new_keys: NewKeys<'_>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RewriteReport> {
        if self.access == Access::Read {
            return Err(VaultError::ReadOnly);
        }
        // Sizes as the files are when closed: without the space a writer writes ahead.
        let bytes_before = self.state_read().end;
        let prefix = Prefix {
            created_unix: self.header.prefix.created_unix,
            ..self.header.prefix.clone()
        };
        let event = match new_keys {
            NewKeys::SamePassphrase => "vault.compact",
            NewKeys::Passphrase { .. } => "vault.rekey",
        };
        let (slots, sealer) = match (&self.sealer, new_keys) {
            (Sealer::Plain, NewKeys::SamePassphrase) => (Vec::new(), Sealer::Plain),
            (Sealer::Plain, NewKeys::Passphrase { .. }) => {
                return Err(VaultError::Transfer {
                    path: self.path.clone(),
                    reason: "the vault is not encrypted, so it has no passphrase to change; export it and import into a new encrypted vault".into(),
                });
            }
            (Sealer::Encrypted(keys), NewKeys::SamePassphrase) => {
                let slot = self
                    .header
                    .key_slots
                    .first()
                    .ok_or(VaultError::WrongPassphrase)?;
                let kek = Key::from_slice(keys.kek().expose())?;
                let (slots, keys) = new_key_slots(&prefix, slot.kdf, slot.salt, kek)?;
                (slots, Sealer::Encrypted(Box::new(keys)))
            }
            (Sealer::Encrypted(_), NewKeys::Passphrase { passphrase, kdf }) => {
                kdf.validate()?;
                let salt = p3ak_crypto::random_array()?;
                let kek = p3ak_crypto::derive_key_from_passphrase(passphrase, &salt, kdf)?;
                let (slots, keys) = new_key_slots(&prefix, kdf, salt, kek)?;
                (slots, Sealer::Encrypted(Box::new(keys)))
            }
        };
        debug_assert!(matches!(
            (&sealer, prefix.encryption),
            (Sealer::Plain, Encryption::None) | (Sealer::Encrypted(_), Encryption::Aes256Gcm)
        ));

        let tmp = temp_path(&self.path);
        remove_stale_temp(&self.path);
        let result = self.write_copy(&tmp, &prefix, &slots, sealer, progress);
        let (report, new_vault) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The new file replaces the old one only if its canary reads back under the new keys;
        // a vault from before canaries gets one here.
        let canary = new_vault
            .ensure_canary()
            .and_then(|_| new_vault.check_canary());
        if let Err(e) = canary {
            drop(new_vault);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        new_vault.log_event(
            event,
            serde_json::json!({
                "documents": report.documents,
                "dropped": report.dropped.iter().map(|d| d.id).collect::<Vec<_>>(),
                // Damage found when the vault was opened; a damaged log is carried over up to
                // its first broken entry.
                "damage_found": self.open_report().damage.len(),
                "log_entries_kept": self.log_len(),
            }),
        )?;
        new_vault.sync()?;
        let bytes_after = new_vault.state_read().end;
        drop(new_vault);
        std::fs::rename(&tmp, &self.path).map_err(VaultError::io(format!(
            "cannot replace `{}`",
            self.path.display()
        )))?;
        sync_parent(&self.path)?;
        Ok(RewriteReport {
            bytes_before,
            bytes_after,
            ..report
        })
    }

    fn write_copy(
        &self,
        tmp: &Path,
        prefix: &Prefix,
        slots: &[crate::format::KeySlot],
        sealer: Sealer,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(RewriteReport, Vault)> {
        let seed = self
            .log_seed
            .as_ref()
            .ok_or_else(|| VaultError::Log("the log's signing key is missing".into()))?;
        let target = Vault::create_file(tmp, prefix, slots, sealer, seed, None, false)?;
        // The log first, byte for byte: same entries, same tree, same signing key.
        let entries = self.log_len();
        target.commit_batch(|batch| {
            for seq in 0..entries {
                let (_, bytes) = self.log_entry(seq)?;
                batch.log_verbatim(bytes)?;
            }
            Ok(())
        })?;
        let mut entries: Vec<DocEntry> = self.state_read().docs.values().cloned().collect();
        entries.sort_by_key(|e| e.seq);
        let total = entries.len() as u64;
        let mut dropped = Vec::new();
        let mut documents = 0usize;
        let mut batch: Vec<(DocEntry, p3ak_crypto::SecretBytes)> = Vec::new();
        let mut batch_bytes = 0u64;
        // Documents and internal objects keep their ids; only documents are counted.
        let flush = |batch: &mut Vec<(DocEntry, p3ak_crypto::SecretBytes)>| -> Result<usize> {
            let n = target.commit_batch(|b| {
                let mut n = 0;
                for (entry, content) in batch.iter() {
                    let given = Some((entry.meta.id, entry.meta.created));
                    if let Some(space) = &entry.meta.space {
                        b.put_object(space, &entry.object_name(), content.expose(), given)?;
                        continue;
                    }
                    let doc = NewDocument {
                        content: content.expose(),
                        title: entry.meta.title.clone(),
                        tags: entry.meta.tags.clone(),
                        source: entry.meta.source.clone(),
                    };
                    b.put(given, doc, false)?;
                    n += 1;
                }
                Ok(n)
            })?;
            batch.clear();
            Ok(n)
        };
        for (done, entry) in entries.into_iter().enumerate() {
            match self.read_content(&entry) {
                Ok(content) => {
                    batch_bytes += content.len() as u64;
                    batch.push((entry, content));
                }
                Err(e) => dropped.push(DroppedDocument {
                    id: entry.meta.id,
                    reason: e.to_string(),
                }),
            }
            if batch_bytes >= BATCH_BYTES {
                documents += flush(&mut batch)?;
                batch_bytes = 0;
            }
            progress(done as u64 + 1, total);
        }
        documents += flush(&mut batch)?;
        if self.access == Access::Write && !dropped.is_empty() {
            return Err(VaultError::Damaged(format!(
                "{} documents could not be read",
                dropped.len()
            )));
        }
        Ok((
            RewriteReport {
                documents,
                bytes_before: 0,
                bytes_after: 0,
                dropped,
            },
            target,
        ))
    }
}

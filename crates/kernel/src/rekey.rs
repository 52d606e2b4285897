//! Scheduled vault rekey: when one is due, and running one with the checks that prove the
//! vault still opens and reads afterwards.
//!
//! Pure helpers, no auditing: the kernel stages the rekey through the approval gate, calls
//! [`rekey_vault`] once it is approved, and writes the attempt, the report or the error to its
//! audit log. [`rekey_vault`] blocks (three Argon2id runs and a rewrite of the whole file), so
//! call it from a blocking task.

use std::path::Path;
use std::time::{Duration, Instant};

use p3ak_crypto::Passphrase;
use p3ak_crypto::clock::now_unix;
use p3ak_vault::{Access, DocId, KdfParams, NewKeys, Unlock, Vault, VaultError};

use crate::error::KernelError;

/// Whether a rekey is due: `every` has passed since the last rekey or, for a vault never
/// rekeyed, since it was created. A clock that went backwards makes nothing due.
pub(crate) fn is_due(
    schedule_every: Duration,
    last_rekey_unix: Option<i64>,
    vault_created_unix: i64,
    now_unix: i64,
) -> bool {
    now_unix >= next_due_unix(schedule_every, last_rekey_unix, vault_created_unix)
}

/// When the next rekey falls due (Unix seconds), to arm a timer with.
pub(crate) fn next_due_unix(
    schedule_every: Duration,
    last_rekey_unix: Option<i64>,
    vault_created_unix: i64,
) -> i64 {
    let since = last_rekey_unix.unwrap_or(vault_created_unix);
    let every = i64::try_from(schedule_every.as_secs()).unwrap_or(i64::MAX);
    since.saturating_add(every)
}

/// The Argon2id parameters the vault's key slot uses now, so a rekey keeps its cost.
pub(crate) fn current_kdf(path: &Path) -> Result<KdfParams, KernelError> {
    let info = p3ak_vault::peek(path).map_err(|e| step(path, "reading the vault header", e))?;
    let kdf = info.kdf.ok_or_else(|| {
        step(
            path,
            "reading the vault header",
            VaultError::PassphraseRequired,
        )
    })?;
    Ok(KdfParams {
        memory_kib: kdf.memory_kib,
        iterations: kdf.iterations,
        parallelism: kdf.parallelism,
    })
}

/// What a successful rekey did, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RekeyReport {
    /// Documents carried over into the rekeyed vault.
    pub(crate) documents: usize,
    /// Whether the vault had no canary and one was written before the rekey.
    pub(crate) canary_written: bool,
    /// The canary read back from the rekeyed file and matched its check value.
    pub(crate) canary_ok: bool,
    /// The document read back from the rekeyed file and compared with what it held before
    /// (the smallest one), if the vault holds any.
    pub(crate) document_checked: Option<DocId>,
    /// File size before and after.
    pub(crate) bytes_before: u64,
    pub(crate) bytes_after: u64,
    /// Wall time of the whole operation, checks included.
    pub(crate) duration: Duration,
    /// When it finished (Unix seconds): the new "last rekey" time.
    pub(crate) finished_unix: i64,
}

impl RekeyReport {
    /// The report as an audit payload. It names no secret and no content.
    pub(crate) fn audit_payload(&self) -> serde_json::Value {
        serde_json::json!({
            "documents": self.documents,
            "canary_written": self.canary_written,
            "canary_ok": self.canary_ok,
            "document_checked": self.document_checked,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "finished_unix": self.finished_unix,
        })
    }
}

fn step(path: &Path, what: &str, error: VaultError) -> KernelError {
    KernelError::Vault(error.context(format!("scheduled rekey of `{}`: {what}", path.display())))
}

/// Rekeys the vault at `path`: a new master key (and a new salt) under the same passphrase,
/// the whole vault re-encrypted into a new file that replaces the old one atomically. Before,
/// it makes sure the vault has a canary; after, it reopens the new file from disk with the
/// passphrase, checks the canary, reads a document back and counts the documents.
///
/// A failure before the new file is in place leaves the old vault as it was (the rewrite is
/// atomic, and refuses to rename a file whose canary does not read back). The only change an
/// unsuccessful call can leave is a canary added to a vault that had none. A failure of the
/// checks after the rename means the new vault is in place but did not prove itself: the
/// error says so, and the operator should run `p3ak vault verify`.
pub(crate) fn rekey_vault(
    path: &Path,
    passphrase: &Passphrase,
    kdf: KdfParams,
) -> Result<RekeyReport, KernelError> {
    let started = Instant::now();
    // Checked before the vault is opened for writing, which already commits (a nonce
    // reservation): parameters the rewrite would refuse leave the file untouched.
    kdf.validate().map_err(|e| {
        step(
            path,
            "checking the key derivation parameters",
            VaultError::Crypto(e),
        )
    })?;
    let vault = Vault::open(path, Unlock::Passphrase(passphrase), Access::Write)
        .map_err(|e| step(path, "opening the vault", e))?;
    let canary_written = vault
        .ensure_canary()
        .map_err(|e| step(path, "writing a canary", e))?;
    vault
        .check_canary()
        .map_err(|e| step(path, "checking the canary before the rekey", e))?;
    let documents_before = vault.list();
    let probe = documents_before
        .iter()
        .filter(|d| d.damaged.is_none())
        .min_by_key(|d| d.size)
        .map(|d| d.id);
    let probe = match probe {
        Some(id) => {
            let (_, content) = vault
                .get(&id)
                .map_err(|e| step(path, "reading a document before the rekey", e))?;
            Some((id, p3ak_crypto::sha256(&[content.expose()])))
        }
        None => None,
    };

    let rewrite = vault
        .rewrite(NewKeys::Passphrase { passphrase, kdf }, &mut |_, _| {})
        .map_err(|e| step(path, "rewriting the vault under a new key", e))?;

    let after = |what: &str, e: VaultError| {
        step(
            path,
            &format!(
                "{what} after the rekey (the rekeyed vault is in place; run `p3ak vault verify`)"
            ),
            e,
        )
    };
    let reopened = Vault::open(path, Unlock::Passphrase(passphrase), Access::Read)
        .map_err(|e| after("reopening the vault", e))?;
    reopened
        .check_canary()
        .map_err(|e| after("checking the canary", e))?;
    if let Some((id, digest)) = &probe {
        let (_, content) = reopened
            .get(id)
            .map_err(|e| after("reading a document back", e))?;
        if p3ak_crypto::sha256(&[content.expose()]) != *digest {
            return Err(after(
                "reading a document back",
                VaultError::DocumentDamaged {
                    id: id.to_string(),
                    reason: "its content differs from before the rekey".into(),
                },
            ));
        }
    }
    let documents = reopened.list().len();
    if documents != documents_before.len() || documents != rewrite.documents {
        return Err(after(
            "counting documents",
            VaultError::Damaged(format!(
                "{} documents before, {documents} after",
                documents_before.len()
            )),
        ));
    }
    Ok(RekeyReport {
        documents,
        canary_written,
        canary_ok: true,
        document_checked: probe.map(|(id, _)| id),
        bytes_before: rewrite.bytes_before,
        bytes_after: rewrite.bytes_after,
        duration: started.elapsed(),
        finished_unix: now_unix(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use p3ak_vault::{NewDocument, Protection, VaultKey};

    const DAY: i64 = 86_400;
    const KDF: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        iterations: 1,
        parallelism: 1,
    };

    fn pass() -> Passphrase {
        Passphrase::new("rekey test passphrase".into())
    }

    fn create(dir: &Path, documents: &[&[u8]]) -> std::path::PathBuf {
        let path = dir.join("kernel.vault");
        let vault = Vault::create(
            &path,
            Protection::Passphrase {
                passphrase: &pass(),
                kdf: KDF,
            },
        )
        .unwrap();
        for content in documents {
            vault.put(NewDocument::new(content)).unwrap();
        }
        path
    }

    /// Key slot 0's salt (bytes 64 + 16 .. 64 + 32 of the header).
    fn salt(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()[80..96].to_vec()
    }

    #[test]
    fn a_rekey_is_due_after_every_has_passed() {
        let every = Duration::from_secs(90 * 86_400);
        let created = 1_700_000_000;
        assert!(!is_due(every, None, created, created));
        assert!(!is_due(every, None, created, created + 90 * DAY - 1));
        assert!(is_due(every, None, created, created + 90 * DAY));
        // The last rekey counts from then, not from the creation.
        let last = created + 100 * DAY;
        assert!(!is_due(every, Some(last), created, created + 120 * DAY));
        assert!(is_due(every, Some(last), created, last + 90 * DAY));
        // A clock that went backwards makes nothing due; huge values do not overflow.
        assert!(!is_due(every, Some(last), created, created));
        assert!(!is_due(Duration::MAX, None, created, i64::MAX - 1));
        assert!(is_due(every, None, i64::MIN, 0));
        assert_eq!(next_due_unix(every, None, created), created + 90 * DAY);
    }

    #[test]
    fn a_rekey_draws_a_new_key_and_keeps_every_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(dir.path(), &[b"first document", b"second, longer document"]);
        let old_key = VaultKey::derive(&path, &pass()).unwrap();
        let old_salt = salt(&path);
        let canary = Vault::open(&path, Unlock::Key(&old_key), Access::Read)
            .unwrap()
            .check_canary()
            .unwrap();

        assert_eq!(current_kdf(&path).unwrap(), KDF);
        let report = rekey_vault(&path, &pass(), KDF).unwrap();
        assert_eq!(report.documents, 2);
        assert!(report.canary_ok);
        assert!(!report.canary_written, "a new vault has its canary already");
        assert!(report.document_checked.is_some());
        assert!(report.bytes_after > 0);
        assert!(report.finished_unix > 0);
        let payload = report.audit_payload();
        assert_eq!(payload["documents"], 2);
        assert_eq!(payload["canary_ok"], true);

        // A new salt, so a new key-encryption key: the key derived before opens nothing.
        assert_ne!(salt(&path), old_salt);
        let refused = Vault::open(&path, Unlock::Key(&old_key), Access::Read);
        assert!(matches!(refused, Err(VaultError::WrongPassphrase)));
        // The same passphrase opens it, with every document and the same canary.
        let vault = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Read).unwrap();
        let mut contents: Vec<Vec<u8>> = vault
            .list()
            .iter()
            .map(|d| vault.get(&d.id).unwrap().1.expose().to_vec())
            .collect();
        contents.sort();
        assert_eq!(
            contents,
            [
                b"first document".to_vec(),
                b"second, longer document".to_vec()
            ]
        );
        assert_eq!(vault.check_canary().unwrap(), canary);
        // The vault's log now says when: the kernel's next `is_due` counts from there.
        let last = vault.last_rekey_unix().unwrap().unwrap();
        assert!(last >= canary.created);
        assert!(!is_due(
            Duration::from_secs(86_400),
            Some(last),
            0,
            last + 10
        ));
    }

    #[test]
    fn an_empty_vault_rekeys_with_its_canary_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(dir.path(), &[]);
        let report = rekey_vault(&path, &pass(), KDF).unwrap();
        assert_eq!((report.documents, report.document_checked), (0, None));
        assert!(report.canary_ok);
    }

    #[test]
    fn a_vault_from_before_canaries_gets_one_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.vault");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../vault/tests/vectors/v1-encrypted.vault"),
            &path,
        )
        .unwrap();
        let pass = Passphrase::new("p3ak test vector".into());
        let report = rekey_vault(&path, &pass, current_kdf(&path).unwrap()).unwrap();
        assert!(report.canary_written);
        assert_eq!(report.documents, 2);
        let vault = Vault::open(&path, Unlock::Passphrase(&pass), Access::Read).unwrap();
        vault.check_canary().unwrap();
    }

    #[test]
    fn a_failed_rekey_leaves_the_vault_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(dir.path(), &[b"a document"]);
        let before = std::fs::read(&path).unwrap();

        let wrong = Passphrase::new("not the passphrase".into());
        let e = rekey_vault(&path, &wrong, KDF).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("scheduled rekey of"), "{text}");
        assert!(text.contains("opening the vault"), "{text}");
        assert!(text.contains("wrong passphrase"), "{text}");
        assert!(!text.contains("not the passphrase"), "invariant I4: {text}");
        assert!(matches!(
            &e,
            KernelError::Vault(v) if matches!(v.root(), VaultError::WrongPassphrase)
        ));
        assert!(std::fs::read(&path).unwrap() == before);

        // A vault another writer holds is refused before anything is written.
        let holder = Vault::open(&path, Unlock::Passphrase(&pass()), Access::Write).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = rekey_vault(&path, &pass(), KDF).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        assert!(std::fs::read(&path).unwrap() == before);
        // Closing gives back the space the holder wrote ahead of its records.
        drop(holder);
        let before = std::fs::read(&path).unwrap();

        // Parameters the vault refuses are refused before the vault is opened.
        let bad = KdfParams {
            memory_kib: 8,
            ..KDF
        };
        let e = rekey_vault(&path, &pass(), bad).unwrap_err();
        assert!(e.to_string().contains("key derivation parameters"), "{e}");
        assert!(std::fs::read(&path).unwrap() == before, "bad parameters");
    }

    #[test]
    fn a_rekey_that_fails_midway_leaves_the_vault_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(dir.path(), &[b"a document"]);
        let old_key = VaultKey::derive(&path, &pass()).unwrap();
        // The rewrite's temporary file cannot be created where a directory stands.
        let tmp = dir.path().join("kernel.vault.p3ak-tmp");
        std::fs::create_dir(&tmp).unwrap();
        let e = rekey_vault(&path, &pass(), KDF).unwrap_err();
        assert!(e.to_string().contains("rewriting the vault"), "{e}");
        std::fs::remove_dir(&tmp).unwrap();
        // The old keys still open it, and it reads and verifies as before.
        let vault = Vault::open(&path, Unlock::Key(&old_key), Access::Read).unwrap();
        vault.check_canary().unwrap();
        let documents = vault.list();
        assert_eq!(documents.len(), 1);
        assert_eq!(
            vault.get(&documents[0].id).unwrap().1.expose(),
            b"a document"
        );
        let report = vault.verify(&mut |_, _| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(vault.last_rekey_unix().unwrap(), None);
    }
}

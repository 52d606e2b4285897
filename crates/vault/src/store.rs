//! The vault store: open, create, put, get, list, delete.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use p3ak_audit::{Chain, Checkpoint, Signer, Tip};
use p3ak_crypto::{KdfParams, Key, Passphrase, SecretBytes, TAG_LEN};
use serde::Serialize;

use crate::doc::{
    DocId, DocMeta, NewDocument, ObjectInfo, PutOutcome, PutStatus, validate_object_name,
    validate_tag,
};
use crate::error::{Result, VaultError};
use crate::format::{
    self, COMMIT_SLOT_LEN, COMMIT_SLOT_OFFSETS, CommitSlot, Encryption, HEADER_LEN, Header,
    HeaderError, KeySlot, Prefix, RecordHeader, kind,
};
use crate::lock::WriterLock;
use crate::scan::{self, DocEntry, OpenReport, RecordLoc, Scan};
use crate::seal::{self, Keys, Sealer};

/// Nonce counters are reserved in blocks of this size, durably, before any is used.
pub(crate) const RESERVATION_BLOCK: u64 = 1 << 32;

/// The file grows ahead of its records by an eighth of its size, within these bounds, in
/// written zeros: a commit into space already allocated and written syncs only its data, while
/// an append also writes the inode (docs/vault-format.md, "Preallocation").
const GROWTH_MIN: u64 = 64 * 1024;
const GROWTH_MAX: u64 = 4 * 1024 * 1024;

/// Records of a batch are gathered and written together, in pieces of about this size.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Longest title we store, in bytes.
pub const MAX_TITLE_LEN: usize = 4096;
/// Most tags on one document.
pub const MAX_TAGS: usize = 64;
/// Largest metadata record (kind byte and JSON).
pub const MAX_META_LEN: usize = 64 * 1024;

/// How to unlock a vault.
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    Passphrase(&'a Passphrase),
    /// A key derived earlier with [`VaultKey::derive`] (no Argon2id run).
    Key(&'a VaultKey),
    /// For a vault created with `--no-encrypt`; an encrypted vault refuses it.
    Unencrypted,
}

/// What the caller intends to do with an open vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; no lock, so any number of readers may run beside the writer.
    Read,
    /// Read and append. Takes the writer lock; refuses a damaged vault.
    Write,
    /// Takes the writer lock but accepts a damaged vault, to rebuild it (`compact`).
    Repair,
}

/// How a new vault protects its content.
pub enum Protection<'a> {
    Passphrase {
        passphrase: &'a Passphrase,
        kdf: KdfParams,
    },
    /// Plaintext with integrity tags: only when the operator asks for it.
    Unencrypted,
}

/// An open vault. `Sync`: many threads may read while one appends.
pub struct Vault {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) header: Header,
    pub(crate) sealer: Sealer,
    pub(crate) state: RwLock<State>,
    writer: Option<Mutex<Writer>>,
    _lock: Option<WriterLock>,
    pub(crate) access: Access,
    report: OpenReport,
    /// Signs the log's checkpoints; `None` only when the vault's log key is unreadable.
    pub(crate) signer: Option<Signer>,
    /// The signer's seed, copied into a rewritten vault so its log goes on under the same key.
    pub(crate) log_seed: Option<Key>,
    /// Who the log names as the actor of this handle's operations.
    actor: RwLock<String>,
}

/// The committed audit log.
#[derive(Default)]
pub(crate) struct LogState {
    pub(crate) chain: Chain,
    pub(crate) locs: Vec<RecordLoc>,
    pub(crate) last_checkpoint: Option<Checkpoint>,
}

/// The committed, in-memory view of the vault.
pub(crate) struct State {
    pub(crate) docs: BTreeMap<DocId, DocEntry>,
    pub(crate) by_fingerprint: HashMap<String, DocId>,
    /// Internal objects by (space, name).
    pub(crate) objects: BTreeMap<(String, String), DocId>,
    /// Offset just past the last committed record.
    pub(crate) end: u64,
    pub(crate) record_count: u64,
    pub(crate) generation: u64,
    pub(crate) last_commit_unix: i64,
    pub(crate) log: LogState,
}

struct Writer {
    next_counter: u64,
    reserved: u64,
    /// Index of the commit slot to write next.
    next_slot: usize,
    block: u64,
    /// The last commit slot was written but not synced: the next commit's sync (or dropping
    /// the vault) makes it durable. Its records were synced before it was written.
    slot_unsynced: bool,
    /// The file's length: the committed records, then zeros written ahead of them.
    file_end: u64,
    /// The last batch's write buffer, kept for the next (emptied).
    spare_buffer: Vec<u8>,
}

/// When a commit slot write is synced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    Now,
    /// By the next commit's sync, or when the vault is dropped.
    Later,
}

/// A summary of one document, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocInfo {
    pub id: DocId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub created: i64,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// What `info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct VaultInfo {
    pub path: PathBuf,
    pub format_version: u16,
    /// The header's encryption-status byte, by name.
    pub encryption: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfInfo>,
    pub vault_id: String,
    pub created: i64,
    pub documents: usize,
    pub content_bytes: u64,
    /// Internal objects (search index files, embeddings) and their bytes.
    pub objects: usize,
    pub object_bytes: u64,
    /// The file's length; while a writer has it open, with zeros written ahead of the records.
    pub file_bytes: u64,
    /// The file up to its last committed record (its length once closed).
    pub committed_bytes: u64,
    pub records: u64,
    pub generation: u64,
    pub last_commit: i64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct KdfInfo {
    pub algorithm: &'static str,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl From<KdfParams> for KdfInfo {
    fn from(p: KdfParams) -> Self {
        Self {
            algorithm: "argon2id",
            memory_kib: p.memory_kib,
            iterations: p.iterations,
            parallelism: p.parallelism,
        }
    }
}

/// What can be read from a header without a passphrase.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderInfo {
    pub format_version: u16,
    pub encryption: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfInfo>,
    pub vault_id: String,
    pub created: i64,
    pub file_bytes: u64,
}

impl HeaderInfo {
    pub fn is_encrypted(&self) -> bool {
        self.encryption != Encryption::None.name()
    }
}

pub(crate) use p3ak_crypto::clock::now_unix;

fn read_header(path: &Path, file: &File) -> Result<(Header, u64)> {
    let len = file
        .metadata()
        .map_err(VaultError::io(format!("cannot read `{}`", path.display())))?
        .len();
    let mut bytes = vec![0u8; usize::try_from(len.min(HEADER_LEN as u64)).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)
        .map_err(VaultError::io(format!("cannot read `{}`", path.display())))?;
    let header = Header::parse(&bytes).map_err(|e| match e {
        HeaderError::BadMagic => VaultError::NotAVault {
            path: path.to_owned(),
        },
        HeaderError::TooShort(_) if !bytes.starts_with(&format::MAGIC) => VaultError::NotAVault {
            path: path.to_owned(),
        },
        HeaderError::TooShort(n) => {
            VaultError::HeaderDamaged(format!("file ends after {n} bytes of its header"))
        }
        HeaderError::UnsupportedVersion(version) => VaultError::UnsupportedVersion {
            path: path.to_owned(),
            version,
        },
        HeaderError::Malformed(reason) => VaultError::HeaderDamaged(reason),
    })?;
    Ok((header, len))
}

fn open_file(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(VaultError::io(format!("cannot open `{}`", path.display())))
}

/// Reads a vault's header without unlocking it.
pub fn peek(path: &Path) -> Result<HeaderInfo> {
    let file = open_file(path, false)?;
    let (header, len) = read_header(path, &file)?;
    Ok(HeaderInfo {
        format_version: header.prefix.version,
        encryption: header.prefix.encryption.name(),
        kdf: header.key_slots.first().map(|s| s.kdf.into()),
        vault_id: hex::encode(header.prefix.vault_id),
        created: header.prefix.created_unix,
        file_bytes: len,
    })
}

/// A vault's passphrase-derived key-encryption key, kept so the vault can be reopened without
/// running Argon2id again. Zeroized on drop; no `Debug`, no `Clone`.
pub struct VaultKey {
    kek: Key,
    kdf: KdfParams,
    salt: [u8; 16],
}

impl VaultKey {
    /// Runs Argon2id once for the vault at `path`; fails with `wrong passphrase or damaged
    /// header` when no key slot opens, and with [`VaultError::NotEncrypted`] when the vault is
    /// not encrypted (there is no key to derive, and a plaintext vault is no stand-in for an
    /// encrypted one).
    pub fn derive(path: &Path, passphrase: &Passphrase) -> Result<Self> {
        let file = open_file(path, false)?;
        let (header, _) = read_header(path, &file)?;
        check_unlock_kind(path, &header, &Unlock::Passphrase(passphrase))?;
        derive_vault_key(&header, passphrase).map(|(key, _)| key)
    }

    /// The key as bytes, to hand to a helper process of the same operator over a pipe (never
    /// argv or the environment): 32 key bytes, the Argon2id parameters, the salt.
    pub fn to_handoff_bytes(&self) -> SecretBytes {
        let mut out = SecretBytes::with_capacity(HANDOFF_LEN);
        let bytes = out.expose_mut();
        bytes.extend_from_slice(self.kek.expose());
        for n in [
            self.kdf.memory_kib,
            self.kdf.iterations,
            self.kdf.parallelism,
        ] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(&self.salt);
        out
    }

    /// Reads what [`VaultKey::to_handoff_bytes`] wrote.
    pub fn from_handoff_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || VaultError::HeaderDamaged("malformed key handoff".into());
        if bytes.len() != HANDOFF_LEN {
            return Err(bad());
        }
        let kek = Key::from_slice(bytes.get(..32).ok_or_else(bad)?)?;
        let word = |at: usize| {
            format::take::<4>(bytes, at)
                .map(u32::from_le_bytes)
                .ok_or_else(bad)
        };
        let kdf = KdfParams {
            memory_kib: word(32)?,
            iterations: word(36)?,
            parallelism: word(40)?,
        };
        let salt = format::take::<16>(bytes, 44).ok_or_else(bad)?;
        Ok(Self { kek, kdf, salt })
    }
}

/// Bytes of a [`VaultKey`] handoff.
const HANDOFF_LEN: usize = 32 + 12 + 16;

fn prefix_bytes(header: &Header) -> &[u8] {
    header.bound.get(..format::PREFIX_LEN).unwrap_or_default()
}

/// Tries `kek` on every key slot made with the same salt and parameters.
fn try_kek(header: &Header, kek: &Key, kdf: KdfParams, salt: [u8; 16]) -> Result<Option<Keys>> {
    for slot in header
        .key_slots
        .iter()
        .filter(|s| s.kdf == kdf && s.salt == salt)
    {
        let copy = Key::from_slice(kek.expose())?;
        if let Some(keys) =
            seal::unwrap_slot(prefix_bytes(header), &header.prefix.vault_id, slot, copy)?
        {
            return Ok(Some(keys));
        }
    }
    Ok(None)
}

fn derive_vault_key(header: &Header, passphrase: &Passphrase) -> Result<(VaultKey, Keys)> {
    // Slots written together share salt and parameters: derive once per distinct pair.
    let mut tried: Vec<(KdfParams, [u8; 16])> = Vec::new();
    for slot in &header.key_slots {
        if tried.contains(&(slot.kdf, slot.salt)) {
            continue;
        }
        tried.push((slot.kdf, slot.salt));
        let Ok(kek) = seal::derive_kek(passphrase, slot) else {
            continue;
        };
        if let Some(keys) = try_kek(header, &kek, slot.kdf, slot.salt)? {
            let key = VaultKey {
                kek,
                kdf: slot.kdf,
                salt: slot.salt,
            };
            return Ok((key, keys));
        }
    }
    Err(VaultError::WrongPassphrase)
}

/// Whether the way the caller unlocks fits the vault's encryption status. A passphrase or a key
/// means the caller expects an encrypted vault: a plaintext one in its place (swapped in, or its
/// encryption byte flipped) is a downgrade and is refused, never opened as plaintext. Only
/// [`Unlock::Unencrypted`], the caller's explicit choice, opens a plaintext vault; an encrypted
/// vault refuses it.
fn check_unlock_kind(path: &Path, header: &Header, unlock: &Unlock<'_>) -> Result<()> {
    match (header.prefix.encryption, unlock) {
        (Encryption::None, Unlock::Passphrase(_) | Unlock::Key(_)) => {
            Err(VaultError::NotEncrypted {
                path: path.to_owned(),
            })
        }
        (Encryption::Aes256Gcm, Unlock::Unencrypted) => Err(VaultError::PassphraseRequired),
        (Encryption::None, Unlock::Unencrypted)
        | (Encryption::Aes256Gcm, Unlock::Passphrase(_) | Unlock::Key(_)) => Ok(()),
    }
}

/// The sealer for the caller's unlock: the caller's choice decides, the header has to agree.
fn unlock(path: &Path, header: &Header, unlock: &Unlock<'_>) -> Result<Sealer> {
    check_unlock_kind(path, header, unlock)?;
    let keys = match unlock {
        Unlock::Unencrypted => return Ok(Sealer::Plain),
        Unlock::Passphrase(passphrase) => derive_vault_key(header, passphrase)?.1,
        Unlock::Key(key) => {
            try_kek(header, &key.kek, key.kdf, key.salt)?.ok_or(VaultError::WrongPassphrase)?
        }
    };
    Ok(Sealer::Encrypted(Box::new(keys)))
}

/// The intact commit slots of a header: `(index, slot)`, newest first.
pub(crate) fn intact_commit_slots(header: &Header, sealer: &Sealer) -> Vec<(usize, CommitSlot)> {
    let mut slots: Vec<(usize, CommitSlot)> = header
        .commit_slots
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let (slot, mac) = raw.as_ref()?;
            let expected = sealer.commit_mac(&header.bound, &slot.encode_body());
            (slot.generation > 0 && p3ak_crypto::constant_time_eq(&expected, mac))
                .then_some((i, *slot))
        })
        .collect();
    slots.sort_by_key(|(_, s)| std::cmp::Reverse(s.generation));
    slots
}

impl Vault {
    /// [`Vault::open`], waiting up to `patience` while another process holds the writer lock
    /// (an ingest or an embedding run commits briefly); then [`VaultError::Locked`].
    pub fn open_waiting(
        path: &Path,
        how: Unlock<'_>,
        access: Access,
        patience: std::time::Duration,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        loop {
            match Self::open(path, how, access) {
                Err(VaultError::Locked { .. }) if started.elapsed() < patience => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Opens a vault. With [`Access::Write`] the writer lock is taken, an uncommitted torn tail
    /// left by a crash is cut away, and a damaged vault is refused.
    ///
    /// A passphrase or key opens only an encrypted vault ([`VaultError::NotEncrypted`]
    /// otherwise); [`Unlock::Unencrypted`] only a plaintext one
    /// ([`VaultError::PassphraseRequired`] otherwise). Either refusal comes before anything is
    /// written: no lock file, no stale temporary file removed, no unlock failure noted.
    pub fn open(path: &Path, how: Unlock<'_>, access: Access) -> Result<Self> {
        {
            let file = open_file(path, false)?;
            let (header, _) = read_header(path, &file)?;
            check_unlock_kind(path, &header, &how)?;
        }
        let lock = match access {
            Access::Read => None,
            Access::Write | Access::Repair => Some(WriterLock::acquire(path)?),
        };
        if lock.is_some() {
            crate::rewrite::remove_stale_temp(path);
        }
        let file = open_file(path, access != Access::Read)?;
        let (header, file_len) = read_header(path, &file)?;
        // Checked again on the header read under the lock: the file may have been replaced.
        let sealer = match unlock(path, &header, &how) {
            Err(VaultError::WrongPassphrase) if matches!(how, Unlock::Passphrase(_)) => {
                crate::failures::record(path);
                return Err(VaultError::WrongPassphrase);
            }
            other => other?,
        };
        let intact = intact_commit_slots(&header, &sealer);
        let scan = scan::scan(
            &file,
            file_len,
            &header,
            &sealer,
            &intact,
            false,
            &mut |_, _| {},
        )?;
        let mut vault = Self::from_scan(path, file, header, sealer, lock, access, scan, &intact);
        if access == Access::Write {
            vault.start_writer(file_len, &intact)?;
            crate::failures::log_and_clear(&vault)?;
        }
        Ok(vault)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "internal constructor, called twice"
    )]
    fn from_scan(
        path: &Path,
        file: File,
        header: Header,
        sealer: Sealer,
        lock: Option<WriterLock>,
        access: Access,
        scan: Scan,
        intact: &[(usize, CommitSlot)],
    ) -> Self {
        let newest = intact.first().map(|(_, s)| *s).unwrap_or_default();
        let signer = scan.log.signer();
        let log_seed = scan
            .log
            .seed
            .as_ref()
            .and_then(|seed| Key::from_slice(seed.expose()).ok());
        let log = LogState {
            chain: scan.log.chain,
            locs: scan.log.locs,
            // The newest checkpoint: the last one in the log, else the header's.
            last_checkpoint: scan.log.last_checkpoint.or(newest.checkpoint),
        };
        let by_fingerprint = scan
            .docs
            .iter()
            .filter(|(_, e)| e.damage.is_none() && e.meta.space.is_none())
            .map(|(id, e)| (e.meta.fingerprint.clone(), *id))
            .collect();
        let objects = scan
            .docs
            .iter()
            .filter_map(|(id, e)| Some(((e.meta.space.clone()?, e.object_name()), *id)))
            .collect();
        Self {
            path: path.to_owned(),
            file,
            header,
            sealer,
            state: RwLock::new(State {
                docs: scan.docs,
                by_fingerprint,
                objects,
                end: scan.accepted_end,
                record_count: scan.accepted_count,
                generation: newest.generation,
                last_commit_unix: newest.time_unix,
                log,
            }),
            writer: None,
            _lock: lock,
            access,
            report: scan.report,
            signer,
            log_seed,
            actor: RwLock::new(default_actor()),
        }
    }

    /// Cuts a torn tail, reserves nonces and records the recovered state in a commit slot.
    fn start_writer(&mut self, file_len: u64, intact: &[(usize, CommitSlot)]) -> Result<()> {
        if let Some(reason) = self.report.damage_summary() {
            return Err(VaultError::Damaged(reason));
        }
        let end = self.state_read().end;
        // Zeros after the last record are space written ahead (kept); anything else there is
        // an interrupted write, cut away with the zeros after it.
        let mut file_end = file_len;
        if self.report.torn_tail_bytes > 0 {
            self.file
                .set_len(end)
                .map_err(self.io_err("cannot cut torn tail"))?;
            self.file.sync_all().map_err(self.io_err("cannot sync"))?;
            file_end = end;
        }
        // Every counter ever used is below the reservation of the newest slot that was
        // durable when it was used. If a slot is not intact, the newest commit may be lost:
        // one more block covers it, because consecutive slots differ by at most one block.
        let mut start = intact
            .iter()
            .map(|(_, s)| s.nonce_reserved)
            .max()
            .unwrap_or(0);
        if intact.len() < 2 {
            start = start.saturating_add(RESERVATION_BLOCK);
        }
        start = start.max(self.report.max_counter.map_or(0, |c| c.saturating_add(1)));
        // Write the slot that is not the newest intact one.
        let next_slot = intact.first().map_or(0, |(i, _)| 1 - i);
        let mut writer = Writer {
            next_counter: start,
            reserved: start,
            next_slot,
            block: RESERVATION_BLOCK,
            slot_unsynced: false,
            file_end,
            spare_buffer: Vec::new(),
        };
        self.reserve(&mut writer)?;
        self.writer = Some(Mutex::new(writer));
        Ok(())
    }

    /// Creates a new vault at `path` and returns it open for writing.
    pub fn create(path: &Path, protection: Protection<'_>) -> Result<Self> {
        if path.exists() {
            return Err(VaultError::Exists {
                path: path.to_owned(),
            });
        }
        let lock = WriterLock::acquire(path)?;
        if path.exists() {
            return Err(VaultError::Exists {
                path: path.to_owned(),
            });
        }
        let prefix = Prefix {
            version: format::FORMAT_VERSION,
            encryption: match protection {
                Protection::Passphrase { .. } => Encryption::Aes256Gcm,
                Protection::Unencrypted => Encryption::None,
            },
            vault_id: p3ak_crypto::random_array()?,
            created_unix: now_unix(),
        };
        let (slots, sealer) = match protection {
            Protection::Passphrase { passphrase, kdf } => {
                kdf.validate().map_err(|e| {
                    VaultError::Crypto(p3ak_crypto::CryptoError::KdfParams(e.to_string()))
                })?;
                let salt = p3ak_crypto::random_array()?;
                let kek = p3ak_crypto::derive_key_from_passphrase(passphrase, &salt, kdf)?;
                let (slots, keys) = new_key_slots(&prefix, kdf, salt, kek)?;
                (slots, Sealer::Encrypted(Box::new(keys)))
            }
            Protection::Unencrypted => (Vec::new(), Sealer::Plain),
        };
        let seed = Key::generate()?;
        let vault = Self::create_file(path, &prefix, &slots, sealer, &seed, Some(lock), true)?;
        // The canary goes in with the log's first entry: one commit, so a vault never exists
        // with one and not the other.
        vault.commit_batch(|batch| {
            crate::canary::write(batch, prefix.created_unix)?;
            batch.log(
                "vault.create",
                &serde_json::json!({
                    "format_version": prefix.version,
                    "encryption": prefix.encryption.name(),
                    "canary": true,
                }),
            )
        })?;
        Ok(vault)
    }

    /// Writes a fresh vault file (atomically: temporary file, fsync, rename) and opens it.
    pub(crate) fn create_file(
        path: &Path,
        prefix: &Prefix,
        slots: &[KeySlot],
        sealer: Sealer,
        log_seed: &Key,
        lock: Option<WriterLock>,
        atomic: bool,
    ) -> Result<Self> {
        let bytes = Header::encode(prefix, slots);
        let header = Header::parse(&bytes)
            .map_err(|e| VaultError::HeaderDamaged(format!("new header does not parse: {e:?}")))?;
        let write_path = if atomic {
            crate::rewrite::temp_path(path)
        } else {
            path.to_owned()
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&write_path)
            .map_err(VaultError::io(format!(
                "cannot create `{}`",
                write_path.display()
            )))?;
        file.write_all_at(&bytes, 0)
            .map_err(VaultError::io(format!(
                "cannot write `{}`",
                write_path.display()
            )))?;
        let mut vault = Self {
            path: path.to_owned(),
            file,
            header,
            sealer,
            state: RwLock::new(State {
                docs: BTreeMap::new(),
                by_fingerprint: HashMap::new(),
                objects: BTreeMap::new(),
                end: HEADER_LEN as u64,
                record_count: 0,
                generation: 0,
                last_commit_unix: 0,
                log: LogState::default(),
            }),
            writer: None,
            _lock: lock,
            access: Access::Write,
            report: OpenReport::default(),
            signer: Some(Signer::from_seed(log_seed)),
            log_seed: Some(Key::from_slice(log_seed.expose())?),
            actor: RwLock::new(default_actor()),
        };
        // The first commit fills the second slot, so the vault starts with two intact ones.
        let mut writer = Writer {
            next_counter: 0,
            reserved: 0,
            next_slot: 0,
            block: RESERVATION_BLOCK,
            slot_unsynced: false,
            file_end: HEADER_LEN as u64,
            spare_buffer: Vec::new(),
        };
        vault.reserve(&mut writer)?;
        vault.writer = Some(Mutex::new(writer));
        vault.commit_batch(|batch| {
            batch.append(SecretBytes::new(
                [&[kind::LOG_KEY][..], log_seed.expose()].concat(),
            ))?;
            Ok(())
        })?;
        vault.sync()?;
        if atomic {
            std::fs::rename(&write_path, path).map_err(VaultError::io(format!(
                "cannot rename to `{}`",
                path.display()
            )))?;
            sync_parent(path)?;
        }
        Ok(vault)
    }

    fn io_err(&self, what: &str) -> impl FnOnce(std::io::Error) -> VaultError {
        VaultError::io(format!("{what} `{}`", self.path.display()))
    }

    pub(crate) fn state_read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state_write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Durably reserves the next block of nonce counters before any of them is used.
    fn reserve(&self, writer: &mut Writer) -> Result<()> {
        let reserved = writer
            .reserved
            .max(writer.next_counter)
            .checked_add(writer.block)
            .ok_or(VaultError::Damaged(
                "nonce counter space exhausted; run `p3ak vault rekey`".into(),
            ))?;
        writer.reserved = reserved;
        let (end, count) = {
            let state = self.state_read();
            (state.end, state.record_count)
        };
        // Synced: no counter of the block may be used before its reservation is durable.
        self.write_commit(writer, end, count, None, Sync::Now)
    }

    /// Writes the next commit slot, synced now or by the next sync of the file. Without a new
    /// checkpoint, the slot carries the log's latest one.
    fn write_commit(
        &self,
        writer: &mut Writer,
        end: u64,
        record_count: u64,
        checkpoint: Option<Checkpoint>,
        sync: Sync,
    ) -> Result<()> {
        let mut state = self.state_write();
        let slot = CommitSlot {
            generation: state.generation + 1,
            committed_end: end,
            record_count,
            nonce_reserved: writer.reserved,
            time_unix: now_unix(),
            checkpoint: checkpoint.or(state.log.last_checkpoint),
        };
        let body = slot.encode_body();
        let mac = self.sealer.commit_mac(&self.header.bound, &body);
        let mut raw = Vec::with_capacity(COMMIT_SLOT_LEN);
        raw.extend_from_slice(&body);
        raw.extend_from_slice(&mac);
        let at = COMMIT_SLOT_OFFSETS
            .get(writer.next_slot)
            .copied()
            .unwrap_or(COMMIT_SLOT_OFFSETS[0]);
        self.file
            .write_all_at(&raw, at as u64)
            .map_err(self.io_err("cannot write commit slot of"))?;
        writer.slot_unsynced = true;
        if sync == Sync::Now {
            self.file.sync_data().map_err(self.io_err("cannot sync"))?;
            writer.slot_unsynced = false;
        }
        writer.next_slot = 1 - writer.next_slot.min(1);
        state.generation = slot.generation;
        state.last_commit_unix = slot.time_unix;
        state.end = end;
        state.record_count = record_count;
        Ok(())
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, Writer>> {
        self.writer
            .as_ref()
            .ok_or(VaultError::ReadOnly)
            .map(|w| w.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// What opening the vault found (torn tail cut, recovered records, damage).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self.sealer, Sealer::Encrypted(_))
    }

    /// Stores one document and commits (fsync) before returning.
    pub fn put(&self, doc: NewDocument<'_>) -> Result<PutOutcome> {
        let mut outcomes = self.put_batch(std::iter::once(doc))?;
        outcomes.pop().ok_or(VaultError::ReadOnly)
    }

    /// Stores several documents with one commit at the end.
    pub fn put_batch<'a>(
        &self,
        docs: impl IntoIterator<Item = NewDocument<'a>>,
    ) -> Result<Vec<PutOutcome>> {
        let docs = docs.into_iter().map(|d| (None, d));
        self.put_batch_with_ids(docs, true)
    }

    /// Like [`Vault::put_batch`], keeping a given id and creation time where one is given
    /// (import and rewrite). `log_puts` records each new document in the audit log.
    pub(crate) fn put_batch_with_ids<'a>(
        &self,
        docs: impl IntoIterator<Item = (Option<(DocId, i64)>, NewDocument<'a>)>,
        log_puts: bool,
    ) -> Result<Vec<PutOutcome>> {
        self.commit_batch(|batch| {
            let mut outcomes = Vec::new();
            for (given, doc) in docs {
                outcomes.push(batch.put(given, doc, log_puts)?);
            }
            Ok(outcomes)
        })
    }

    /// Deletes a document (appends a tombstone; `compact` reclaims the space).
    pub fn delete(&self, id: &DocId) -> Result<()> {
        self.transact(|tx| tx.delete(id))
    }

    /// Runs `build` over a [`Transaction`] and commits everything it did at once: documents
    /// stored and deleted, objects written and removed, log entries. A crash leaves all of it
    /// or none of it; an error from `build` leaves none of it.
    pub fn transact<T>(
        &self,
        build: impl FnOnce(&mut Transaction<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        self.commit_batch(|batch| build(&mut Transaction { batch }))
    }

    /// The objects of `space`, by name.
    pub fn objects(&self, space: &str) -> Vec<ObjectInfo> {
        let state = self.state_read();
        state
            .objects
            .range((space.to_owned(), String::new())..)
            .take_while(|((s, _), _)| s == space)
            .filter_map(|((_, name), id)| {
                let entry = state.docs.get(id)?;
                Some(ObjectInfo {
                    name: name.clone(),
                    size: entry.meta.size,
                })
            })
            .collect()
    }

    /// Reads one object; `None` when `space` holds no object of that name.
    pub fn read_object(&self, space: &str, name: &str) -> Result<Option<SecretBytes>> {
        let entry = {
            let state = self.state_read();
            let Some(id) = state.objects.get(&(space.to_owned(), name.to_owned())) else {
                return Ok(None);
            };
            state.docs.get(id).cloned()
        };
        entry.map(|e| self.read_content(&e)).transpose()
    }

    /// Appends one entry to the vault's audit log and commits it with a new checkpoint.
    /// Returns the entry's sequence number.
    pub fn log_event(&self, kind: &str, payload: serde_json::Value) -> Result<u64> {
        self.commit_batch(|batch| {
            batch.log(kind, &payload)?;
            Ok(batch.tip.len() - 1)
        })
    }

    /// Appends several entries with one commit (one fsync) and one checkpoint.
    /// Returns the sequence number of the first.
    pub fn log_events<'a, P: std::borrow::Borrow<serde_json::Value>>(
        &self,
        events: impl IntoIterator<Item = (&'a str, P)>,
    ) -> Result<u64> {
        self.commit_batch(|batch| {
            let first = batch.tip.len();
            for (kind, payload) in events {
                batch.log(kind, payload.borrow())?;
            }
            Ok(first)
        })
    }

    /// Sets the actor the log names for this handle's operations (default: uid and pid).
    pub fn set_actor(&mut self, actor: impl Into<String>) {
        self.act_as(actor);
    }

    /// [`Vault::set_actor`] through a shared handle: a vault kept open by a server names, for
    /// each write, whom it writes for.
    pub fn act_as(&self, actor: impl Into<String>) {
        *self
            .actor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor.into();
    }

    /// Runs `build` over a new batch of records and commits it: sync the records, write a
    /// checkpoint record if the log grew, write and sync the commit slot, then publish the
    /// batch's documents, deletions and log entries. On failure nothing is published and the
    /// appended bytes are cut away.
    pub(crate) fn commit_batch<T>(
        &self,
        build: impl FnOnce(&mut Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut writer = self.writer()?;
        let (start_end, start_count, tip) = {
            let state = self.state_read();
            (state.end, state.record_count, state.log.chain.tip())
        };
        let unwritten = std::mem::take(&mut writer.spare_buffer);
        let mut batch = Batch {
            vault: self,
            writer: &mut writer,
            offset: start_end,
            unwritten,
            unwritten_at: start_end,
            wrote: false,
            index: start_count,
            tip,
            log_entries: Vec::new(),
            new_docs: Vec::new(),
            deleted: Vec::new(),
        };
        let result = build(&mut batch).and_then(|value| {
            if batch.offset == start_end {
                return Ok((value, None));
            }
            // Every batch ends with a checkpoint record: after a crash, a batch past the
            // commit point is kept only if its checkpoint made it to disk.
            let signer = self.signer.as_ref().ok_or_else(|| {
                VaultError::Damaged("the audit log's signing key is missing".into())
            })?;
            let cp = signer.checkpoint(self.header.prefix.vault_id, &batch.tip, now_ms());
            let mut plain = vec![kind::CHECKPOINT];
            plain.extend_from_slice(&cp.to_bytes());
            batch.append(SecretBytes::new(plain))?;
            let checkpoint = Some(cp);
            batch.grow_ahead();
            batch.write_out()?;
            // The one sync of a commit: it makes the batch durable, closing checkpoint
            // included, which is all recovery needs to keep it (docs/vault-format.md), and
            // with it any zeros written ahead. The slot written after it is made durable by
            // the next commit's sync.
            self.file.sync_data().map_err(self.io_err("cannot sync"))?;
            batch.writer.slot_unsynced = false;
            self.write_commit(
                batch.writer,
                batch.offset,
                batch.index,
                checkpoint,
                Sync::Later,
            )?;
            Ok((value, checkpoint))
        });
        let mut spare = std::mem::take(&mut batch.unwritten);
        if spare.capacity() <= 2 * WRITE_BUFFER {
            spare.clear();
            batch.writer.spare_buffer = spare;
        }
        let (value, checkpoint) = match result {
            Ok(done) => done,
            Err(e) => {
                // Nothing of this batch was committed; cut what reached the file (and the
                // zeros written ahead, which a later commit writes again).
                if batch.wrote && self.file.set_len(start_end).is_ok() {
                    batch.writer.file_end = start_end;
                }
                return Err(e);
            }
        };
        let Batch {
            log_entries,
            new_docs,
            deleted,
            ..
        } = batch;
        let mut state = self.state_write();
        for id in deleted {
            if let Some(entry) = state.docs.remove(&id) {
                match &entry.meta.space {
                    Some(space) => {
                        state.objects.remove(&(space.clone(), entry.object_name()));
                    }
                    None => {
                        state.by_fingerprint.remove(&entry.meta.fingerprint);
                    }
                }
            }
        }
        for entry in new_docs {
            match &entry.meta.space {
                Some(space) => {
                    state
                        .objects
                        .insert((space.clone(), entry.object_name()), entry.meta.id);
                }
                None => {
                    state
                        .by_fingerprint
                        .insert(entry.meta.fingerprint.clone(), entry.meta.id);
                }
            }
            state.docs.insert(entry.meta.id, entry);
        }
        for (bytes, loc) in log_entries {
            // Built on the committed tip by this writer: right by construction.
            state.log.chain.push_built(&bytes);
            state.log.locs.push(loc);
        }
        if checkpoint.is_some() {
            state.log.last_checkpoint = checkpoint;
        }
        Ok(value)
    }

    /// Finds a document by its full id or a unique prefix of at least 4 hex digits.
    pub fn resolve(&self, text: &str) -> Result<DocId> {
        let text = text.trim().to_ascii_lowercase();
        if text.len() == 32 {
            let id: DocId = text.parse()?;
            return if self.state_read().is_user_doc(&id) {
                Ok(id)
            } else {
                Err(VaultError::NotFound(text))
            };
        }
        if text.len() < 4 || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VaultError::InvalidId(text));
        }
        let state = self.state_read();
        let mut matches = state
            .docs
            .iter()
            .filter(|(_, e)| e.meta.space.is_none())
            .map(|(id, _)| id)
            .filter(|id| id.to_hex().starts_with(&text));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(*id),
            (None, _) => Err(VaultError::NotFound(text)),
            (Some(_), Some(_)) => Err(VaultError::AmbiguousId(text)),
        }
    }

    /// The stored document with exactly this content, if there is one (the same keyed
    /// fingerprint `put` deduplicates by).
    pub fn find_content(&self, content: &[u8]) -> Option<DocId> {
        let fingerprint = self.sealer.fingerprint(content);
        self.state_read().by_fingerprint.get(&fingerprint).copied()
    }

    /// Reads a document's metadata and content. Every chunk is authenticated.
    pub fn get(&self, id: &DocId) -> Result<(DocMeta, SecretBytes)> {
        let entry = self
            .state_read()
            .docs
            .get(id)
            .filter(|e| e.meta.space.is_none())
            .cloned()
            .ok_or_else(|| VaultError::NotFound(id.to_string()))?;
        let content = self.read_content(&entry)?;
        Ok((entry.meta, content))
    }

    pub(crate) fn read_content(&self, entry: &DocEntry) -> Result<SecretBytes> {
        let damaged = |reason: String| VaultError::DocumentDamaged {
            id: entry.meta.id.to_string(),
            reason,
        };
        if let Some(reason) = &entry.damage {
            return Err(damaged(reason.clone()));
        }
        let size = usize::try_from(entry.meta.size).map_err(|_| damaged("too large".into()))?;
        let mut content = SecretBytes::with_capacity(size);
        for loc in &entry.chunks {
            let body = scan::read_record_body(&self.file, &self.header, &self.sealer, loc)
                .map_err(|e| match e {
                    scan::BodyError::Io(e) => self.io_err("cannot read")(e),
                    scan::BodyError::Auth => damaged(format!(
                        "record {} at byte {} failed authentication",
                        loc.header.index, loc.offset
                    )),
                })?;
            match body.expose().split_first() {
                Some((&kind::DOC_CHUNK, data)) => content.expose_mut().extend_from_slice(data),
                _ => {
                    return Err(damaged(format!(
                        "record {} at byte {} is not a content record",
                        loc.header.index, loc.offset
                    )));
                }
            }
        }
        if content.len() != size {
            return Err(damaged(format!(
                "content is {} bytes, metadata says {size}",
                content.len()
            )));
        }
        Ok(content)
    }

    /// The documents `filter` keeps, oldest first.
    pub fn list_matching(&self, filter: &crate::ListFilter) -> Vec<DocInfo> {
        let mut docs = self.list();
        docs.retain(|d| filter.matches(d));
        docs
    }

    /// Document `id` (not an object), if the vault holds it.
    pub fn doc_info(&self, id: &DocId) -> Option<DocInfo> {
        let state = self.state_read();
        let entry = state.docs.get(id).filter(|e| e.meta.space.is_none())?;
        Some(entry.info())
    }

    /// Every document, oldest first.
    pub fn list(&self) -> Vec<DocInfo> {
        let state = self.state_read();
        let mut entries: Vec<&DocEntry> = state
            .docs
            .values()
            .filter(|e| e.meta.space.is_none())
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries.into_iter().map(DocEntry::info).collect()
    }

    pub fn info(&self) -> Result<VaultInfo> {
        let file_bytes = self
            .file
            .metadata()
            .map_err(self.io_err("cannot read"))?
            .len();
        let state = self.state_read();
        Ok(VaultInfo {
            path: self.path.clone(),
            format_version: self.header.prefix.version,
            encryption: self.header.prefix.encryption.name(),
            kdf: self.header.key_slots.first().map(|s| s.kdf.into()),
            vault_id: hex::encode(self.header.prefix.vault_id),
            created: self.header.prefix.created_unix,
            documents: state.docs.len() - state.objects.len(),
            content_bytes: state
                .docs
                .values()
                .filter(|e| e.meta.space.is_none())
                .map(|e| e.meta.size)
                .sum(),
            // The canary is the vault's own, not a subsystem's: it is not counted.
            objects: state
                .objects
                .keys()
                .filter(|(space, _)| !crate::canary::is_reserved_space(space))
                .count(),
            object_bytes: state
                .docs
                .values()
                .filter(|e| {
                    e.meta
                        .space
                        .as_deref()
                        .is_some_and(|s| !crate::canary::is_reserved_space(s))
                })
                .map(|e| e.meta.size)
                .sum(),
            file_bytes,
            committed_bytes: state.end,
            records: state.record_count,
            generation: state.generation,
            last_commit: state.last_commit_unix,
        })
    }

    /// Re-reads the whole file, authenticating every record, and reports what is wrong.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<scan::VerifyReport> {
        let file_len = self
            .file
            .metadata()
            .map_err(self.io_err("cannot read"))?
            .len();
        // Read the header again: this handle may have committed since it was opened.
        let (header, _) = read_header(&self.path, &self.file)?;
        let intact = intact_commit_slots(&header, &self.sealer);
        let scan = scan::scan(
            &self.file,
            file_len,
            &header,
            &self.sealer,
            &intact,
            true,
            progress,
        )?;
        Ok(scan::VerifyReport::new(&header, &intact, scan))
    }

    /// Syncs the file (used before an atomic rename, and for the last commit slot).
    pub(crate) fn sync(&self) -> Result<()> {
        let writer = self
            .writer
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.file.sync_all().map_err(self.io_err("cannot sync"))?;
        if let Some(mut writer) = writer {
            writer.slot_unsynced = false;
        }
        Ok(())
    }
}

/// Wraps a fresh master key into two identical passphrase slots (a damaged slot then does not
/// lock the owner out).
pub(crate) fn new_key_slots(
    prefix: &Prefix,
    kdf: KdfParams,
    salt: [u8; 16],
    kek: Key,
) -> Result<(Vec<KeySlot>, Keys)> {
    let prefix_bytes = prefix.encode();
    let master = Key::generate()?;
    let first = seal::wrap_master(&prefix_bytes, &master, &kek, kdf, salt)?;
    let second = seal::wrap_master(&prefix_bytes, &master, &kek, kdf, salt)?;
    let keys = seal::Keys::derive(&master, &prefix.vault_id, kek)?;
    Ok((vec![first, second], keys))
}

fn check_doc(doc: &NewDocument<'_>) -> Result<()> {
    if let Some(title) = &doc.title
        && title.len() > MAX_TITLE_LEN
    {
        return Err(VaultError::TooLarge {
            what: "title",
            size: title.len() as u64,
            limit: MAX_TITLE_LEN as u64,
        });
    }
    if doc.tags.len() > MAX_TAGS {
        return Err(VaultError::TooLarge {
            what: "tag list",
            size: doc.tags.len() as u64,
            limit: MAX_TAGS as u64,
        });
    }
    for (key, value) in &doc.tags {
        validate_tag(key, value)?;
    }
    Ok(())
}

/// Records being written by one commit.
pub(crate) struct Batch<'v> {
    vault: &'v Vault,
    writer: &'v mut Writer,
    /// Where the next record goes.
    offset: u64,
    /// Sealed records not yet written, and where they go.
    unwritten: Vec<u8>,
    unwritten_at: u64,
    /// Some of the batch reached the file (a batch larger than the buffer, or a failed write).
    wrote: bool,
    index: u64,
    /// The log as it will be once this batch commits.
    pub(crate) tip: Tip,
    log_entries: Vec<(Vec<u8>, RecordLoc)>,
    new_docs: Vec<DocEntry>,
    pub(crate) deleted: Vec<DocId>,
}

impl Batch<'_> {
    /// Seals and appends one record.
    pub(crate) fn append(&mut self, mut plain: SecretBytes) -> Result<RecordLoc> {
        if self.writer.next_counter >= self.writer.reserved {
            self.vault.reserve(self.writer)?;
        }
        let body_len = u32::try_from(plain.len() + TAG_LEN).map_err(|_| VaultError::TooLarge {
            what: "record",
            size: plain.len() as u64,
            limit: u64::from(format::MAX_BODY_LEN),
        })?;
        let header = RecordHeader {
            body_len,
            index: self.index,
            counter: self.writer.next_counter,
        };
        self.writer.next_counter += 1;
        let body = plain.expose_mut();
        self.vault.sealer.seal(
            &self.vault.header.prefix.vault_id,
            self.offset,
            &header,
            body,
        )?;
        if self.unwritten.is_empty() {
            self.unwritten_at = self.offset;
        }
        self.unwritten.extend_from_slice(&header.encode());
        self.unwritten.extend_from_slice(body);
        let loc = RecordLoc {
            offset: self.offset,
            header,
        };
        self.offset += header.total_len();
        self.index += 1;
        if self.unwritten.len() >= WRITE_BUFFER {
            self.write_out()?;
        }
        Ok(loc)
    }

    /// When the batch runs past the space written ahead, so that its sync writes the inode
    /// anyway, adds zeros after it for the commits that follow.
    fn grow_ahead(&mut self) {
        if self.offset <= self.writer.file_end {
            return;
        }
        if self.unwritten.is_empty() {
            self.unwritten_at = self.offset;
        }
        let step = (self.offset / 8).clamp(GROWTH_MIN, GROWTH_MAX);
        let len = self.unwritten.len().saturating_add(step as usize);
        self.unwritten.resize(len, 0);
    }

    /// Writes what was gathered in one call.
    fn write_out(&mut self) -> Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.wrote = true;
        self.vault
            .file
            .write_all_at(&self.unwritten, self.unwritten_at)
            .map_err(self.vault.io_err("cannot write"))?;
        let end = self.unwritten_at + self.unwritten.len() as u64;
        self.writer.file_end = self.writer.file_end.max(end);
        self.unwritten_at = end;
        self.unwritten.clear();
        Ok(())
    }

    /// Appends an audit log entry.
    pub(crate) fn log(&mut self, kind: &str, payload: &serde_json::Value) -> Result<()> {
        let actor = self
            .vault
            .actor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let bytes = self
            .tip
            .append(now_ms(), kind, &actor, payload)
            .map_err(|e| VaultError::Damaged(e.to_string()))?;
        self.append_log_bytes(bytes)
    }

    /// Appends entry bytes as they are (a rewrite copying the log).
    pub(crate) fn log_verbatim(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.tip.append_bytes(&bytes);
        self.append_log_bytes(bytes)
    }

    fn append_log_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        let plain = SecretBytes::new([&[kind::LOG_ENTRY][..], &bytes].concat());
        let loc = self.append(plain)?;
        self.log_entries.push((bytes, loc));
        Ok(())
    }

    /// Stores one document (unless the same content is already there).
    pub(crate) fn put(
        &mut self,
        given: Option<(DocId, i64)>,
        doc: NewDocument<'_>,
        log_put: bool,
    ) -> Result<PutOutcome> {
        check_doc(&doc)?;
        let vault = self.vault;
        let fingerprint = vault.sealer.fingerprint(doc.content);
        let existing = vault
            .state_read()
            .by_fingerprint
            .get(&fingerprint)
            .copied()
            .or_else(|| {
                self.new_docs
                    .iter()
                    .find(|e| e.meta.space.is_none() && e.meta.fingerprint == fingerprint)
                    .map(|e| e.meta.id)
            });
        if let Some(id) = existing {
            return Ok(PutOutcome {
                id,
                status: PutStatus::Unchanged,
            });
        }
        let (id, created) = match given {
            Some((id, created))
                if !vault.state_read().docs.contains_key(&id)
                    && !self.new_docs.iter().any(|e| e.meta.id == id) =>
            {
                (id, created)
            }
            _ => (DocId::generate()?, now_unix()),
        };
        self.append_document(id, created, fingerprint, doc, None, log_put)
    }

    /// Writes one document or object: its metadata record, then its content records.
    fn append_document(
        &mut self,
        id: DocId,
        created: i64,
        fingerprint: String,
        doc: NewDocument<'_>,
        space: Option<String>,
        log_put: bool,
    ) -> Result<PutOutcome> {
        let chunks: Vec<&[u8]> = doc.content.chunks(format::CHUNK_LEN).collect();
        let meta = DocMeta {
            id,
            title: doc.title,
            tags: doc.tags,
            created,
            size: doc.content.len() as u64,
            chunks: u32::try_from(chunks.len()).map_err(|_| VaultError::TooLarge {
                what: "document",
                size: doc.content.len() as u64,
                limit: u64::from(u32::MAX) * format::CHUNK_LEN as u64,
            })?,
            fingerprint,
            source: doc.source,
            space,
        };
        let mut plain = vec![kind::DOC_META];
        serde_json::to_writer(&mut plain, &meta)
            .map_err(|e| VaultError::HeaderDamaged(format!("cannot encode metadata: {e}")))?;
        if plain.len() > MAX_META_LEN {
            return Err(VaultError::TooLarge {
                what: "document metadata",
                size: plain.len() as u64,
                limit: MAX_META_LEN as u64,
            });
        }
        let meta_loc = self.append(SecretBytes::new(plain))?;
        let mut entry = DocEntry {
            meta,
            seq: meta_loc.header.index,
            chunks: Vec::with_capacity(chunks.len()),
            damage: None,
        };
        for chunk in chunks {
            let mut plain = SecretBytes::with_capacity(chunk.len() + 1 + TAG_LEN);
            plain.expose_mut().push(kind::DOC_CHUNK);
            plain.expose_mut().extend_from_slice(chunk);
            entry.chunks.push(self.append(plain)?);
        }
        if log_put {
            self.log(
                "vault.put",
                &serde_json::json!({ "id": id, "size": entry.meta.size }),
            )?;
        }
        self.new_docs.push(entry);
        Ok(PutOutcome {
            id,
            status: PutStatus::Created,
        })
    }

    /// Appends a tombstone for a committed document or object.
    pub(crate) fn tombstone(&mut self, id: DocId) -> Result<()> {
        let mut plain = vec![kind::DELETE];
        serde_json::to_writer(&mut plain, &scan::DeleteRecord { id })
            .map_err(|e| VaultError::HeaderDamaged(format!("cannot encode tombstone: {e}")))?;
        self.append(SecretBytes::new(plain))?;
        self.deleted.push(id);
        Ok(())
    }

    /// The committed object `(space, name)`, unless this batch already removed it.
    fn committed_object(&self, space: &str, name: &str) -> Option<DocId> {
        let id = self
            .vault
            .state_read()
            .objects
            .get(&(space.to_owned(), name.to_owned()))
            .copied()?;
        (!self.deleted.contains(&id)).then_some(id)
    }

    /// Writes object `name` of `space`, replacing one of the same name.
    pub(crate) fn put_object(
        &mut self,
        space: &str,
        name: &str,
        content: &[u8],
        given: Option<(DocId, i64)>,
    ) -> Result<()> {
        validate_object_name(space)?;
        validate_object_name(name)?;
        self.delete_object(space, name)?;
        let (id, created) = match given {
            Some(given) => given,
            None => (DocId::generate()?, now_unix()),
        };
        let doc = NewDocument {
            title: Some(name.to_owned()),
            ..NewDocument::new(content)
        };
        // Objects are not deduplicated, so their fingerprint is not computed.
        self.append_document(
            id,
            created,
            String::new(),
            doc,
            Some(space.to_owned()),
            false,
        )?;
        Ok(())
    }

    /// Removes object `name` of `space` (committed or written earlier in this batch).
    /// Returns whether there was one.
    pub(crate) fn delete_object(&mut self, space: &str, name: &str) -> Result<bool> {
        if let Some(pos) = self
            .new_docs
            .iter()
            .position(|e| e.meta.space.as_deref() == Some(space) && e.object_name() == name)
        {
            let entry = self.new_docs.remove(pos);
            // Its records are on disk already: a tombstone after them keeps a reader of this
            // batch from seeing two objects of one name.
            let mut plain = vec![kind::DELETE];
            serde_json::to_writer(&mut plain, &scan::DeleteRecord { id: entry.meta.id })
                .map_err(|e| VaultError::HeaderDamaged(format!("cannot encode tombstone: {e}")))?;
            self.append(SecretBytes::new(plain))?;
            return Ok(true);
        }
        match self.committed_object(space, name) {
            Some(id) => {
                self.tombstone(id)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The work of one commit, handed to the closure given to [`Vault::transact`]. Nothing is
/// visible to readers, or durable, until the closure returns `Ok` and the commit completes.
pub struct Transaction<'b, 'v> {
    batch: &'b mut Batch<'v>,
}

impl Transaction<'_, '_> {
    /// Stores a document (logged as `vault.put`), unless the same content is stored already.
    pub fn put(&mut self, doc: NewDocument<'_>) -> Result<PutOutcome> {
        self.batch.put(None, doc, true)
    }

    /// Deletes a committed document (logged as `vault.delete`).
    pub fn delete(&mut self, id: &DocId) -> Result<()> {
        let exists = self.batch.vault.state_read().is_user_doc(id);
        if !exists || self.batch.deleted.contains(id) {
            return Err(VaultError::NotFound(id.to_string()));
        }
        self.batch.tombstone(*id)?;
        self.batch
            .log("vault.delete", &serde_json::json!({ "id": id }))
    }

    /// Writes object `name` in `space`, replacing an object of the same name.
    pub fn put_object(&mut self, space: &str, name: &str, content: &[u8]) -> Result<()> {
        refuse_reserved(space)?;
        self.batch.put_object(space, name, content, None)
    }

    /// Removes object `name` from `space`; returns whether it existed.
    pub fn delete_object(&mut self, space: &str, name: &str) -> Result<bool> {
        refuse_reserved(space)?;
        self.batch.delete_object(space, name)
    }

    /// Appends an entry to the vault's audit log.
    pub fn log(&mut self, kind: &str, payload: serde_json::Value) -> Result<()> {
        self.batch.log(kind, &payload)
    }
}

/// Spaces the vault keeps for itself (the canary) are not the callers' to change.
fn refuse_reserved(space: &str) -> Result<()> {
    if crate::canary::is_reserved_space(space) {
        return Err(VaultError::ReservedSpace(space.to_owned()));
    }
    Ok(())
}

impl State {
    /// Whether `id` names a committed user document (not an internal object).
    pub(crate) fn is_user_doc(&self, id: &DocId) -> bool {
        self.docs.get(id).is_some_and(|e| e.meta.space.is_none())
    }
}

/// Unix milliseconds, for log entries and checkpoints.
pub(crate) use p3ak_crypto::clock::now_ms;

/// `uid=U pid=P`: the process's owner (read from `/proc/self`, no libc) and id.
fn default_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string());
    format!("uid={uid} pid={}", std::process::id())
}

impl Drop for Vault {
    /// Makes the last commit slot durable and gives back the space written ahead, so a closed
    /// vault's file ends at its last record. Without this (a crash, a kill) nothing is lost:
    /// the last commit is recovered from its synced records at the next open, and the zeros
    /// after it are kept for the next writer.
    fn drop(&mut self) {
        let Some(writer) = self.writer.as_ref() else {
            return;
        };
        let writer = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let end = self.state_read().end;
        if writer.file_end > end {
            let _ = self.file.set_len(end);
        }
        if writer.slot_unsynced {
            let _ = self.file.sync_data();
        }
    }
}

/// fsyncs the directory holding `path`, so a rename or create survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(VaultError::io(format!(
            "cannot sync directory `{}`",
            parent.display()
        )))
}

//! The byte layout of a `.vault` file (specified in `docs/vault-format.md`).
//!
//! Everything here is pure: bytes in, values out. Parsers never panic and never allocate more
//! than the input they were given, so they are safe to fuzz and to point at hostile files.

use p3ak_crypto::{KdfParams, NONCE_LEN, TAG_LEN};

/// First eight bytes of every vault. The high byte and CR LF catch 7-bit and newline mangling.
pub const MAGIC: [u8; 8] = *b"\x89P3AKV\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Records start here; the header region is one page.
pub const HEADER_LEN: usize = 4096;
/// The static prefix (magic, version, encryption, id, creation time).
pub const PREFIX_LEN: usize = 64;
pub const KEY_SLOTS_OFFSET: usize = 64;
pub const KEY_SLOT_LEN: usize = 128;
pub const KEY_SLOT_COUNT: usize = 4;
pub const KEY_SLOTS_END: usize = KEY_SLOTS_OFFSET + KEY_SLOT_LEN * KEY_SLOT_COUNT;
/// Commit slots A and B, each inside its own 512-byte sector.
pub const COMMIT_SLOT_OFFSETS: [usize; 2] = [1024, 1536];
pub const COMMIT_SLOT_LEN: usize = 256;
/// Bytes of a commit slot covered by its MAC (the MAC is the last 32 bytes).
pub const COMMIT_SLOT_BODY_LEN: usize = COMMIT_SLOT_LEN - 32;
/// Fixed part of every record.
pub const RECORD_HEADER_LEN: usize = 28;
pub const RECORD_MAGIC: [u8; 4] = *b"P3r\x01";
/// Largest plaintext of one content chunk.
pub const CHUNK_LEN: usize = 1 << 20;
/// Largest record body (kind byte + payload + tag) a reader accepts.
pub const MAX_BODY_LEN: u32 = (CHUNK_LEN + 64 * 1024) as u32;

/// Length of wrapped master key: 32 bytes of ciphertext and a 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;

/// Whether the vault's records are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Stored as plaintext, with SHA-256 integrity tags only: the operator asked for it.
    None,
    /// AES-256-GCM under a key unwrapped with the passphrase.
    Aes256Gcm,
}

impl Encryption {
    pub fn status_byte(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Aes256Gcm => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    TooShort(usize),
    BadMagic,
    UnsupportedVersion(u16),
    Malformed(String),
}

/// The static prefix at bytes 0..64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub version: u16,
    pub encryption: Encryption,
    pub vault_id: [u8; 16],
    pub created_unix: i64,
}

impl Prefix {
    pub fn encode(&self) -> [u8; PREFIX_LEN] {
        let mut out = [0u8; PREFIX_LEN];
        put(&mut out, 0, &MAGIC);
        put(&mut out, 8, &self.version.to_le_bytes());
        put(&mut out, 10, &[self.encryption.status_byte()]);
        put(&mut out, 16, &self.vault_id);
        put(&mut out, 32, &self.created_unix.to_le_bytes());
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < PREFIX_LEN {
            return Err(HeaderError::TooShort(bytes.len()));
        }
        if take::<8>(bytes, 0) != Some(MAGIC) {
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_le_bytes(take(bytes, 8).unwrap_or_default());
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let encryption = match bytes.get(10) {
            Some(0) => Encryption::None,
            Some(1) => Encryption::Aes256Gcm,
            other => {
                return Err(HeaderError::Malformed(format!(
                    "unknown encryption status {}",
                    other.copied().unwrap_or(0xff)
                )));
            }
        };
        Ok(Self {
            version,
            encryption,
            vault_id: take(bytes, 16).unwrap_or_default(),
            created_unix: i64::from_le_bytes(take(bytes, 32).unwrap_or_default()),
        })
    }

    /// True when the prefix's reserved bytes (11..16, 40..64) are all zero.
    pub fn reserved_is_zero(bytes: &[u8]) -> bool {
        zeroed(bytes, 11..16) && zeroed(bytes, 40..PREFIX_LEN)
    }
}

/// A passphrase key slot: Argon2id parameters, salt and the wrapped master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_KEY_LEN],
}

/// Slot kind byte of a passphrase slot (Argon2id version 0x13).
pub const SLOT_KIND_PASSPHRASE: u8 = 1;
const ARGON2_VERSION: u8 = 0x13;
/// The part of a slot bound as associated data when wrapping (everything before the
/// ciphertext).
pub const SLOT_AAD_LEN: usize = 44;

impl KeySlot {
    pub fn encode(&self) -> [u8; KEY_SLOT_LEN] {
        let mut out = [0u8; KEY_SLOT_LEN];
        put(&mut out, 0, &[SLOT_KIND_PASSPHRASE, ARGON2_VERSION]);
        put(&mut out, 4, &self.kdf.memory_kib.to_le_bytes());
        put(&mut out, 8, &self.kdf.iterations.to_le_bytes());
        put(&mut out, 12, &self.kdf.parallelism.to_le_bytes());
        put(&mut out, 16, &self.salt);
        put(&mut out, 32, &self.nonce);
        put(&mut out, SLOT_AAD_LEN, &self.wrapped);
        out
    }

    /// The bytes of the slot bound into the wrap's associated data.
    pub fn aad_part(&self) -> [u8; SLOT_AAD_LEN] {
        let full = self.encode();
        take(&full, 0).unwrap_or([0; SLOT_AAD_LEN])
    }

    /// Parses one slot; `Ok(None)` for an empty slot.
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>, HeaderError> {
        if bytes.len() < KEY_SLOT_LEN {
            return Err(HeaderError::TooShort(bytes.len()));
        }
        match (bytes.first(), bytes.get(1)) {
            (Some(0), _) => return Ok(None),
            (Some(&SLOT_KIND_PASSPHRASE), Some(&ARGON2_VERSION)) => {}
            // Unknown kinds are not ours to read; the caller counts them as unusable.
            _ => return Err(HeaderError::Malformed("unknown key slot kind".into())),
        }
        let u32_at = |at| u32::from_le_bytes(take(bytes, at).unwrap_or_default());
        Ok(Some(Self {
            kdf: KdfParams {
                memory_kib: u32_at(4),
                iterations: u32_at(8),
                parallelism: u32_at(12),
            },
            salt: take(bytes, 16).unwrap_or_default(),
            nonce: take(bytes, 32).unwrap_or_default(),
            wrapped: take(bytes, SLOT_AAD_LEN).unwrap_or([0; WRAPPED_KEY_LEN]),
        }))
    }
}

/// One of the two commit slots: the durable record of what has been committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSlot {
    /// Increases by one on every commit; the valid slot with the higher generation wins.
    pub generation: u64,
    /// File offset just past the last committed record.
    pub committed_end: u64,
    /// Number of records in `HEADER_LEN..committed_end`.
    pub record_count: u64,
    /// Every nonce counter used so far is below this value.
    pub nonce_reserved: u64,
    /// Commit time, Unix seconds.
    pub time_unix: i64,
    /// The log's latest signed checkpoint, kept outside the log it covers.
    pub checkpoint: Option<p3ak_audit::Checkpoint>,
}

/// Where the checkpoint sits in a commit slot, and where the reserved bytes start.
const SLOT_CHECKPOINT_AT: usize = 40;
const SLOT_RESERVED_AT: usize = SLOT_CHECKPOINT_AT + p3ak_audit::CHECKPOINT_LEN;

impl CommitSlot {
    /// The bytes the MAC covers.
    pub fn encode_body(&self) -> [u8; COMMIT_SLOT_BODY_LEN] {
        let mut out = [0u8; COMMIT_SLOT_BODY_LEN];
        put(&mut out, 0, &self.generation.to_le_bytes());
        put(&mut out, 8, &self.committed_end.to_le_bytes());
        put(&mut out, 16, &self.record_count.to_le_bytes());
        put(&mut out, 24, &self.nonce_reserved.to_le_bytes());
        put(&mut out, 32, &self.time_unix.to_le_bytes());
        if let Some(cp) = &self.checkpoint {
            put(&mut out, SLOT_CHECKPOINT_AT, &cp.to_bytes());
        }
        out
    }

    /// Splits a raw slot into its fields and its MAC. Reserved bytes must be zero.
    pub fn parse(bytes: &[u8]) -> Option<(Self, [u8; 32])> {
        if bytes.len() < COMMIT_SLOT_LEN || !zeroed(bytes, SLOT_RESERVED_AT..COMMIT_SLOT_BODY_LEN) {
            return None;
        }
        let checkpoint = if zeroed(bytes, SLOT_CHECKPOINT_AT..SLOT_RESERVED_AT) {
            None
        } else {
            Some(p3ak_audit::Checkpoint::from_bytes(
                bytes.get(SLOT_CHECKPOINT_AT..SLOT_RESERVED_AT)?,
            )?)
        };
        let u64_at = |at| u64::from_le_bytes(take(bytes, at).unwrap_or_default());
        let slot = Self {
            generation: u64_at(0),
            committed_end: u64_at(8),
            record_count: u64_at(16),
            nonce_reserved: u64_at(24),
            time_unix: i64::from_le_bytes(take(bytes, 32).unwrap_or_default()),
            checkpoint,
        };
        Some((slot, take(bytes, COMMIT_SLOT_BODY_LEN)?))
    }
}

/// A parsed header. MACs and key slots are checked later, by the keys.
#[derive(Debug, Clone)]
pub struct Header {
    pub prefix: Prefix,
    /// Raw bytes 0..KEY_SLOTS_END: bound into every commit-slot MAC.
    pub bound: Vec<u8>,
    pub key_slots: Vec<KeySlot>,
    /// Raw commit slots A and B (`None` when a slot's reserved bytes are not zero).
    pub commit_slots: [Option<(CommitSlot, [u8; 32])>; 2],
    /// True when every byte the format reserves is zero.
    pub reserved_is_zero: bool,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let prefix = Prefix::parse(bytes)?;
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::TooShort(bytes.len()));
        }
        let mut key_slots = Vec::new();
        let mut unknown_slots = 0;
        for i in 0..KEY_SLOT_COUNT {
            let at = KEY_SLOTS_OFFSET + i * KEY_SLOT_LEN;
            let raw = bytes
                .get(at..at + KEY_SLOT_LEN)
                .ok_or(HeaderError::TooShort(bytes.len()))?;
            match KeySlot::parse(raw) {
                Ok(Some(slot)) => key_slots.push(slot),
                Ok(None) => {}
                Err(_) => unknown_slots += 1,
            }
        }
        match (prefix.encryption, key_slots.is_empty()) {
            (Encryption::Aes256Gcm, true) => {
                return Err(HeaderError::Malformed(
                    "encrypted vault without a readable key slot".into(),
                ));
            }
            (Encryption::None, false) => {
                return Err(HeaderError::Malformed(
                    "unencrypted vault with a key slot".into(),
                ));
            }
            _ => {}
        }
        let commit_slots = COMMIT_SLOT_OFFSETS.map(|at| {
            bytes
                .get(at..at + COMMIT_SLOT_LEN)
                .and_then(CommitSlot::parse)
        });
        let reserved_is_zero = unknown_slots == 0
            && Prefix::reserved_is_zero(bytes)
            && zeroed(bytes, KEY_SLOTS_END..COMMIT_SLOT_OFFSETS[0])
            && zeroed(
                bytes,
                COMMIT_SLOT_OFFSETS[0] + COMMIT_SLOT_LEN..COMMIT_SLOT_OFFSETS[1],
            )
            && zeroed(bytes, COMMIT_SLOT_OFFSETS[1] + COMMIT_SLOT_LEN..HEADER_LEN)
            && (0..KEY_SLOT_COUNT).all(|i| {
                let at = KEY_SLOTS_OFFSET + i * KEY_SLOT_LEN;
                zeroed(bytes, at + 2..at + 4)
                    && zeroed(
                        bytes,
                        at + SLOT_AAD_LEN + WRAPPED_KEY_LEN..at + KEY_SLOT_LEN,
                    )
            });
        Ok(Self {
            prefix,
            bound: bytes.get(..KEY_SLOTS_END).unwrap_or_default().to_vec(),
            key_slots,
            commit_slots,
            reserved_is_zero,
        })
    }

    /// Encodes the header region for a new vault (commit slots are written separately).
    pub fn encode(prefix: &Prefix, key_slots: &[KeySlot]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        put(&mut out, 0, &prefix.encode());
        for (i, slot) in key_slots.iter().take(KEY_SLOT_COUNT).enumerate() {
            put(
                &mut out,
                KEY_SLOTS_OFFSET + i * KEY_SLOT_LEN,
                &slot.encode(),
            );
        }
        out
    }
}

/// The fixed part of a record: magic, body length, record index, nonce counter, check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub body_len: u32,
    pub index: u64,
    pub counter: u64,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        put(&mut out, 0, &RECORD_MAGIC);
        put(&mut out, 4, &self.body_len.to_le_bytes());
        put(&mut out, 8, &self.index.to_le_bytes());
        put(&mut out, 16, &self.counter.to_le_bytes());
        let check = header_check(out.get(..24).unwrap_or_default());
        put(&mut out, 24, &check);
        out
    }

    /// Parses a record header. The check catches damage to the length field before we trust
    /// it; the body's tag authenticates everything, this field included, afterwards.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if take::<4>(bytes, 0)? != RECORD_MAGIC {
            return None;
        }
        let check: [u8; 4] = take(bytes, 24)?;
        if check != header_check(bytes.get(..24)?) {
            return None;
        }
        let body_len = u32::from_le_bytes(take(bytes, 4)?);
        if body_len < 1 + TAG_LEN as u32 || body_len > MAX_BODY_LEN {
            return None;
        }
        Some(Self {
            body_len,
            index: u64::from_le_bytes(take(bytes, 8)?),
            counter: u64::from_le_bytes(take(bytes, 16)?),
        })
    }

    /// Total size on disk.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.body_len)
    }
}

fn header_check(bytes: &[u8]) -> [u8; 4] {
    let digest = p3ak_crypto::sha256(&[b"p3ak record header", bytes]);
    take(&digest, 0).unwrap_or_default()
}

/// The associated data of a record: its vault, position and framing.
pub fn record_aad(vault_id: &[u8; 16], offset: u64, header: &RecordHeader) -> [u8; 64] {
    let mut out = [0u8; 64];
    put(&mut out, 0, b"p3ak-vault-record-v1");
    put(&mut out, 20, vault_id);
    put(&mut out, 36, &header.index.to_le_bytes());
    put(&mut out, 44, &offset.to_le_bytes());
    put(&mut out, 52, &header.body_len.to_le_bytes());
    put(&mut out, 56, &header.counter.to_le_bytes());
    out
}

/// The AES-GCM nonce of a record: four zero bytes, then the counter big-endian.
pub fn record_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut out = [0u8; NONCE_LEN];
    put(&mut out, 4, &counter.to_be_bytes());
    out
}

/// Record kinds (first plaintext byte).
pub mod kind {
    pub const DOC_META: u8 = 1;
    pub const DOC_CHUNK: u8 = 2;
    pub const DELETE: u8 = 3;
    /// An audit log entry (JSON bytes, hashed as stored).
    pub const LOG_ENTRY: u8 = 4;
    /// The log's Ed25519 signing key seed (32 bytes), written once when the vault is created.
    pub const LOG_KEY: u8 = 5;
    /// A signed checkpoint of the log (128 bytes), written at the end of each commit that
    /// added entries.
    pub const CHECKPOINT: u8 = 6;
}

/// `N` bytes of `bytes` at `at`, if present.
pub fn take<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Copies `src` into `dst` at `at`; a no-op when it would not fit (callers use constant
/// offsets inside fixed-size buffers, checked by the round-trip tests).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(slot) = at
        .checked_add(src.len())
        .and_then(|end| dst.get_mut(at..end))
    {
        slot.copy_from_slice(src);
    }
}

fn zeroed(bytes: &[u8], range: std::ops::Range<usize>) -> bool {
    bytes.get(range).is_some_and(|b| b.iter().all(|&x| x == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> Prefix {
        Prefix {
            version: FORMAT_VERSION,
            encryption: Encryption::Aes256Gcm,
            vault_id: [7; 16],
            created_unix: 1_790_000_000,
        }
    }

    fn slot() -> KeySlot {
        KeySlot {
            kdf: KdfParams::RFC9106_SECOND,
            salt: [1; 16],
            nonce: [2; 12],
            wrapped: [3; WRAPPED_KEY_LEN],
        }
    }

    #[test]
    fn header_round_trips() {
        let bytes = Header::encode(&prefix(), &[slot()]);
        assert_eq!(bytes.len(), HEADER_LEN);
        let header = Header::parse(&bytes).unwrap();
        assert_eq!(header.prefix, prefix());
        assert_eq!(header.key_slots, vec![slot()]);
        assert!(header.reserved_is_zero);
        assert_eq!(header.bound, bytes[..KEY_SLOTS_END]);
    }

    #[test]
    fn header_rejects_what_it_must() {
        let good = Header::encode(&prefix(), &[slot()]);
        assert_eq!(
            Header::parse(&good[..100]).unwrap_err(),
            HeaderError::TooShort(100)
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Header::parse(&bad).unwrap_err(), HeaderError::BadMagic);
        let mut bad = good.clone();
        bad[8] = 2;
        assert_eq!(
            Header::parse(&bad).unwrap_err(),
            HeaderError::UnsupportedVersion(2)
        );
        let mut bad = good.clone();
        bad[10] = 9;
        assert!(matches!(
            Header::parse(&bad),
            Err(HeaderError::Malformed(_))
        ));
        let no_slot = Header::encode(&prefix(), &[]);
        assert!(matches!(
            Header::parse(&no_slot),
            Err(HeaderError::Malformed(_))
        ));
        let mut reserved = good.clone();
        reserved[3000] = 1;
        assert!(!Header::parse(&reserved).unwrap().reserved_is_zero);
    }

    #[test]
    fn record_header_round_trips_and_catches_damage() {
        let h = RecordHeader {
            body_len: 4113,
            index: 42,
            counter: 1 << 33,
        };
        let bytes = h.encode();
        assert_eq!(RecordHeader::parse(&bytes), Some(h));
        for i in 0..RECORD_HEADER_LEN {
            for bit in 0..8 {
                let mut bad = bytes;
                bad[i] ^= 1 << bit;
                assert_eq!(RecordHeader::parse(&bad), None, "byte {i} bit {bit}");
            }
        }
        let huge = RecordHeader {
            body_len: MAX_BODY_LEN + 1,
            ..h
        };
        assert_eq!(RecordHeader::parse(&huge.encode()), None);
    }

    #[test]
    fn commit_slot_round_trips() {
        let slot = CommitSlot {
            generation: 9,
            committed_end: 8192,
            record_count: 3,
            nonce_reserved: 1 << 32,
            time_unix: 5,
            checkpoint: Some(p3ak_audit::Checkpoint {
                log_id: [3; 16],
                size: 4,
                root: [5; 32],
                time_ms: 6,
                signature: [7; 64],
            }),
        };
        let mut raw = [0u8; COMMIT_SLOT_LEN];
        raw[..COMMIT_SLOT_BODY_LEN].copy_from_slice(&slot.encode_body());
        raw[COMMIT_SLOT_BODY_LEN..].copy_from_slice(&[0xAB; 32]);
        assert_eq!(CommitSlot::parse(&raw), Some((slot, [0xAB; 32])));
        raw[200] = 1;
        assert_eq!(CommitSlot::parse(&raw), None);
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            record_nonce(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }
}

//! The P3AK vault: one encrypted, append-only, crash-safe file per vault.
//!
//! The byte layout is specified in `docs/vault-format.md`. In short: a 4 KiB header (static
//! prefix, passphrase key slots, two alternating commit slots), then records, each sealed with
//! AES-256-GCM under a subkey of a random master key, with the record's vault, index, offset
//! and framing bound as associated data. A commit syncs the records, then writes and syncs a
//! commit slot naming the new end of the log.
#![forbid(unsafe_code)]

mod canary;
mod doc;
mod error;
pub mod external;
mod failures;
pub mod format;
mod lock;
mod log;
mod rewrite;
mod scan;
mod seal;
mod store;
mod transfer;

pub use canary::{CANARY_SPACE, CanaryCheck};
pub use doc::{
    DocId, DocMeta, ListFilter, MAX_OBJECT_NAME_LEN, NewDocument, ObjectInfo, PutOutcome,
    PutStatus, validate_object_name, validate_tag,
};
pub use error::{Result, VaultError};
pub use log::InclusionProof;
pub use p3ak_audit::{Checkpoint, CheckpointJson, Entry as LogEntry};
pub use p3ak_crypto::{KdfParams, Passphrase, SecretBytes};
pub use rewrite::{DroppedDocument, NewKeys, RewriteReport};
pub use scan::{Damage, OpenReport, Truncation, VerifyReport};
pub use store::{
    Access, DocInfo, HeaderInfo, KdfInfo, MAX_TAGS, MAX_TITLE_LEN, Protection, Transaction, Unlock,
    Vault, VaultInfo, VaultKey, peek,
};
pub use transfer::{TransferFailure, TransferReport};

/// Decodes one record header, for fuzzing the framing parser.
pub fn parse_record_header(bytes: &[u8]) -> Option<format::RecordHeader> {
    format::RecordHeader::parse(bytes)
}

//! The core of P3AK's tamper-evident audit log, without IO.
//!
//! - Entries are JSON records chained by hash (each names its predecessor's leaf hash).
//! - The entries are the leaves of an RFC 9162 Merkle tree, so anyone holding a checkpoint can
//!   check that an entry is in the log (inclusion proof) and that a later checkpoint extends an
//!   earlier one (consistency proof).
//! - Checkpoints {log id, size, root, time} are signed with Ed25519. The latest is kept outside
//!   the log it covers, so a log cut at its tail no longer matches it.
//!
//! Storage lives with the owner of the log: the vault keeps its own log inside its file, as
//! encrypted records (see `p3ak-vault`), and the kernel keeps its log in a dedicated vault.
#![forbid(unsafe_code)]

mod checkpoint;
mod entry;
mod error;
pub mod merkle;

pub use checkpoint::{CHECKPOINT_LEN, Checkpoint, CheckpointJson, Signer};
pub use entry::{Chain, Entry, Tip};
pub use error::{LogError, ProofError};
pub use merkle::{Hash, HexProof, Tree, leaf_hash, verify_consistency, verify_inclusion};

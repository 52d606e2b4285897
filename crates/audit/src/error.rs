use thiserror::Error;

/// A proof that could not be made or does not verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("{what} {value} is out of range (the tree has {limit} entries)")]
    OutOfRange {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("invalid proof: {0}")]
    Invalid(&'static str),
}

/// The first thing wrong with a log, naming the entry.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LogError {
    #[error("entry {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error("checkpoint at entry {size}: {reason}")]
    Checkpoint { size: u64, reason: String },
    #[error("{0}")]
    Log(String),
}

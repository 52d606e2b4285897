//! P3AK memory: documents go into a vault and come back by meaning, words and structure.
//!
//! - **Ingest** ([`Memory::ingest`]): files are converted by `p3ak-convert`, chunked by their
//!   structure (headings, pages, sheets), stored in the vault, and indexed — all in one vault
//!   commit per batch, so the index never disagrees with the documents after a crash.
//! - **Full text**: BM25 over the chunks with tantivy. The index lives in memory and on disk
//!   only as encrypted vault objects (see [`directory`]); nothing of it is plaintext at rest.
//! - **Semantic**: chunk embeddings, computed after ingest ([`Memory::pending_embeddings`],
//!   [`store_embeddings`]) and searched exactly ([`vectors`]), or from 50K chunks through an
//!   HNSW graph whose candidates are scored exactly ([`approximate`]).
//! - **Structure**: the title and heading path of each chunk, as a third ranked signal.
//! - **Fusion** ([`fusion`]): the signals' scores, normalised and weighted.
//! - **Evaluation** ([`eval`]): nDCG@10, MRR@10 and Recall@100 over a judged collection.
//! - **Demo** ([`demo`]): a temporary vault walked through its whole life (`p3ak vault demo`).
//!
//! The crate never prints, never exits and never touches the network.
#![forbid(unsafe_code)]

mod approximate;
pub mod demo;
mod directory;
mod embedding;
pub mod eval;
pub mod fusion;
mod ingest;
mod memory;
#[cfg(feature = "minilm")]
mod minilm;
mod schema;
mod search;
mod vectors;

pub use approximate::{APPROXIMATE_MIN_ROWS, IndexPlan};
pub use embedding::{EmbedTarget, embed_pending};
pub use fusion::{Fusion, Signal};
pub use ingest::{
    FileOutcome, IngestEvent, IngestItem, IngestOptions, IngestReport, IngestStatus, expand_paths,
};
pub use memory::{
    EmbedderLock, EmbeddingBatch, Memory, PendingDocument, Status, TextEmbedder, lock_embedder,
    save_approximate_index, store_embeddings, update_approximate_index,
};
#[cfg(feature = "minilm")]
pub use minilm::MiniLm;
pub use search::{Hit, Mode, SearchRequest, SearchResults, SignalDetail, Snippet};

/// Vault space holding the search index's files.
pub const SPACE_INDEX: &str = "search-index";
/// Vault space holding chunk embeddings, one object per document.
pub const SPACE_VECTORS: &str = "search-vectors";
/// Vault space holding the approximate nearest-neighbour index of a large embedding table.
pub const SPACE_APPROXIMATE: &str = "search-approximate";

/// The tag of a document an agent wrote (`vault.write`) holding where its content came from,
/// as the agent said (a URL, a mail's Message-ID).
pub const SOURCE_TAG: &str = "source";
/// The tag of a document an agent wrote holding the tools whose output its conversation had
/// read before the write, comma-separated, as the kernel stamped them. Passages recalled from
/// such a document count as those tools' output for the policy's provenance tests, not as the
/// owner's memory.
pub const ORIGIN_TAG: &str = "origin";

/// Everything that can go wrong in the memory layer. One line, lowercase, no document text.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Vault(#[from] p3ak_vault::VaultError),
    #[error("search index: {0}")]
    Index(String),
    #[error(
        "search index is damaged: {0}; run `p3ak vault reindex` to rebuild it from the documents"
    )]
    Corrupt(String),
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("`{path}`: {reason}")]
    Collection { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<tantivy::TantivyError> for MemoryError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self::Index(e.to_string())
    }
}

impl From<tantivy::directory::error::OpenReadError> for MemoryError {
    fn from(e: tantivy::directory::error::OpenReadError) -> Self {
        Self::Index(e.to_string())
    }
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;

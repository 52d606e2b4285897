//! `p3ak._native`: the extension module of the `p3ak` Python package (see `python/p3ak/`).
//!
//! A thin layer over `vault.rs`, `policy.rs` and `models.rs`: convert arguments, release the
//! GIL around the work (Argon2id, ingest, search, verify take long), and turn errors into
//! Python exceptions carrying the CLI's one-line messages. Structured answers cross as JSON
//! text, which the pure-Python part parses into its own types.
//!
//! The Python bindings (`bindings.rs`) are behind the `python` feature, which maturin turns
//! on: `cargo test --workspace` on a machine without Python builds and tests the rest.

pub mod error;
pub mod models;
pub mod policy;
pub mod vault;

#[cfg(feature = "python")]
mod bindings;

//! `p3ak-server`: the one HTTP surface of a running kernel — the REST API, the MCP server,
//! rate limits, metrics and the console's non-approval pages.
//!
//! It runs inside the kernel's process (`p3ak up`, `p3ak serve`) and reaches the kernel only
//! through its public methods: every vault write, and every read an agent could also make,
//! takes the kernel's road as channel `api`, so the policy decides and the audit log records it
//! exactly as for an agent's call.

#![forbid(unsafe_code)]

pub mod backend;
pub mod mcp;
pub mod model;
pub mod remote;

pub use backend::{Backend, BackendError, Caller};

//! Real servers on loopback for the plugins' tests (feature `servers`).

pub mod mcp;
pub mod radicale;

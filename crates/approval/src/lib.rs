//! `p3ak-approval`: what the kernel and the approval daemon share of human approval.
//!
//! The kernel stages an escalated action ([`binding::Request`]) sealed into the spool
//! ([`spool`]), tells the daemon over its channel ([`wire`]), and later checks that a released
//! action carries the [`binding::Binding`] of the one it escalated. The levels' factors are
//! named in [`level`]. The daemon, its factors and its console live in `p3ak-hitl`, which the
//! kernel does not depend on: nothing here can approve anything.

#![forbid(unsafe_code)]

pub mod binding;
pub mod chat;
mod error;
pub mod level;
pub mod remember;
pub mod spool;
pub mod wire;

pub use error::ApprovalError;

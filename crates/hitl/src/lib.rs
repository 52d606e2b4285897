//! `p3ak-hitl`: humans in the loop.
//!
//! ```text
//! kernel ─stage─▶ spool/staging/<category>/ ─┐          (kernel may create, not list or read)
//!                                            ▼
//!                          HITL daemon: desk ◀── factors (PIN, TOTP, WebAuthn) ◀── operator
//!                                            │              (CLI, web console)
//!           approved ──▶ spool/outbox/ ──(undo window)──▶ sent/ ──release──▶ kernel executes
//!           denied, expired, pulled back ──▶ rejected/
//! ```
//!
//! The [`desk`] decides whether a [`Proof`](level::Proof) is strong enough for an item's level
//! (invariant I8), binds every approval to one exact action ([`binding`]) and holds approved
//! actions for their undo window. Proofs can only be made by the factor modules after they
//! verified a factor, so nothing outside this crate can approve by constructing one.
//!
//! What the kernel shares with the daemon (requests and their bindings, the spool, the
//! channel's messages, the levels' factors) is `p3ak-approval`, re-exported here under the
//! same module names; the kernel depends on that crate alone, not on this one.

#![forbid(unsafe_code)]

pub mod chat;
pub mod console;
pub mod daemon;
pub mod desk;
mod error;
pub mod factors;
pub mod operator;
pub mod pin;
mod proof;
pub mod totp;
pub mod webauthn;

pub use error::{FactorError, HitlError, WebauthnSetupError};
pub use p3ak_approval::{ApprovalError, binding, remember, spool};

/// Approval levels: the factors (from `p3ak-approval`) and the proof that one was given.
pub mod level {
    pub use crate::proof::Proof;
    pub use p3ak_approval::level::*;
}

/// The channel's messages (from `p3ak-approval`) and the operator socket's.
pub mod wire {
    pub use crate::operator::{OperatorAnswer, OperatorRequest};
    pub use p3ak_approval::wire::*;
}

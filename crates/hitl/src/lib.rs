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

#![forbid(unsafe_code)]

pub mod binding;
pub mod console;
pub mod daemon;
pub mod desk;
mod error;
pub mod factors;
pub mod level;
pub mod operator;
pub mod pin;
pub mod spool;
pub mod totp;
pub mod webauthn;
pub mod wire;

pub use error::HitlError;

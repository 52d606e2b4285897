//! `p3ak-policy`: the operator's rules, compiled once and decided deterministically.
//!
//! A model proposes a call; this crate decides whether it runs ([`Decision::Allow`]), never
//! runs ([`Decision::Reject`]) or waits for a human ([`Decision::Escalate`]). It is sans-IO:
//! text in, [`Policy`] out; [`Request`] in, [`Verdict`] out. It reads no files, no clock and no
//! history; the kernel supplies the time of day and cumulative totals in [`Context`].
//!
//! `docs/policy.md` is the contract for the file format and the decision procedure.
//!
//! ```
//! use p3ak_policy::{Decision, Policy, Request, Tier};
//!
//! let policy = Policy::from_yaml("read:\n  vault_search: { level: 0 }\n")?;
//! let verdict = policy.decide(&Request::new("amber", "vault_search"));
//! assert_eq!(verdict.decision, Decision::Allow { tier: Tier::Observe });
//! // Anything the operator did not mention is rejected.
//! let verdict = policy.decide(&Request::new("amber", "shell.run"));
//! assert_eq!(verdict.decision, Decision::Reject);
//! # Ok::<(), p3ak_policy::PolicyError>(())
//! ```

#![forbid(unsafe_code)]

pub mod cases;
mod condition;
mod decimal;
mod error;
mod pattern;
mod policy;
pub mod provenance;
mod raw;
mod swap;
mod types;

pub use error::{Diagnostic, PolicyError, Position};
pub use pattern::{Pattern, valid_action_name};
pub use policy::{
    Explanation, MIN_REKEY_EVERY, Policy, RekeySchedule, Step, TotalKey, TotalKind, TotalSpec,
};
pub use provenance::{Origins, Said, Source, SourcePattern, Transcript};
pub use swap::PolicyCell;
pub use types::{
    AgentNotice, Context, Decision, Declared, Delegation, Grant, Level, Origin, Reason, Request,
    SessionHistory, Tier, TimeOfDay, Verdict,
};

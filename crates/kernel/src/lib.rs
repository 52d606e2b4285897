//! `p3ak-kernel`: the one road from a model's output to a tool's execution.
//!
//! ```text
//! connector ─▶ turn ─▶ provider ─▶ tool calls ─▶ Proposal ─▶ enforcer ─▶ Authorized ─▶ broker ─▶ tool
//!                ▲                                   (parsed)   (policy)  (or approval)  (inject)    │
//!                └────────────────────────── result (scrubbed) ◀──────────────────────────────────┘
//! ```
//!
//! A model's output is data: [`proposal`] parses each tool call strictly into a
//! [`Proposal`](proposal::Proposal); the [`authorize`] module alone turns a proposal into an
//! [`Authorized`](authorize::Authorized), through the policy (allow) or a human's approval
//! (escalate); [`Kernel`](kernel::Kernel) consumes that value to run the tool, after the
//! [`broker`] has swapped credential names for values. Every step is written to the kernel's
//! audit log. Plugins are separate processes that the [`host`] starts, checks and restarts.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod audit;
pub mod authorize;
pub mod broker;
pub mod bus;
pub mod config;
pub mod connectors;
pub mod control;
pub mod crest;
pub mod demo;
pub mod doctor;
mod error;
mod files;
pub mod grants;
pub mod harness;
pub mod hitl;
pub mod home;
pub mod host;
pub mod kernel;
pub mod launch;
mod ledger;
mod maintenance;
pub mod metrics;
pub mod pending;
pub mod proposal;
mod recall;
mod rekey;
mod reload;
pub mod road;
pub mod schedule;
pub mod scrub;
mod session;
pub mod skills;
mod summarise;
pub mod tokens;
mod turn;
pub mod warden;

pub use error::{
    ControlError, DaemonError, KernelError, SecretError, WardenCallError, WardenError,
};
pub use kernel::{Kernel, KernelOptions};

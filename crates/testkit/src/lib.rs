//! Fixtures and fakes the workspace's tests share: what a test needs from its host ([`need`]),
//! a temporary P3AK home driving the `p3ak` binary ([`home`]), a running kernel ([`kernel`]),
//! loopback services ([`http`]), the kernel's end of a plugin connection ([`plugin`], feature
//! `plugin`), fake chat platforms ([`chat`], feature `chat`) and synthetic text for benchmarks ([`corpus`]).
//!
//! A dev-dependency only: no runtime crate may depend on it. Helpers panic on failure, as a
//! failed step should fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    reason = "test kit: a failed step fails the test that called it"
)]

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "chat")]
pub mod chat;
pub mod corpus;
pub mod home;
pub mod http;
pub mod kernel;
pub mod need;
#[cfg(feature = "plugin")]
pub mod plugin;
#[cfg(feature = "servers")]
pub mod servers;

pub use home::{Home, demo_steps, stderr};
pub use kernel::Kernel;

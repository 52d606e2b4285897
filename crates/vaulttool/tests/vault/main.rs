//! The `vault` plugin served over a socket pair, with the test acting as the kernel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

mod actions;
mod kernel;
mod run;
mod vault;

//! Each first-party plugin served over a socket pair, with the test acting as the kernel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

mod calendar;
mod fake_api;
mod files;
mod http;
mod kernel;
mod mail;
mod mcp;
mod providers;
mod run;
mod scripted;
mod shell;
mod web;

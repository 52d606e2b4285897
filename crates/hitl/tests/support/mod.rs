//! Helpers for the console tests: a headless Chromium driven over the DevTools protocol.

pub mod cdp;

//! The Eml converter on arbitrary bytes (see `convert_common.rs` for what is checked).
#![no_main]

mod convert_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    convert_common::check(data, p3ak_convert::Format::Eml);
});

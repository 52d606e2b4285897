//! The vault header parser on arbitrary bytes: never panics, and what it accepts re-encodes to
//! the same prefix and key slots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_vault::format::{Header, KeySlot, Prefix};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        let again = Header::encode(&header.prefix, &header.key_slots);
        let reparsed = Header::parse(&again).expect("an encoded header parses");
        assert_eq!(reparsed.prefix, header.prefix);
        assert_eq!(reparsed.key_slots, header.key_slots);
    }
    let _ = Prefix::parse(data);
    let _ = KeySlot::parse(data);
});

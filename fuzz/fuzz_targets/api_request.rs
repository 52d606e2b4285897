#![no_main]
//! The API's request bodies and path ids: any bytes give a value or a one-line error, never a
//! panic; an id that passes holds only hex digits (nothing that could walk a path).

use libfuzzer_sys::fuzz_target;
use p3ak_server::extract::document_id;
use p3ak_server::model::{ChatRequest, NewNote, NewToken, SearchQuery};

fn one_line<T: serde::de::DeserializeOwned>(data: &[u8]) {
    if let Err(e) = serde_json::from_slice::<T>(data) {
        assert!(!e.to_string().contains('\n'));
    }
}

fuzz_target!(|data: &[u8]| {
    one_line::<SearchQuery>(data);
    one_line::<NewNote>(data);
    one_line::<ChatRequest>(data);
    one_line::<NewToken>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = document_id(text) {
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
});

//! Any bytes as a plugin's side of a connection: the frame decoder (with a small limit) and
//! the message decoder must return frames, messages or errors, never panic. A message that
//! decodes must encode again to a frame that decodes to a message of the same type and id.
//!
//! The same bytes also go to the strict JSON parser alone, against plain serde_json: what it
//! accepts, serde_json decodes to the same value; what serde_json refuses, it refuses too; and
//! its only refusal of what serde_json reads is a repeated member name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_proto::{FrameDecoder, ProtoError, decode, encode, from_slice_strict};
use serde_json::Value;

/// Small, so that oversized headers are common.
const MAX: usize = 4096;

/// Runs `bytes` through the strict parser, plain serde_json and the message decoder, and
/// checks that they agree.
fn strict_agrees(bytes: &[u8]) {
    let strict = from_slice_strict::<Value>(bytes);
    let plain = serde_json::from_slice::<Value>(bytes);
    match (&strict, &plain) {
        (Ok(strict), Ok(plain)) => assert_eq!(strict, plain, "strict and plain values differ"),
        (Ok(_), Err(e)) => panic!("strict accepted what serde_json refuses: {e}"),
        (Err(ProtoError::Invalid(e)), Ok(_)) => {
            assert!(e.starts_with("duplicate key `"), "not a repeated key: {e}");
            assert!(e.len() < 512, "an unbounded error: {} bytes", e.len());
        }
        (Err(e), Ok(_)) => panic!("strict refused what serde_json reads: {e}"),
        (Err(_), Err(_)) => {}
    }
    if decode(bytes).is_ok() {
        assert!(
            strict.is_ok(),
            "decode accepted what the strict parser refuses"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is cut into reads, as a socket might deliver it.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    // The same bytes straight to the parsers.
    strict_agrees(rest);
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    for chunk in rest.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    assert!(!payload.is_empty() && payload.len() <= MAX);
                    strict_agrees(&payload);
                    if let Ok(envelope) = decode(&payload) {
                        let frame =
                            encode(&envelope, usize::MAX).expect("a decoded message encodes");
                        let again = decode(frame.get(4..).unwrap_or_default())
                            .expect("an encoded message decodes");
                        // Floats need not survive serde_json's default parser exactly, so
                        // compare what carries meaning for the protocol.
                        assert_eq!((again.v, again.id), (envelope.v, envelope.id));
                        assert_eq!(again.message.type_name(), envelope.message.type_name());
                    }
                }
                Ok(None) => break,
                // The receiver closes the connection here.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});

//! Any bytes as a plugin's side of a connection: the frame decoder (with a small limit) and
//! the message decoder must return frames, messages or errors, never panic. A message that
//! decodes must encode again to a frame that decodes to a message of the same type and id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_proto::{FrameDecoder, decode, encode};

/// Small, so that oversized headers are common.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is cut into reads, as a socket might deliver it.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    for chunk in rest.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    assert!(!payload.is_empty() && payload.len() <= MAX);
                    if let Ok(envelope) = decode(&payload) {
                        let frame = encode(&envelope, usize::MAX).expect("a decoded message encodes");
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
    // The same bytes straight to the message decoder.
    let _ = decode(rest);
});

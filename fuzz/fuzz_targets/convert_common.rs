//! The check every converter fuzz target runs: converting arbitrary bytes never panics (a
//! panic inside a parser aborts here, since libfuzzer's panic hook runs before `convert` can
//! contain it), errors are one line, and chunking what comes back respects the size bound.

use p3ak_convert::{ChunkOptions, ConvertError, Format, Input, Limits, chunk, convert};

pub fn check(data: &[u8], format: Format) {
    let limits = Limits {
        max_input_bytes: 1 << 20,
        max_output_chars: 1 << 20,
        ..Limits::default()
    };
    match convert(&Input::new(data).with_format(format), &limits) {
        Ok(doc) => {
            let options = ChunkOptions {
                target_chars: 64,
                max_chars: 128,
            };
            for c in chunk(&doc, &options) {
                assert!(c.text.chars().count() <= options.max_chars);
            }
        }
        Err(e) => {
            assert!(!matches!(e, ConvertError::ParserPanic { .. }), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}

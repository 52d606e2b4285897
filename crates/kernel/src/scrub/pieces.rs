//! A JSON value's strings as one text: collected in document order, and each string's part of
//! a match redacted in place.

use zeroize::Zeroize;

use super::REDACTED;

/// Every key, string and number of `value` in document order, each with whether it is a key.
pub(super) fn collect_pieces<'v>(
    value: &'v serde_json::Value,
    pieces: &mut Vec<(Piece<'v>, bool)>,
) {
    match value {
        serde_json::Value::String(s) => pieces.push((Piece::Borrowed(s), false)),
        serde_json::Value::Number(n) => pieces.push((Piece::Number(n.to_string()), false)),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_pieces(item, pieces);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                pieces.push((Piece::Borrowed(key), true));
                collect_pieces(item, pieces);
            }
        }
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// A piece of a JSON value's text.
pub(super) enum Piece<'v> {
    Borrowed(&'v str),
    Number(String),
}

impl std::ops::Deref for Piece<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Number(n) => n,
        }
    }
}

/// `spans` of the joined text, cut into each piece's own (ranges local to the piece).
pub(super) fn split_spans(spans: &[(usize, usize)], ends: &[usize]) -> Vec<Vec<(usize, usize)>> {
    let mut parts = vec![Vec::new(); ends.len()];
    let mut span = 0;
    let mut start = 0;
    for (piece, &end) in parts.iter_mut().zip(ends) {
        while let Some(&(a, b)) = spans.get(span) {
            if a >= end {
                break;
            }
            let (from, to) = (a.max(start), b.min(end));
            if from < to {
                piece.push((from - start, to - start));
            }
            if b > end {
                break;
            }
            span += 1;
        }
        start = end;
    }
    parts
}

/// Replaces `parts` of `text` by [`REDACTED`], zeroizing the old text.
pub(super) fn redact_in(text: &mut String, parts: &[(usize, usize)]) {
    if parts.is_empty() {
        return;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(a, b) in parts {
        out.push_str(text.get(at..a).unwrap_or_default());
        out.push_str(REDACTED);
        at = at.max(b);
    }
    out.push_str(text.get(at..).unwrap_or_default());
    let mut old = std::mem::replace(text, out);
    old.zeroize();
}

/// Walks `value` as [`collect_pieces`] did, redacting each piece's parts.
pub(super) fn redact_pieces(
    value: &mut serde_json::Value,
    parts: &[Vec<(usize, usize)>],
    next: &mut usize,
) {
    match value {
        serde_json::Value::String(s) => redact_in(s, take(parts, next)),
        serde_json::Value::Number(_) => {
            if !take(parts, next).is_empty() {
                *value = serde_json::Value::String(REDACTED.to_owned());
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                redact_pieces(item, parts, next);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, mut item) in std::mem::take(map) {
                let mut key = key;
                redact_in(&mut key, take(parts, next));
                redact_pieces(&mut item, parts, next);
                map.insert(key, item);
            }
        }
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// The parts of the next piece.
fn take<'p>(parts: &'p [Vec<(usize, usize)>], next: &mut usize) -> &'p [(usize, usize)] {
    let piece = parts.get(*next).map(Vec::as_slice).unwrap_or_default();
    *next += 1;
    piece
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use crate::scrub::tests::SECRET;
    use crate::scrub::{REDACTED, Scrubber};

    #[test]
    fn invariant_i4_json_values_are_scrubbed_keys_included() {
        let scrubber = Scrubber::new([SECRET]);
        let mut value = serde_json::json!({
            "headers": {"authorization": format!("Bearer {SECRET}")},
            SECRET: [1, format!("x{SECRET}y")],
        });
        scrubber.scrub_value(&mut value);
        let text = value.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains(REDACTED));
    }

    #[test]
    fn invariant_i4_a_secret_split_across_json_strings_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let values = [
            serde_json::json!(["sk-live-4f9a", "8b7c6d5e"]),
            serde_json::json!({"a": "prefix sk-live-", "b": "4f9a8b7c6d5e suffix"}),
            serde_json::json!({"k": {"one": "SK-LIVE"}, "l": ["-4F9A", {"m": "8B7C6D5E"}]}),
            serde_json::json!({"sk-live-4f9a": "8b7c6d5e"}),
            serde_json::json!([
                "s", "k", "-", "l", "i", "v", "e", "-", "4", "f", "9", "a", "8", "b", "7", "c",
                "6", "d", "5", "e"
            ]),
        ];
        for mut value in values {
            let before = value.to_string();
            scrubber.scrub_value(&mut value);
            let text = value.to_string();
            assert!(text.contains(REDACTED), "{before} → {text}");
            let skeleton: String = text
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_lowercase();
            for part in ["sklive", "4f9a", "8b7c6d5e"] {
                assert!(
                    !skeleton.contains(part),
                    "`{part}` survived: {before} → {text}"
                );
            }
        }
        // Strings around the secret keep their own text.
        let mut value = serde_json::json!({"a": "prefix sk-live-", "b": "4f9a8b7c6d5e suffix"});
        scrubber.scrub_value(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"a": "prefix [redacted]", "b": "[redacted] suffix"})
        );
    }
}

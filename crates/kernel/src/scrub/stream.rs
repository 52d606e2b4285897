//! Scrubbing text that arrives in pieces: what is final is released, the tail that could
//! still grow into a secret is held back.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::skeleton::skeleton;
use super::{REDACTED, Scrubber};

impl Scrubber {
    /// Whether `tail` (the end of a stream's skeleton) is the beginning of a needle.
    fn could_grow(&self, tail: &[u8]) -> bool {
        let at = self.needles.partition_point(|n| n.as_slice() < tail);
        self.needles.get(at).is_some_and(|n| n.starts_with(tail))
    }

    /// Scrubs `text` as far as it is final: all of it when `last`, else up to where the
    /// rest could still become part of a secret once more text arrives. Returns the scrubbed
    /// text and how many bytes of `text` it covers.
    pub(super) fn release(&self, text: &str, last: bool) -> (String, usize) {
        if self.matcher.is_none() {
            return (text.to_owned(), text.len());
        }
        let sk = skeleton(text, last);
        let len = sk.bytes.len();
        let hold = if last {
            len
        } else {
            let from = len.saturating_sub(self.longest.saturating_sub(1));
            let hold = (from..len)
                .find(|&j| sk.bytes.get(j..).is_some_and(|tail| self.could_grow(tail)))
                .unwrap_or(len);
            sk.unit_start(hold)
        };
        let spans = self.matched(&sk, hold);
        // A match that reaches past the cut may still merge with one that starts after it:
        // hold it back whole.
        let mut cut = hold;
        while let Some(&(start, _)) = spans.iter().find(|s| {
            s.0 < cut && (s.1 > cut || (!last && sk.original(text, s.0, s.1).1 >= sk.stop))
        }) {
            cut = sk.unit_start(start);
        }
        let end = sk.starts.get(cut).copied().unwrap_or(sk.stop);
        let mut out = String::with_capacity(end);
        let mut at = 0;
        for &(a, b) in spans.iter().filter(|s| s.1 <= cut) {
            let (from, to) = sk.original(text, a, b);
            out.push_str(text.get(at..from).unwrap_or_default());
            out.push_str(REDACTED);
            at = at.max(to);
        }
        out.push_str(text.get(at..end).unwrap_or_default());
        (out, end)
    }
}

/// Scrubs text that arrives in pieces (a model's streamed reply): each [`push`](Self::push)
/// returns the text that can no longer become part of a secret, scrubbed; the tail that could
/// is held back — at most the longest needle less one, in skeleton bytes, and usually a few
/// characters — until the next piece or [`finish`](Self::finish). The pieces returned, joined,
/// are what [`Scrubber::scrub`] makes of the whole text.
pub struct StreamScrubber {
    scrubber: Arc<Scrubber>,
    pending: Zeroizing<String>,
}

impl StreamScrubber {
    /// A stream scrubbed by `scrubber`.
    #[must_use]
    pub fn new(scrubber: Arc<Scrubber>) -> Self {
        Self {
            scrubber,
            pending: Zeroizing::new(String::new()),
        }
    }

    /// Takes the next piece; returns what can be shown now (maybe nothing).
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let (out, used) = self.scrubber.release(&self.pending, false);
        let rest = Zeroizing::new(self.pending.get(used..).unwrap_or_default().to_owned());
        self.pending = rest;
        out
    }

    /// Ends the stream; returns what was held back, scrubbed.
    #[must_use]
    pub fn finish(self) -> String {
        self.scrubber.release(&self.pending, true).0
    }

    /// How many bytes are held back now.
    #[must_use]
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::scrub::tests::SECRET;

    /// `pieces` through a stream, joined.
    fn streamed(scrubber: &Arc<Scrubber>, pieces: &[&str]) -> String {
        let mut stream = StreamScrubber::new(Arc::clone(scrubber));
        let mut out = String::new();
        for piece in pieces {
            out.push_str(&stream.push(piece));
        }
        out + &stream.finish()
    }

    /// Char boundaries of `text`, ends included.
    fn cuts(text: &str) -> Vec<usize> {
        (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect()
    }

    #[test]
    fn invariant_i4_a_secret_split_across_two_chunks_is_scrubbed_at_every_point() {
        let scrubber = Arc::new(Scrubber::new([SECRET]));
        let escaped: String = "sK-LiVe-4f9a8b7c6d5e"
            .chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect();
        for form in [
            SECRET.to_owned(),
            SECRET.to_uppercase(),
            "Sk-LiVe-4F9a 8B7c:6D5e".to_owned(),
            escaped,
            STANDARD.encode(format!("user:{SECRET}")),
        ] {
            let text = format!("my key is {form}, keep it safe");
            let whole = scrubber.scrub(&text);
            assert!(
                whole.starts_with("my key is ") && whole.ends_with(", keep it safe"),
                "{whole}"
            );
            assert!(
                whole.contains(REDACTED) && !scrubber.finds(&whole),
                "{whole}"
            );
            for i in cuts(&text) {
                let (a, b) = text.split_at(i);
                assert_eq!(streamed(&scrubber, &[a, b]), whole, "{a:?} + {b:?}");
            }
        }
    }

    #[test]
    fn invariant_i4_a_secret_split_across_three_chunks_is_scrubbed_at_every_point() {
        let scrubber = Arc::new(Scrubber::new([
            SECRET,
            "ghp_R2d2C3po4Bb8Luke9Leia0Han1Solo",
        ]));
        for form in [SECRET.to_owned(), "SK-live-4F9A8b7c6D5E".to_owned()] {
            let text = format!("a{form}b");
            let whole = scrubber.scrub(&text);
            assert_eq!(whole, "a[redacted]b");
            for i in cuts(&text) {
                for j in cuts(&text).into_iter().filter(|&j| j >= i) {
                    let pieces = [&text[..i], &text[i..j], &text[j..]];
                    assert_eq!(streamed(&scrubber, &pieces), whole, "{pieces:?}");
                }
            }
        }
    }

    #[test]
    fn invariant_i4_a_stream_scrubs_as_the_whole_text_does() {
        let scrubber = Arc::new(Scrubber::new([SECRET, "correct-horse-battery"]));
        let text = format!(
            "Résumé: {SECRET} then {} and CORRECT HORSE BATTERY, \\u0073k-live-4f9a8b7c6d5e, \
             {} — done &#115; %73 \\",
            STANDARD.encode(SECRET),
            hex::encode(SECRET)
        );
        let whole = scrubber.scrub(&text);
        assert_eq!(whole.matches(REDACTED).count(), 5, "{whole}");
        for size in 1..12 {
            let chars: Vec<char> = text.chars().collect();
            let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            assert_eq!(streamed(&scrubber, &pieces), whole, "pieces of {size}");
        }
    }

    #[test]
    fn a_stream_holds_back_only_what_could_still_become_a_secret() {
        let scrubber = Arc::new(Scrubber::new([SECRET]));
        let mut stream = StreamScrubber::new(Arc::clone(&scrubber));
        let out = stream.push("The weather is fine today. ");
        assert!(out.starts_with("The weather is fine"), "{out:?}");
        assert!(stream.held() < 8, "held {}", stream.held());
        // The start of the secret waits for what follows…
        let out = stream.push("Key: sk-li");
        assert!(out.ends_with("Key: "), "{out:?}");
        let out = stream.push("ve-4f9a8b7c6d5e and more");
        assert!(out.starts_with("[redacted] and"), "{out:?}");
        assert_eq!(out + &stream.finish(), "[redacted] and more");
        // …and without secrets nothing waits at all.
        let mut stream = StreamScrubber::new(Arc::new(Scrubber::empty()));
        assert_eq!(stream.push("sk-li"), "sk-li");
        assert_eq!(stream.finish(), "");
    }
}

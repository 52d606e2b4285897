//! The scrubber: secret values, in every form we know, found in text and JSON on their way
//! back from a tool or a model (invariant I4).
//!
//! # The skeleton
//!
//! Text is not matched as written but as its *skeleton*: its letters and digits, lower-cased,
//! after escapes are decoded (`\u0073`, `\u{73}`, `\x73`, `%73`, `&#115;`, `&#x73;`; `\n` and
//! the other one-letter escapes are separators). Everything else — spaces, line breaks, `-`,
//! `_`, `:`, quotes, `=` padding, `+` and `/` — is a separator and drops out. Each byte of the
//! skeleton remembers where its character starts in the text, so a match redacts the whole
//! original span, separators and escapes included.
//!
//! The needles are the skeletons of each secret's forms: the value itself (which covers its
//! JSON- and URL-encoded forms too), and hex, base64 and base32 (RFC 4648, both alphabets) of
//! its UTF-8, UTF-16LE and UTF-16BE bytes, each encoding whole and at every byte alignment
//! (the characters made only of the value's bits, so that `base64("user:" + secret)` is
//! found). One skeleton covers a class of disguises: case folding covers upper- and lower-case
//! text, hex and encodings; dropping separators covers `sk live 4f…`, `73:6b:…`, line-wrapped
//! base64, padding and the URL-safe alphabet. A needle shorter than [`MIN_SKELETON`] is dropped,
//! so that ordinary text is never mistaken for a secret.
//!
//! Matches may overlap (two secrets, or a value and an encoding of another): their union is
//! redacted. [`Scrubber::scrub_value`] matches over the concatenation of a JSON value's strings
//! in document order, so a secret split across strings is found, and each string loses its
//! part. [`StreamScrubber`] scrubs text that arrives in pieces, holding back only the tail that
//! could still grow into a match.
//!
//! # What no scrubber catches
//!
//! A secret transformed in a way not listed here: encrypted, hashed, compressed, reversed,
//! shuffled, spelled out in words ("ess kay dash…"), interleaved with other letters or digits,
//! split across two replies or two tool results the model puts together, or leaked a little
//! at a time. Against those the structural answers hold: the model never sees a value (names
//! only), a credential can be bound to the hosts it may be sent to, and the policy decides
//! where tools may send anything at all.

mod forms;
mod pieces;
mod skeleton;
mod stream;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use zeroize::{Zeroize, Zeroizing};

use self::forms::needles_for;
use self::pieces::{collect_pieces, redact_in, redact_pieces, split_spans};
use self::skeleton::{Skeleton, skeleton};
pub use self::stream::StreamScrubber;

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The shortest needle, in skeleton bytes: a shorter encoding of a secret is not looked for.
pub const MIN_SKELETON: usize = 8;

/// A value's own skeleton is looked for from this length on (a value with fewer than
/// [`MIN_SKELETON`] letters and digits is still the operator's secret).
const MIN_VALUE_SKELETON: usize = 4;

/// Finds secret values, in every form we know, in text.
pub struct Scrubber {
    matcher: Option<AhoCorasick>,
    /// The needles, sorted: whether the tail of a stream could still grow into one.
    needles: Zeroizing<Vec<Vec<u8>>>,
    /// The longest needle, in bytes.
    longest: usize,
}

impl Scrubber {
    /// A scrubber that finds nothing.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            matcher: None,
            needles: Zeroizing::new(Vec::new()),
            longest: 0,
        }
    }

    /// A scrubber for these values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles = Zeroizing::new(Vec::new());
        for value in values {
            needles_for(value, &mut needles);
        }
        needles.sort_unstable();
        needles.dedup_by(|a, b| {
            let same = a == b;
            if same {
                a.zeroize();
            }
            same
        });
        if needles.is_empty() {
            return Self::empty();
        }
        // A DFA: a few MB for many secrets, and the fastest search; the contiguous NFA if
        // the DFA would be too large.
        let build = |kind| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .build(needles.iter())
                .ok()
        };
        let matcher = build(AhoCorasickKind::DFA).or_else(|| build(AhoCorasickKind::ContiguousNFA));
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            matcher,
            needles,
            longest,
        }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    #[must_use]
    pub fn scrub(&self, text: &str) -> String {
        self.release(text, true).0
    }

    /// Whether `text` holds a secret.
    #[must_use]
    pub fn finds(&self, text: &str) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| m.is_match(skeleton(text, true).bytes.as_slice()))
    }

    /// Scrubs every string (keys too) of a JSON value as one text: a secret split across
    /// strings (`["sk-live-4f9a", "8b7c6d5e"]`, `{"a": "sk-live-", "b": "4f9a8b7c6d5e"}`, or a
    /// key and its value) is found, and each string's part of it replaced. The strings are
    /// matched in document order twice: keys and values, then values alone (so that keys
    /// between two halves do not hide them). A number that holds part of a secret becomes
    /// [`REDACTED`].
    pub fn scrub_value(&self, value: &mut serde_json::Value) {
        if self.matcher.is_none() {
            return;
        }
        let mut pieces = Vec::new();
        collect_pieces(value, &mut pieces);
        let mut parts = vec![Vec::new(); pieces.len()];
        for values_only in [false, true] {
            let chosen: Vec<usize> = (0..pieces.len())
                .filter(|&i| !values_only || pieces.get(i).is_some_and(|p| !p.1))
                .collect();
            if values_only && chosen.len() == pieces.len() {
                break;
            }
            let mut joined = Zeroizing::new(String::new());
            let mut ends = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                if let Some((text, _)) = pieces.get(i) {
                    joined.push_str(text);
                }
                ends.push(joined.len());
            }
            let spans = self.spans(&joined);
            for (&i, found) in chosen.iter().zip(split_spans(&spans, &ends)) {
                if let Some(part) = parts.get_mut(i) {
                    part.extend(found);
                }
            }
        }
        drop(pieces);
        if parts.iter().all(Vec::is_empty) {
            return;
        }
        for part in &mut parts {
            part.sort_unstable();
            part.dedup_by(|later, earlier| {
                let overlap = later.0 <= earlier.1;
                if overlap {
                    earlier.1 = earlier.1.max(later.1);
                }
                overlap
            });
        }
        let mut next = 0;
        redact_pieces(value, &parts, &mut next);
    }

    /// Scrubs these strings as one text, in order (the messages of a conversation): a secret
    /// split across them is found, and each string's part of it replaced.
    pub fn scrub_joined<'a>(&self, texts: impl IntoIterator<Item = &'a mut String>) {
        if self.matcher.is_none() {
            return;
        }
        let mut texts: Vec<&mut String> = texts.into_iter().collect();
        let mut joined = Zeroizing::new(String::new());
        let mut ends = Vec::with_capacity(texts.len());
        for text in &texts {
            joined.push_str(text);
            ends.push(joined.len());
        }
        let spans = self.spans(&joined);
        if spans.is_empty() {
            return;
        }
        for (text, parts) in texts.iter_mut().zip(split_spans(&spans, &ends)) {
            redact_in(text, &parts);
        }
    }

    /// The original byte spans of `text` to redact, in order.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let sk = skeleton(text, true);
        self.matched(&sk, sk.bytes.len())
            .into_iter()
            .map(|(a, b)| sk.original(text, a, b))
            .collect()
    }

    /// The matches that start before skeleton byte `before`, merged where they overlap:
    /// skeleton byte ranges, in order.
    fn matched(&self, sk: &Skeleton, before: usize) -> Vec<(usize, usize)> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        let mut found: Vec<(usize, usize)> =
            match matcher.try_find_overlapping_iter(sk.bytes.as_slice()) {
                Ok(iter) => iter
                    .map(|m| (m.start(), m.end()))
                    .filter(|m| m.0 < before)
                    .collect(),
                // Cannot happen with a `Standard` matcher; if it did, hide everything.
                Err(_) if sk.bytes.is_empty() => Vec::new(),
                Err(_) => vec![(0, sk.bytes.len())],
            };
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    /// The secret the tests look for.
    pub(super) const SECRET: &str = "sk-live-4f9a8b7c6d5e";

    /// `text` scrubbed is `expected`; says which form survived otherwise.
    pub(super) fn scrubs_to(scrubber: &Scrubber, text: &str, expected: &str) {
        assert_eq!(scrubber.scrub(text), expected, "scrubbing {text:?}");
    }

    /// Every form in `forms`, put in a sentence, comes out as `[redacted]` with the sentence
    /// around it intact.
    pub(super) fn each_redacted(scrubber: &Scrubber, forms: &[String]) {
        for form in forms {
            scrubs_to(
                scrubber,
                &format!("the value ({form}) was sent"),
                "the value ([redacted]) was sent",
            );
        }
    }

    #[test]
    fn invariant_i4_ordinary_prose_passes_unchanged() {
        let scrubber = Scrubber::new([SECRET, "ghp_R2d2C3po4Bb8Luke9Leia0Han1Solo"]);
        let prose = [
            "The quick brown fox jumps over the lazy dog. Skiing live at 4 pm, forty-nine \
             apples and 8 bananas; see section 7c (page 6d) and item 5e.",
            "Sky-lives: 4f, 9a, 8b, 7c, 6d, 5e — a hex dump of something else entirely.",
            "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "Basic dXNlcjpwYXNzd29yZA== and aGVsbG8gd29ybGQ= and JBSWY3DPEHPK3PXP",
            "\\u0048\\u0065\\u006c\\u006c\\u006f, %48%65%6C%6C%6F &#72;&#101;",
            "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); } // sk = skill",
            "Ωμέγα, naïve café, 東京, emoji 🎉 — and a URL https://example.org/a?b=c&d=e#f",
        ];
        for text in prose {
            scrubs_to(&scrubber, text, text);
            assert!(!scrubber.finds(text), "{text}");
        }
        let mut value = serde_json::json!({"files": ["a.txt", "b.txt"], "count": 2,
            "text": prose.join("\n")});
        let before = value.clone();
        scrubber.scrub_value(&mut value);
        assert_eq!(value, before);
    }
}

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

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use data_encoding::{BASE32_NOPAD, BASE32HEX_NOPAD, BASE64_NOPAD, Encoding};
use zeroize::{Zeroize, Zeroizing};

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

    /// Whether `tail` (the end of a stream's skeleton) is the beginning of a needle.
    fn could_grow(&self, tail: &[u8]) -> bool {
        let at = self.needles.partition_point(|n| n.as_slice() < tail);
        self.needles.get(at).is_some_and(|n| n.starts_with(tail))
    }

    /// Scrubs `text` as far as it is final: all of it when `last`, else up to where the
    /// rest could still become part of a secret once more text arrives. Returns the scrubbed
    /// text and how many bytes of `text` it covers.
    fn release(&self, text: &str, last: bool) -> (String, usize) {
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

/// Text reduced to what is matched: letters and digits, lower-cased, escapes decoded.
struct Skeleton {
    bytes: Vec<u8>,
    /// For each byte of `bytes`, where its character starts in the text.
    starts: Vec<usize>,
    /// How far the text was read: its length, or the start of an escape that more text could
    /// still complete.
    stop: usize,
}

impl Skeleton {
    fn push(&mut self, c: char, at: usize) {
        if c.is_alphanumeric() {
            for lower in c.to_lowercase() {
                let mut buf = [0u8; 4];
                for &b in lower.encode_utf8(&mut buf).as_bytes() {
                    self.bytes.push(b);
                    self.starts.push(at);
                }
            }
        }
    }

    /// `i` moved back to the first byte of its character's unit.
    fn unit_start(&self, mut i: usize) -> usize {
        while i > 0 && i < self.starts.len() && self.starts.get(i - 1) == self.starts.get(i) {
            i -= 1;
        }
        i
    }

    /// The original byte span of skeleton bytes `a..b`: from the start of the first one's
    /// character to the end of the last one's, and the `=` padding right after it.
    fn original(&self, text: &str, a: usize, b: usize) -> (usize, usize) {
        let from = self.starts.get(a).copied().unwrap_or(self.stop);
        let mut to = b
            .checked_sub(1)
            .and_then(|last| self.starts.get(last))
            .map_or(from, |&start| start + unit(text, start, true).len());
        while to < self.stop && text.as_bytes().get(to) == Some(&b'=') {
            to += 1;
        }
        (from, to)
    }
}

/// The skeleton of `text`. Unless `last`, an escape cut short by the end of `text` stops it.
fn skeleton(text: &str, last: bool) -> Skeleton {
    let raw = text.as_bytes();
    let mut sk = Skeleton {
        bytes: Vec::with_capacity(text.len()),
        starts: Vec::with_capacity(text.len()),
        stop: text.len(),
    };
    let mut pos = 0;
    while let Some(&b) = raw.get(pos) {
        if b.is_ascii_alphanumeric() {
            sk.bytes.push(b.to_ascii_lowercase());
            sk.starts.push(pos);
            pos += 1;
        } else if b.is_ascii() && !matches!(b, b'\\' | b'%' | b'&') {
            pos += 1;
        } else {
            match unit(text, pos, last) {
                Unit::Char(c, len) => {
                    sk.push(c, pos);
                    pos += len.max(1);
                }
                Unit::Incomplete => {
                    sk.stop = pos;
                    break;
                }
            }
        }
    }
    sk
}

/// One character of text, as the skeleton reads it.
enum Unit {
    /// A character, decoded from an escape or as written, and how many bytes it took.
    Char(char, usize),
    /// An escape that the end of the text cut short.
    Incomplete,
}

impl Unit {
    fn len(&self) -> usize {
        match self {
            Self::Char(_, len) => *len,
            Self::Incomplete => 0,
        }
    }
}

/// The unit at byte `pos` of `text` (a character boundary).
fn unit(text: &str, pos: usize, last: bool) -> Unit {
    let rest = text.get(pos..).unwrap_or_default();
    let Some(c) = rest.chars().next() else {
        return Unit::Char(' ', 1);
    };
    let escape = match c {
        '\\' => backslash(rest.as_bytes(), last),
        '%' => percent(rest.as_bytes(), last),
        '&' => entity(rest.as_bytes(), last),
        _ => None,
    };
    escape.unwrap_or(Unit::Char(c, c.len_utf8()))
}

/// Up to `max` hex (or, with `radix` 10, decimal) digits at `at`: their value and how many.
fn digits(bytes: &[u8], at: usize, max: usize, radix: u32) -> (u32, usize) {
    let mut value = 0u32;
    let mut count = 0;
    while count < max {
        let Some(d) = bytes
            .get(at + count)
            .and_then(|&b| char::from(b).to_digit(radix))
        else {
            break;
        };
        value = value.saturating_mul(radix).saturating_add(d);
        count += 1;
    }
    (value, count)
}

/// `Incomplete` if the text ended at `at` (and more may come), else not an escape.
fn cut_short(bytes: &[u8], at: usize, last: bool) -> Option<Unit> {
    (!last && at >= bytes.len()).then_some(Unit::Incomplete)
}

/// `\u0073`, `\u{73}`, `\x73`, surrogate pairs, and `\n`-style escapes (separators). A run of
/// backslashes counts as one (an escape escaped again); a run before anything else is one
/// separator.
fn backslash(bytes: &[u8], last: bool) -> Option<Unit> {
    let n = bytes.iter().take_while(|&&b| b == b'\\').count();
    let run = Some(Unit::Char('\\', n));
    match bytes.get(n) {
        None => cut_short(bytes, n, last).or(run),
        Some(b'u') if bytes.get(n + 1) == Some(&b'{') => {
            let (value, count) = digits(bytes, n + 2, 6, 16);
            match bytes.get(n + 2 + count) {
                Some(b'}') if count > 0 => char::from_u32(value)
                    .map(|c| Unit::Char(c, n + 3 + count))
                    .or(run),
                None => cut_short(bytes, n + 2 + count, last).or(run),
                _ => run,
            }
        }
        Some(b'u') => {
            let (value, count) = digits(bytes, n + 1, 4, 16);
            if count < 4 {
                return cut_short(bytes, n + 1 + count, last).or(run);
            }
            let len = n + 5;
            if (0xD800..0xDC00).contains(&value) {
                return Some(low_surrogate(
                    bytes.get(len..).unwrap_or_default(),
                    value,
                    len,
                    last,
                ));
            }
            Some(Unit::Char(
                char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER),
                len,
            ))
        }
        Some(b'x') => {
            let (value, count) = digits(bytes, n + 1, 2, 16);
            if count < 2 {
                return cut_short(bytes, n + 1 + count, last).or(run);
            }
            char::from_u32(value).map(|c| Unit::Char(c, n + 3)).or(run)
        }
        Some(b'n' | b'r' | b't' | b'b' | b'f' | b'v' | b'0' | b'/' | b'"' | b'\'') => {
            Some(Unit::Char(' ', n + 1))
        }
        Some(_) => run,
    }
}

/// After a high surrogate `\uD8xx` of `len` bytes: its low half, or the high half alone.
fn low_surrogate(rest: &[u8], high: u32, len: usize, last: bool) -> Unit {
    let alone = Unit::Char(char::REPLACEMENT_CHARACTER, len);
    let n = rest.iter().take_while(|&&b| b == b'\\').count();
    if n == 0 {
        return if rest.is_empty() && !last {
            Unit::Incomplete
        } else {
            alone
        };
    }
    match rest.get(n) {
        None => cut_short(rest, n, last).unwrap_or(alone),
        Some(b'u') => {
            let (low, count) = digits(rest, n + 1, 4, 16);
            if count < 4 {
                return cut_short(rest, n + 1 + count, last).unwrap_or(alone);
            }
            if !(0xDC00..0xE000).contains(&low) {
                return alone;
            }
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            char::from_u32(code).map_or(alone, |c| Unit::Char(c, len + n + 5))
        }
        Some(_) => alone,
    }
}

/// `%73` (an ASCII character; other bytes are left as written).
fn percent(bytes: &[u8], last: bool) -> Option<Unit> {
    let (value, count) = digits(bytes, 1, 2, 16);
    if count < 2 {
        return cut_short(bytes, 1 + count, last);
    }
    u8::try_from(value)
        .ok()
        .filter(u8::is_ascii)
        .map(|b| Unit::Char(char::from(b), 3))
}

/// `&#115;` and `&#x73;`.
fn entity(bytes: &[u8], last: bool) -> Option<Unit> {
    match bytes.get(1) {
        None => return cut_short(bytes, 1, last),
        Some(b'#') => {}
        Some(_) => return None,
    }
    let hex = matches!(bytes.get(2), Some(b'x' | b'X'));
    let at = if hex { 3 } else { 2 };
    let (value, count) = digits(bytes, at, 7, if hex { 16 } else { 10 });
    match bytes.get(at + count) {
        Some(b';') if count > 0 => char::from_u32(value).map(|c| Unit::Char(c, at + count + 1)),
        None => cut_short(bytes, at + count, last),
        _ => None,
    }
}

/// Adds the needles of `value` to `out`.
fn needles_for(value: &str, out: &mut Vec<Vec<u8>>) {
    let mut add = |form: &str, min: usize| {
        let mut sk = skeleton(form, true);
        if sk.bytes.len() >= min {
            out.push(std::mem::take(&mut sk.bytes));
        }
    };
    // The value as written: its JSON-escaped and URL-encoded forms have the same skeleton,
    // but for characters outside ASCII.
    add(value, MIN_VALUE_SKELETON);
    let encoded = Zeroizing::new(
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    add(&encoded, MIN_VALUE_SKELETON);
    let utf16 = |big_endian: bool| -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            value
                .encode_utf16()
                .flat_map(|u| {
                    if big_endian {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                })
                .collect(),
        )
    };
    let representations = [
        Zeroizing::new(value.as_bytes().to_vec()),
        utf16(false),
        utf16(true),
    ];
    for bytes in &representations {
        add(&Zeroizing::new(hex::encode(bytes.as_slice())), MIN_SKELETON);
        for (encoding, group, bits) in [
            (&BASE64_NOPAD, 3, 6),
            (&BASE32_NOPAD, 5, 5),
            (&BASE32HEX_NOPAD, 5, 5),
        ] {
            add(&Zeroizing::new(encoding.encode(bytes)), MIN_SKELETON);
            for offset in 0..group {
                if let Some(fragment) = aligned_fragment(encoding, bytes, offset, bits) {
                    add(&fragment, MIN_SKELETON);
                }
            }
        }
    }
}

/// The characters of `encoding(offset zero bytes + bytes + anything)` made only of the bits of
/// `bytes`: what any text that encodes `bytes` at that alignment contains.
fn aligned_fragment(
    encoding: &Encoding,
    bytes: &[u8],
    offset: usize,
    bits: usize,
) -> Option<Zeroizing<String>> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(bytes);
    let encoded = Zeroizing::new(encoding.encode(&shifted));
    let first = (8 * offset).div_ceil(bits);
    let last = (8 * (offset + bytes.len())) / bits;
    encoded
        .get(first..last)
        .map(|fragment| Zeroizing::new(fragment.to_owned()))
}

/// Every key, string and number of `value` in document order, each with whether it is a key.
fn collect_pieces<'v>(value: &'v serde_json::Value, pieces: &mut Vec<(Piece<'v>, bool)>) {
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
enum Piece<'v> {
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
fn split_spans(spans: &[(usize, usize)], ends: &[usize]) -> Vec<Vec<(usize, usize)>> {
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
fn redact_in(text: &mut String, parts: &[(usize, usize)]) {
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
fn redact_pieces(value: &mut serde_json::Value, parts: &[Vec<(usize, usize)>], next: &mut usize) {
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
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    const SECRET: &str = "sk-live-4f9a8b7c6d5e";

    #[test]
    fn invariant_i4_every_encoding_of_a_secret_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let encodings = [
            SECRET.to_owned(),
            STANDARD.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
            STANDARD.encode(format!("user:{SECRET}")),
            STANDARD.encode(format!("ab{SECRET}")),
            STANDARD.encode(format!("{SECRET}:tail")),
            hex::encode(SECRET),
            hex::encode_upper(SECRET),
            url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect(),
            percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        for encoded in encodings {
            let text = format!("Authorization: Basic {encoded} and more");
            let scrubbed = scrubber.scrub(&text);
            assert!(
                scrubbed.contains(REDACTED),
                "{encoded} survived in {scrubbed}"
            );
            assert!(
                !scrubbed.contains(&encoded),
                "{encoded} survived in {scrubbed}"
            );
        }
        assert_eq!(scrubber.scrub("nothing here"), "nothing here");
    }

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

    /// `text` scrubbed is `expected`; says which form survived otherwise.
    fn scrubs_to(scrubber: &Scrubber, text: &str, expected: &str) {
        assert_eq!(scrubber.scrub(text), expected, "scrubbing {text:?}");
    }

    /// Every form in `forms`, put in a sentence, comes out as `[redacted]` with the sentence
    /// around it intact.
    fn each_redacted(scrubber: &Scrubber, forms: &[String]) {
        for form in forms {
            scrubs_to(
                scrubber,
                &format!("the value ({form}) was sent"),
                "the value ([redacted]) was sent",
            );
        }
    }

    #[test]
    fn invariant_i4_case_is_no_disguise() {
        let scrubber = Scrubber::new([SECRET]);
        let forms = [
            SECRET.to_uppercase(),
            "Sk-LiVe-4F9a8B7c6D5e".to_owned(),
            hex::encode_upper(SECRET).to_lowercase(),
            STANDARD.encode(SECRET).to_lowercase(),
            STANDARD.encode(SECRET).to_uppercase(),
        ];
        each_redacted(&scrubber, &forms);
    }

    #[test]
    fn invariant_i4_separators_are_no_disguise() {
        let scrubber = Scrubber::new([SECRET]);
        let spaced: String = SECRET
            .chars()
            .flat_map(|c| [c, ' '])
            .collect::<String>()
            .trim_end()
            .to_owned();
        let hex_pairs = |sep: &str| {
            SECRET
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(sep)
        };
        let forms = [
            "sk live 4f9a 8b7c 6d5e".to_owned(),
            "sk:live:4f9a:8b7c:6d5e".to_owned(),
            "sk_live_4f9a-8b7c-6d5e".to_owned(),
            "SK-LIVE-4F9A-8B7C-6D5E".to_owned(),
            "sk-live-4f9a\t8b7c\n6d5e".to_owned(),
            spaced,
            hex_pairs(":"),
            hex_pairs(" "),
            hex_pairs("-").to_uppercase(),
        ];
        each_redacted(&scrubber, &forms);
    }

    /// `encode(prefix + secret + suffix)` for the prefixes and suffixes that put the secret at
    /// every alignment of a 5-byte (base32) or 3-byte (base64) group.
    fn aligned(bytes: &[u8], encode: impl Fn(&[u8]) -> String) -> Vec<String> {
        let mut out = Vec::new();
        for prefix in ["", "a", "ab", "abc", "abcd", "user:"] {
            for suffix in ["", "!", "?!", ":tail"] {
                let mut whole = prefix.as_bytes().to_vec();
                whole.extend_from_slice(bytes);
                whole.extend_from_slice(suffix.as_bytes());
                out.push(encode(&whole));
            }
        }
        out
    }

    #[test]
    fn invariant_i4_base32_at_every_alignment_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let mut forms = Vec::new();
        for encoding in [
            &data_encoding::BASE32,
            &data_encoding::BASE32_NOPAD,
            &data_encoding::BASE32HEX,
            &data_encoding::BASE32HEX_NOPAD,
        ] {
            forms.extend(aligned(SECRET.as_bytes(), |b| encoding.encode(b)));
            forms.extend(aligned(SECRET.as_bytes(), |b| {
                encoding.encode(b).to_lowercase()
            }));
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("token {form} end"));
            assert!(
                scrubbed.starts_with("token ") && scrubbed.ends_with(" end"),
                "{scrubbed}"
            );
            assert!(scrubbed.contains(REDACTED), "{form} survived: {scrubbed}");
            assert!(!scrubber.finds(&scrubbed), "{form} still found: {scrubbed}");
        }
        // The secret alone: nothing of it is left.
        each_redacted(
            &scrubber,
            &[
                data_encoding::BASE32.encode(SECRET.as_bytes()),
                data_encoding::BASE32_NOPAD
                    .encode(SECRET.as_bytes())
                    .to_lowercase(),
                data_encoding::BASE32HEX.encode(SECRET.as_bytes()),
            ],
        );
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn invariant_i4_base64_of_utf16_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let mut forms = Vec::new();
        for big_endian in [false, true] {
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                forms.extend(aligned(&utf16(SECRET, big_endian), |b| engine.encode(b)));
                // As PowerShell's -EncodedCommand would carry it.
                forms.push(engine.encode(utf16(
                    &format!("$h = @{{Authorization = 'Bearer {SECRET}'}}"),
                    big_endian,
                )));
            }
            forms.push(hex::encode(utf16(SECRET, big_endian)));
            each_redacted(
                &scrubber,
                &[
                    STANDARD.encode(utf16(SECRET, big_endian)),
                    hex::encode(utf16(SECRET, big_endian)),
                ],
            );
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("run {form} now"));
            assert!(scrubbed.contains(REDACTED), "{form} survived: {scrubbed}");
            assert!(
                !scrubber.finds(&scrubbed),
                "{form} still found in {scrubbed}"
            );
        }
    }

    #[test]
    fn invariant_i4_escapes_are_decoded_before_matching() {
        let scrubber = Scrubber::new([SECRET]);
        let every = |f: &dyn Fn(char) -> String| SECRET.chars().map(f).collect::<String>();
        let forms = [
            every(&|c| format!("\\u{:04x}", u32::from(c))),
            every(&|c| format!("\\u{:04X}", u32::from(c))),
            // Half escaped, half not, upper-cased.
            format!(
                "\\u0053\\u004B-LIVE-{}",
                every(&|c| format!("\\u{:04x}", u32::from(c)))
                    .get(8 * 6..)
                    .unwrap()
            ),
            every(&|c| format!("\\\\u{:04x}", u32::from(c))),
            every(&|c| format!("\\u{{{:x}}}", u32::from(c))),
            every(&|c| format!("\\x{:02x}", u32::from(c))),
            every(&|c| format!("%{:02X}", u32::from(c))),
            every(&|c| format!("&#{};", u32::from(c))),
            every(&|c| format!("&#x{:x};", u32::from(c))),
        ];
        each_redacted(&scrubber, &forms);
    }

    #[test]
    fn invariant_i4_line_wrapped_base64_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let encoded = STANDARD.encode(format!(
            "-----BEGIN TOKEN-----\nuser=alice\nkey={SECRET}\n-----END TOKEN-----\n"
        ));
        let mut forms = Vec::new();
        for width in [4, 19, 64, 76] {
            for newline in ["\n", "\r\n", "\\n", "\\r\\n"] {
                let wrapped = encoded
                    .as_bytes()
                    .chunks(width)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(newline);
                forms.push(wrapped);
            }
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("body: {form}"));
            assert!(scrubbed.contains(REDACTED), "{form:?} survived: {scrubbed}");
            assert!(!scrubber.finds(&scrubbed), "{scrubbed}");
        }
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

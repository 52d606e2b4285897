//! The skeleton: text reduced to what is matched (letters and digits, lower-cased, escapes
//! decoded), each byte remembering where its character starts in the text.
//!
//! The escape decoding is ours on purpose: it must report where each character starts and
//! whether more text could still complete an escape (for streams), which the decoding crates
//! (`percent-encoding`, HTML entity decoders) do not; and it decodes only what can hide a
//! letter or digit (an ASCII `%xx`, not a UTF-8 byte sequence).

/// Text reduced to what is matched: letters and digits, lower-cased, escapes decoded.
pub(super) struct Skeleton {
    pub(super) bytes: Vec<u8>,
    /// For each byte of `bytes`, where its character starts in the text.
    pub(super) starts: Vec<usize>,
    /// How far the text was read: its length, or the start of an escape that more text could
    /// still complete.
    pub(super) stop: usize,
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
    pub(super) fn unit_start(&self, mut i: usize) -> usize {
        while i > 0 && i < self.starts.len() && self.starts.get(i - 1) == self.starts.get(i) {
            i -= 1;
        }
        i
    }

    /// The original byte span of skeleton bytes `a..b`: from the start of the first one's
    /// character to the end of the last one's, and the `=` padding right after it.
    pub(super) fn original(&self, text: &str, a: usize, b: usize) -> (usize, usize) {
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
pub(super) fn skeleton(text: &str, last: bool) -> Skeleton {
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use crate::scrub::Scrubber;
    use crate::scrub::tests::{SECRET, each_redacted};

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
}

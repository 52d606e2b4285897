//! Shared plumbing: the conversion context (budget, depth) and a section builder that tracks
//! the heading path.

use crate::{ConvertError, Converted, Format, Limits, Location, Section};

/// Budget and depth shared by one top-level conversion and its attachments.
pub(crate) struct Ctx<'l> {
    pub limits: &'l Limits,
    /// 0 for the top-level document, +1 per attachment level.
    pub depth: usize,
    used_chars: usize,
}

impl<'l> Ctx<'l> {
    pub fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            depth: 0,
            used_chars: 0,
        }
    }

    /// Charges `n` characters of output against the budget.
    pub fn charge(&mut self, n: usize) -> Result<(), ConvertError> {
        self.used_chars = self.used_chars.saturating_add(n);
        if self.used_chars > self.limits.max_output_chars {
            return Err(ConvertError::OutputTooLarge {
                limit: self.limits.max_output_chars,
            });
        }
        Ok(())
    }
}

/// Builds the sections of one document: text accumulates under the current heading path and
/// location until a heading or a location change flushes it.
pub(crate) struct Doc {
    pub out: Converted,
    headings: Vec<(usize, String)>,
    text: String,
    location: Location,
    /// Keep line structure exactly (line-located sections): no blank-line collapsing.
    keep_lines: bool,
}

impl Doc {
    pub fn new(format: Format) -> Self {
        Self {
            out: Converted::new(format),
            headings: Vec::new(),
            text: String::new(),
            location: Location::Document,
            keep_lines: false,
        }
    }

    /// Keeps blank lines as they are, so line numbers computed from the text stay right.
    pub fn keep_lines(&mut self) {
        self.keep_lines = true;
    }

    /// Appends text to the current section, charging the budget.
    pub fn push(&mut self, ctx: &mut Ctx<'_>, s: &str) -> Result<(), ConvertError> {
        ctx.charge(s.len())?;
        self.text.push_str(s);
        Ok(())
    }

    /// Appends text whose characters were already charged to the budget.
    pub fn push_charged(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Ends the current paragraph (a blank line), unless the text already ends with one.
    pub fn paragraph_break(&mut self) {
        if self.text.is_empty() || self.text.ends_with("\n\n") {
            return;
        }
        if self.text.ends_with('\n') {
            self.text.push('\n');
        } else {
            self.text.push_str("\n\n");
        }
    }

    /// Ends the current line, unless the text already ends with one.
    pub fn line_break(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Starts a heading of `level` (1 = outermost): later text sits under it.
    pub fn heading(&mut self, level: usize, title: &str) {
        self.flush();
        let title = collapse_ws(title);
        if title.is_empty() {
            return;
        }
        while self.headings.last().is_some_and(|(l, _)| *l >= level) {
            self.headings.pop();
        }
        self.headings.push((level, title));
    }

    /// Replaces the whole heading path (used where structure is flat: sheets, slides).
    pub fn set_heading_path(&mut self, path: Vec<String>) {
        self.flush();
        self.headings = path
            .into_iter()
            .enumerate()
            .map(|(i, h)| (i + 1, collapse_ws(&h)))
            .collect();
    }

    /// The current heading path.
    pub fn heading_path(&self) -> Vec<String> {
        self.headings.iter().map(|(_, h)| h.clone()).collect()
    }

    /// Flushes and sets the location of the text that follows.
    pub fn set_location(&mut self, location: Location) {
        self.flush();
        self.location = location;
    }

    /// Ends the current section, if it has any text.
    pub fn flush(&mut self) {
        let raw = std::mem::take(&mut self.text);
        let text = tidy(&raw, self.keep_lines);
        if text.trim().is_empty() {
            return;
        }
        self.out.sections.push(Section {
            heading_path: self.heading_path(),
            text,
            location: self.location.clone(),
        });
    }

    /// Adds a warning to the result.
    pub fn warn(&mut self, w: impl Into<String>) {
        self.out.warnings.push(w.into());
    }

    pub fn finish(mut self) -> Converted {
        self.flush();
        self.out
    }
}

/// Normalizes text: `\n` line ends, control characters removed, trailing spaces trimmed,
/// runs of blank lines collapsed to one (unless `keep_lines`), surrounding blank lines and
/// trailing whitespace removed (leading blank lines kept when `keep_lines`).
pub(crate) fn tidy(raw: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0usize;
    let normalized = if raw.contains('\r') {
        raw.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        raw.to_owned()
    };
    for (i, line) in normalized.split('\n').enumerate() {
        let line: String = line
            .chars()
            .filter(|c| *c == '\t' || !c.is_control())
            .map(|c| if c == '\u{a0}' { ' ' } else { c })
            .collect();
        let line = line.trim_end();
        if keep_lines {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(line);
            continue;
        }
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(line);
    }
    let trimmed_len = out.trim_end().len();
    out.truncate(trimmed_len);
    out
}

/// Collapses all whitespace runs to one space and trims.
pub(crate) fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes text bytes: strips a UTF-8 BOM, decodes UTF-16 with a BOM, else UTF-8 with invalid
/// sequences replaced by U+FFFD. Returns the text and whether anything was replaced.
pub(crate) fn decode_lossy(bytes: &[u8]) -> (String, bool) {
    if let Some((enc, _)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _, had_errors) = enc.decode(bytes);
        return (text.into_owned(), had_errors);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

/// Decodes text bytes strictly (BOM stripped); invalid UTF-8 is an error naming the offset.
pub(crate) fn decode_strict(format: Format, bytes: &[u8]) -> Result<&str, ConvertError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        ConvertError::malformed(format, format!("invalid utf-8 at byte {}", e.valid_up_to()))
    })
}

/// Saturating usize → u32 for line, page and row numbers.
pub(crate) fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_collapses_blank_lines() {
        assert_eq!(tidy("\n\n a \r\n\r\n\r\nb  \n\n", false), " a\n\nb");
    }

    #[test]
    fn tidy_keeps_lines() {
        assert_eq!(tidy("\na\n\n\nb\n", true), "\na\n\n\nb");
    }

    #[test]
    fn tidy_drops_controls() {
        assert_eq!(tidy("a\u{0}b\tc\u{7}", false), "ab\tc");
    }
}

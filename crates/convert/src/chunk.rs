//! Structure-aware chunking of a [`Converted`] document.

use crate::doc::u32_of;
use crate::{Converted, Location, Section};

/// Chunk sizes, in characters (Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Size aimed for (default 1,000 characters, about 256 tokens of English).
    pub target_chars: usize,
    /// Hard upper bound (default 2,000); always at least `target_chars` and at least 1.
    pub max_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            target_chars: 1000,
            max_chars: 2000,
        }
    }
}

/// One piece of text to index, with the headings it sits under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Headings enclosing the chunk, outermost first; attachments add their own prefix
    /// (`["Re: invoice", "attachment: a.pdf", …]`).
    pub heading_path: Vec<String>,
    /// The text: never empty, at most `max_chars` characters.
    pub text: String,
    /// Where it comes from; line and row ranges are narrowed to the chunk.
    pub location: Location,
}

/// Splits a document into chunks.
///
/// Sections are never merged: each chunk lies within one section (one heading, page, sheet,
/// slide or email part) and keeps its heading path. Within a section, a chunk ends at the last
/// paragraph break (blank line) before `target_chars`, else at the first one before
/// `max_chars`; failing that, at the last line break or whitespace in the last two thirds of
/// the target, else the first line break before `max_chars`, else the last whitespace before
/// it. Only a single word longer than `max_chars` is cut inside. The whitespace
/// at a cut is dropped; every other character of the sections appears in exactly one chunk, in
/// order (leading indentation of a chunk's first line is kept). Attachments follow the
/// document's own sections, under the attachment's heading path.
#[must_use]
pub fn chunk(doc: &Converted, options: &ChunkOptions) -> Vec<Chunk> {
    let max = options.max_chars.max(1);
    let target = options.target_chars.clamp(1, max);
    let mut out = Vec::new();
    chunk_into(doc, &[], target, max, &mut out);
    out
}

fn chunk_into(doc: &Converted, prefix: &[String], target: usize, max: usize, out: &mut Vec<Chunk>) {
    for section in &doc.sections {
        split_section(section, prefix, target, max, out);
    }
    for attachment in &doc.attachments {
        let mut path = prefix.to_vec();
        path.extend(attachment.heading_path.iter().cloned());
        chunk_into(&attachment.converted, &path, target, max, out);
    }
}

fn split_section(
    section: &Section,
    prefix: &[String],
    target: usize,
    max: usize,
    out: &mut Vec<Chunk>,
) {
    let text = section.text.as_str();
    let mut heading_path = prefix.to_vec();
    heading_path.extend(section.heading_path.iter().cloned());
    // Newlines counted so far, up to byte `counted_to`, for narrowing line locations.
    let mut counted_to = 0usize;
    let mut newlines = 0usize;
    let mut pos = 0usize;
    while let Some(rest) = text.get(pos..) {
        let Some(lead) = rest.find(|c: char| !c.is_whitespace()) else {
            break;
        };
        // Keep the indentation of a chunk that starts a line, when it is modest.
        let line_start = match rest.get(..lead).and_then(|ws| ws.rfind('\n')) {
            Some(i) => Some(i + 1),
            None if pos == 0 => Some(0),
            None => None,
        };
        let start_rel = match line_start {
            Some(ls) if lead - ls <= max / 4 => ls,
            _ => lead,
        };
        let start = pos + start_rel;
        let Some(piece_src) = text.get(start..) else {
            break;
        };
        let end_rel = split_point(piece_src, target, max);
        let piece = piece_src.get(..end_rel).unwrap_or(piece_src).trim_end();
        if !piece.trim_start().is_empty() {
            newlines += count_newlines(text.get(counted_to..start).unwrap_or(""));
            counted_to = start;
            let inner = count_newlines(piece);
            out.push(Chunk {
                heading_path: heading_path.clone(),
                text: piece.to_owned(),
                location: narrow(&section.location, newlines, inner),
            });
        }
        pos = start + end_rel.max(1);
        // `split_point` returns a char boundary > 0; guard against a non-boundary anyway.
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
}

fn count_newlines(s: &str) -> usize {
    s.bytes().filter(|b| *b == b'\n').count()
}

/// Narrows a line or row range to the chunk that starts `before` lines into the section and
/// spans `inner` more line breaks.
fn narrow(location: &Location, before: usize, inner: usize) -> Location {
    let first = u32_of(before);
    let span = u32_of(inner);
    match location {
        Location::Lines { start, end } => {
            let s = start.saturating_add(first).min(*end);
            Location::Lines {
                start: s,
                end: s.saturating_add(span).min(*end),
            }
        }
        Location::Sheet {
            sheet,
            first_row,
            last_row,
        } => {
            let s = first_row.saturating_add(first).min(*last_row);
            Location::Sheet {
                sheet: sheet.clone(),
                first_row: s,
                last_row: s.saturating_add(span).min(*last_row),
            }
        }
        other => other.clone(),
    }
}

/// Byte index (a char boundary, > 0 unless `s` is empty) where the chunk starting at `s` ends.
fn split_point(s: &str, target: usize, max: usize) -> usize {
    let Some(at_target) = char_byte(s, target) else {
        return s.len();
    };
    let at_max = char_byte(s, max).unwrap_or(s.len());
    let min = char_byte(s, target / 3).unwrap_or(0).max(1);
    let window = s.get(..at_target).unwrap_or("");
    let beyond = s.get(at_target..at_max).unwrap_or("");
    // 1. The last paragraph break within the target, else the first one before the maximum:
    //    keeping a paragraph whole beats filling the chunk.
    if let Some(p) = window.rfind("\n\n").filter(|p| *p > 0) {
        return p;
    }
    if let Some(p) = beyond.find("\n\n") {
        return at_target + p;
    }
    // 2. A line break or a space within the target, not too early.
    if let Some(p) = window.rfind('\n').filter(|p| *p >= min) {
        return p;
    }
    if let Some(p) = window.rfind(char::is_whitespace).filter(|p| *p >= min) {
        return p;
    }
    // 3. The first line break after the target, else the last whitespace before the
    //    maximum (may be early: a long word follows).
    if let Some(p) = beyond.find('\n') {
        return at_target + p;
    }
    let upto_max = s.get(..at_max).unwrap_or("");
    if let Some(p) = upto_max.rfind(char::is_whitespace).filter(|p| *p > 0) {
        return p;
    }
    // 4. One word longer than the maximum: cut it.
    at_max.max(s.chars().next().map_or(1, char::len_utf8))
}

/// Byte index of the `n`th char, or `None` when `s` has at most `n` chars.
fn char_byte(s: &str, n: usize) -> Option<usize> {
    s.char_indices().nth(n).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    fn doc_of(text: &str, location: Location) -> Converted {
        let mut c = Converted::new(Format::PlainText);
        c.sections.push(Section {
            heading_path: vec!["H".into()],
            text: text.into(),
            location,
        });
        c
    }

    #[test]
    fn splits_at_paragraphs() {
        let text = format!("{}\n\n{}", "a ".repeat(40).trim(), "b ".repeat(40).trim());
        let chunks = chunk(
            &doc_of(&text, Location::Document),
            &ChunkOptions {
                target_chars: 100,
                max_chars: 120,
            },
        );
        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].text.starts_with('a') && chunks[0].text.ends_with('a'));
        assert!(chunks[1].text.starts_with('b'));
        assert_eq!(chunks[1].heading_path, vec!["H".to_owned()]);
    }

    #[test]
    fn narrows_lines() {
        let text = "l1\nl2\n\nl4\nl5";
        let chunks = chunk(
            &doc_of(text, Location::Lines { start: 1, end: 5 }),
            &ChunkOptions {
                target_chars: 6,
                max_chars: 6,
            },
        );
        assert_eq!(chunks[0].location, Location::Lines { start: 1, end: 2 });
        assert_eq!(chunks[1].location, Location::Lines { start: 4, end: 5 });
    }

    #[test]
    fn cuts_long_words() {
        let text = "x".repeat(25);
        let chunks = chunk(
            &doc_of(&text, Location::Document),
            &ChunkOptions {
                target_chars: 10,
                max_chars: 10,
            },
        );
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 10));
    }
}

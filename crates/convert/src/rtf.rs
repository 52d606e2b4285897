//! RTF: a small control-word stripper (no well-kept RTF crate exists; `rtf-parser` targets
//! wasm and is young). Groups are tracked on an explicit stack, so deep nesting is safe.

use crate::doc::{Ctx, Doc, collapse_ws};
use crate::{ConvertError, Converted, Format};

/// Destinations whose content is not document text.
const SKIP: [&str; 34] = [
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "header",
    "headerl",
    "headerr",
    "headerf",
    "footer",
    "footerl",
    "footerr",
    "footerf",
    "listtable",
    "listoverridetable",
    "rsidtbl",
    "generator",
    "xmlnstbl",
    "themedata",
    "colorschememapping",
    "datastore",
    "latentstyles",
    "fldinst",
    "filetbl",
    "revtbl",
    "pgdsctbl",
    "bkmkstart",
    "bkmkend",
    "nonshppict",
    "mmathPr",
    "private",
    "wgrffmtfilter",
    "fftitle",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Text,
    Skip,
    Title,
    Author,
}

#[derive(Clone, Copy)]
struct Group {
    dest: Dest,
    /// Characters to skip after `\uN` (`\ucN`).
    uc: usize,
}

struct Out {
    text: String,
    title: String,
    author: String,
    /// Raw code page bytes (`\'hh`) waiting to be decoded together (multi-byte code pages).
    pending: Vec<u8>,
    encoding: &'static encoding_rs::Encoding,
}

impl Out {
    fn buffer(&mut self, dest: Dest) -> Option<&mut String> {
        match dest {
            Dest::Text => Some(&mut self.text),
            Dest::Title => Some(&mut self.title),
            Dest::Author => Some(&mut self.author),
            Dest::Skip => None,
        }
    }

    fn flush_bytes(&mut self, dest: Dest) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.pending);
        let (decoded, _, _) = self.encoding.decode(&bytes);
        let decoded = decoded.into_owned();
        if let Some(buf) = self.buffer(dest) {
            buf.push_str(&decoded);
        }
    }

    fn push(&mut self, dest: Dest, s: &str) {
        self.flush_bytes(dest);
        if let Some(buf) = self.buffer(dest) {
            buf.push_str(s);
        }
    }
}

/// Converts RTF to text: paragraphs (`\par`), line breaks, tabs, table cells and rows,
/// `\uN` Unicode and `\'hh` code page characters (`\ansicpgN`, default Windows-1252).
/// Font tables, styles, pictures, objects, headers, footers and field instructions are
/// dropped; `\title` and `\author` from the info group become title and metadata.
/// Headings are not recognised (RTF outline levels are not read).
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Rtf;
    if !bytes.starts_with(b"{\\rtf") {
        return Err(ConvertError::malformed(format, "missing `{\\rtf` header"));
    }
    let mut out = Out {
        text: String::new(),
        title: String::new(),
        author: String::new(),
        pending: Vec::new(),
        encoding: encoding_rs::WINDOWS_1252,
    };
    let mut stack: Vec<Group> = Vec::new();
    let mut group = Group {
        dest: Dest::Text,
        uc: 1,
    };
    // Characters still to skip after a `\uN`.
    let mut skip_chars = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'{' => {
                out.flush_bytes(group.dest);
                stack.push(group);
                skip_chars = 0;
            }
            b'}' => {
                out.flush_bytes(group.dest);
                if let Some(g) = stack.pop() {
                    group = g;
                }
                skip_chars = 0;
            }
            b'\r' | b'\n' => {}
            b'\\' => {
                let Some(&c) = bytes.get(i) else { break };
                if c.is_ascii_alphabetic() {
                    let start = i;
                    while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) && i - start < 32 {
                        i += 1;
                    }
                    let word =
                        std::str::from_utf8(bytes.get(start..i).unwrap_or(b"")).unwrap_or("");
                    let num_start = i;
                    if bytes.get(i) == Some(&b'-') {
                        i += 1;
                    }
                    while bytes.get(i).is_some_and(u8::is_ascii_digit) && i - num_start < 11 {
                        i += 1;
                    }
                    let param = std::str::from_utf8(bytes.get(num_start..i).unwrap_or(b""))
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok());
                    if bytes.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    control_word(word, param, &mut group, &mut out, &mut skip_chars, &mut i);
                } else {
                    i += 1;
                    match c {
                        b'\'' => {
                            let hex = bytes
                                .get(i..i + 2)
                                .and_then(|h| std::str::from_utf8(h).ok());
                            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                i += 2;
                                if skip_chars > 0 {
                                    skip_chars -= 1;
                                } else {
                                    out.pending.push(byte);
                                }
                            }
                        }
                        b'*' => group.dest = Dest::Skip,
                        b'\\' | b'{' | b'}' => {
                            emit(&mut out, group.dest, &mut skip_chars, char::from(c))
                        }
                        b'~' => emit(&mut out, group.dest, &mut skip_chars, ' '),
                        b'_' => emit(&mut out, group.dest, &mut skip_chars, '-'),
                        b'\n' | b'\r' => out.push(group.dest, "\n\n"),
                        b'\t' => out.push(group.dest, "\t"),
                        _ => {}
                    }
                }
            }
            _ => {
                if skip_chars > 0 {
                    skip_chars -= 1;
                } else if b < 0x80 {
                    emit(&mut out, group.dest, &mut skip_chars, char::from(b));
                } else {
                    out.pending.push(b);
                }
            }
        }
    }
    out.flush_bytes(group.dest);
    let mut doc = Doc::new(format);
    let title = collapse_ws(&out.title);
    if !title.is_empty() {
        doc.out.title = Some(title);
    }
    let author = collapse_ws(&out.author);
    if !author.is_empty() {
        doc.out.metadata.insert("author".to_owned(), author);
    }
    doc.push(ctx, &out.text)?;
    Ok(doc.finish())
}

fn emit(out: &mut Out, dest: Dest, skip_chars: &mut usize, c: char) {
    if *skip_chars > 0 {
        *skip_chars -= 1;
        return;
    }
    let mut buf = [0u8; 4];
    out.push(dest, c.encode_utf8(&mut buf));
}

fn control_word(
    word: &str,
    param: Option<i64>,
    group: &mut Group,
    out: &mut Out,
    skip_chars: &mut usize,
    pos: &mut usize,
) {
    let dest = group.dest;
    match word {
        "par" | "sect" | "page" => out.push(dest, "\n\n"),
        "line" => out.push(dest, "\n"),
        "tab" | "cell" => out.push(dest, "\t"),
        "row" => out.push(dest, "\n"),
        "emdash" => out.push(dest, "\u{2014}"),
        "endash" => out.push(dest, "\u{2013}"),
        "bullet" => out.push(dest, "\u{2022}"),
        "lquote" => out.push(dest, "\u{2018}"),
        "rquote" => out.push(dest, "\u{2019}"),
        "ldblquote" => out.push(dest, "\u{201C}"),
        "rdblquote" => out.push(dest, "\u{201D}"),
        "emspace" | "enspace" | "qmspace" => out.push(dest, " "),
        "u" => {
            if let Some(n) = param {
                let code = if n < 0 { n + 65536 } else { n };
                let c = u32::try_from(code)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.push(dest, c.encode_utf8(&mut buf));
                *skip_chars = group.uc;
            }
        }
        "uc" => {
            group.uc = param
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
                .min(8)
        }
        "ansicpg" => {
            if let Some(n) = param
                && let Some(enc) = encoding_rs::Encoding::for_label(format!("cp{n}").as_bytes())
                    .or_else(|| encoding_rs::Encoding::for_label(format!("windows-{n}").as_bytes()))
            {
                out.encoding = enc;
            }
        }
        "bin" => {
            // Binary data follows: skip it without interpreting.
            let n = param.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
            *pos = pos.saturating_add(n);
        }
        "title" => group.dest = Dest::Title,
        "author" => group.dest = Dest::Author,
        w if SKIP.contains(&w) => group.dest = Dest::Skip,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn text(rtf: &str) -> String {
        let limits = Limits::default();
        let mut ctx = Ctx::new(&limits);
        let c = convert(rtf.as_bytes(), &mut ctx).unwrap_or_else(|_| Converted::new(Format::Rtf));
        c.sections
            .iter()
            .map(|s| s.text.clone())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn strips_tables_and_escapes() {
        let rtf = r"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}{\info{\title T}}\f0 Caf\'e9 \u8364? x\par {\*\foo hidden}Next\{\}}";
        assert_eq!(text(rtf), "Caf\u{e9} \u{20ac} x\n\nNext{}");
    }

    #[test]
    fn title_from_info() {
        let limits = Limits::default();
        let mut ctx = Ctx::new(&limits);
        let c = convert(br"{\rtf1{\info{\title My doc}{\author Ann}}Body}", &mut ctx);
        let c = c.ok();
        assert_eq!(
            c.as_ref().and_then(|c| c.title.clone()).as_deref(),
            Some("My doc")
        );
    }

    #[test]
    fn unbalanced_and_truncated() {
        assert_eq!(text(r"{\rtf1 a}}}} b\"), "a b");
        assert_eq!(text(r"{\rtf1 {{{{x\'4"), "x4");
    }
}

//! Format detection: magic bytes first, then the file extension, then a look at the text.

use std::io::Cursor;
use std::path::Path;

use crate::Format;
use crate::code::language_for_extension;

/// Detects the format of `bytes`, using `path` (its extension) as a hint.
///
/// Magic bytes win over the extension (a PDF named `.txt` is a PDF); zip containers are told
/// apart by their entries. Without a telling signature the extension decides; without a known
/// extension, text that looks like HTML, XML, an email, a man page or an RTF file is
/// recognised, other valid text is [`Format::PlainText`], and binary data is
/// [`Format::Unknown`].
#[must_use]
pub fn detect(path: Option<&Path>, bytes: &[u8]) -> Format {
    let ext = path
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let ext = ext.as_deref();

    if bytes.starts_with(b"%PDF-") {
        return Format::Pdf;
    }
    if bytes.starts_with(b"{\\rtf") {
        return Format::Rtf;
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return detect_zip(bytes)
            .or_else(|| ext.and_then(by_extension))
            .unwrap_or(Format::Unknown);
    }
    if bytes.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        // OLE compound files (.doc, .xls, .ppt, .msg) are not supported.
        return Format::Unknown;
    }
    if let Some(f) = ext.and_then(by_extension) {
        return f;
    }
    sniff_text(bytes)
}

fn by_extension(ext: &str) -> Option<Format> {
    let f = match ext {
        "md" | "markdown" | "mdown" | "mkd" | "mdx" => Format::Markdown,
        "txt" | "text" | "log" | "rst" | "adoc" | "org" => Format::PlainText,
        "html" | "htm" | "xhtml" => Format::Html,
        "pdf" => Format::Pdf,
        "docx" | "docm" => Format::Docx,
        "pptx" | "pptm" => Format::Pptx,
        "odt" => Format::Odt,
        "xlsx" | "xlsm" => Format::Xlsx,
        "ods" => Format::Ods,
        "csv" => Format::Csv,
        "tsv" | "tab" => Format::Tsv,
        "json" | "geojson" => Format::Json,
        "yaml" | "yml" => Format::Yaml,
        "toml" => Format::Toml,
        "xml" | "svg" | "xsd" | "xsl" | "xslt" | "rss" | "atom" | "plist" => Format::Xml,
        "eml" => Format::Eml,
        "mbox" | "mbx" => Format::Mbox,
        "rtf" => Format::Rtf,
        "man" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "1p" | "3p" | "n" => {
            Format::Man
        }
        other if language_for_extension(other).is_some() => Format::SourceCode,
        _ => return None,
    };
    Some(f)
}

/// Tells the office zip formats apart by their entries.
fn detect_zip(bytes: &[u8]) -> Option<Format> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(std::borrow::Cow::into_owned)
        .collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("word/document.xml") {
        return Some(Format::Docx);
    }
    if has("ppt/presentation.xml") {
        return Some(Format::Pptx);
    }
    if has("xl/workbook.xml") || has("xl/workbook.bin") {
        return Some(Format::Xlsx);
    }
    if has("mimetype") {
        let mut entry = archive.by_name("mimetype").ok()?;
        let mut mime = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(&mut entry, 200), &mut mime).ok()?;
        return match mime.trim() {
            "application/vnd.oasis.opendocument.text" => Some(Format::Odt),
            "application/vnd.oasis.opendocument.spreadsheet" => Some(Format::Ods),
            _ => None,
        };
    }
    None
}

/// Looks at the start of text without a known extension.
fn sniff_text(bytes: &[u8]) -> Format {
    let head = bytes.get(..8192).unwrap_or(bytes);
    if head.contains(&0) && !head.starts_with(b"\xFF\xFE") && !head.starts_with(b"\xFE\xFF") {
        return Format::Unknown;
    }
    let text = String::from_utf8_lossy(head);
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let lower: String = start
        .chars()
        .take(200)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        return Format::Html;
    }
    if lower.starts_with("<?xml") {
        return if lower.contains("<html") {
            Format::Html
        } else {
            Format::Xml
        };
    }
    if start.starts_with("From ") && looks_like_headers(start.lines().skip(1)) {
        return Format::Mbox;
    }
    if looks_like_headers(start.lines()) {
        return Format::Eml;
    }
    if start.starts_with(".TH ") || start.starts_with(".\\\"") || start.starts_with("'\\\"") {
        return Format::Man;
    }
    if std::str::from_utf8(bytes).is_ok() || text.chars().filter(|c| *c == '\u{fffd}').count() < 8 {
        return Format::PlainText;
    }
    Format::Unknown
}

/// True when the first lines are RFC 5322 headers including a typical email header.
fn looks_like_headers<'a>(mut lines: impl Iterator<Item = &'a str>) -> bool {
    const TYPICAL: [&str; 8] = [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "received",
        "return-path",
        "mime-version",
    ];
    let mut typical = 0;
    for _ in 0..4 {
        let Some(line) = lines.next() else { break };
        if line.trim().is_empty() {
            break;
        }
        let Some((name, _)) = line.split_once(':') else {
            return false;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        if TYPICAL.contains(&name.to_ascii_lowercase().as_str()) {
            typical += 1;
        }
    }
    typical >= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_beats_extension() {
        assert_eq!(detect(Some(Path::new("a.txt")), b"%PDF-1.7\n"), Format::Pdf);
    }

    #[test]
    fn extensions() {
        assert_eq!(detect(Some(Path::new("a.MD")), b"x"), Format::Markdown);
        assert_eq!(detect(Some(Path::new("main.rs")), b"x"), Format::SourceCode);
        assert_eq!(detect(Some(Path::new("ls.1")), b"x"), Format::Man);
    }

    #[test]
    fn sniffing() {
        assert_eq!(detect(None, b"<!DOCTYPE html><p>x"), Format::Html);
        assert_eq!(detect(None, b"From: a@b\nSubject: hi\n\nbody"), Format::Eml);
        assert_eq!(
            detect(None, b"From a@b Mon Jan 1 00:00:00 2024\nFrom: a@b\n\nx"),
            Format::Mbox
        );
        assert_eq!(detect(None, b"Just some text: really"), Format::PlainText);
        assert_eq!(detect(None, b"\x00\x01\x02binary"), Format::Unknown);
        assert_eq!(detect(None, b".TH LS 1\n.SH NAME\n"), Format::Man);
    }
}

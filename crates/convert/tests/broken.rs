//! Broken and hostile input: every case is a clear one-line error or a documented graceful
//! result, never a panic, and memory stays bounded.

#![cfg(test)]

mod common;

use p3ak_convert::{ChunkOptions, ConvertError, Format, Input, Limits, chunk, convert};

const ALL: [Format; 20] = [
    Format::Markdown,
    Format::PlainText,
    Format::Html,
    Format::Pdf,
    Format::Docx,
    Format::Pptx,
    Format::Odt,
    Format::Xlsx,
    Format::Ods,
    Format::Csv,
    Format::Tsv,
    Format::Json,
    Format::Yaml,
    Format::Toml,
    Format::Xml,
    Format::Eml,
    Format::Mbox,
    Format::Rtf,
    Format::SourceCode,
    Format::Man,
];

fn forced(bytes: &[u8], format: Format) -> Result<p3ak_convert::Converted, ConvertError> {
    convert(&Input::new(bytes).with_format(format), &Limits::default())
}

/// One line, starts lowercase (or with a format name / backtick), no trailing period.
fn assert_message(e: &ConvertError) {
    let m = e.to_string();
    assert!(!m.contains('\n'), "multi-line: {m:?}");
    assert!(!m.ends_with('.'), "trailing period: {m:?}");
    let first = m.chars().next().unwrap();
    assert!(!first.is_uppercase(), "capitalised: {m:?}");
    assert!(
        !matches!(e, ConvertError::ParserPanic { .. }),
        "a parser panicked: {m}"
    );
}

#[test]
fn empty_input_is_an_error_for_every_format() {
    for format in ALL {
        let e = forced(b"", format).unwrap_err();
        assert_eq!(e, ConvertError::Empty);
        assert_eq!(e.to_string(), "empty input");
    }
}

#[test]
fn garbage_never_panics() {
    let samples: [&[u8]; 5] = [
        b"\x00\x01\x02\x03\xff\xfe garbage",
        b"PK\x03\x04 not really a zip",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        b"{\\rtf1 {{{{{{{{{{ \\u-99999999999 \\bin999999999999",
        b"<a><b></a></c>&bogus; &#0; &#xFFFFFFFF;",
    ];
    for bytes in samples {
        for format in ALL {
            if let Err(e) = forced(bytes, format) {
                assert_message(&e);
            }
        }
    }
}

#[test]
fn truncated_pdf_is_an_error() {
    let pdf = common::pdf(&["Some text on page one", "and page two"]);
    let e = forced(&pdf[..pdf.len() / 2], Format::Pdf).unwrap_err();
    assert!(
        matches!(
            e,
            ConvertError::Malformed {
                format: Format::Pdf,
                ..
            }
        ),
        "{e:?}"
    );
    assert_message(&e);
    // Any cut: an error or partial text, never a panic.
    for cut in (1..pdf.len()).step_by(37) {
        if let Err(e) = forced(&pdf[..cut], Format::Pdf) {
            assert_message(&e);
        }
    }
}

#[test]
fn zip_bomb_docx_is_refused_before_inflating() {
    // 8 MiB of one repeated paragraph deflates about a thousandfold.
    let body = common::para(None, "a").repeat((8 << 20) / 60);
    let bomb = common::docx(&body);
    assert!(bomb.len() < 200_000, "compressed to {}", bomb.len());
    let e = forced(&bomb, Format::Docx).unwrap_err();
    assert!(matches!(e, ConvertError::ZipRatio { .. }), "{e:?}");
    assert_message(&e);
    // Same file, total size limit below its declared size.
    let small = Limits {
        max_zip_uncompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = convert(&Input::new(&bomb).with_format(Format::Docx), &small).unwrap_err();
    assert_eq!(e, ConvertError::ZipTooLarge { limit: 1 << 20 });
    assert_eq!(
        e.to_string(),
        "zip archive inflates past the limit of 1048576 bytes"
    );
}

#[test]
fn zip_entry_count_is_limited() {
    let docx = common::docx(&common::para(None, "x"));
    let limits = Limits {
        max_zip_entries: 2,
        ..Limits::default()
    };
    let e = convert(&Input::new(&docx), &limits).unwrap_err();
    assert_eq!(e, ConvertError::ZipTooManyEntries { count: 4, limit: 2 });
}

#[test]
fn docx_without_document_part() {
    let zip = common::zip_of(&[("word/styles.xml", b"<w:styles/>")]);
    let e = forced(&zip, Format::Docx).unwrap_err();
    assert_eq!(e.to_string(), "invalid docx: missing `word/document.xml`");
}

#[test]
fn invalid_utf8_replaced_in_text_refused_in_data() {
    let bytes = b"caf\xe9 ol\xff\n";
    let c = forced(bytes, Format::PlainText).unwrap();
    assert_eq!(c.sections[0].text, "caf\u{fffd} ol\u{fffd}");
    assert_eq!(c.warnings, vec!["invalid utf-8 replaced".to_owned()]);
    for format in [Format::Json, Format::Yaml, Format::Toml] {
        let e = forced(b"{\"a\": \"\xe9\"}", format).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid {format}: invalid utf-8 at byte 7")
        );
    }
}

#[test]
fn utf16_text_with_bom() {
    let mut bytes = vec![0xFF, 0xFE];
    for u in "h\u{e9}llo".encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    let c = forced(&bytes, Format::PlainText).unwrap();
    assert_eq!(c.sections[0].text, "h\u{e9}llo");
}

#[test]
fn huge_single_line_is_split() {
    let line = "x".repeat(3_000_000);
    let c = forced(line.as_bytes(), Format::PlainText).unwrap();
    let opts = ChunkOptions::default();
    let chunks = chunk(&c, &opts);
    assert_eq!(chunks.len(), 1500);
    assert!(
        chunks
            .iter()
            .all(|ch| ch.text.chars().count() <= opts.max_chars)
    );
    let words = "word ".repeat(600_000);
    let c = forced(words.as_bytes(), Format::Markdown).unwrap();
    let chunks = chunk(&c, &opts);
    assert!(
        chunks
            .iter()
            .all(|ch| ch.text.chars().count() <= opts.target_chars)
    );
    for ch in &chunks {
        assert!(
            ch.text.starts_with("word") && ch.text.ends_with("word"),
            "{:?}",
            &ch.text[..20]
        );
    }
}

#[test]
fn size_limits() {
    let limits = Limits {
        max_input_bytes: 10,
        max_output_chars: 5,
        ..Limits::default()
    };
    let e = convert(&Input::new(b"0123456789ab"), &limits).unwrap_err();
    assert_eq!(e.to_string(), "input is 12 bytes, over the limit of 10");
    let e = convert(&Input::new(b"abcdefgh"), &limits).unwrap_err();
    assert_eq!(
        e.to_string(),
        "text output exceeds the limit of 5 characters"
    );
}

#[test]
fn malformed_eml_and_mbox() {
    let e = forced(b"\x00\x01 this is not an email at all", Format::Eml).unwrap_err();
    assert_eq!(e.to_string(), "invalid eml: no email headers found");
    let e = forced(b"Subject: x\n\nno From line", Format::Mbox).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid mbox: does not start with a `From ` line"
    );
}

/// An email that carries an email that carries … `levels` deep.
fn nested_email(levels: usize) -> String {
    if levels == 0 {
        return "From: leaf@example.com\r\nSubject: leaf\r\n\r\nleaf body\r\n".to_owned();
    }
    let inner = nested_email(levels - 1);
    format!(
        "From: l{levels}@example.com\r\nSubject: level {levels}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B{levels}\"\r\n\r\n--B{levels}\r\nContent-Type: text/plain\r\n\r\nbody {levels}\r\n--B{levels}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"inner{levels}.eml\"\r\n\r\n{inner}\r\n--B{levels}--\r\n"
    )
}

#[test]
fn attachments_past_the_depth_limit_are_skipped() {
    let mail = nested_email(7);
    let c = forced(mail.as_bytes(), Format::Eml).unwrap();
    let mut depth = 0;
    let mut node = &c;
    while let Some(a) = node.attachments.first() {
        depth += 1;
        node = &a.converted;
    }
    assert_eq!(depth, Limits::default().max_depth);
    assert!(
        node.warnings
            .iter()
            .any(|w| w.contains("nested deeper than 4 levels")),
        "{:?}",
        node.warnings
    );
    let chunks = chunk(&c, &ChunkOptions::default());
    let deepest = chunks.iter().find(|ch| ch.text == "body 3").unwrap();
    assert_eq!(deepest.heading_path.len(), 9, "{:?}", deepest.heading_path);
    assert_eq!(deepest.heading_path[1], "attachment: inner7.eml");
}

#[test]
fn sparse_xlsx_does_not_allocate_the_whole_grid() {
    // A1 and XFD1048576: a dense range would be 17 billion cells.
    let sheet = r#"<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>first</t></is></c></row><row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>last</t></is></c></row></sheetData></worksheet>"#;
    let mut bytes = common::xlsx(&[("S", vec![vec!["x"]])]);
    // Rebuild with the sparse sheet in place of sheet1.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).unwrap();
        let name = f.name().unwrap().into_owned();
        if name == "xl/worksheets/sheet1.xml" {
            data = sheet.as_bytes().to_vec();
        }
        entries.push((name, data));
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    bytes = common::zip_of(&refs);
    let c = forced(&bytes, Format::Xlsx).unwrap();
    let text: Vec<&str> = c.sections.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(text, vec!["first", "last"]);
}

#[test]
fn deep_nesting_in_data_formats() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_message(&forced(deep_json.as_bytes(), Format::Json).unwrap_err());
    let deep_toml = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_message(&forced(deep_toml.as_bytes(), Format::Toml).unwrap_err());
    let deep_yaml = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_message(&forced(deep_yaml.as_bytes(), Format::Yaml).unwrap_err());
    let deep_html = "<div>".repeat(200_000);
    let e = forced(deep_html.as_bytes(), Format::Html).unwrap_err();
    assert_eq!(e.to_string(), "invalid html: elements nest deeper than 512");
    let many_items = "<ul><li>item".repeat(100).replace("<ul>", "") + &"<p>para".repeat(10_000);
    forced(many_items.as_bytes(), Format::Html).unwrap();
    let deep_xml = format!("{}x{}", "<a>".repeat(200_000), "</a>".repeat(200_000));
    forced(deep_xml.as_bytes(), Format::Xml).unwrap();
}

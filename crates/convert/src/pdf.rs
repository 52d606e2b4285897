//! PDF via lopdf: the text layer, one section per page, and the Info dictionary.

use lopdf::{Document, Object};

use crate::doc::{Ctx, Doc};
use crate::{ConvertError, Converted, Format, Location};

/// Info dictionary keys kept as metadata.
const INFO: [(&[u8], &str); 7] = [
    (b"Author", "author"),
    (b"Subject", "subject"),
    (b"Keywords", "keywords"),
    (b"Creator", "creator"),
    (b"Producer", "producer"),
    (b"CreationDate", "created"),
    (b"ModDate", "modified"),
];

/// Converts a PDF's text layer. A page whose text cannot be extracted (an unsupported font
/// encoding, content over [`crate::Limits::max_pdf_page_bytes`]) is skipped with a warning;
/// a document with no text at all (scanned images) converts to no sections and a warning.
/// Encrypted files open only when the empty user password works.
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Pdf;
    let pdf = Document::load_mem(bytes)
        .map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
    if pdf.is_encrypted() && !pdf.was_encrypted() {
        return Err(ConvertError::Encrypted { format });
    }
    let mut doc = Doc::new(format);
    read_info(&pdf, &mut doc.out);
    let pages = pdf.get_pages();
    doc.out
        .metadata
        .insert("pages".to_owned(), pages.len().to_string());
    let limit = ctx.limits.max_pdf_page_bytes;
    let mut failed = 0usize;
    for &number in pages.keys() {
        match pdf.extract_text_with_limit(&[number], limit) {
            Ok(text) => {
                doc.set_location(Location::Page { page: number });
                doc.push(ctx, &text)?;
                doc.flush();
            }
            Err(e) => {
                failed += 1;
                if failed <= 20 {
                    doc.warn(format!(
                        "page {number}: {}",
                        crate::one_line(&e.to_string().to_lowercase())
                    ));
                }
            }
        }
    }
    if failed > 20 {
        doc.warn(format!("{failed} pages without readable text in all"));
    }
    let out = doc.finish();
    let mut out = out;
    if out.sections.is_empty() {
        out.warnings
            .push("no text found (scanned or image-only pdf?)".to_owned());
    }
    Ok(out)
}

fn read_info(pdf: &Document, out: &mut Converted) {
    let Ok(info) = pdf
        .trailer
        .get(b"Info")
        .and_then(|o| pdf.dereference(o))
        .and_then(|(_, o)| o.as_dict())
    else {
        return;
    };
    let text = |key: &[u8]| -> Option<String> {
        let (_, obj) = pdf.dereference(info.get(key).ok()?).ok()?;
        let s = match obj {
            Object::String(b, _) => decode_text_string(b),
            Object::Name(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return None,
        };
        let s = crate::doc::collapse_ws(&s);
        (!s.is_empty()).then_some(s)
    };
    out.title = text(b"Title");
    for (key, name) in INFO {
        if let Some(v) = text(key) {
            out.metadata.insert(name.to_owned(), v);
        }
    }
}

/// PDF text strings: UTF-16BE with a BOM, UTF-8 with a BOM, else PDFDocEncoding (read as
/// Latin-1, which matches it for letters).
fn decode_text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| {
                u16::from_be_bytes([
                    p.first().copied().unwrap_or(0),
                    p.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8_lossy(rest).into_owned();
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

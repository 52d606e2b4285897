//! CSV and TSV via the csv crate: one line per record, fields tab-separated.

use crate::doc::{Ctx, Doc, u32_of};
use crate::{ConvertError, Converted, Format, Location};

/// Converts delimited text. Records may have different lengths; quoted newlines inside a field
/// become spaces, so line N of the section is record N (the header is record 1). Invalid
/// UTF-8 in a field is replaced, with a warning. The first record is also stored as the
/// `columns` metadata.
pub(crate) fn convert(
    format: Format,
    delimiter: u8,
    bytes: &[u8],
    ctx: &mut Ctx<'_>,
) -> Result<Converted, ConvertError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let mut doc = Doc::new(format);
    doc.keep_lines();
    let mut text = String::new();
    let mut lossy = false;
    let mut records = 0usize;
    for record in reader.byte_records() {
        let record =
            record.map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
        let fields: Vec<String> = record
            .iter()
            .map(|f| {
                let s = match std::str::from_utf8(f) {
                    Ok(s) => s.to_owned(),
                    Err(_) => {
                        lossy = true;
                        String::from_utf8_lossy(f).into_owned()
                    }
                };
                s.replace(['\t', '\n', '\r'], " ").trim().to_owned()
            })
            .collect();
        if records == 0 {
            doc.out
                .metadata
                .insert("columns".to_owned(), fields.join("\t"));
        }
        if records > 0 {
            text.push('\n');
        }
        let line = fields.join("\t");
        ctx.charge(line.len() + 1)?;
        text.push_str(line.trim_end());
        records += 1;
    }
    doc.out
        .metadata
        .insert("records".to_owned(), records.to_string());
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    doc.set_location(Location::Lines {
        start: 1,
        end: u32_of(records.max(1)),
    });
    doc.push_charged(&text);
    let out = doc.finish();
    Ok(out)
}

//! Plain text: decoded lossily, kept line for line.

use crate::doc::{Ctx, Doc, decode_lossy, u32_of};
use crate::{ConvertError, Converted, Format, Location};

/// Converts plain text into one line-located section. Invalid UTF-8 is replaced with U+FFFD
/// and a warning; UTF-16 with a BOM is decoded.
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let (text, lossy) = decode_lossy(bytes);
    let mut doc = Doc::new(Format::PlainText);
    lines_section(&mut doc, ctx, &text)?;
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    Ok(doc.finish())
}

/// Pushes `text` as one section located at its lines.
pub(crate) fn lines_section(
    doc: &mut Doc,
    ctx: &mut Ctx<'_>,
    text: &str,
) -> Result<(), ConvertError> {
    doc.keep_lines();
    let lines = text.lines().count().max(1);
    doc.set_location(Location::Lines {
        start: 1,
        end: u32_of(lines),
    });
    doc.push(ctx, text)?;
    doc.flush();
    Ok(())
}

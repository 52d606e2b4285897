//! Spreadsheets: one section per sheet, one tab-separated line per row.
//!
//! XLSX is read with calamine's streaming cell reader (never its dense `Range`, which a
//! two-cell sheet spanning A1:XFD1048576 would blow up); ODS `content.xml` is read directly
//! with quick-xml, repeated rows and cells expanded only when they hold text.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};

use crate::doc::{Ctx, Doc};
use crate::xml::{XmlEvent, attr, walk};
use crate::{ConvertError, Converted, Format, Location, zipsafe};

/// Most cells taken from one ODS row repeat (`number-columns-repeated`) holding text.
const MAX_REPEAT: usize = 1024;

pub(crate) fn convert(
    format: Format,
    bytes: &[u8],
    ctx: &mut Ctx<'_>,
) -> Result<Converted, ConvertError> {
    match format {
        Format::Ods => ods(bytes, ctx),
        _ => xlsx(bytes, ctx),
    }
}

/// Accumulates rows of one sheet: empty rows inside the used area are kept as empty lines,
/// so line N of the section is row `first_row + N - 1`.
struct SheetText {
    name: String,
    text: String,
    first_row: Option<u32>,
    last_row: u32,
}

impl SheetText {
    fn new(name: String) -> Self {
        Self {
            name,
            text: String::new(),
            first_row: None,
            last_row: 0,
        }
    }

    /// Adds row `row` (1-based) made of `cells`; skips it when empty. Returns `false` (and
    /// adds nothing) when more than 1,000 empty rows separate it from the previous row: the
    /// caller then starts a new section, so that line N of a section stays row
    /// `first_row + N - 1` without a flood of empty lines.
    fn row(&mut self, ctx: &mut Ctx<'_>, row: u32, cells: &[String]) -> Result<bool, ConvertError> {
        let len = cells
            .iter()
            .rposition(|c| !c.trim().is_empty())
            .map_or(0, |i| i + 1);
        let Some(cells) = cells.get(..len).filter(|c| !c.is_empty()) else {
            return Ok(true);
        };
        if self.first_row.is_some() {
            let gap = row.saturating_sub(self.last_row);
            if gap > 1000 {
                return Ok(false);
            }
            let gap = gap.max(1) as usize;
            ctx.charge(gap)?;
            self.text.extend(std::iter::repeat_n('\n', gap));
        } else {
            self.first_row = Some(row);
        }
        let line = cells
            .iter()
            .map(|c| c.replace(['\t', '\n', '\r'], " "))
            .collect::<Vec<_>>()
            .join("\t");
        ctx.charge(line.len())?;
        self.text.push_str(&line);
        self.last_row = row;
        Ok(true)
    }

    fn finish(self, doc: &mut Doc, ctx: &mut Ctx<'_>) -> Result<(), ConvertError> {
        let Some(first_row) = self.first_row else {
            return Ok(());
        };
        doc.set_heading_path(vec![self.name.clone()]);
        doc.set_location(Location::Sheet {
            sheet: self.name,
            first_row,
            last_row: self.last_row,
        });
        doc.push(ctx, &self.text)?;
        doc.flush();
        Ok(())
    }
}

/// Adds a row, splitting the sheet into a new section when empty rows leave a large gap.
fn add_row(
    sheet: &mut SheetText,
    doc: &mut Doc,
    ctx: &mut Ctx<'_>,
    row: u32,
    cells: &[String],
) -> Result<(), ConvertError> {
    if !sheet.row(ctx, row, cells)? {
        let name = sheet.name.clone();
        let done = std::mem::replace(sheet, SheetText::new(name));
        done.finish(doc, ctx)?;
        sheet.row(ctx, row, cells)?;
    }
    Ok(())
}

fn xlsx(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Xlsx;
    zipsafe::check(format, bytes, ctx.limits)?;
    let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes))
        .map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
    let mut doc = Doc::new(format);
    doc.keep_lines();
    let names = workbook.sheet_names();
    doc.out
        .metadata
        .insert("sheets".to_owned(), names.len().to_string());
    for name in names {
        let mut reader = workbook
            .worksheet_cells_reader(&name)
            .map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
        let mut sheet = SheetText::new(name.clone());
        let mut current_row: Option<u32> = None;
        let mut cells: Vec<(u32, String)> = Vec::new();
        loop {
            let cell = reader
                .next_cell()
                .map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
            let Some(cell) = cell else { break };
            let (row, col) = cell.get_position();
            if current_row != Some(row) {
                if let Some(r) = current_row {
                    let line = row_cells(&mut cells);
                    add_row(&mut sheet, &mut doc, ctx, r.saturating_add(1), &line)?;
                }
                current_row = Some(row);
            }
            let value = Data::from(cell.get_value().clone()).to_string();
            if !value.is_empty() {
                ctx.charge(value.len())?;
                cells.push((col, value));
            }
        }
        if let Some(r) = current_row {
            let line = row_cells(&mut cells);
            add_row(&mut sheet, &mut doc, ctx, r.saturating_add(1), &line)?;
        }
        sheet.finish(&mut doc, ctx)?;
    }
    Ok(doc.finish())
}

/// Orders a row's non-empty cells by column, leaving empty strings for gaps (capped at
/// `MAX_REPEAT` gaps so a far-right cell cannot create thousands of tabs).
fn row_cells(cells: &mut Vec<(u32, String)>) -> Vec<String> {
    cells.sort_by_key(|(c, _)| *c);
    let mut out = Vec::with_capacity(cells.len());
    let mut next = cells.first().map_or(0, |(c, _)| *c);
    for (col, value) in cells.drain(..) {
        let gap = (col.saturating_sub(next) as usize).min(MAX_REPEAT);
        out.extend(std::iter::repeat_n(String::new(), gap));
        out.push(value);
        next = col.saturating_add(1);
    }
    out
}

fn ods(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Ods;
    let mut zip = zipsafe::open(format, bytes, ctx.limits)?;
    let content = zip.require_text("content.xml")?;
    let mut doc = Doc::new(format);
    doc.keep_lines();
    let mut sheets = 0usize;
    let mut sheet: Option<SheetText> = None;
    let mut row_number = 0u32;
    let mut row_repeat = 1u32;
    let mut cells: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut cell_repeat = 1usize;
    let mut in_cell = false;
    let mut para_depth = 0usize;
    let mut skip_depth = 0usize;
    walk(format, &content, |ev| {
        match ev {
            XmlEvent::Open { name, element } => {
                if skip_depth > 0 {
                    skip_depth += 1;
                    return Ok(());
                }
                match name {
                    "table" => {
                        sheets += 1;
                        let name =
                            attr(element, "name").unwrap_or_else(|| format!("Sheet{sheets}"));
                        sheet = Some(SheetText::new(name));
                        row_number = 0;
                    }
                    "table-row" => {
                        cells.clear();
                        row_repeat = attr(element, "number-rows-repeated")
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(1)
                            .max(1);
                    }
                    "table-cell" | "covered-table-cell" => {
                        in_cell = true;
                        cell.clear();
                        cell_repeat = attr(element, "number-columns-repeated")
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(1)
                            .max(1);
                    }
                    "annotation" => skip_depth = 1,
                    "p" if in_cell => {
                        if para_depth == 0 && !cell.is_empty() {
                            cell.push(' ');
                        }
                        para_depth += 1;
                    }
                    "s" if in_cell => cell.push(' '),
                    "tab" if in_cell => cell.push(' '),
                    _ => {}
                }
            }
            XmlEvent::Close { name } => {
                if skip_depth > 0 {
                    skip_depth -= 1;
                    return Ok(());
                }
                match name {
                    "p" => para_depth = para_depth.saturating_sub(1),
                    "table-cell" | "covered-table-cell" => {
                        in_cell = false;
                        let value = std::mem::take(&mut cell);
                        let n = cell_repeat.min(MAX_REPEAT);
                        if cells.len() < 16_384 {
                            cells.extend(std::iter::repeat_n(value, n));
                        }
                    }
                    "table-row" => {
                        let has_text = cells.iter().any(|c| !c.trim().is_empty());
                        if has_text && let Some(s) = sheet.as_mut() {
                            // Repeated rows with text are expanded, up to MAX_REPEAT.
                            for _ in 0..row_repeat.min(MAX_REPEAT as u32) {
                                row_number = row_number.saturating_add(1);
                                add_row(s, &mut doc, ctx, row_number, &cells)?;
                            }
                            row_number = row_number
                                .saturating_add(row_repeat.saturating_sub(MAX_REPEAT as u32));
                        } else {
                            row_number = row_number.saturating_add(row_repeat);
                        }
                        cells.clear();
                    }
                    "table" => {
                        if let Some(s) = sheet.take() {
                            s.finish(&mut doc, ctx)?;
                        }
                    }
                    _ => {}
                }
            }
            XmlEvent::Text(t) => {
                if in_cell && para_depth > 0 {
                    cell.push_str(&t);
                }
            }
        }
        Ok(())
    })?;
    doc.out
        .metadata
        .insert("sheets".to_owned(), sheets.to_string());
    Ok(doc.finish())
}

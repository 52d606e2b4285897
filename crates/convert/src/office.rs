//! Office text formats read from their zip + XML parts: DOCX, PPTX, ODT.

use std::collections::{BTreeMap, HashMap};

use crate::doc::{Ctx, Doc, collapse_ws, u32_of};
use crate::xml::{XmlEvent, attr, walk};
use crate::zipsafe::{self, SafeZip};
use crate::{ConvertError, Converted, Format, Location};

/// DOCX: `word/document.xml` paragraphs, heading styles (by style name `heading N`, outline
/// level, or a `HeadingN` style id) as heading paths, tables as tab-separated rows, metadata
/// from `docProps/core.xml`. Headers, footers, footnotes, comments and images are dropped.
pub(crate) fn docx(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Docx;
    let mut zip = zipsafe::open(format, bytes, ctx.limits)?;
    let styles = match zip.read_text("word/styles.xml")? {
        Some(xml) => docx_styles(&xml)?,
        None => HashMap::new(),
    };
    let body = zip.require_text("word/document.xml")?;
    let mut doc = Doc::new(format);
    core_properties(&mut zip, "docProps/core.xml", &mut doc.out)?;

    let mut para = String::new();
    let mut para_level: Option<usize> = None;
    let mut in_text = false;
    let mut in_ppr = false;
    let mut table_depth = 0usize;
    let mut row: Vec<String> = Vec::new();
    let mut cell = String::new();
    // Paragraphs interrupted by a nested one (text boxes live inside a run).
    let mut outer: Vec<(String, Option<usize>)> = Vec::new();
    let mut para_depth = 0usize;
    // Inside `mc:Fallback`: a duplicate of the `mc:Choice` content.
    let mut fallback_depth = 0usize;
    walk(format, &body, |ev| {
        if fallback_depth > 0 {
            match ev {
                XmlEvent::Open { .. } => fallback_depth += 1,
                XmlEvent::Close { .. } => fallback_depth -= 1,
                XmlEvent::Text(_) => {}
            }
            return Ok(());
        }
        match ev {
            XmlEvent::Open { name, element } => match name {
                "Fallback" => fallback_depth = 1,
                "p" => {
                    if para_depth > 0 {
                        outer.push((std::mem::take(&mut para), para_level));
                    }
                    para_depth += 1;
                    para.clear();
                    para_level = None;
                }
                "pPr" => in_ppr = true,
                "pStyle" if in_ppr => {
                    para_level = attr(element, "val").and_then(|id| {
                        styles
                            .get(&id)
                            .copied()
                            .or_else(|| level_from_style_name(&id))
                    });
                }
                "outlineLvl" if in_ppr => {
                    if let Some(l) = attr(element, "val").and_then(|v| v.parse::<usize>().ok()) {
                        para_level = (l < 9).then_some(l + 1);
                    }
                }
                "t" => in_text = true,
                "tab" if !in_ppr => para.push('\t'),
                "br" | "cr" => para.push('\n'),
                "tbl" => table_depth += 1,
                "tr" => row.clear(),
                "tc" => cell.clear(),
                _ => {}
            },
            XmlEvent::Close { name } => match name {
                "t" => in_text = false,
                "pPr" => in_ppr = false,
                "p" => {
                    let text = std::mem::take(&mut para);
                    para_depth = para_depth.saturating_sub(1);
                    if let Some((prev, level)) = outer.pop() {
                        para = prev;
                        para_level = level;
                    }
                    if table_depth > 0 {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(text.trim());
                    } else if let Some(level) = para_level.filter(|_| !text.trim().is_empty()) {
                        if level == 0 {
                            if doc.out.title.is_none() {
                                doc.out.title = Some(collapse_ws(&text));
                            } else {
                                doc.heading(1, &text);
                            }
                        } else {
                            doc.heading(level, &text);
                        }
                    } else {
                        doc.push(ctx, &text)?;
                        doc.paragraph_break();
                    }
                }
                "tc" => row.push(collapse_ws(&std::mem::take(&mut cell))),
                "tr" if table_depth > 0 => {
                    let line = row.join("\t");
                    doc.push(ctx, line.trim_end())?;
                    doc.line_break();
                    row.clear();
                }
                "tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    doc.paragraph_break();
                }
                _ => {}
            },
            XmlEvent::Text(t) => {
                if in_text {
                    para.push_str(&t);
                }
            }
        }
        Ok(())
    })?;
    Ok(doc.finish())
}

/// Maps style ids of `word/styles.xml` to heading levels (0 = the Title style).
fn docx_styles(xml: &str) -> Result<HashMap<String, usize>, ConvertError> {
    let mut map = HashMap::new();
    let mut current: Option<String> = None;
    walk(Format::Docx, xml, |ev| {
        match ev {
            XmlEvent::Open {
                name: "style",
                element,
            } => current = attr(element, "styleId"),
            XmlEvent::Open {
                name: "name",
                element,
            } => {
                if let (Some(id), Some(val)) = (&current, attr(element, "val"))
                    && let Some(level) = level_from_style_name(&val)
                {
                    map.insert(id.clone(), level);
                }
            }
            XmlEvent::Open {
                name: "outlineLvl",
                element,
            } => {
                if let (Some(id), Some(l)) = (
                    &current,
                    attr(element, "val").and_then(|v| v.parse::<usize>().ok()),
                ) && l < 9
                {
                    map.entry(id.clone()).or_insert(l + 1);
                }
            }
            XmlEvent::Close { name: "style" } => current = None,
            _ => {}
        }
        Ok(())
    })?;
    Ok(map)
}

/// `heading 2` / `Heading2` → 2; `Title` → 0.
fn level_from_style_name(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(0);
    }
    let n: usize = lower.strip_prefix("heading")?.parse().ok()?;
    (1..=9).contains(&n).then_some(n)
}

/// Reads Dublin Core properties (`docProps/core.xml`, ODF `meta.xml`) into metadata.
fn core_properties(
    zip: &mut SafeZip<'_>,
    part: &str,
    out: &mut Converted,
) -> Result<(), ConvertError> {
    let Some(xml) = zip.read_text(part)? else {
        return Ok(());
    };
    let mut key: Option<&'static str> = None;
    let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
    walk(out.format, &xml, |ev| {
        match ev {
            XmlEvent::Open { name, .. } => {
                key = match name {
                    "title" => Some("title"),
                    "creator" | "initial-creator" => Some("author"),
                    "subject" => Some("subject"),
                    "description" => Some("description"),
                    "keywords" | "keyword" => Some("keywords"),
                    "created" | "creation-date" => Some("created"),
                    "modified" | "date" => Some("modified"),
                    "lastModifiedBy" => Some("last_modified_by"),
                    _ => None,
                };
            }
            XmlEvent::Close { .. } => key = None,
            XmlEvent::Text(t) => {
                if let Some(k) = key {
                    let v = collapse_ws(&t);
                    if !v.is_empty() {
                        found.entry(k).or_insert(v);
                    }
                }
            }
        }
        Ok(())
    })?;
    if let Some(title) = found.get("title") {
        out.title = Some(title.clone());
    }
    for (k, v) in found {
        out.metadata.insert(k.to_owned(), v);
    }
    Ok(())
}

/// PPTX: one section per slide (`ppt/slides/slideN.xml`, in N order), under the slide's
/// title placeholder (or `Slide N`). Speaker notes, layouts, masters and images are dropped.
pub(crate) fn pptx(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Pptx;
    let mut zip = zipsafe::open(format, bytes, ctx.limits)?;
    let mut slides: Vec<(u32, String)> = zip
        .names()
        .into_iter()
        .filter_map(|n| {
            let num = n
                .strip_prefix("ppt/slides/slide")?
                .strip_suffix(".xml")?
                .parse::<u32>()
                .ok()?;
            Some((num, n))
        })
        .collect();
    if slides.is_empty() && zip.read_text("ppt/presentation.xml")?.is_none() {
        return Err(ConvertError::malformed(
            format,
            "missing `ppt/presentation.xml`",
        ));
    }
    slides.sort();
    let mut doc = Doc::new(format);
    core_properties(&mut zip, "docProps/core.xml", &mut doc.out)?;
    doc.out
        .metadata
        .insert("slides".to_owned(), slides.len().to_string());
    for (index, (_, part)) in slides.iter().enumerate() {
        let number = u32_of(index + 1);
        let xml = zip.require_text(part)?;
        let (title, body) = slide_text(&xml)?;
        let heading = title.unwrap_or_else(|| format!("Slide {number}"));
        doc.set_heading_path(vec![heading]);
        doc.set_location(Location::Slide { slide: number });
        doc.push(ctx, &body)?;
        doc.flush();
    }
    Ok(doc.finish())
}

/// The title placeholder's text and the other shapes' text of one slide.
fn slide_text(xml: &str) -> Result<(Option<String>, String), ConvertError> {
    // One buffer per open shape; text outside shapes (tables in frames) goes to `loose`.
    let mut shapes: Vec<(bool, String)> = Vec::new();
    let mut title: Option<String> = None;
    let mut body = String::new();
    let mut in_text = false;
    let mut fallback_depth = 0usize;
    walk(Format::Pptx, xml, |ev| {
        if fallback_depth > 0 {
            match ev {
                XmlEvent::Open { .. } => fallback_depth += 1,
                XmlEvent::Close { .. } => fallback_depth -= 1,
                XmlEvent::Text(_) => {}
            }
            return Ok(());
        }
        match ev {
            XmlEvent::Open { name, element } => match name {
                "Fallback" => fallback_depth = 1,
                "sp" => shapes.push((false, String::new())),
                "ph" => {
                    let kind = attr(element, "type");
                    if matches!(kind.as_deref(), Some("title" | "ctrTitle"))
                        && let Some(shape) = shapes.last_mut()
                    {
                        shape.0 = true;
                    }
                }
                "t" => in_text = true,
                "br" => push_to(&mut shapes, &mut body, "\n"),
                _ => {}
            },
            XmlEvent::Close { name } => match name {
                "t" => in_text = false,
                "p" => push_to(&mut shapes, &mut body, "\n"),
                "tc" => push_to(&mut shapes, &mut body, "\t"),
                "tr" => push_to(&mut shapes, &mut body, "\n"),
                "sp" => {
                    if let Some((is_title, text)) = shapes.pop() {
                        let text_trim = text.trim();
                        if is_title && title.is_none() && !text_trim.is_empty() {
                            title = Some(collapse_ws(text_trim));
                        } else if !text_trim.is_empty() {
                            push_to(&mut shapes, &mut body, text_trim);
                            push_to(&mut shapes, &mut body, "\n\n");
                        }
                    }
                }
                _ => {}
            },
            XmlEvent::Text(t) => {
                if in_text {
                    push_to(&mut shapes, &mut body, &t);
                }
            }
        }
        Ok(())
    })?;
    Ok((title, body))
}

fn push_to(shapes: &mut [(bool, String)], loose: &mut String, s: &str) {
    match shapes.last_mut() {
        Some((_, buf)) => buf.push_str(s),
        None => loose.push_str(s),
    }
}

/// ODT: `content.xml` headings (`text:h` with their outline level) and paragraphs, tables as
/// tab-separated rows, metadata from `meta.xml`. Annotations (comments) and frames' images
/// are dropped; footnote text is kept inline.
pub(crate) fn odt(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Odt;
    let mut zip = zipsafe::open(format, bytes, ctx.limits)?;
    let content = zip.require_text("content.xml")?;
    let mut doc = Doc::new(format);
    core_properties(&mut zip, "meta.xml", &mut doc.out)?;

    let mut para = String::new();
    // Depth of open text:p / text:h elements (frames can nest paragraphs).
    let mut para_depth = 0usize;
    let mut heading_level: Option<usize> = None;
    let mut skip_depth = 0usize;
    let mut table_depth = 0usize;
    let mut in_body = false;
    walk(format, &content, |ev| {
        match ev {
            XmlEvent::Open { name, element } => {
                if skip_depth > 0 {
                    skip_depth += 1;
                    return Ok(());
                }
                match name {
                    "body" => in_body = true,
                    "annotation" | "tracked-changes" | "sequence-decls" => skip_depth = 1,
                    "h" => {
                        para_depth += 1;
                        heading_level = Some(
                            attr(element, "outline-level")
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(1)
                                .clamp(1, 9),
                        );
                    }
                    "p" => para_depth += 1,
                    "s" => {
                        let n = attr(element, "c")
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(1)
                            .min(64);
                        para.extend(std::iter::repeat_n(' ', n));
                    }
                    "tab" => para.push('\t'),
                    "line-break" => para.push('\n'),
                    "table" => table_depth += 1,
                    _ => {}
                }
            }
            XmlEvent::Close { name } => {
                if skip_depth > 0 {
                    skip_depth -= 1;
                    return Ok(());
                }
                match name {
                    "h" | "p" => {
                        para_depth = para_depth.saturating_sub(1);
                        if para_depth > 0 {
                            para.push(' ');
                            return Ok(());
                        }
                        let text = std::mem::take(&mut para);
                        match heading_level.take() {
                            Some(level) if name == "h" => doc.heading(level, &text),
                            _ if table_depth > 0 => {
                                doc.push(ctx, text.trim())?;
                                doc.push(ctx, " ")?;
                            }
                            _ => {
                                doc.push(ctx, &text)?;
                                doc.paragraph_break();
                            }
                        }
                    }
                    "table-cell" => doc.push(ctx, "\t")?,
                    "table-row" => doc.line_break(),
                    "table" => {
                        table_depth = table_depth.saturating_sub(1);
                        doc.paragraph_break();
                    }
                    _ => {}
                }
            }
            XmlEvent::Text(t) => {
                if in_body && skip_depth == 0 && para_depth > 0 {
                    para.push_str(&t);
                }
            }
        }
        Ok(())
    })?;
    Ok(doc.finish())
}

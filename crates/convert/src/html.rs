//! HTML via scraper (html5ever): script, style and other non-content elements dropped,
//! h1–h6 become heading paths, block elements become paragraph breaks.

use scraper::{Html, Node, Selector};

use crate::doc::{Ctx, Doc, collapse_ws, decode_lossy};
use crate::{ConvertError, Converted, Format};

/// Elements whose content is never text for a reader.
const SKIP: [&str; 13] = [
    "script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "canvas",
    "select", "button", "nav",
];

/// Elements that start and end a paragraph.
const BLOCK: [&str; 24] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "header",
    "footer",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "table",
    "form",
    "fieldset",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "hr",
    "body",
    "center",
    "caption",
];

/// Elements that end a line.
const LINE: [&str; 5] = ["li", "tr", "dt", "dd", "option"];

/// Converts HTML. The bytes are read as UTF-8 (invalid sequences replaced, with a warning);
/// a `<meta charset>` naming another encoding is not honoured. Navigation (`<nav>`), forms
/// controls, scripts, styles, SVG and MathML are dropped.
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let (source, lossy) = decode_lossy(bytes);
    // html5ever's tree builder costs O(elements x depth): refuse pathological nesting.
    let depth = approximate_depth(&source);
    if depth > MAX_DEPTH {
        return Err(ConvertError::malformed(
            Format::Html,
            format!("elements nest deeper than {MAX_DEPTH}"),
        ));
    }
    let html = Html::parse_document(&source);
    let mut doc = Doc::new(Format::Html);
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    if let Ok(sel) = Selector::parse("title") {
        doc.out.title = html
            .select(&sel)
            .next()
            .map(|t| collapse_ws(&t.text().collect::<String>()))
            .filter(|t| !t.is_empty());
    }
    if let Ok(sel) = Selector::parse("meta[name][content]") {
        for meta in html.select(&sel) {
            let el = meta.value();
            if let (Some(name), Some(content)) = (el.attr("name"), el.attr("content")) {
                let name = name.to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "description" | "author" | "keywords" | "date"
                ) {
                    doc.out.metadata.insert(name, collapse_ws(content));
                }
            }
        }
    }
    let mut first_h1: Option<String> = None;
    let mut pre_depth = 0usize;
    let mut at_line_start = true;
    // Explicit stack instead of recursion: deeply nested markup cannot overflow it.
    let mut stack = vec![(html.tree.root(), true)];
    while let Some((node, open)) = stack.pop() {
        match node.value() {
            Node::Element(el) => {
                let name = el.name();
                if open {
                    if SKIP.contains(&name) {
                        continue;
                    }
                    if let Some(level) = heading_level(name) {
                        let text: String = node
                            .descendants()
                            .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
                            .collect();
                        let text = collapse_ws(&text);
                        if level == 1 && first_h1.is_none() && !text.is_empty() {
                            first_h1 = Some(text.clone());
                        }
                        doc.heading(level, &text);
                        at_line_start = true;
                        continue;
                    }
                    if BLOCK.contains(&name) {
                        doc.paragraph_break();
                        at_line_start = true;
                    } else if LINE.contains(&name) {
                        doc.line_break();
                        at_line_start = true;
                    } else if name == "br" {
                        doc.push(ctx, "\n")?;
                        at_line_start = true;
                    } else if name == "pre" {
                        doc.paragraph_break();
                        pre_depth += 1;
                    }
                    if name == "li" {
                        doc.push(ctx, "- ")?;
                    }
                    stack.push((node, false));
                    let children: Vec<_> = node.children().collect();
                    stack.extend(children.into_iter().rev().map(|c| (c, true)));
                } else if BLOCK.contains(&name) {
                    doc.paragraph_break();
                    at_line_start = true;
                } else if LINE.contains(&name) {
                    doc.line_break();
                    at_line_start = true;
                } else if name == "td" || name == "th" {
                    doc.push(ctx, "\t")?;
                } else if name == "pre" {
                    pre_depth = pre_depth.saturating_sub(1);
                    doc.paragraph_break();
                    at_line_start = true;
                }
            }
            Node::Text(t) if open => {
                if pre_depth > 0 {
                    doc.push(ctx, t)?;
                    at_line_start = t.ends_with('\n');
                    continue;
                }
                let mut s = String::with_capacity(t.len());
                let mut in_ws = false;
                for c in t.chars() {
                    if c.is_whitespace() {
                        in_ws = true;
                    } else {
                        if in_ws && !(s.is_empty() && at_line_start) {
                            s.push(' ');
                        }
                        in_ws = false;
                        s.push(c);
                    }
                }
                if in_ws && !s.is_empty() {
                    s.push(' ');
                }
                if !s.is_empty() {
                    at_line_start = false;
                    doc.push(ctx, &s)?;
                }
            }
            Node::Document | Node::Fragment if open => {
                let children: Vec<_> = node.children().collect();
                stack.extend(children.into_iter().rev().map(|c| (c, true)));
            }
            _ => {}
        }
    }
    let mut out = doc.finish();
    if out.title.is_none() {
        out.title = first_h1;
    }
    Ok(out)
}

/// Deepest element nesting accepted (real pages stay far below it).
const MAX_DEPTH: usize = 512;

/// Elements that never nest (void) or are closed implicitly by their next sibling.
const NO_NEST: [&str; 31] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "param", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "tbody",
    "thead", "tfoot", "colgroup", "rb", "rt", "rp", "caption",
];

/// A linear scan estimating the deepest element nesting from open and close tags.
fn approximate_depth(source: &str) -> usize {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = 0usize;
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|b| *b == b'<'))
    {
        i += offset + 1;
        match bytes.get(i) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(b) if b.is_ascii_alphabetic() => {
                let start = i;
                while bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) && i - start < 16 {
                    i += 1;
                }
                let name = source.get(start..i).unwrap_or("").to_ascii_lowercase();
                let Some(end) = bytes
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|b| *b == b'>'))
                else {
                    break;
                };
                i += end;
                let self_closing = i > 0 && bytes.get(i - 1) == Some(&b'/');
                if !self_closing && !NO_NEST.contains(&name.as_str()) {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
            }
            _ => {}
        }
    }
    deepest
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

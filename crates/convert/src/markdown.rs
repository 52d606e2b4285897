//! Markdown via pulldown-cmark: headings become heading paths; front matter `key: value`
//! lines become metadata.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::doc::{Ctx, Doc, decode_lossy};
use crate::{ConvertError, Converted, Format};

/// Converts Markdown. Invalid UTF-8 is replaced (with a warning). Raw HTML blocks are dropped;
/// link and image targets are dropped, their text kept; tables become tab-separated rows.
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let (source, lossy) = decode_lossy(bytes);
    let mut doc = Doc::new(Format::Markdown);
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut heading: Option<(usize, String)> = None;
    let mut metadata: Option<String> = None;
    let mut first_h1: Option<String> = None;
    for event in Parser::new_ext(&source, options) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level as usize, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    if level == 1 && first_h1.is_none() {
                        first_h1 = Some(crate::doc::collapse_ws(&text));
                    }
                    doc.heading(level, &text);
                }
            }
            Event::Start(Tag::MetadataBlock(_)) => metadata = Some(String::new()),
            Event::End(TagEnd::MetadataBlock(_)) => {
                if let Some(block) = metadata.take() {
                    front_matter(&block, &mut doc.out);
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                if let Some((_, h)) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(m) = metadata.as_mut() {
                    m.push_str(&t);
                } else {
                    doc.push(ctx, &t)?;
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, h)) = heading.as_mut() {
                    h.push(' ');
                } else {
                    doc.push(ctx, "\n")?;
                }
            }
            Event::TaskListMarker(done) => doc.push(ctx, if done { "[x] " } else { "[ ] " })?,
            Event::Start(Tag::Item) => {
                doc.line_break();
                doc.push(ctx, "- ")?;
            }
            Event::End(TagEnd::Item | TagEnd::TableRow | TagEnd::TableHead) => doc.line_break(),
            Event::End(TagEnd::TableCell) => doc.push(ctx, "\t")?,
            Event::Start(Tag::CodeBlock(_) | Tag::Table(_) | Tag::BlockQuote(_))
            | Event::End(
                TagEnd::Paragraph
                | TagEnd::CodeBlock
                | TagEnd::List(_)
                | TagEnd::Table
                | TagEnd::BlockQuote(_)
                | TagEnd::FootnoteDefinition,
            )
            | Event::Rule => doc.paragraph_break(),
            _ => {}
        }
    }
    let mut out = doc.finish();
    if out.title.is_none() {
        out.title = first_h1;
    }
    Ok(out)
}

/// Reads simple `key: value` lines of a YAML or TOML front matter block.
fn front_matter(block: &str, out: &mut Converted) {
    for line in block.lines() {
        let Some((key, value)) = line.split_once(':').or_else(|| line.split_once('=')) else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        if key.is_empty() || value.is_empty() || key.contains(' ') || line.starts_with([' ', '\t'])
        {
            continue;
        }
        if key == "title" {
            out.title = Some(value.to_owned());
        }
        out.metadata.insert(key, value.to_owned());
    }
}

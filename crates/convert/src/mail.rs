//! Email via mail-parser 0.11: EML (one message) and MBOX (many). Headers and text bodies
//! become sections; attachments are converted recursively into [`Converted::attachments`].

use std::io::Cursor;
use std::path::Path;

use mail_parser::mailbox::mbox::MessageIterator;
use mail_parser::{Address, HeaderName, Message, MessageParser, MimeHeaders};

use crate::doc::{Ctx, Doc, collapse_ws, u32_of};
use crate::{Attachment, ConvertError, Converted, Format, Input, Location, convert_in, detect};

/// One email message. Malformed input that yields no header at all is refused.
pub(crate) fn eml(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Eml;
    let message = MessageParser::default()
        .parse(bytes)
        .filter(has_known_header)
        .ok_or_else(|| ConvertError::malformed(format, "no email headers found"))?;
    let mut doc = Doc::new(format);
    let subject = subject_of(&message);
    doc.out.title = Some(subject.clone());
    header_metadata(&message, &mut doc.out);
    add_message(&mut doc, ctx, &message, 1)?;
    Ok(doc.finish())
}

/// A Unix mailbox: every message under its subject, located by its index.
pub(crate) fn mbox(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Mbox;
    if !bytes.starts_with(b"From ") {
        return Err(ConvertError::malformed(
            format,
            "does not start with a `From ` line",
        ));
    }
    let mut doc = Doc::new(format);
    let mut count = 0usize;
    for (index, item) in MessageIterator::new(Cursor::new(bytes)).enumerate() {
        let number = index + 1;
        let raw =
            item.map_err(|e| ConvertError::malformed(format, e.to_string().to_lowercase()))?;
        match MessageParser::default().parse(raw.contents()) {
            Some(message) if has_known_header(&message) => {
                count += 1;
                add_message(&mut doc, ctx, &message, number)?;
            }
            _ => doc.warn(format!("message {number}: no email headers found")),
        }
    }
    if count == 0 {
        return Err(ConvertError::malformed(format, "no messages found"));
    }
    doc.out
        .metadata
        .insert("messages".to_owned(), count.to_string());
    Ok(doc.finish())
}

/// True when the parser found at least one standard header (not just any `name: value`).
fn has_known_header(message: &Message<'_>) -> bool {
    message
        .headers()
        .iter()
        .any(|h| !matches!(h.name, HeaderName::Other(_)))
}

fn subject_of(message: &Message<'_>) -> String {
    message
        .subject()
        .map(collapse_ws)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(no subject)".to_owned())
}

fn addresses(address: Option<&Address<'_>>) -> Option<String> {
    let list: Vec<String> = address?
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(n), Some(addr)) => format!("{n} <{addr}>"),
            (None, Some(addr)) => addr.to_owned(),
            (Some(n), None) => n.to_owned(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

fn header_lines(message: &Message<'_>) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if let Some(v) = addresses(message.from()) {
        lines.push(("from", v));
    }
    if let Some(v) = addresses(message.to()) {
        lines.push(("to", v));
    }
    if let Some(v) = addresses(message.cc()) {
        lines.push(("cc", v));
    }
    if let Some(d) = message.date() {
        lines.push(("date", d.to_rfc3339()));
    }
    if let Some(s) = message.subject() {
        lines.push(("subject", collapse_ws(s)));
    }
    if let Some(id) = message.message_id() {
        lines.push(("message-id", id.to_owned()));
    }
    lines
}

fn header_metadata(message: &Message<'_>, out: &mut Converted) {
    for (k, v) in header_lines(message) {
        out.metadata.insert(k.to_owned(), v);
    }
}

/// Adds one message: a headers section, its text bodies, and its attachments.
fn add_message(
    doc: &mut Doc,
    ctx: &mut Ctx<'_>,
    message: &Message<'_>,
    number: usize,
) -> Result<(), ConvertError> {
    let subject = subject_of(message);
    let index = u32_of(number);
    doc.set_heading_path(vec![subject.clone()]);
    doc.set_location(Location::Email {
        message: index,
        part: "headers".to_owned(),
    });
    for (k, v) in header_lines(message) {
        if k == "message-id" {
            continue;
        }
        let mut name = k.to_owned();
        if let Some(first) = name.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        doc.push(ctx, &format!("{name}: {v}"))?;
        doc.line_break();
    }
    doc.set_location(Location::Email {
        message: index,
        part: "body".to_owned(),
    });
    for i in 0..message.text_body_count() {
        if let Some(text) = message.body_text(i) {
            doc.push(ctx, &text)?;
            doc.paragraph_break();
        }
    }
    doc.flush();

    for (i, part) in message.attachments().enumerate() {
        let nested = part.message();
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .or_else(|| nested.map(|m| format!("{}.eml", subject_of(m))))
            .unwrap_or_else(|| format!("attachment {}", i + 1));
        let name = collapse_ws(&name);
        if ctx.depth >= ctx.limits.max_depth {
            doc.warn(format!(
                "attachment `{name}` skipped: nested deeper than {} levels",
                ctx.limits.max_depth
            ));
            continue;
        }
        let (bytes, format) = match nested {
            Some(m) => (m.raw_message(), Format::Eml),
            None => {
                let bytes = part.contents();
                (bytes, detect(Some(Path::new(&name)), bytes))
            }
        };
        if format == Format::Unknown {
            doc.warn(format!("attachment `{name}` skipped: unsupported format"));
            continue;
        }
        ctx.depth += 1;
        let result = convert_in(
            &Input {
                bytes,
                name: Some(&name),
                format: Some(format),
            },
            ctx,
        );
        ctx.depth -= 1;
        match result {
            Ok(converted) => doc.out.attachments.push(Attachment {
                heading_path: vec![subject.clone(), format!("attachment: {name}")],
                name,
                converted,
            }),
            Err(e @ ConvertError::OutputTooLarge { .. }) => return Err(e),
            Err(e) => doc.warn(format!("attachment `{name}` skipped: {e}")),
        }
    }
    Ok(())
}

//! XML: a pull parser (quick-xml) shared by the generic XML converter and the office formats.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::doc::{Ctx, Doc, decode_lossy};
use crate::{ConvertError, Converted, Format};

/// One event of an XML document, names without their namespace prefix.
pub(crate) enum XmlEvent<'a, 'e> {
    /// An opening (or empty) element.
    Open {
        name: &'e str,
        element: &'e BytesStart<'a>,
    },
    /// A closing element (also sent right after `Open` for an empty element).
    Close { name: &'e str },
    /// Character data, entities resolved.
    Text(Cow<'e, str>),
}

/// Walks `xml`, calling `f` for each element and text run. External entities are never
/// resolved; unknown named entities are dropped. Mismatched end tags are tolerated.
pub(crate) fn walk<F>(format: Format, xml: &str, mut f: F) -> Result<(), ConvertError>
where
    F: FnMut(XmlEvent<'_, '_>) -> Result<(), ConvertError>,
{
    let mut reader = Reader::from_str(xml);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ConvertError::malformed(format, format!("xml: {e}")))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name();
                f(XmlEvent::Open {
                    name: name.as_ref(),
                    element: &e,
                })?;
            }
            Event::Empty(e) => {
                let name = e.local_name();
                f(XmlEvent::Open {
                    name: name.as_ref(),
                    element: &e,
                })?;
                f(XmlEvent::Close {
                    name: name.as_ref(),
                })?;
            }
            Event::End(e) => {
                let name = e.local_name();
                f(XmlEvent::Close {
                    name: name.as_ref(),
                })?;
            }
            Event::Text(t) => f(XmlEvent::Text(t.xml10_content()))?,
            Event::CData(c) => f(XmlEvent::Text(c.xml10_content()))?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => match &*r {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "apos" => Some('\''),
                        "quot" => Some('"'),
                        _ => None,
                    },
                    Err(_) => None,
                };
                if let Some(c) = resolved {
                    f(XmlEvent::Text(Cow::Owned(c.to_string())))?;
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// The value of the attribute with local name `local`, entities unescaped.
pub(crate) fn attr(element: &BytesStart<'_>, local: &str) -> Option<String> {
    element
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .map(|a| match quick_xml::escape::unescape(&a.value) {
            Ok(v) => v.into_owned(),
            Err(_) => a.value.into_owned(),
        })
}

/// Converts generic XML: the text content, one line per element that holds text. A `<title>`
/// element (any namespace) becomes the title. Attributes, comments, processing instructions
/// and the DTD are dropped. Read as UTF-8 (invalid sequences replaced).
pub(crate) fn convert(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let (source, lossy) = decode_lossy(bytes);
    let mut doc = Doc::new(Format::Xml);
    if lossy {
        doc.warn("invalid utf-8 replaced");
    }
    let mut title: Option<String> = None;
    let mut in_title = false;
    let mut saw_element = false;
    // Text of the current element, gathered across entity references.
    let mut pending = String::new();
    walk(Format::Xml, &source, |ev| {
        if let XmlEvent::Text(t) = ev {
            pending.push_str(&t);
            return Ok(());
        }
        let t = pending.trim();
        if !t.is_empty() {
            if in_title {
                title = Some(crate::doc::collapse_ws(t));
            }
            doc.push(ctx, t)?;
            doc.line_break();
        }
        pending.clear();
        in_title = match ev {
            XmlEvent::Open { name, .. } => {
                saw_element = true;
                title.is_none() && name.eq_ignore_ascii_case("title")
            }
            _ => false,
        };
        Ok(())
    })?;
    if !saw_element {
        return Err(ConvertError::malformed(Format::Xml, "no root element"));
    }
    let mut out = doc.finish();
    out.title = title;
    Ok(out)
}

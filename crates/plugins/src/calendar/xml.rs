//! WebDAV multistatus answers read into a small element tree with `quick-xml`, which never
//! expands external entities (nor any entity beyond XML's five predefined ones and character
//! references). Depth and element count are capped: a hostile server cannot make it grow
//! without bound beyond the response size the caller already capped.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// `DAV:`.
pub const DAV: &str = "DAV:";
/// CalDAV's namespace.
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";

/// Deepest element nesting read.
const MAX_DEPTH: usize = 64;
/// Most elements read from one answer.
const MAX_ELEMENTS: usize = 200_000;

/// One element: its namespace, local name, children and text.
#[derive(Debug, Default)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub children: Vec<Element>,
    pub text: String,
    /// Attributes by local name.
    pub attributes: Vec<(String, String)>,
}

impl Element {
    /// Whether it is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The children `{ns}name`.
    pub fn all<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first descendant `{ns}name`, depth first.
    #[cfg(test)]
    pub fn find(&self, ns: &str, name: &str) -> Option<&Element> {
        for child in &self.children {
            if child.is(ns, name) {
                return Some(child);
            }
            if let Some(found) = child.find(ns, name) {
                return Some(found);
            }
        }
        None
    }

    /// The attribute with this local name.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Its text, trimmed.
    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// Parses a document into its root element.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut count = 0usize;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => ns.0.to_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(start) | Event::Empty(start) if stack.len() > MAX_DEPTH => {
                let _ = start;
                return Err(format!("XML nested deeper than {MAX_DEPTH}"));
            }
            Event::Start(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(format!("more than {MAX_ELEMENTS} XML elements"));
                }
                stack.push(Element {
                    ns,
                    name: start.local_name().as_ref().to_owned(),
                    attributes: attributes(&start)?,
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(format!("more than {MAX_ELEMENTS} XML elements"));
                }
                let element = Element {
                    ns,
                    name: start.local_name().as_ref().to_owned(),
                    attributes: attributes(&start)?,
                    ..Element::default()
                };
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(element);
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err("malformed XML: unbalanced end tag".to_owned());
                };
                let Some(parent) = stack.last_mut() else {
                    return Err("malformed XML: unbalanced end tag".to_owned());
                };
                parent.children.push(done);
            }
            Event::Text(text) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&data.into_inner());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference.into_inner();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown XML entity `&{name};`"))?
                            .to_owned()
                    }
                    Err(e) => return Err(format!("malformed XML: {e}")),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("malformed XML: unclosed elements".to_owned());
    }
    stack
        .pop()
        .and_then(|document| document.children.into_iter().next())
        .ok_or_else(|| "empty XML document".to_owned())
}

/// An element's attributes (not namespace declarations), by local name.
fn attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for attribute in start.attributes().take(64) {
        let attribute = attribute.map_err(|e| format!("malformed XML attribute: {e}"))?;
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("malformed XML attribute: {e}"))?;
        out.push((
            attribute.key.local_name().as_ref().to_owned(),
            value.into_owned(),
        ));
    }
    Ok(out)
}

/// Escapes text for an XML body.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn namespaces_entities_and_limits() {
        let doc = parse(
            r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
            <d:response><d:href>/a%20b/</d:href><d:propstat><d:prop><d:displayname>Work &amp; play &#233;</d:displayname>
            <c:calendar-data><![CDATA[BEGIN:VCALENDAR]]></c:calendar-data></d:prop></d:propstat></d:response></d:multistatus>"#,
        )
        .unwrap();
        assert!(doc.is(DAV, "multistatus"));
        let response = doc.child(DAV, "response").unwrap();
        assert_eq!(response.child(DAV, "href").unwrap().trimmed(), "/a%20b/");
        assert_eq!(
            response.find(DAV, "displayname").unwrap().trimmed(),
            "Work & play é"
        );
        assert_eq!(
            response.find(CALDAV, "calendar-data").unwrap().trimmed(),
            "BEGIN:VCALENDAR"
        );
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d:a xmlns:d="DAV:">&x;</d:a>"#;
        assert!(parse(xxe).unwrap_err().contains("unknown XML entity"));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).unwrap_err().contains("deeper"));
        assert!(parse("<a><b></a>").is_err());
    }
}

//! Where a call's arguments send a credential: the hosts of the URLs in them, and the host
//! patterns a secret may be bound to.

use super::BrokerError;

/// Where a call's arguments say they go: the hosts of every URL in them.
pub(super) struct Destinations {
    hosts: Vec<String>,
    /// A URL whose host cannot be read (`file:///…`, `https://`, `://x`).
    unreadable: bool,
}

impl Destinations {
    /// The URLs in every string of `value`, keys included; a URL is `scheme://…` up to a
    /// space or a quote, anywhere in a string.
    pub(super) fn of(value: &serde_json::Value) -> Self {
        let mut out = Self {
            hosts: Vec::new(),
            unreadable: false,
        };
        out.visit(value);
        out
    }

    fn visit(&mut self, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.scan(s),
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.visit(v)),
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    self.scan(key);
                    self.visit(v);
                }
            }
            _ => {}
        }
    }

    fn scan(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(found) = text.get(from..).and_then(|t| t.find("://")) {
            let sep = from + found;
            from = sep + 3;
            let mut start = sep;
            while start > 0
                && bytes
                    .get(start - 1)
                    .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            {
                start -= 1;
            }
            while start < sep && !bytes.get(start).is_some_and(u8::is_ascii_alphabetic) {
                start += 1;
            }
            let end = text
                .get(sep..)
                .and_then(|t| t.find(|c: char| c.is_whitespace() || "\"'<>`".contains(c)))
                .map_or(text.len(), |e| sep + e);
            let host = text
                .get(start..end)
                .filter(|_| start < sep)
                .and_then(|url| url::Url::parse(url).ok())
                .and_then(|url| url.host_str().map(normal_host))
                .filter(|host| !host.is_empty());
            match host {
                Some(host) => self.hosts.push(host),
                None => self.unreadable = true,
            }
        }
    }

    /// Whether secret `name`, bound to `patterns` (none: unbound), may go where these go.
    pub(super) fn allow(&self, name: &str, patterns: &[String]) -> Result<(), BrokerError> {
        if patterns.is_empty() {
            return Ok(());
        }
        if self.unreadable {
            return Err(BrokerError::UnreadableUrl {
                name: name.to_owned(),
            });
        }
        if self.hosts.is_empty() {
            return Err(BrokerError::NoDestination {
                name: name.to_owned(),
            });
        }
        match self
            .hosts
            .iter()
            .find(|host| !patterns.iter().any(|p| host_matches(host, p)))
        {
            Some(host) => Err(BrokerError::HostNotAllowed {
                name: name.to_owned(),
                host: host.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// A URL's host as compared: lower-case, without a final dot or an IPv6 address's brackets.
pub(super) fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// A host pattern: `api.example.com`, `*.example.com` (its subdomains, not itself), an IPv4 or
/// an IPv6 address. The same forms as the policy's `host_in`.
#[must_use]
pub fn valid_host_pattern(pattern: &str) -> bool {
    if pattern.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Whether `host` (as [`normal_host`] gives it) is within `pattern` (lower-case). As the
/// policy's `host_in` matches; that crate keeps its matcher private.
pub(super) fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

//! The tests as Rust decides them: on one value, on a list, on the items of a list
//! (quantifiers), and the facts they need from the call (provenance, the policy's sets).
//!
//! Cedar decides a test on a single value wherever it has the operator; everything else —
//! a test over a list, URL hosts, links in text, regular expressions, provenance, quantifiers —
//! is decided here and handed to Cedar as a boolean. Where both exist they agree: a comparison
//! or pattern on a value of the wrong type fails to evaluate, equality across types is simply
//! false.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::provenance::{Origins, Source, SourcePattern, leaf_text, normalise};
use crate::raw::Scalar;

/// Lists longer than this are tested in Rust rather than as a Cedar set literal.
const LONG_LIST: usize = 16;

/// A comparison with a whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    pub(crate) fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Lt => left < right,
            Self::Le => left <= right,
        }
    }

    fn opposite(self) -> Self {
        match self {
            Self::Gt => Self::Le,
            Self::Ge => Self::Lt,
            Self::Lt => Self::Ge,
            Self::Le => Self::Gt,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DomainKind {
    UrlHost,
    EmailDomain,
    /// The hosts of the links found in a text.
    LinkHosts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    Starts,
    Ends,
    Includes,
}

/// A test on one value. Over a list it holds when some element passes it.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Eq(Scalar),
    Ne(Scalar),
    Cmp(Cmp, i64),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Like(String),
    NotLike(String),
    /// Case-insensitive equality (`equal`) or its opposite; the text is lowercase.
    EqIgnoreCase {
        text: String,
        equal: bool,
    },
    /// `starts_with`, `ends_with`, `includes`; `holds: false` is the opposite.
    Text {
        kind: TextKind,
        needle: String,
        holds: bool,
    },
    Regex {
        regex: Arc<regex::Regex>,
        holds: bool,
    },
    /// The length in characters compared with a number.
    Len(Cmp, u32),
    /// `host_in`, `email_domain_in`, `links_host_in` (`inside`), or their `_not_in` forms.
    /// Patterns are lowercase `example.com` or `*.example.com`.
    Domain {
        kind: DomainKind,
        patterns: Vec<String>,
        inside: bool,
    },
    /// `from` (`inside`) or `not_from`: where the value came from.
    From {
        sources: Vec<SourcePattern>,
        inside: bool,
    },
}

impl Test {
    /// The test that holds exactly when this one fails, on a single value (and fails to
    /// evaluate exactly when this one does). For link hosts, which are a list inside one text,
    /// the opposite keeps the "some link" reading, as for every list.
    pub(crate) fn opposite(self) -> Self {
        match self {
            Self::Eq(v) => Self::Ne(v),
            Self::Ne(v) => Self::Eq(v),
            Self::Cmp(c, n) => Self::Cmp(c.opposite(), n),
            Self::In(l) => Self::NotIn(l),
            Self::NotIn(l) => Self::In(l),
            Self::Like(p) => Self::NotLike(p),
            Self::NotLike(p) => Self::Like(p),
            Self::EqIgnoreCase { text, equal } => Self::EqIgnoreCase {
                text,
                equal: !equal,
            },
            Self::Text {
                kind,
                needle,
                holds,
            } => Self::Text {
                kind,
                needle,
                holds: !holds,
            },
            Self::Regex { regex, holds } => Self::Regex {
                regex,
                holds: !holds,
            },
            Self::Len(c, n) => Self::Len(c.opposite(), n),
            Self::Domain {
                kind,
                patterns,
                inside,
            } => Self::Domain {
                kind,
                patterns,
                inside: !inside,
            },
            Self::From { sources, inside } => Self::From {
                sources,
                inside: !inside,
            },
        }
    }

    /// The Cedar expression for a single value `x`; `None` for the tests Cedar cannot do.
    pub(crate) fn cedar(&self, x: &str) -> Option<String> {
        Some(match self {
            Self::Eq(v) => format!("{x} == {}", scalar_literal(v)),
            Self::Ne(v) => format!("{x} != {}", scalar_literal(v)),
            Self::Cmp(c, n) => format!("{x} {} {}", c.symbol(), int_literal(*n)),
            // Cedar rebuilds a set literal at every evaluation: long lists are decided in Rust.
            Self::In(l) | Self::NotIn(l) if l.len() > LONG_LIST => return None,
            Self::In(l) => format!("{}.contains({x})", set_literal(l)),
            Self::NotIn(l) => format!("!{}.contains({x})", set_literal(l)),
            Self::Like(p) => format!("{x} like {}", string_literal(p)),
            Self::NotLike(p) => format!("!({x} like {})", string_literal(p)),
            Self::EqIgnoreCase { .. }
            | Self::Text { .. }
            | Self::Regex { .. }
            | Self::Len(..)
            | Self::Domain { .. }
            | Self::From { .. } => return None,
        })
    }

    /// One element, as Cedar would judge it on its own: a comparison or pattern on a value of
    /// the wrong type fails to evaluate; equality and membership simply do not hold.
    pub(crate) fn element(&self, e: &Value, facts: &Facts<'_>) -> Result<bool, String> {
        let text = || {
            e.as_str()
                .ok_or_else(|| format!("{} is not text", kind_of(e)))
        };
        match self {
            Self::Eq(v) => Ok(scalar_is(v, e)),
            Self::Ne(v) => Ok(!scalar_is(v, e)),
            Self::Cmp(c, n) => match e.as_i64() {
                Some(x) => Ok(c.holds(x, *n)),
                None => Err(format!("{} is not a whole number", kind_of(e))),
            },
            Self::In(l) => Ok(l.iter().any(|v| scalar_is(v, e))),
            Self::NotIn(l) => Ok(!l.iter().any(|v| scalar_is(v, e))),
            Self::Like(p) | Self::NotLike(p) => {
                Ok(glob(p, text()?) == matches!(self, Self::Like(_)))
            }
            Self::EqIgnoreCase { text: want, equal } => {
                Ok(e.as_str().is_some_and(|t| t.to_lowercase() == *want) == *equal)
            }
            Self::Text {
                kind,
                needle,
                holds,
            } => {
                let t = text()?;
                let found = match kind {
                    TextKind::Starts => t.starts_with(needle.as_str()),
                    TextKind::Ends => t.ends_with(needle.as_str()),
                    TextKind::Includes => t.contains(needle.as_str()),
                };
                Ok(found == *holds)
            }
            Self::Regex { regex, holds } => Ok(regex.is_match(text()?) == *holds),
            Self::Len(c, n) => {
                let length = i64::try_from(text()?.chars().count()).unwrap_or(i64::MAX);
                Ok(c.holds(length, i64::from(*n)))
            }
            Self::Domain {
                kind,
                patterns,
                inside,
            } => {
                let t = text()?;
                let matched = |domain: &str| patterns.iter().any(|p| domain_matches(domain, p));
                match kind {
                    DomainKind::UrlHost => {
                        let host = url_host(t).ok_or_else(|| not_a(t, "host name or URL"))?;
                        Ok(matched(&host) == *inside)
                    }
                    DomainKind::EmailDomain => {
                        let domain = email_domain(t).ok_or_else(|| not_a(t, "e-mail address"))?;
                        Ok(matched(&domain) == *inside)
                    }
                    // Some link is (not) in the list; a text without links has none.
                    DomainKind::LinkHosts => {
                        let mut holds = false;
                        for host in link_hosts(t)? {
                            holds |= matched(&host) == *inside;
                        }
                        Ok(holds)
                    }
                }
            }
            Self::From { sources, inside } => {
                let origins = facts.origins.ok_or(
                    "where the value came from is not known: the kernel supplied no provenance",
                )?;
                let value = leaf_text(e).ok_or_else(|| {
                    format!("{} has no provenance (not text or a number)", kind_of(e))
                })?;
                let mut found = origins.of(&value);
                if facts.operator.contains(&normalise(&value)) {
                    found.insert(Source::Operator);
                }
                let named = found.iter().any(|s| sources.iter().any(|p| s.is(p)));
                Ok(named == *inside)
            }
        }
    }
}

/// A test on a list as a whole (`contains`, `contains_any`, `contains_all`); under `not` its
/// answer is negated. Nested lists count as one list of their elements.
#[derive(Debug, Clone)]
pub(crate) enum Whole {
    Contains(Scalar),
    ContainsAny(Vec<Scalar>),
    ContainsAll(Vec<Scalar>),
}

impl Whole {
    pub(crate) fn cedar(&self, x: &str) -> String {
        match self {
            Self::Contains(v) => format!("{x}.contains({})", scalar_literal(v)),
            Self::ContainsAny(l) => format!("{x}.containsAny({})", set_literal(l)),
            Self::ContainsAll(l) => format!("{x}.containsAll({})", set_literal(l)),
        }
    }

    fn holds(&self, elements: &[&Value]) -> bool {
        let has = |v: &Scalar| elements.iter().any(|e| scalar_is(v, e));
        match self {
            Self::Contains(v) => has(v),
            Self::ContainsAny(l) => l.iter().any(has),
            Self::ContainsAll(l) => l.iter().all(has),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Check {
    /// Some element passes.
    Element(Test),
    /// The list as a whole passes (or, `negate`, fails).
    Whole { test: Whole, negate: bool },
    /// Every item (`all`) or some item (`!all`) of the list satisfies the condition. A single
    /// value is a list of one; `none: C` is `all` of the opposite of `C`.
    Quant { all: bool, cond: Box<ItemCond> },
}

impl Check {
    /// The check that holds exactly when this one fails (on a single value; over a list it
    /// keeps the "some element" reading of element tests).
    pub(crate) fn opposite(self) -> Self {
        match self {
            Self::Element(test) => Self::Element(test.opposite()),
            Self::Whole { test, negate } => Self::Whole {
                test,
                negate: !negate,
            },
            // not (all C) = some item not C; not (some item C) = every item not C.
            Self::Quant { all, cond } => Self::Quant {
                all: !all,
                cond: Box::new(cond.opposite()),
            },
        }
    }

    /// Whether only Rust can decide it, whatever the value's shape.
    pub(crate) fn rust_only(&self) -> bool {
        match self {
            Self::Element(test) => test.cedar("x").is_none(),
            Self::Whole { .. } => false,
            Self::Quant { .. } => true,
        }
    }

    /// Decides the check on a value (a list or a single value).
    pub(crate) fn decide(&self, value: &Value, facts: &Facts<'_>) -> Result<bool, String> {
        let mut items = Vec::new();
        elements(value, &mut items);
        match self {
            Self::Element(test) => some_element(test, &items, facts),
            Self::Whole { test, negate } => {
                if value.is_array() {
                    Ok(test.holds(&items) != *negate)
                } else {
                    Err(format!("{} is not a list", kind_of(value)))
                }
            }
            Self::Quant { all, cond } => {
                // Every item is looked at: one that cannot be judged rejects.
                let mut every = true;
                let mut some = false;
                for (at, item) in items.iter().enumerate() {
                    let holds = cond
                        .eval(item, facts)
                        .map_err(|e| format!("item {}: {e}", at + 1))?;
                    every &= holds;
                    some |= holds;
                }
                Ok(if *all { every } else { some })
            }
        }
    }
}

/// A condition on one item of a list, inside `all`, `any` or `none`. Decided in Rust, with
/// Cedar's short-circuit order: `{ present: true, gt: 5 }` never reads a missing value.
#[derive(Debug, Clone)]
pub(crate) enum ItemCond {
    And(Vec<ItemCond>),
    Or(Vec<ItemCond>),
    Present { path: Vec<String>, want: bool },
    Check { path: Vec<String>, check: Check },
}

impl ItemCond {
    pub(crate) fn opposite(self) -> Self {
        match self {
            Self::And(parts) => Self::Or(parts.into_iter().map(Self::opposite).collect()),
            Self::Or(parts) => Self::And(parts.into_iter().map(Self::opposite).collect()),
            Self::Present { path, want } => Self::Present { path, want: !want },
            Self::Check { path, check } => Self::Check {
                path,
                check: check.opposite(),
            },
        }
    }

    fn eval(&self, item: &Value, facts: &Facts<'_>) -> Result<bool, String> {
        match self {
            Self::And(parts) => {
                for part in parts {
                    if !part.eval(item, facts)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Self::Or(parts) => {
                for part in parts {
                    if part.eval(item, facts)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Self::Present { path, want } => Ok(lookup(item, path).is_some() == *want),
            Self::Check { path, check } => match lookup(item, path) {
                Some(value) => check.decide(value, facts),
                None => Err(format!("`{}` is missing", item_name(path))),
            },
        }
    }
}

fn item_name(path: &[String]) -> String {
    std::iter::once("item")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(".")
}

/// The value at a path of record fields; `None` when a field is missing or a step is not a
/// record.
pub(crate) fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut value = value;
    for segment in path {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// What some tests need beyond the value: where values came from, and the values the operator
/// wrote in the policy's sets (which count as coming from the operator).
pub(crate) struct Facts<'a> {
    pub(crate) origins: Option<&'a Origins>,
    pub(crate) operator: &'a HashSet<String>,
}

/// Whether some element passes. Every element is looked at: one that cannot be judged
/// rejects, even when another already makes the test hold.
fn some_element(test: &Test, items: &[&Value], facts: &Facts<'_>) -> Result<bool, String> {
    let mut holds = false;
    for item in items {
        holds |= test.element(item, facts)?;
    }
    Ok(holds)
}

/// The elements of a list, nested lists flattened; a single value is its own element.
pub(crate) fn elements<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| elements(i, out)),
        other => out.push(other),
    }
}

pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "a null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a record",
    }
}

fn not_a(text: &str, what: &str) -> String {
    const SHOWN: usize = 60;
    let shown: String = text.chars().take(SHOWN).collect();
    let more = if text.chars().count() > SHOWN {
        "…"
    } else {
        ""
    };
    format!("`{shown}{more}` is not a {what}")
}

/// A Cedar string literal.
pub(crate) fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        out.extend(c.escape_default());
    }
    out.push('"');
    out
}

pub(crate) fn int_literal(n: i64) -> String {
    if n == i64::MIN {
        "(-9223372036854775807 - 1)".to_owned()
    } else {
        n.to_string()
    }
}

pub(crate) fn scalar_literal(s: &Scalar) -> String {
    match s {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(n) => int_literal(*n),
        // Fractions are scaled to `Int` at compile time; one left here compares unequal.
        Scalar::Frac(_) => "\"\"".to_owned(),
        Scalar::Str(text) => string_literal(text),
    }
}

pub(crate) fn set_literal(items: &[Scalar]) -> String {
    let inner: Vec<String> = items.iter().map(scalar_literal).collect();
    format!("[{}]", inner.join(", "))
}

/// Cedar's `==` between a policy scalar and a call's value: values of different types are
/// simply unequal.
fn scalar_is(scalar: &Scalar, value: &Value) -> bool {
    match (scalar, value) {
        (Scalar::Bool(a), Value::Bool(b)) => a == b,
        (Scalar::Int(a), Value::Number(b)) => b.as_i64() == Some(*a),
        (Scalar::Str(a), Value::String(b)) => a == b,
        _ => false,
    }
}

/// The same patterns as Cedar's `like`, matched in Rust: `*` is any run of characters.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard match, remembering the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if Some(c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

pub(crate) fn valid_domain_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

pub(crate) fn domain_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            host.len() > parent.len() + 1
                && host.ends_with(parent)
                && host.as_bytes().get(host.len() - parent.len() - 1) == Some(&b'.')
        }
        None => host == pattern,
    }
}

/// The host of a URL (`https://bank.com/x`), or a bare host name with an optional port and
/// path (`bank.com`, `bank.com:8443/x`), lowercase and without a trailing dot.
pub(crate) fn url_host(text: &str) -> Option<String> {
    let parsed = url::Url::parse(text)
        .ok()
        .filter(|u| u.host_str().is_some())
        .or_else(|| {
            bare_host_shape(text)
                .then(|| url::Url::parse(&format!("https://{text}")).ok())
                .flatten()
        })?;
    let host = parsed.host_str()?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// `name.tld`, `name.tld:443`, `name.tld/path`: letters, digits, `-` and `.` up to an optional
/// port and path, with at least one dot (so `localhost` or `mailto:x` is not taken for one).
fn bare_host_shape(text: &str) -> bool {
    let head = text.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match head.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => head,
    };
    host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

pub(crate) fn email_domain(text: &str) -> Option<String> {
    if text
        .chars()
        .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == ',')
    {
        return None;
    }
    let (local, domain) = text.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// The hosts of every link in a text: URLs with a scheme, and bare `name.tld/...` forms. A
/// link whose host cannot be read fails the test (the rule then rejects).
pub(crate) fn link_hosts(text: &str) -> Result<Vec<String>, String> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder.url_must_have_scheme(false);
    let mut hosts = Vec::new();
    for link in finder.links(text) {
        let host = url_host(link.as_str()).ok_or_else(|| {
            format!(
                "the link {} has no readable host",
                not_a(link.as_str(), "URL")
            )
        })?;
        hosts.push(host);
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_domains_are_extracted_strictly() {
        assert_eq!(
            url_host("https://Bank.example/x").as_deref(),
            Some("bank.example")
        );
        assert_eq!(
            url_host("https://bank.com@evil.com/").as_deref(),
            Some("evil.com")
        );
        assert_eq!(url_host("bank.com").as_deref(), Some("bank.com"));
        assert_eq!(url_host("Bank.com:8443/pay").as_deref(), Some("bank.com"));
        assert_eq!(url_host("not a url"), None);
        assert_eq!(url_host("localhost"), None);
        assert_eq!(url_host("mailto:a@b.com"), None);
        assert_eq!(
            email_domain("a@Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(email_domain("a@b@evil.com").as_deref(), Some("evil.com"));
        assert_eq!(email_domain("Bob <a@b.com>"), None);
        assert!(domain_matches("api.bank.com", "*.bank.com"));
        assert!(!domain_matches("bank.com", "*.bank.com"));
        assert!(!domain_matches("evilbank.com", "*.bank.com"));
        assert!(domain_matches("bank.com", "bank.com"));
    }

    #[test]
    fn links_are_found_in_free_text_with_or_without_scheme() {
        let hosts = link_hosts(
            "Hi! Reset at https://login.evil.example/reset?x=1 or see docs.example.org/help. Mail bob@corp.example",
        )
        .unwrap();
        assert_eq!(hosts, ["login.evil.example", "docs.example.org"]);
        assert!(link_hosts("no links here.").unwrap().is_empty());
    }

    #[test]
    fn globs_match_like_cedar_like() {
        for (pattern, text, want) in [
            ("*", "", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "aXbYbZc", true),
            ("*@evil.com", "x@evil.com", true),
            ("*@evil.com", "x@evil.com.au", false),
            ("a", "ab", false),
            ("ab", "a", false),
            ("", "", true),
            ("", "a", false),
            ("**", "anything", true),
            ("é*", "été", true),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn string_literals_escape_quotes() {
        assert_eq!(string_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}

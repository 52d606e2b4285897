//! Conditions: from the operator's YAML tests to one Cedar expression per rule.
//!
//! Every subject becomes an attribute of the Cedar `context` record:
//! `args.a.b` → `context["args"]["a"]["b"]`, `total.x` → `context["total"]["x"]`,
//! `time` → `context["time"]` (minutes after midnight), `channel`, `agent`. Tests Cedar has no
//! operator for (URL hosts, e-mail domains) are computed in Rust for the call and handed to
//! Cedar as booleans under `context["derived"]`. Whatever the expression meets at run time —
//! a missing argument, a value of the wrong type — is an evaluation error, and an evaluation
//! error rejects the call.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_saphyr::Spanned;

use crate::error::Diagnostic;
use crate::raw::{RawCond, RawOps, Scalar};

/// Which attribute of the call a derived fact is about, and what it checks.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    /// Key under `context["derived"]`.
    pub(crate) key: String,
    /// Path inside the arguments.
    pub(crate) path: Vec<String>,
    pub(crate) kind: DerivedKind,
    /// Host or domain patterns: `example.com` or `*.example.com`.
    pub(crate) patterns: Vec<String>,
    /// `true` for the `*_not_in` tests (some value outside the patterns).
    pub(crate) negate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DerivedKind {
    UrlHost,
    EmailDomain,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) expr: cedar_policy::Expression,
    /// The Cedar text, shown by `explain`.
    pub(crate) text: String,
    pub(crate) derived: Vec<Derived>,
}

/// Compiles conditions for one policy; numbers derived facts across it.
pub(crate) struct Compiler<'a> {
    pub(crate) totals: &'a [String],
    pub(crate) next_derived: usize,
}

enum Subject {
    Args(Vec<String>),
    Total(String),
    Time,
    Channel,
    Agent,
}

impl Subject {
    fn access(&self) -> String {
        match self {
            Self::Args(path) => {
                let mut out = String::from("context[\"args\"]");
                for segment in path {
                    let _ = write!(out, "[{}]", string_literal(segment));
                }
                out
            }
            Self::Total(name) => format!("context[\"total\"][{}]", string_literal(name)),
            Self::Time => "context[\"time\"]".to_owned(),
            Self::Channel => "context[\"channel\"]".to_owned(),
            Self::Agent => "context[\"agent\"]".to_owned(),
        }
    }

    fn presence(&self) -> String {
        match self {
            Self::Args(path) => {
                let mut parts = Vec::new();
                let mut base = String::from("context[\"args\"]");
                for segment in path {
                    let lit = string_literal(segment);
                    parts.push(format!("{base} has {lit}"));
                    let _ = write!(base, "[{lit}]");
                }
                format!("({})", parts.join(" && "))
            }
            Self::Total(name) => format!("context[\"total\"] has {}", string_literal(name)),
            Self::Time => "context has \"time\"".to_owned(),
            Self::Channel => "context has \"channel\"".to_owned(),
            Self::Agent => "context has \"agent\"".to_owned(),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Self::Total(_))
    }

    fn is_text(&self) -> bool {
        matches!(self, Self::Channel | Self::Agent)
    }
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

/// A Cedar `like` pattern: `*` stays a wildcard, everything else is literal.
fn like_literal(pattern: &str) -> String {
    string_literal(pattern)
}

fn int_literal(n: i64) -> String {
    if n == i64::MIN {
        "(-9223372036854775807 - 1)".to_owned()
    } else {
        n.to_string()
    }
}

fn scalar_literal(s: &Scalar) -> String {
    match s {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(n) => int_literal(*n),
        Scalar::Str(text) => string_literal(text),
    }
}

fn set_literal(items: &[Scalar]) -> String {
    let inner: Vec<String> = items.iter().map(scalar_literal).collect();
    format!("[{}]", inner.join(", "))
}

fn subject_hint() -> &'static str {
    "subjects are `args.NAME`, `total.NAME`, `time`, `channel` and `agent`; combinators are `any`, `not` and `cedar`"
}

impl Compiler<'_> {
    pub(crate) fn compile(
        &mut self,
        cond: &Spanned<RawCond>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Condition> {
        let mut derived = Vec::new();
        let before = errors.len();
        let text = self.compile_inner(cond, &mut derived, errors);
        if errors.len() > before {
            return None;
        }
        match cedar_policy::Expression::from_str(&text) {
            Ok(expr) => Some(Condition {
                expr,
                text,
                derived,
            }),
            Err(e) => {
                errors.push(Diagnostic::at(
                    &cond.referenced,
                    format!(
                        "condition does not compile to cedar: {}",
                        first_line(&e.to_string())
                    ),
                ));
                None
            }
        }
    }

    fn compile_inner(
        &mut self,
        cond: &Spanned<RawCond>,
        derived: &mut Vec<Derived>,
        errors: &mut Vec<Diagnostic>,
    ) -> String {
        let errors_before = errors.len();
        let mut parts: Vec<String> = Vec::new();
        for (subject, ops) in &cond.value.tests {
            parts.extend(self.compile_tests(subject, ops, derived, errors));
        }
        if let Some(any) = &cond.value.any {
            if any.is_empty() {
                errors.push(Diagnostic::at(
                    &cond.referenced,
                    "`any` needs at least one condition",
                ));
            }
            let alternatives: Vec<String> = any
                .iter()
                .map(|c| format!("({})", self.compile_inner(c, derived, errors)))
                .collect();
            parts.push(alternatives.join(" || "));
        }
        if let Some(not) = &cond.value.not {
            parts.push(format!("!({})", self.compile_inner(not, derived, errors)));
        }
        if let Some(raw) = &cond.value.cedar {
            match cedar_policy::Expression::from_str(&raw.value) {
                Ok(_) => parts.push(raw.value.clone()),
                Err(e) => errors.push(
                    Diagnostic::at(
                        &raw.referenced,
                        format!(
                            "cedar expression `{}` does not parse: {}",
                            raw.value,
                            first_line(&e.to_string())
                        ),
                    )
                    .with_hint("the call is under `context`: `context.args`, `context.total`, `context.time`, `context.channel`, `context.agent`"),
                ),
            }
        }
        if parts.is_empty() {
            if errors.len() > errors_before {
                return "false".to_owned();
            }
            errors.push(
                Diagnostic::at(&cond.referenced, "empty condition").with_hint(subject_hint()),
            );
            return "false".to_owned();
        }
        match parts.as_slice() {
            [one] => one.clone(),
            _ => parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" && "),
        }
    }

    fn subject(&self, key: &Spanned<String>, errors: &mut Vec<Diagnostic>) -> Option<Subject> {
        let name = key.value.as_str();
        let subject = match name {
            "time" => Subject::Time,
            "channel" => Subject::Channel,
            "agent" => Subject::Agent,
            _ => {
                if let Some(path) = name.strip_prefix("args.") {
                    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
                    if segments.iter().any(String::is_empty) {
                        errors.push(Diagnostic::at(
                            &key.referenced,
                            format!("invalid argument path `{name}`"),
                        ));
                        return None;
                    }
                    Subject::Args(segments)
                } else if let Some(total) = name.strip_prefix("total.") {
                    if !self.totals.iter().any(|t| t == total) {
                        errors.push(
                            Diagnostic::at(&key.referenced, format!("unknown total `{total}`"))
                                .with_hint("declare it under `totals:` first"),
                        );
                        return None;
                    }
                    Subject::Total(total.to_owned())
                } else {
                    errors.push(
                        Diagnostic::at(&key.referenced, format!("unknown subject `{name}`"))
                            .with_hint(subject_hint()),
                    );
                    return None;
                }
            }
        };
        Some(subject)
    }

    fn compile_tests(
        &mut self,
        key: &Spanned<String>,
        ops: &RawOps,
        derived: &mut Vec<Derived>,
        errors: &mut Vec<Diagnostic>,
    ) -> Vec<String> {
        let Some(subject) = self.subject(key, errors) else {
            return Vec::new();
        };
        let name = key.value.as_str();
        let errors_before = errors.len();
        let mut out = Vec::new();
        let bad = |op: &str, why: &str, errors: &mut Vec<Diagnostic>| {
            errors.push(Diagnostic::at(
                &key.referenced,
                format!("test `{op}` on `{name}` {why}"),
            ));
        };
        let x = subject.access();
        let is_time = matches!(subject, Subject::Time);

        if let Some(present) = ops.present {
            let p = subject.presence();
            out.push(if present { p } else { format!("!({p})") });
        }
        for (op, value, cmp) in [("eq", &ops.eq, "=="), ("ne", &ops.ne, "!=")] {
            let Some(value) = value else { continue };
            let fits = match value {
                Scalar::Int(_) => !subject.is_text() && !is_time,
                Scalar::Str(_) => !subject.is_numeric() && !is_time,
                Scalar::Bool(_) => matches!(subject, Subject::Args(_)),
            };
            if fits {
                out.push(format!("{x} {cmp} {}", scalar_literal(value)));
            } else {
                bad(op, "compares values of different types", errors);
            }
        }
        for (op, value, cmp) in [
            ("gt", ops.gt, ">"),
            ("ge", ops.ge, ">="),
            ("lt", ops.lt, "<"),
            ("le", ops.le, "<="),
        ] {
            let Some(n) = value else { continue };
            if subject.is_text() || is_time {
                bad(
                    op,
                    "needs a number subject (use `between` for time)",
                    errors,
                );
            } else {
                out.push(format!("{x} {cmp} {}", int_literal(n)));
            }
        }
        for (op, items, negate) in [("in", &ops.in_, false), ("not_in", &ops.not_in, true)] {
            let Some(items) = items else { continue };
            let same_kind = items.iter().all(|i| match i {
                Scalar::Int(_) => !subject.is_text(),
                Scalar::Str(_) => !subject.is_numeric(),
                Scalar::Bool(_) => matches!(subject, Subject::Args(_)),
            });
            if is_time || !same_kind {
                bad(op, "lists values of a type the subject cannot have", errors);
                continue;
            }
            let test = format!("{}.contains({x})", set_literal(items));
            out.push(if negate { format!("!{test}") } else { test });
        }
        for (op, pattern, negate) in [
            ("like", &ops.like, false),
            ("not_like", &ops.not_like, true),
        ] {
            let Some(pattern) = pattern else { continue };
            if subject.is_numeric() || is_time {
                bad(op, "needs a text subject", errors);
                continue;
            }
            let test = format!("{x} like {}", like_literal(pattern));
            out.push(if negate { format!("!({test})") } else { test });
        }
        let args_only = !matches!(subject, Subject::Args(_));
        if let Some(item) = &ops.contains {
            if args_only {
                bad("contains", "needs a list argument", errors);
            } else {
                out.push(format!("{x}.contains({})", scalar_literal(item)));
            }
        }
        for (op, items, method) in [
            ("contains_any", &ops.contains_any, "containsAny"),
            ("contains_all", &ops.contains_all, "containsAll"),
        ] {
            let Some(items) = items else { continue };
            if args_only {
                bad(op, "needs a list argument", errors);
            } else {
                out.push(format!("{x}.{method}({})", set_literal(items)));
            }
        }
        for (op, patterns, kind, negate) in [
            ("host_in", &ops.host_in, DerivedKind::UrlHost, false),
            ("host_not_in", &ops.host_not_in, DerivedKind::UrlHost, true),
            (
                "email_domain_in",
                &ops.email_domain_in,
                DerivedKind::EmailDomain,
                false,
            ),
            (
                "email_domain_not_in",
                &ops.email_domain_not_in,
                DerivedKind::EmailDomain,
                true,
            ),
        ] {
            let Some(patterns) = patterns else { continue };
            let Subject::Args(path) = &subject else {
                bad(
                    op,
                    "needs an argument holding a URL or an e-mail address",
                    errors,
                );
                continue;
            };
            if let Some(p) = patterns.iter().find(|p| !valid_domain_pattern(p)) {
                errors.push(Diagnostic::at(
                    &key.referenced,
                    format!(
                        "invalid domain pattern `{p}`: expected `example.com` or `*.example.com`"
                    ),
                ));
                continue;
            }
            let derived_key = format!("d{}", self.next_derived);
            self.next_derived += 1;
            out.push(format!(
                "context[\"derived\"][{}]",
                string_literal(&derived_key)
            ));
            derived.push(Derived {
                key: derived_key,
                path: path.clone(),
                kind,
                patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
                negate,
            });
        }
        if let Some((start, end)) = ops.between {
            if !is_time {
                bad("between", "applies to `time` only", errors);
            } else if start == end {
                bad("between", "is an empty interval", errors);
            } else {
                let (s, e) = (start.minutes(), end.minutes());
                out.push(if s < e {
                    format!("{x} >= {s} && {x} < {e}")
                } else {
                    format!("{x} >= {s} || {x} < {e}")
                });
            }
        }
        if out.is_empty() && errors.len() == errors_before {
            errors.push(Diagnostic::at(
                &key.referenced,
                format!("no tests for `{name}`"),
            ));
        }
        out
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}

fn valid_domain_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn domain_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            host.len() > parent.len() + 1
                && host.ends_with(parent)
                && host.as_bytes().get(host.len() - parent.len() - 1) == Some(&b'.')
        }
        None => host == pattern,
    }
}

fn url_host(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let host = url.host_str()?;
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn email_domain(text: &str) -> Option<String> {
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

impl Derived {
    /// The fact for this call, or `None` when the argument is missing or is not a URL / an
    /// address (the condition then fails to evaluate, which rejects the call).
    pub(crate) fn evaluate(&self, args: &serde_json::Value) -> Option<bool> {
        let mut value = args;
        for segment in &self.path {
            value = value.get(segment)?;
        }
        let texts: Vec<&str> = match value {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(serde_json::Value::as_str)
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        let mut all_match = true;
        for text in texts {
            let domain = match self.kind {
                DerivedKind::UrlHost => url_host(text)?,
                DerivedKind::EmailDomain => email_domain(text)?,
            };
            let hit = self.patterns.iter().any(|p| domain_matches(&domain, p));
            all_match &= hit;
        }
        // `*_not_in` is the exact negation of `*_in`: at least one value falls outside.
        Some(all_match != self.negate)
    }
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
        assert_eq!(url_host("not a url"), None);
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
    fn string_literals_escape_quotes() {
        assert_eq!(string_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}

//! Conditions: from the operator's YAML tests to one Cedar expression per rule.
//!
//! Every subject becomes an attribute of the Cedar `context` record:
//! `args.a.b` → `context["args"]["a"]["b"]`, `total.x` → `context["total"]["x"]`,
//! `time` → `context["time"]` (minutes after midnight), `channel`, `agent`. Whatever the
//! expression meets at run time — a missing argument, a value of the wrong type — is an
//! evaluation error, and an evaluation error rejects the call.
//!
//! Two kinds of fact are computed in Rust for the call and handed to Cedar as booleans under
//! `context["derived"]`: tests Cedar has no operator for (URL hosts, e-mail domains), and every
//! test on an argument that turns out to be a **list**. Cedar has no quantifiers, and its
//! `==` and `.contains` compare a list as a whole, so a blocklist `in: [evil]` would never see
//! `["evil"]`. A test over a list holds when some element (of nested lists too) passes it.
//!
//! `not` is pushed down to the tests: `not: { in: L }` compiles to `not_in: L`, `not` over a
//! conjunction to a disjunction of opposites, and so on. Over a single value that is exactly
//! the negation; over a list it keeps the existential reading, so `not` can never turn "some
//! element is blocked" into "no element is allowed". Every condition is thereby monotone in
//! the elements of a list: adding an element can make a rule fire, never stop it (the
//! whole-list tests `contains*` under `not` excepted, which are about the list itself).
//!
//! A compiled condition also lists what it reads (`Read`), so that a value the engine cannot
//! represent — a null, a fraction, an integer beyond 64 bits — rejects every rule that reads
//! it instead of being skipped.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::Diagnostic;
use crate::raw::{RawCond, RawOps, Scalar};

/// A comparison with a whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    fn holds(self, left: i64, right: i64) -> bool {
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
    /// `host_in` / `email_domain_in` (`inside`), or their `_not_in` forms. Patterns are
    /// lowercase `example.com` or `*.example.com`.
    Domain {
        kind: DomainKind,
        patterns: Vec<String>,
        inside: bool,
    },
}

impl Test {
    /// The test that holds exactly when this one fails, on a single value (and fails to
    /// evaluate exactly when this one does).
    fn opposite(self) -> Self {
        match self {
            Self::Eq(v) => Self::Ne(v),
            Self::Ne(v) => Self::Eq(v),
            Self::Cmp(c, n) => Self::Cmp(c.opposite(), n),
            Self::In(l) => Self::NotIn(l),
            Self::NotIn(l) => Self::In(l),
            Self::Like(p) => Self::NotLike(p),
            Self::NotLike(p) => Self::Like(p),
            Self::Domain {
                kind,
                patterns,
                inside,
            } => Self::Domain {
                kind,
                patterns,
                inside: !inside,
            },
        }
    }

    /// The Cedar expression for a single value `x`; `None` for the tests Cedar cannot do.
    fn cedar(&self, x: &str) -> Option<String> {
        Some(match self {
            Self::Eq(v) => format!("{x} == {}", scalar_literal(v)),
            Self::Ne(v) => format!("{x} != {}", scalar_literal(v)),
            Self::Cmp(c, n) => format!("{x} {} {}", c.symbol(), int_literal(*n)),
            Self::In(l) => format!("{}.contains({x})", set_literal(l)),
            Self::NotIn(l) => format!("!{}.contains({x})", set_literal(l)),
            Self::Like(p) => format!("{x} like {}", like_literal(p)),
            Self::NotLike(p) => format!("!({x} like {})", like_literal(p)),
            Self::Domain { .. } => return None,
        })
    }

    /// One element, as Cedar would judge it on its own: a comparison or pattern on a value of
    /// the wrong type fails to evaluate; equality and membership simply do not hold.
    fn element(&self, e: &Value) -> Result<bool, String> {
        match self {
            Self::Eq(v) => Ok(scalar_is(v, e)),
            Self::Ne(v) => Ok(!scalar_is(v, e)),
            Self::Cmp(c, n) => match e.as_i64() {
                Some(x) => Ok(c.holds(x, *n)),
                None => Err(format!("{} is not a whole number", kind_of(e))),
            },
            Self::In(l) => Ok(l.iter().any(|v| scalar_is(v, e))),
            Self::NotIn(l) => Ok(!l.iter().any(|v| scalar_is(v, e))),
            Self::Like(p) | Self::NotLike(p) => match e.as_str() {
                Some(text) => Ok(glob(p, text) == matches!(self, Self::Like(_))),
                None => Err(format!("{} is not text", kind_of(e))),
            },
            Self::Domain {
                kind,
                patterns,
                inside,
            } => {
                let Some(text) = e.as_str() else {
                    return Err(format!("{} is not text", kind_of(e)));
                };
                let domain = match kind {
                    DomainKind::UrlHost => {
                        url_host(text).ok_or("a value is not a URL with a host")?
                    }
                    DomainKind::EmailDomain => {
                        email_domain(text).ok_or("a value is not an e-mail address")?
                    }
                };
                Ok(patterns.iter().any(|p| domain_matches(&domain, p)) == *inside)
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
    fn cedar(&self, x: &str) -> String {
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
}

/// A fact about the call's arguments that Rust decides for Cedar.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    /// Key under `context["derived"]`.
    pub(crate) key: String,
    /// Path inside the arguments.
    pub(crate) path: Vec<String>,
    pub(crate) check: Check,
}

/// What a condition reads: a path in the Cedar `context` (`["args", "amount"]`,
/// `["total", "paid"]`), for its value or only for whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    pub(crate) path: Vec<String>,
    /// `present` alone, or Cedar's `has`: reads every value above the last segment, not the
    /// value at it.
    pub(crate) presence: bool,
}

impl Read {
    /// Whether reading this needs the value at `at`: it lies on the path, or inside what the
    /// path reads.
    pub(crate) fn touches(&self, at: &[String]) -> bool {
        if self.presence {
            at.len() < self.path.len() && self.path.starts_with(at)
        } else {
            self.path.starts_with(at) || at.starts_with(&self.path)
        }
    }

    /// `args.amount`, `total.paid`, or `context` for the whole record.
    pub(crate) fn name(&self) -> String {
        if self.path.is_empty() {
            "context".to_owned()
        } else {
            self.path.join(".")
        }
    }
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) expr: cedar_policy::Expression,
    /// The Cedar text, shown by `explain`.
    pub(crate) text: String,
    pub(crate) derived: Vec<Derived>,
    /// Everything the condition reads, however its branches would short-circuit.
    pub(crate) reads: Vec<Read>,
}

/// Compiles conditions for one policy; numbers derived facts across it.
pub(crate) struct Compiler<'a> {
    pub(crate) totals: &'a [String],
    pub(crate) next_derived: usize,
}

/// Where one condition's compilation puts what it finds.
struct Sink<'a> {
    derived: Vec<Derived>,
    reads: Vec<Read>,
    errors: &'a mut Vec<Diagnostic>,
    warnings: &'a mut Vec<Diagnostic>,
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

    /// The path in the Cedar context, for the values the engine cannot represent (only
    /// arguments and totals can hold one).
    fn context_path(&self) -> Option<Vec<String>> {
        match self {
            Self::Args(path) => Some(
                std::iter::once("args".to_owned())
                    .chain(path.iter().cloned())
                    .collect(),
            ),
            Self::Total(name) => Some(vec!["total".to_owned(), name.clone()]),
            Self::Time | Self::Channel | Self::Agent => None,
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

/// The same patterns, matched in Rust: `*` is any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
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

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "a null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a record",
    }
}

/// The elements of a list, nested lists flattened.
fn elements<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| elements(i, out)),
        other => out.push(other),
    }
}

fn subject_hint() -> &'static str {
    "subjects are `args.NAME`, `total.NAME`, `time`, `channel` and `agent`; combinators are `any`, `not` and `cedar`"
}

impl Compiler<'_> {
    pub(crate) fn compile(
        &mut self,
        cond: &Spanned<RawCond>,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> Option<Condition> {
        let before = errors.len();
        let mut sink = Sink {
            derived: Vec::new(),
            reads: Vec::new(),
            errors,
            warnings,
        };
        let text = self.compile_inner(cond, false, &mut sink);
        let Sink {
            derived,
            reads,
            errors,
            ..
        } = sink;
        if errors.len() > before {
            return None;
        }
        match cedar_policy::Expression::from_str(&text) {
            Ok(expr) => Some(Condition {
                expr,
                text,
                derived,
                reads,
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

    /// `negated`: compile the negation of `cond`, pushed down to its tests.
    fn compile_inner(
        &mut self,
        cond: &Spanned<RawCond>,
        negated: bool,
        sink: &mut Sink<'_>,
    ) -> String {
        let errors_before = sink.errors.len();
        let mut parts: Vec<String> = Vec::new();
        for (subject, ops) in &cond.value.tests {
            parts.extend(self.compile_tests(subject, ops, negated, sink));
        }
        if let Some(any) = &cond.value.any {
            if any.is_empty() {
                sink.errors.push(Diagnostic::at(
                    &cond.referenced,
                    "`any` needs at least one condition",
                ));
            }
            // not (a or b) = (not a) and (not b)
            let alternatives: Vec<String> = any
                .iter()
                .map(|c| format!("({})", self.compile_inner(c, negated, sink)))
                .collect();
            parts.push(alternatives.join(if negated { " && " } else { " || " }));
        }
        if let Some(not) = &cond.value.not {
            parts.push(self.compile_inner(not, !negated, sink));
        }
        if let Some(raw) = &cond.value.cedar {
            match cedar_policy::Expression::from_str(&raw.value) {
                Ok(_) => {
                    raw_analysis(raw, sink);
                    parts.push(if negated {
                        format!("!({})", raw.value)
                    } else {
                        raw.value.clone()
                    });
                }
                Err(e) => sink.errors.push(
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
            if sink.errors.len() > errors_before {
                return "false".to_owned();
            }
            sink.errors.push(
                Diagnostic::at(&cond.referenced, "empty condition").with_hint(subject_hint()),
            );
            return "false".to_owned();
        }
        match parts.as_slice() {
            [one] => one.clone(),
            // not (a and b) = (not a) or (not b)
            _ => parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(if negated { " || " } else { " && " }),
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
        negated: bool,
        sink: &mut Sink<'_>,
    ) -> Vec<String> {
        let Some(subject) = self.subject(key, sink.errors) else {
            return Vec::new();
        };
        let name = key.value.as_str();
        let errors_before = sink.errors.len();
        let bad = |op: &str, why: &str, errors: &mut Vec<Diagnostic>| {
            errors.push(Diagnostic::at(
                &key.referenced,
                format!("test `{op}` on `{name}` {why}"),
            ));
        };
        let is_time = matches!(subject, Subject::Time);
        let is_args = matches!(subject, Subject::Args(_));

        // Gather the tests, in the order `RawOps` documents (`present` first).
        let mut checks: Vec<Check> = Vec::new();
        for (op, value, equal) in [("eq", &ops.eq, true), ("ne", &ops.ne, false)] {
            let Some(value) = value else { continue };
            let fits = match value {
                Scalar::Int(_) => !subject.is_text() && !is_time,
                Scalar::Str(_) => !subject.is_numeric() && !is_time,
                Scalar::Bool(_) => is_args,
            };
            if fits {
                checks.push(Check::Element(if equal {
                    Test::Eq(value.clone())
                } else {
                    Test::Ne(value.clone())
                }));
            } else {
                bad(op, "compares values of different types", sink.errors);
            }
        }
        for (op, value, cmp) in [
            ("gt", ops.gt, Cmp::Gt),
            ("ge", ops.ge, Cmp::Ge),
            ("lt", ops.lt, Cmp::Lt),
            ("le", ops.le, Cmp::Le),
        ] {
            let Some(n) = value else { continue };
            if subject.is_text() || is_time {
                bad(
                    op,
                    "needs a number subject (use `between` for time)",
                    sink.errors,
                );
            } else {
                checks.push(Check::Element(Test::Cmp(cmp, n)));
            }
        }
        for (op, items, inside) in [("in", &ops.in_, true), ("not_in", &ops.not_in, false)] {
            let Some(items) = items else { continue };
            let same_kind = items.iter().all(|i| match i {
                Scalar::Int(_) => !subject.is_text(),
                Scalar::Str(_) => !subject.is_numeric(),
                Scalar::Bool(_) => is_args,
            });
            if is_time || !same_kind {
                bad(
                    op,
                    "lists values of a type the subject cannot have",
                    sink.errors,
                );
                continue;
            }
            checks.push(Check::Element(if inside {
                Test::In(items.clone())
            } else {
                Test::NotIn(items.clone())
            }));
        }
        for (op, pattern, positive) in [
            ("like", &ops.like, true),
            ("not_like", &ops.not_like, false),
        ] {
            let Some(pattern) = pattern else { continue };
            if subject.is_numeric() || is_time {
                bad(op, "needs a text subject", sink.errors);
                continue;
            }
            checks.push(Check::Element(if positive {
                Test::Like(pattern.clone())
            } else {
                Test::NotLike(pattern.clone())
            }));
        }
        let wholes = [
            ("contains", ops.contains.clone().map(Whole::Contains)),
            (
                "contains_any",
                ops.contains_any.clone().map(Whole::ContainsAny),
            ),
            (
                "contains_all",
                ops.contains_all.clone().map(Whole::ContainsAll),
            ),
        ];
        for (op, whole) in wholes {
            let Some(test) = whole else { continue };
            if is_args {
                checks.push(Check::Whole {
                    test,
                    negate: false,
                });
            } else {
                bad(op, "needs a list argument", sink.errors);
            }
        }
        for (op, patterns, kind, inside) in [
            ("host_in", &ops.host_in, DomainKind::UrlHost, true),
            ("host_not_in", &ops.host_not_in, DomainKind::UrlHost, false),
            (
                "email_domain_in",
                &ops.email_domain_in,
                DomainKind::EmailDomain,
                true,
            ),
            (
                "email_domain_not_in",
                &ops.email_domain_not_in,
                DomainKind::EmailDomain,
                false,
            ),
        ] {
            let Some(patterns) = patterns else { continue };
            if !is_args {
                bad(
                    op,
                    "needs an argument holding a URL or an e-mail address",
                    sink.errors,
                );
                continue;
            }
            if let Some(p) = patterns.iter().find(|p| !valid_domain_pattern(p)) {
                sink.errors.push(Diagnostic::at(
                    &key.referenced,
                    format!(
                        "invalid domain pattern `{p}`: expected `example.com` or `*.example.com`"
                    ),
                ));
                continue;
            }
            checks.push(Check::Element(Test::Domain {
                kind,
                patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
                inside,
            }));
        }

        let presence_only = checks.is_empty();
        let mut out = Vec::new();
        if let Some(present) = ops.present {
            let p = subject.presence();
            out.push(if present != negated {
                p
            } else {
                format!("!({p})")
            });
        }
        let x = subject.access();
        for check in checks {
            // `not` is pushed down: each test becomes its opposite, still over some element.
            let check = match check {
                Check::Element(test) if negated => Check::Element(test.opposite()),
                Check::Whole { test, negate } => Check::Whole {
                    test,
                    negate: negate != negated,
                },
                other @ Check::Element(_) => other,
            };
            let scalar = match &check {
                Check::Element(test) => test.cedar(&x),
                Check::Whole { test, negate } => Some(if *negate {
                    format!("!({})", test.cedar(&x))
                } else {
                    test.cedar(&x)
                }),
            };
            let Subject::Args(path) = &subject else {
                // Not an argument: never a list, and never a domain test (checked above).
                out.extend(scalar);
                continue;
            };
            let derived_key = format!("d{}", self.next_derived);
            self.next_derived += 1;
            let fact = format!("context[\"derived\"][{}]", string_literal(&derived_key));
            out.push(match scalar {
                // Cedar decides a single value; Rust decides a list.
                Some(scalar) => format!(
                    "(if context[\"derived\"] has {} then {fact} else {scalar})",
                    string_literal(&derived_key)
                ),
                None => fact,
            });
            sink.derived.push(Derived {
                key: derived_key,
                path: path.clone(),
                check,
            });
        }
        if let Some((start, end)) = ops.between {
            if !is_time {
                bad("between", "applies to `time` only", sink.errors);
            } else if start == end {
                bad("between", "is an empty interval", sink.errors);
            } else {
                let (s, e) = (start.minutes(), end.minutes());
                let test = if s < e {
                    format!("{x} >= {s} && {x} < {e}")
                } else {
                    format!("{x} >= {s} || {x} < {e}")
                };
                out.push(if negated { format!("!({test})") } else { test });
            }
        }
        if out.is_empty() && sink.errors.len() == errors_before {
            sink.errors.push(Diagnostic::at(
                &key.referenced,
                format!("no tests for `{name}`"),
            ));
        }
        if let Some(path) = subject.context_path() {
            sink.reads.push(Read {
                path,
                presence: presence_only,
            });
        }
        out
    }
}

/// What a raw `cedar:` expression reads, and the arguments it compares as a whole. Cedar's
/// own JSON form of the expression is walked, so no string in it can pass for a path. If the
/// expression cannot be analysed, it is taken to read the whole context.
fn raw_analysis(raw: &Spanned<String>, sink: &mut Sink<'_>) {
    let wrapped = format!(
        "permit(principal, action, resource) when {{\n{}\n}};",
        raw.value
    );
    let est = cedar_policy::Policy::parse(None, wrapped)
        .ok()
        .and_then(|p| p.to_json().ok());
    let Some(conditions) = est.as_ref().and_then(|e| e.get("conditions")) else {
        sink.reads.push(Read {
            path: Vec::new(),
            presence: false,
        });
        return;
    };
    let mut compared = Vec::new();
    walk_est(conditions, &mut sink.reads, &mut compared);
    compared.dedup();
    for path in compared {
        let name = format!("context.{}", path.join("."));
        let arg = path.get(1..).map(|p| p.join(".")).unwrap_or_default();
        sink.warnings.push(
            Diagnostic::at(
                &raw.referenced,
                format!(
                    "raw cedar compares `{name}` as a whole: if that argument is a list, no element is looked at, and a blocklist can fail open"
                ),
            )
            .with_hint(format!(
                "use `args.{arg}: {{ in: [...] }}`, `eq` or `ne`, which test each element of a list"
            )),
        );
    }
}

/// `context.a.b` (or `context["a"]["b"]`) in Cedar's JSON form, as `["a", "b"]`.
fn chain(node: &Value) -> Option<Vec<String>> {
    if node.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let access = node.get(".")?;
    let mut path = chain(access.get("left")?)?;
    path.push(access.get("attr")?.as_str()?.to_owned());
    Some(path)
}

fn args_chain(node: Option<&Value>) -> Option<Vec<String>> {
    chain(node?).filter(|p| p.len() > 1 && p.first().is_some_and(|f| f == "args"))
}

fn walk_est(node: &Value, reads: &mut Vec<Read>, compared: &mut Vec<Vec<String>>) {
    if let Some(path) = chain(node) {
        reads.push(Read {
            path,
            presence: false,
        });
        return;
    }
    match node {
        Value::Array(items) => items.iter().for_each(|i| walk_est(i, reads, compared)),
        Value::Object(map) => {
            if let Some(has) = map.get("has")
                && let Some(mut path) = has.get("left").and_then(chain)
            {
                match has.get("attr") {
                    Some(Value::String(attr)) => path.push(attr.clone()),
                    Some(Value::Array(attrs)) => {
                        path.extend(attrs.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                    _ => {}
                }
                reads.push(Read {
                    path,
                    presence: true,
                });
                return;
            }
            // `==` and `!=` on a list compare it whole; `L.contains(x)` asks whether the whole
            // of `x` is an element of `L`.
            for op in ["==", "!="] {
                if let Some(node) = map.get(op) {
                    compared.extend(args_chain(node.get("left")));
                    compared.extend(args_chain(node.get("right")));
                }
            }
            if let Some(node) = map.get("contains") {
                compared.extend(args_chain(node.get("right")));
            }
            for (key, child) in map {
                // Literal values hold no expressions.
                if key != "Value" {
                    walk_est(child, reads, compared);
                }
            }
        }
        _ => {}
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
    /// The fact for this call: `None` when Cedar decides it (the value is not a list, and the
    /// test is one Cedar has); otherwise whether it holds, or why it cannot be evaluated (the
    /// condition then rejects, if it gets that far).
    pub(crate) fn evaluate(&self, args: &Value) -> Option<Result<bool, String>> {
        let rust_only = matches!(self.check, Check::Element(Test::Domain { .. }));
        let mut value = args;
        for segment in &self.path {
            match value.as_object().and_then(|record| record.get(segment)) {
                Some(v) => value = v,
                None if rust_only => {
                    return Some(Err(format!(
                        "`args.{}` is missing or not inside a record",
                        self.path.join(".")
                    )));
                }
                None => return None,
            }
        }
        if !value.is_array() && !rust_only {
            return None;
        }
        let mut items = Vec::new();
        elements(value, &mut items);
        Some(match &self.check {
            Check::Whole { test, negate } => Ok(test.holds(&items) != *negate),
            Check::Element(test) => some_element(test, &items)
                .map_err(|e| format!("in `args.{}`: {e}", self.path.join("."))),
        })
    }
}

/// Whether some element passes. Every element is looked at: one that cannot be judged
/// rejects, even when another already makes the test hold.
fn some_element(test: &Test, items: &[&Value]) -> Result<bool, String> {
    let mut holds = false;
    for item in items {
        holds |= test.element(item)?;
    }
    Ok(holds)
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
    fn reads_touch_what_lies_on_or_under_their_path() {
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        let value = Read {
            path: path("args.payment"),
            presence: false,
        };
        assert!(value.touches(&path("args.payment.amount")));
        assert!(value.touches(&path("args.payment")));
        assert!(value.touches(&path("args")));
        assert!(!value.touches(&path("args.memo")));
        let presence = Read {
            path: path("args.payment.amount"),
            presence: true,
        };
        assert!(!presence.touches(&path("args.payment.amount")));
        assert!(presence.touches(&path("args.payment")));
        assert!(!presence.touches(&path("args.payment.amount.cents")));
    }

    #[test]
    fn raw_cedar_reads_are_found_in_cedar_own_syntax_tree() {
        let mut reads = Vec::new();
        let mut compared = Vec::new();
        let analyse = |text: &str, reads: &mut Vec<Read>, compared: &mut Vec<Vec<String>>| {
            let policy = cedar_policy::Policy::parse(
                None,
                format!("permit(principal, action, resource) when {{\n{text}\n}};"),
            )
            .unwrap();
            walk_est(&policy.to_json().unwrap()["conditions"], reads, compared);
        };
        analyse(
            r#"context["args"]["a"].b > 1 && context.args has c && "context.args.z" == context.args.d"#,
            &mut reads,
            &mut compared,
        );
        let names: Vec<(String, bool)> = reads.iter().map(|r| (r.name(), r.presence)).collect();
        assert_eq!(
            names,
            [
                ("args.a.b".to_owned(), false),
                ("args.c".to_owned(), true),
                ("args.d".to_owned(), false),
            ]
        );
        assert_eq!(compared, [vec!["args".to_owned(), "d".to_owned()]]);
    }

    #[test]
    fn string_literals_escape_quotes() {
        assert_eq!(string_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}

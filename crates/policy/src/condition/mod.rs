//! Conditions: from the operator's YAML tests to one Cedar expression per rule.
//!
//! Every subject becomes an attribute of the Cedar `context` record:
//! `args.a.b` → `context["args"]["a"]["b"]`, `total.x` → `context["total"]["x"]`,
//! `time` → `context["time"]` (minutes after midnight), `channel`, `agent`,
//! `session.actions` → `context["session"]["actions"]`, `delegation.depth` →
//! `context["delegation"]["depth"]`. Whatever the expression meets at run
//! time — a missing argument, a value of the wrong type — is an evaluation error, and an
//! evaluation error rejects the call.
//!
//! Facts Cedar cannot compute are decided in Rust for the call and handed to Cedar as booleans
//! under `context["derived"]` (see [`check`]): tests Cedar has no operator for (URL hosts, links
//! in text, e-mail domains, regular expressions, provenance, quantifiers over list items), and
//! every test on an argument that turns out to be a **list**. Cedar has no quantifiers, and its
//! `==` and `.contains` compare a list as a whole, so a blocklist `in: [evil]` would never see
//! `["evil"]`. A test over a list holds when some element (of nested lists too) passes it.
//!
//! `not` is pushed down to the tests: `not: { in: L }` compiles to `not_in: L`, `not` over a
//! conjunction to a disjunction of opposites, and so on. Over a single value that is exactly
//! the negation; over a list it keeps the existential reading, so `not` can never turn "some
//! element is blocked" into "no element is allowed". Every element test is thereby monotone in
//! the elements of a list: adding an element can make a rule fire, never stop it (the
//! whole-list tests `contains*` and the quantifiers `all`/`none` excepted, which are about the
//! list itself).
//!
//! A compiled condition also lists what it reads (`Read`), so that a value the engine cannot
//! represent — a null, a fraction without declared decimals, an integer beyond 64 bits —
//! rejects every rule that reads it instead of being skipped, and what it needs from the
//! kernel (`Need`), so that `explain` can say what a request left out.

mod check;
mod raw_cedar;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::Spanned;

pub(crate) use check::{Check, Facts, lookup, string_literal};
use check::{
    Cmp, DomainKind, ItemCond, Test, TextKind, Whole, scalar_literal, set_literal,
    valid_domain_pattern,
};

use crate::decimal;
use crate::error::Diagnostic;
use crate::provenance::SourcePattern;
use crate::raw::{Item, Listed, Num, RawCond, RawOps, Scalar};
use crate::types::TimeOfDay;

/// A fact about the call's arguments that Rust decides for Cedar.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    /// Key under `context["derived"]`.
    pub(crate) key: String,
    /// The list or value it is about.
    pub(crate) at: Base,
    pub(crate) check: Check,
    /// The test as the operator wrote it, for `explain`.
    pub(crate) describe: String,
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

/// Something a condition reads that only the kernel can supply with the request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    Total(String),
    Time,
    Channel,
    Sender,
    Session,
    Delegation,
    Provenance,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Total(name) => write!(f, "the total `{name}` (`context.totals.{name}`)"),
            Self::Time => f.write_str("the time of day (`context.time`)"),
            Self::Channel => f.write_str("the channel (`context.channel`)"),
            Self::Sender => f.write_str("the sender (`context.sender`)"),
            Self::Session => f.write_str("the session's history (`context.session`)"),
            Self::Delegation => f.write_str(
                "the delegation (`context.delegation`, with `depth` the length of `chain` and `by` its last agent)",
            ),
            Self::Provenance => f.write_str(
                "where the arguments came from (`context.origins` or `context.transcript`)",
            ),
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
    /// What the kernel must supply for it to evaluate.
    pub(crate) needs: BTreeSet<Need>,
    /// When the whole condition is one fact decided in Rust: its key (Cedar is not asked).
    pub(crate) direct: Option<String>,
}

impl Condition {
    /// The Cedar text and, for each fact decided in Rust, the test it stands for.
    pub(crate) fn describe(&self) -> String {
        let mut out = self.text.clone();
        for d in &self.derived {
            let _ = write!(out, "\n  where {} = {}", d.key, d.describe);
        }
        out
    }
}

/// Compiles conditions for one policy; numbers derived facts across it.
pub(crate) struct Compiler<'a> {
    /// Declared totals and the decimal places of each (a sum of a decimal argument).
    pub(crate) totals: &'a [(String, Option<u32>)],
    /// Argument paths with declared decimal places.
    pub(crate) decimals: &'a [(Vec<String>, u32)],
    /// The policy's named sets.
    pub(crate) sets: &'a HashMap<String, Vec<Scalar>>,
    /// The sets some condition used (the rest are reported as unused).
    pub(crate) used_sets: HashSet<String>,
    pub(crate) next_derived: usize,
}

/// Where one condition's compilation puts what it finds.
pub(crate) struct Sink<'a> {
    derived: Vec<Derived>,
    pub(crate) reads: Vec<Read>,
    needs: BTreeSet<Need>,
    errors: &'a mut Vec<Diagnostic>,
    pub(crate) warnings: &'a mut Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionField {
    Actions,
    Sensitive,
    Calls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DelegationField {
    Depth,
    Chain,
    By,
    Kind,
}

impl DelegationField {
    fn name(self) -> &'static str {
        match self {
            Self::Depth => "depth",
            Self::Chain => "chain",
            Self::By => "by",
            Self::Kind => "kind",
        }
    }
}

/// What a fact decided in Rust (and a quantifier's items) are about: an argument, or the
/// delegation's chain of agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base {
    /// The argument at this path.
    Args(Vec<String>),
    /// `delegation.chain`.
    Chain,
}

impl Base {
    /// As the operator writes it: `args.to`, `delegation.chain`.
    fn name(&self) -> String {
        match self {
            Self::Args(path) => format!("args.{}", path.join(".")),
            Self::Chain => "delegation.chain".to_owned(),
        }
    }

    /// The same base, `path` further in (an item's field).
    fn join(&self, path: &[String]) -> Self {
        match self {
            Self::Args(base) => Self::Args(base.iter().chain(path).cloned().collect()),
            Self::Chain => Self::Chain,
        }
    }
}

enum Subject {
    Args(Vec<String>),
    /// An item inside `all`/`any`/`none` over the list at `base`; `path` inside the item.
    Item {
        base: Base,
        path: Vec<String>,
    },
    Total(String),
    Time,
    Channel,
    Sender,
    Agent,
    Session(SessionField),
    Delegation(DelegationField),
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
            Self::Item { .. } => "item".to_owned(),
            Self::Total(name) => format!("context[\"total\"][{}]", string_literal(name)),
            Self::Time => "context[\"time\"]".to_owned(),
            Self::Channel => "context[\"channel\"]".to_owned(),
            Self::Sender => "context[\"sender\"]".to_owned(),
            Self::Agent => "context[\"agent\"]".to_owned(),
            Self::Session(field) => format!(
                "context[\"session\"][\"{}\"]",
                match field {
                    SessionField::Actions => "actions",
                    SessionField::Sensitive => "sensitive",
                    SessionField::Calls => "calls",
                }
            ),
            Self::Delegation(field) => format!("context[\"delegation\"][\"{}\"]", field.name()),
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
            Self::Item { .. } => "true".to_owned(),
            Self::Total(name) => format!("context[\"total\"] has {}", string_literal(name)),
            Self::Time => "context has \"time\"".to_owned(),
            Self::Channel => "context has \"channel\"".to_owned(),
            Self::Sender => "context has \"sender\"".to_owned(),
            Self::Agent => "context has \"agent\"".to_owned(),
            Self::Session(_) => "context has \"session\"".to_owned(),
            // Without the delegation this fails to evaluate, like every test on it.
            Self::Delegation(field) => format!("context[\"delegation\"] has \"{}\"", field.name()),
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
            Self::Item { .. }
            | Self::Time
            | Self::Channel
            | Self::Sender
            | Self::Agent
            | Self::Session(_)
            | Self::Delegation(_) => None,
        }
    }

    fn need(&self) -> Option<Need> {
        match self {
            Self::Total(name) => Some(Need::Total(name.clone())),
            Self::Time => Some(Need::Time),
            Self::Channel => Some(Need::Channel),
            Self::Sender => Some(Need::Sender),
            Self::Session(_) => Some(Need::Session),
            Self::Delegation(_) => Some(Need::Delegation),
            Self::Args(_) | Self::Item { .. } | Self::Agent => None,
        }
    }

    /// An argument or an item: may hold any value, and Rust can decide any test on it.
    fn valued(&self) -> bool {
        matches!(self, Self::Args(_) | Self::Item { .. })
    }

    fn numeric(&self) -> bool {
        self.valued()
            || matches!(
                self,
                Self::Total(_)
                    | Self::Session(SessionField::Calls)
                    | Self::Delegation(DelegationField::Depth)
            )
    }

    fn textual(&self) -> bool {
        self.valued()
            || matches!(
                self,
                Self::Channel
                    | Self::Sender
                    | Self::Agent
                    | Self::Delegation(DelegationField::By | DelegationField::Kind)
            )
    }

    fn boolean(&self) -> bool {
        self.valued() || matches!(self, Self::Session(SessionField::Sensitive))
    }

    fn listed(&self) -> bool {
        self.valued()
            || matches!(
                self,
                Self::Session(SessionField::Actions) | Self::Delegation(DelegationField::Chain)
            )
    }

    /// The list `all`/`any`/`none` go over, for a subject that is one.
    fn quantified(&self) -> Option<Base> {
        match self {
            Self::Args(path) => Some(Base::Args(path.clone())),
            Self::Item { base, path } => Some(base.join(path)),
            Self::Delegation(DelegationField::Chain) => Some(Base::Chain),
            _ => None,
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}

fn subject_hint() -> &'static str {
    "subjects are `args.NAME`, `total.NAME`, `time`, `channel`, `sender`, `agent`, `session.actions`, `session.sensitive`, `session.calls`, `delegation.depth`, `delegation.chain`, `delegation.by` and `delegation.kind`; combinators are `any`, `not` and `cedar`"
}

/// The tests on one subject, in the order `RawOps` documents (`present` first).
#[derive(Default)]
struct Gathered {
    present: Option<bool>,
    checks: Vec<(Check, String)>,
    between: Option<(TimeOfDay, TimeOfDay)>,
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
            needs: BTreeSet::new(),
            errors,
            warnings,
        };
        let text = self.compile_inner(cond, false, &mut sink);
        let Sink {
            derived,
            reads,
            needs,
            errors,
            ..
        } = sink;
        if errors.len() > before {
            return None;
        }
        let direct = match derived.as_slice() {
            [only]
                if only.check.rust_only()
                    && text == format!("context[\"derived\"][{}]", string_literal(&only.key)) =>
            {
                Some(only.key.clone())
            }
            _ => None,
        };
        match cedar_policy::Expression::from_str(&text) {
            Ok(expr) => Some(Condition {
                expr,
                text,
                derived,
                reads,
                needs,
                direct,
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
        if let Some(raw) = &cond.value.cedar
            && let Some(text) = self.raw_cedar(raw, sink)
        {
            parts.push(if negated { format!("!({text})") } else { text });
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

    /// A raw Cedar expression with its `$sets` expanded, checked to parse.
    fn raw_cedar(&mut self, raw: &Spanned<String>, sink: &mut Sink<'_>) -> Option<String> {
        let sets = self.sets;
        let mut used = Vec::new();
        let expanded = raw_cedar::expand_sets(&raw.value, |name| {
            let items = sets.get(name)?;
            used.push(name.to_owned());
            Some(set_literal(items))
        });
        self.used_sets.extend(used);
        let text = match expanded {
            Ok(text) => text,
            Err(e) => {
                sink.errors.push(
                    Diagnostic::at(&raw.referenced, format!("in cedar expression: {e}"))
                        .with_hint("declare sets under `sets:`"),
                );
                return None;
            }
        };
        match cedar_policy::Expression::from_str(&text) {
            Ok(_) => {
                let expanded = Spanned {
                    value: text.clone(),
                    referenced: raw.referenced,
                    defined: raw.defined,
                };
                raw_cedar::raw_analysis(&expanded, sink);
                Some(text)
            }
            Err(e) => {
                sink.errors.push(
                    Diagnostic::at(
                        &raw.referenced,
                        format!(
                            "cedar expression `{}` does not parse: {}",
                            raw.value,
                            first_line(&e.to_string())
                        ),
                    )
                    .with_hint("the call is under `context`: `context.args`, `context.total`, `context.time`, `context.channel`, `context.sender`, `context.agent`, `context.session`, `context.delegation`"),
                );
                None
            }
        }
    }

    fn subject(
        &self,
        key: &Spanned<String>,
        item_base: Option<&Base>,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<Subject> {
        let name = key.value.as_str();
        let path_of = |path: &str, errors: &mut Vec<Diagnostic>| {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                errors.push(Diagnostic::at(
                    &key.referenced,
                    format!("invalid path `{name}`"),
                ));
                return None;
            }
            Some(segments)
        };
        if let Some(base) = item_base {
            let path = match name {
                "item" => Vec::new(),
                _ => match name.strip_prefix("item.") {
                    Some(path) => path_of(path, errors)?,
                    None => {
                        errors.push(
                            Diagnostic::at(
                                &key.referenced,
                                format!("unknown subject `{name}` inside `all`/`any`/`none`"),
                            )
                            .with_hint(
                                "inside a quantifier the subjects are `item` and `item.FIELD`",
                            ),
                        );
                        return None;
                    }
                },
            };
            return Some(Subject::Item {
                base: base.clone(),
                path,
            });
        }
        let subject = match name {
            "time" => Subject::Time,
            "channel" => Subject::Channel,
            "sender" => Subject::Sender,
            "agent" => Subject::Agent,
            "session.actions" => Subject::Session(SessionField::Actions),
            "session.sensitive" => Subject::Session(SessionField::Sensitive),
            "session.calls" => Subject::Session(SessionField::Calls),
            "delegation.depth" => Subject::Delegation(DelegationField::Depth),
            "delegation.chain" => Subject::Delegation(DelegationField::Chain),
            "delegation.by" => Subject::Delegation(DelegationField::By),
            "delegation.kind" => Subject::Delegation(DelegationField::Kind),
            _ => {
                if let Some(path) = name.strip_prefix("args.") {
                    Subject::Args(path_of(path, errors)?)
                } else if let Some(total) = name.strip_prefix("total.") {
                    if !self.totals.iter().any(|(t, _)| t == total) {
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

    /// The declared decimal places of a subject's numbers.
    fn scale(&self, subject: &Subject) -> Option<u32> {
        let path: Vec<String> = match subject {
            Subject::Args(path) => path.clone(),
            Subject::Item {
                base: Base::Args(base),
                path,
            } => base.iter().chain(path).cloned().collect(),
            Subject::Total(name) => {
                return self
                    .totals
                    .iter()
                    .find(|(t, _)| t == name)
                    .and_then(|(_, s)| *s);
            }
            _ => return None,
        };
        self.decimals
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, s)| *s)
    }

    /// A number of the policy in the subject's smallest unit.
    fn number(n: Num, scale: Option<u32>) -> Result<i64, String> {
        let json = match n {
            Num::Int(i) => Value::from(i),
            Num::Frac(f) => Value::from(f),
        };
        match scale {
            Some(scale) => decimal::scaled(&json, scale).map_err(|e| e.to_string()),
            None => match n {
                Num::Int(i) => Ok(i),
                Num::Frac(f) => Err(format!(
                    "`{f}` has a fraction, but this subject has no declared decimal places (declare them under `decimals:`, e.g. `args.amount: 2`)"
                )),
            },
        }
    }

    fn scalar(s: &Scalar, scale: Option<u32>) -> Result<Scalar, String> {
        match s {
            Scalar::Int(i) => Self::number(Num::Int(*i), scale).map(Scalar::Int),
            Scalar::Frac(f) => Self::number(Num::Frac(*f), scale).map(Scalar::Int),
            other => Ok(other.clone()),
        }
    }

    /// The items of a list, its `$sets` expanded.
    fn expand(&mut self, listed: &Listed<Scalar>) -> Result<Vec<Scalar>, String> {
        let mut out = Vec::new();
        for item in &listed.0 {
            match item {
                Item::Value(v) => out.push(v.clone()),
                Item::Set(name) => {
                    let items = self
                        .sets
                        .get(name)
                        .ok_or_else(|| format!("unknown set `${name}`"))?;
                    self.used_sets.insert(name.clone());
                    out.extend(items.iter().cloned());
                }
            }
        }
        Ok(out)
    }

    /// The items of a list of text, its `$sets` expanded; a set's items must be text.
    fn expand_text(&mut self, listed: &Listed<String>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for item in &listed.0 {
            match item {
                Item::Value(v) => out.push(v.clone()),
                Item::Set(name) => {
                    let items = self
                        .sets
                        .get(name)
                        .ok_or_else(|| format!("unknown set `${name}`"))?;
                    self.used_sets.insert(name.clone());
                    for i in items {
                        match i {
                            Scalar::Str(s) => out.push(s.clone()),
                            other => {
                                return Err(format!(
                                    "set `${name}` holds {}, where text is needed",
                                    scalar_literal(other)
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every test written for one subject, checked against what the subject can hold.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per test, in the documented order; splitting it scatters that order"
    )]
    fn gather(
        &mut self,
        key: &Spanned<String>,
        subject: &Subject,
        ops: &RawOps,
        sink: &mut Sink<'_>,
    ) -> Gathered {
        let name = key.value.as_str();
        let at = |errors: &mut Vec<Diagnostic>, message: String| {
            errors.push(Diagnostic::at(&key.referenced, message));
        };
        let bad = |op: &str, why: &str, errors: &mut Vec<Diagnostic>| {
            errors.push(Diagnostic::at(
                &key.referenced,
                format!("test `{op}` on `{name}` {why}"),
            ));
        };
        let scale = self.scale(subject);
        let mut g = Gathered {
            present: ops.present,
            ..Gathered::default()
        };
        let mut push = |check: Check, op: &str, shown: String| {
            g.checks
                .push((check, format!("`{name}: {{ {op}: {shown} }}`")));
        };

        for (op, value, equal) in [("eq", &ops.eq, true), ("ne", &ops.ne, false)] {
            let Some(value) = value else { continue };
            let fits = match value {
                Scalar::Int(_) | Scalar::Frac(_) => subject.numeric(),
                Scalar::Str(_) => subject.textual(),
                Scalar::Bool(_) => subject.boolean(),
            };
            if !fits {
                bad(op, "compares values of different types", sink.errors);
                continue;
            }
            match Self::scalar(value, scale) {
                Ok(v) => {
                    let shown = scalar_literal(&v);
                    push(
                        Check::Element(if equal { Test::Eq(v) } else { Test::Ne(v) }),
                        op,
                        shown,
                    );
                }
                Err(e) => bad(op, &format!("cannot use it: {e}"), sink.errors),
            }
        }
        for (op, value, cmp) in [
            ("gt", ops.gt, Cmp::Gt),
            ("ge", ops.ge, Cmp::Ge),
            ("lt", ops.lt, Cmp::Lt),
            ("le", ops.le, Cmp::Le),
        ] {
            let Some(n) = value else { continue };
            if !subject.numeric() {
                bad(
                    op,
                    "needs a number subject (use `between` for time)",
                    sink.errors,
                );
                continue;
            }
            match Self::number(n, scale) {
                Ok(n) => push(
                    Check::Element(Test::Cmp(cmp, n)),
                    op,
                    decimal::display(n, scale.unwrap_or(0)),
                ),
                Err(e) => bad(op, &format!("cannot use it: {e}"), sink.errors),
            }
        }
        for (op, items, inside) in [("in", &ops.in_, true), ("not_in", &ops.not_in, false)] {
            let Some(items) = items else { continue };
            let items = match self.expand(items) {
                Ok(items) => items,
                Err(e) => {
                    at(sink.errors, format!("in `{op}` on `{name}`: {e}"));
                    continue;
                }
            };
            let same_kind = items.iter().all(|i| match i {
                Scalar::Int(_) | Scalar::Frac(_) => subject.numeric(),
                Scalar::Str(_) => subject.textual(),
                Scalar::Bool(_) => subject.valued(),
            });
            if matches!(subject, Subject::Time) || !same_kind {
                bad(
                    op,
                    "lists values of a type the subject cannot have",
                    sink.errors,
                );
                continue;
            }
            let items: Result<Vec<Scalar>, String> =
                items.iter().map(|s| Self::scalar(s, scale)).collect();
            match items {
                Ok(items) => {
                    let shown = set_literal(&items);
                    push(
                        Check::Element(if inside {
                            Test::In(items)
                        } else {
                            Test::NotIn(items)
                        }),
                        op,
                        shown,
                    );
                }
                Err(e) => bad(op, &format!("cannot use it: {e}"), sink.errors),
            }
        }
        for (op, pattern, positive) in [
            ("like", &ops.like, true),
            ("not_like", &ops.not_like, false),
        ] {
            let Some(pattern) = pattern else { continue };
            if !subject.textual() {
                bad(op, "needs a text subject", sink.errors);
                continue;
            }
            push(
                Check::Element(if positive {
                    Test::Like(pattern.clone())
                } else {
                    Test::NotLike(pattern.clone())
                }),
                op,
                string_literal(pattern),
            );
        }
        // Text tests Cedar has no operator for: arguments only.
        let text_tests: [(&str, Option<Test>); 6] = [
            (
                "eq_ignore_case",
                ops.eq_ignore_case.as_ref().map(|t| Test::EqIgnoreCase {
                    text: t.to_lowercase(),
                    equal: true,
                }),
            ),
            (
                "starts_with",
                ops.starts_with.as_ref().map(|t| Test::Text {
                    kind: TextKind::Starts,
                    needle: t.clone(),
                    holds: true,
                }),
            ),
            (
                "ends_with",
                ops.ends_with.as_ref().map(|t| Test::Text {
                    kind: TextKind::Ends,
                    needle: t.clone(),
                    holds: true,
                }),
            ),
            (
                "includes",
                ops.includes.as_ref().map(|t| Test::Text {
                    kind: TextKind::Includes,
                    needle: t.clone(),
                    holds: true,
                }),
            ),
            (
                "longer_than",
                ops.longer_than.map(|n| Test::Len(Cmp::Gt, n)),
            ),
            (
                "shorter_than",
                ops.shorter_than.map(|n| Test::Len(Cmp::Lt, n)),
            ),
        ];
        for (op, test) in text_tests {
            let Some(test) = test else { continue };
            if subject.valued() {
                push(Check::Element(test), op, String::new());
            } else {
                bad(op, "needs an argument", sink.errors);
            }
        }
        for (op, pattern, holds) in [
            ("matches", &ops.matches, true),
            ("not_matches", &ops.not_matches, false),
        ] {
            let Some(pattern) = pattern else { continue };
            if !subject.valued() {
                bad(op, "needs an argument", sink.errors);
                continue;
            }
            // The regex crate has no backtracking: matching is linear in the text.
            match regex::RegexBuilder::new(&pattern.value)
                .size_limit(1 << 20)
                .build()
            {
                Ok(regex) => push(
                    Check::Element(Test::Regex {
                        regex: Arc::new(regex),
                        holds,
                    }),
                    op,
                    string_literal(&pattern.value),
                ),
                Err(e) => sink.errors.push(
                    Diagnostic::at(
                        &pattern.referenced,
                        format!(
                            "invalid regular expression `{}`: {}",
                            pattern.value,
                            first_line(&e.to_string())
                        ),
                    )
                    .with_hint("the syntax is Rust's `regex` crate: no look-around or back-references, which keeps matching linear"),
                ),
            }
        }
        let wholes = [
            (
                "contains",
                ops.contains.clone().map(|v| vec![Item::Value(v)]),
            ),
            ("contains_any", ops.contains_any.clone().map(|l| l.0)),
            ("contains_all", ops.contains_all.clone().map(|l| l.0)),
        ];
        for (op, items) in wholes {
            let Some(items) = items else { continue };
            if !subject.listed() {
                bad(op, "needs a list subject", sink.errors);
                continue;
            }
            let items = match self.expand(&Listed(items)) {
                Ok(items) => items,
                Err(e) => {
                    at(sink.errors, format!("in `{op}` on `{name}`: {e}"));
                    continue;
                }
            };
            let items: Result<Vec<Scalar>, String> =
                items.iter().map(|s| Self::scalar(s, scale)).collect();
            let items = match items {
                Ok(items) => items,
                Err(e) => {
                    bad(op, &format!("cannot use it: {e}"), sink.errors);
                    continue;
                }
            };
            let shown = set_literal(&items);
            let test = match op {
                "contains" => match items.into_iter().next() {
                    Some(v) => Whole::Contains(v),
                    None => continue,
                },
                "contains_any" => Whole::ContainsAny(items),
                _ => Whole::ContainsAll(items),
            };
            push(
                Check::Whole {
                    test,
                    negate: false,
                },
                op,
                shown,
            );
        }
        for (op, patterns, kind, inside) in [
            ("host_in", &ops.host_in, DomainKind::UrlHost, true),
            ("host_not_in", &ops.host_not_in, DomainKind::UrlHost, false),
            (
                "links_host_in",
                &ops.links_host_in,
                DomainKind::LinkHosts,
                true,
            ),
            (
                "links_host_not_in",
                &ops.links_host_not_in,
                DomainKind::LinkHosts,
                false,
            ),
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
            if !subject.valued() {
                bad(
                    op,
                    "needs an argument holding a URL, a text or an e-mail address",
                    sink.errors,
                );
                continue;
            }
            let patterns = match self.expand_text(patterns) {
                Ok(p) => p,
                Err(e) => {
                    at(sink.errors, format!("in `{op}` on `{name}`: {e}"));
                    continue;
                }
            };
            if let Some(p) = patterns.iter().find(|p| !valid_domain_pattern(p)) {
                at(
                    sink.errors,
                    format!(
                        "invalid domain pattern `{p}` in `{op}`: expected `example.com` or `*.example.com`"
                    ),
                );
                continue;
            }
            let shown = format!("[{}]", patterns.join(", "));
            push(
                Check::Element(Test::Domain {
                    kind,
                    patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
                    inside,
                }),
                op,
                shown,
            );
        }
        for (op, sources, inside) in [
            ("from", &ops.from, true),
            ("not_from", &ops.not_from, false),
        ] {
            let Some(sources) = sources else { continue };
            if !subject.valued() {
                bad(op, "needs an argument", sink.errors);
                continue;
            }
            let mut parsed = Vec::new();
            for s in sources {
                match SourcePattern::from_str(&s.value) {
                    Ok(p) => parsed.push(p),
                    Err(e) => sink.errors.push(Diagnostic::at(&s.referenced, e)),
                }
            }
            if parsed.len() < sources.len() {
                continue;
            }
            if parsed.is_empty() {
                bad(op, "names no source", sink.errors);
                continue;
            }
            sink.needs.insert(Need::Provenance);
            // The sets' values count as the operator's: naming that source uses every set.
            if parsed.contains(&SourcePattern::Operator) {
                self.used_sets.extend(self.sets.keys().cloned());
            }
            let shown = format!(
                "[{}]",
                sources
                    .iter()
                    .map(|s| s.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            push(
                Check::Element(Test::From {
                    sources: parsed,
                    inside,
                }),
                op,
                shown,
            );
        }
        for (op, cond, all, negate) in [
            ("all", &ops.all, true, false),
            ("any", &ops.any, false, false),
            ("none", &ops.none, true, true),
        ] {
            let Some(cond) = cond else { continue };
            let Some(base) = subject.quantified() else {
                bad(
                    op,
                    "needs a list argument (or `delegation.chain`)",
                    sink.errors,
                );
                continue;
            };
            let item = self.compile_item(cond, &base, sink);
            let item = if negate { item.opposite() } else { item };
            push(
                Check::Quant {
                    all,
                    cond: Box::new(item),
                },
                op,
                "…".to_owned(),
            );
        }
        if let Some((start, end)) = ops.between {
            if !matches!(subject, Subject::Time) {
                bad("between", "applies to `time` only", sink.errors);
            } else if start == end {
                bad("between", "is an empty interval", sink.errors);
            } else {
                g.between = Some((start, end));
            }
        }
        g
    }

    /// A condition on one item of a list, for `all`, `any` and `none`.
    fn compile_item(
        &mut self,
        cond: &Spanned<RawCond>,
        base: &Base,
        sink: &mut Sink<'_>,
    ) -> ItemCond {
        let errors_at_start = sink.errors.len();
        let mut parts = Vec::new();
        for (key, ops) in &cond.value.tests {
            let Some(subject) = self.subject(key, Some(base), sink.errors) else {
                continue;
            };
            let errors_before = sink.errors.len();
            let g = self.gather(key, &subject, ops, sink);
            let Subject::Item { path, .. } = subject else {
                continue;
            };
            if let Some(want) = g.present {
                parts.push(ItemCond::Present {
                    path: path.clone(),
                    want,
                });
            }
            let empty = g.checks.is_empty() && g.present.is_none();
            for (check, _) in g.checks {
                parts.push(ItemCond::Check {
                    path: path.clone(),
                    check,
                });
            }
            if empty && sink.errors.len() == errors_before {
                sink.errors.push(Diagnostic::at(
                    &key.referenced,
                    format!("no tests for `{}`", key.value),
                ));
            }
        }
        if let Some(any) = &cond.value.any {
            if any.is_empty() {
                sink.errors.push(Diagnostic::at(
                    &cond.referenced,
                    "`any` needs at least one condition",
                ));
            }
            let alternatives = any
                .iter()
                .map(|c| self.compile_item(c, base, sink))
                .collect();
            parts.push(ItemCond::Or(alternatives));
        }
        if let Some(not) = &cond.value.not {
            parts.push(self.compile_item(not, base, sink).opposite());
        }
        if let Some(raw) = &cond.value.cedar {
            sink.errors.push(Diagnostic::at(
                &raw.referenced,
                "raw `cedar` cannot be used inside `all`, `any` or `none`",
            ));
        }
        if parts.is_empty() && sink.errors.len() == errors_at_start {
            sink.errors.push(
                Diagnostic::at(&cond.referenced, "empty condition inside a quantifier")
                    .with_hint("write tests on `item` or `item.FIELD`"),
            );
        }
        if parts.len() == 1 {
            parts.pop().unwrap_or(ItemCond::And(Vec::new()))
        } else {
            ItemCond::And(parts)
        }
    }

    fn compile_tests(
        &mut self,
        key: &Spanned<String>,
        ops: &RawOps,
        negated: bool,
        sink: &mut Sink<'_>,
    ) -> Vec<String> {
        let Some(subject) = self.subject(key, None, sink.errors) else {
            return Vec::new();
        };
        let errors_before = sink.errors.len();
        let g = self.gather(key, &subject, ops, sink);
        sink.needs.extend(subject.need());

        let presence_only = g.checks.is_empty() && g.between.is_none();
        let mut out = Vec::new();
        if let Some(present) = g.present {
            let p = subject.presence();
            out.push(if present != negated {
                p
            } else {
                format!("!({p})")
            });
        }
        let x = subject.access();
        for (check, describe) in g.checks {
            // `not` is pushed down: each test becomes its opposite, still over some element.
            let check = if negated { check.opposite() } else { check };
            let describe = if negated {
                format!("the opposite of {describe}")
            } else {
                describe
            };
            let scalar = match &check {
                Check::Element(test) => test.cedar(&x),
                Check::Whole { test, negate } => Some(if *negate {
                    format!("!({})", test.cedar(&x))
                } else {
                    test.cedar(&x)
                }),
                Check::Quant { .. } => None,
            };
            let at = match (&subject, &scalar) {
                (Subject::Args(path), _) => Base::Args(path.clone()),
                // Cedar has no quantifiers: Rust decides them over the chain.
                (Subject::Delegation(DelegationField::Chain), None) => Base::Chain,
                _ => {
                    // Not an argument: never a list of unknown shape; `gather` allows only
                    // tests Cedar has here.
                    out.extend(scalar);
                    continue;
                }
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
                at,
                check,
                describe,
            });
        }
        if let Some((start, end)) = g.between {
            let (s, e) = (start.minutes(), end.minutes());
            let test = if s < e {
                format!("{x} >= {s} && {x} < {e}")
            } else {
                format!("{x} >= {s} || {x} < {e}")
            };
            out.push(if negated { format!("!({test})") } else { test });
        }
        if out.is_empty() && sink.errors.len() == errors_before {
            sink.errors.push(Diagnostic::at(
                &key.referenced,
                format!("no tests for `{}`", key.value),
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

impl Derived {
    /// The fact for this call: `None` when Cedar decides it (the value is not a list, and the
    /// test is one Cedar has); otherwise whether it holds, or why it cannot be evaluated (the
    /// condition then rejects, if it gets that far).
    ///
    /// `chain` is the delegation's chain as a list of texts, `None` when the call did not
    /// supply a (consistent) delegation.
    pub(crate) fn evaluate(
        &self,
        args: &Value,
        chain: Option<&Value>,
        facts: &Facts<'_>,
    ) -> Option<Result<bool, String>> {
        let rust_only = self.check.rust_only();
        let found = match &self.at {
            Base::Args(path) => lookup(args, path),
            Base::Chain => chain,
        };
        let Some(value) = found else {
            return rust_only.then(|| {
                Err(match &self.at {
                    Base::Args(path) => {
                        format!(
                            "`args.{}` is missing or not inside a record",
                            path.join(".")
                        )
                    }
                    Base::Chain => format!("this call did not supply {}", Need::Delegation),
                })
            });
        };
        if !value.is_array() && !rust_only {
            return None;
        }
        Some(
            self.check
                .decide(value, facts)
                .map_err(|e| format!("in `{}`: {e}", self.at.name())),
        )
    }

    /// Whether it is about the delegation's chain (which the engine then builds).
    pub(crate) fn on_chain(&self) -> bool {
        self.at == Base::Chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

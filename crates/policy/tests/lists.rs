//! List-valued arguments (issue 16, item 12): a test over a list holds when some element passes
//! it, `not` turns each test into its opposite rather than negating the answer, and nothing a
//! model puts in a list can make a rule fire less than one of its elements alone would. The
//! engine is checked against `reference`, a small evaluator written from docs/policy.md.

use p3ak_policy::{Decision, Policy, Request};
use proptest::prelude::*;
use serde_json::{Value, json};

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// An entry at level 1 with one rule that rejects when `when` holds.
fn rejecting(when: &str) -> Policy {
    policy(&format!(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        reject: true\n"
    ))
}

fn decide(policy: &Policy, args: Value) -> Decision {
    policy
        .decide(&Request::new("amber", "t.call").with_args(args))
        .decision
}

fn rejects(policy: &Policy, args: Value) -> bool {
    decide(policy, args) == Decision::Reject
}

#[test]
fn invariant_i2_blocklist_in_rejects_a_list_holding_a_blocked_value() {
    // The reproduction from the review.
    let p = rejecting("{ args.recipients: { in: [evil@x.com] } }");
    assert!(rejects(&p, json!({ "recipients": ["evil@x.com"] })));
    assert!(rejects(
        &p,
        json!({ "recipients": ["a@b.com", "evil@x.com", "c@d.com"] })
    ));
    assert!(rejects(&p, json!({ "recipients": [["evil@x.com"]] })));
    assert!(rejects(&p, json!({ "recipients": "evil@x.com" })));
    assert!(!rejects(
        &p,
        json!({ "recipients": ["a@b.com", "c@d.com"] })
    ));
    assert!(!rejects(&p, json!({ "recipients": [] })));
}

#[test]
fn invariant_i2_every_test_over_a_list_fires_when_one_element_would() {
    // (test, an element that makes it fire, an element that does not)
    let cases: &[(&str, Value, Value)] = &[
        ("{ eq: evil }", json!("evil"), json!("good")),
        ("{ ne: good }", json!("evil"), json!("good")),
        ("{ in: [evil, worse] }", json!("worse"), json!("good")),
        ("{ not_in: [good, fine] }", json!("evil"), json!("good")),
        (
            "{ like: \"*@evil.com\" }",
            json!("a@evil.com"),
            json!("a@good.com"),
        ),
        (
            "{ not_like: \"*@good.com\" }",
            json!("a@evil.com"),
            json!("a@good.com"),
        ),
        ("{ gt: 100 }", json!(101), json!(100)),
        ("{ ge: 100 }", json!(100), json!(99)),
        ("{ lt: 0 }", json!(-1), json!(0)),
        ("{ le: 0 }", json!(0), json!(1)),
        ("{ eq: true }", json!(true), json!(false)),
        (
            "{ host_in: [evil.com] }",
            json!("https://evil.com/x"),
            json!("https://good.com/"),
        ),
        (
            "{ host_not_in: [good.com] }",
            json!("https://evil.com/"),
            json!("https://good.com/"),
        ),
        (
            "{ email_domain_in: [evil.com] }",
            json!("a@evil.com"),
            json!("a@good.com"),
        ),
        (
            "{ email_domain_not_in: [good.com] }",
            json!("a@evil.com"),
            json!("a@good.com"),
        ),
        ("{ contains: evil }", json!("evil"), json!("good")),
        (
            "{ contains_any: [evil, worse] }",
            json!("evil"),
            json!("good"),
        ),
    ];
    for (test, fires, quiet) in cases {
        let p = rejecting(&format!("{{ args.v: {test} }}"));
        let mixed = json!({ "v": [quiet, fires, quiet] });
        assert!(rejects(&p, mixed.clone()), "{test} over {mixed}");
        let calm = json!({ "v": [quiet, quiet] });
        assert!(!rejects(&p, calm.clone()), "{test} over {calm}");
    }
}

#[test]
fn invariant_i2_not_cannot_reopen_the_hole() {
    // An allowlist written with `not`: every recipient must be known.
    let p = rejecting("{ not: { args.to: { in: [alice, bob] } } }");
    assert!(rejects(&p, json!({ "to": ["alice", "mallory"] })));
    assert!(rejects(&p, json!({ "to": "mallory" })));
    assert!(!rejects(&p, json!({ "to": ["alice", "bob"] })));
    assert!(!rejects(&p, json!({ "to": "alice" })));

    // `not` over a host test: every URL must be on the list.
    let p = rejecting("{ not: { args.urls: { host_in: [bank.com] } } }");
    assert!(rejects(
        &p,
        json!({ "urls": ["https://bank.com/", "https://evil.net/"] })
    ));
    assert!(!rejects(&p, json!({ "urls": ["https://bank.com/a"] })));

    // Double negation and `not` over `any` push down the same way.
    let p = rejecting("{ not: { not: { args.to: { eq: mallory } } } }");
    assert!(rejects(&p, json!({ "to": ["alice", "mallory"] })));
    // `not: { any: [A, B] }` is "A's opposite and B's opposite", each over some element. It
    // is stricter than "every element is alice or bob" (which is `not_in: [alice, bob]`).
    let p =
        rejecting("{ not: { any: [ { args.to: { in: [alice] } }, { args.to: { in: [bob] } } ] } }");
    assert!(rejects(&p, json!({ "to": ["alice", "mallory"] })));
    assert!(rejects(&p, json!({ "to": ["alice", "bob"] })));
    assert!(!rejects(&p, json!({ "to": ["alice"] })));
}

#[test]
fn raw_cedar_that_compares_a_list_argument_as_a_whole_is_warned_about() {
    let p = rejecting("{ cedar: '[\"evil@x.com\"].contains(context.args.recipients)' }");
    let warnings: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`context.args.recipients`") && w.contains("list")),
        "{warnings:?}"
    );
    // Arithmetic and ordering cannot be fooled by a list: no warning.
    let p = rejecting("{ cedar: 'context.args.n * 2 > 10' }");
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

// ---------------------------------------------------------------------------------------------
// The reference evaluator

/// One test on `args.v`, as written in the policy.
#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    Ne(Value),
    Gt(i64),
    Ge(i64),
    Lt(i64),
    Le(i64),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Like(String),
    NotLike(String),
    HostIn(Vec<String>),
    HostNotIn(Vec<String>),
    EmailIn(Vec<String>),
    EmailNotIn(Vec<String>),
    Contains(Value),
    ContainsAny(Vec<Value>),
    ContainsAll(Vec<Value>),
}

impl Test {
    fn yaml(&self) -> String {
        let list = |items: &[Value]| serde_json::to_string(items).unwrap_or_default();
        let names = |items: &[String]| serde_json::to_string(items).unwrap_or_default();
        match self {
            Self::Eq(v) => format!("eq: {v}"),
            Self::Ne(v) => format!("ne: {v}"),
            Self::Gt(n) => format!("gt: {n}"),
            Self::Ge(n) => format!("ge: {n}"),
            Self::Lt(n) => format!("lt: {n}"),
            Self::Le(n) => format!("le: {n}"),
            Self::In(l) => format!("in: {}", list(l)),
            Self::NotIn(l) => format!("not_in: {}", list(l)),
            Self::Like(p) => format!("like: {}", json!(p)),
            Self::NotLike(p) => format!("not_like: {}", json!(p)),
            Self::HostIn(l) => format!("host_in: {}", names(l)),
            Self::HostNotIn(l) => format!("host_not_in: {}", names(l)),
            Self::EmailIn(l) => format!("email_domain_in: {}", names(l)),
            Self::EmailNotIn(l) => format!("email_domain_not_in: {}", names(l)),
            Self::Contains(v) => format!("contains: {v}"),
            Self::ContainsAny(l) => format!("contains_any: {}", list(l)),
            Self::ContainsAll(l) => format!("contains_all: {}", list(l)),
        }
    }

    /// Tests on the list as a whole; `not` negates their answer.
    fn is_whole_list(&self) -> bool {
        matches!(
            self,
            Self::Contains(_) | Self::ContainsAny(_) | Self::ContainsAll(_)
        )
    }

    /// The opposite test, element by element (`not` over an element test).
    fn opposite(&self) -> Self {
        match self.clone() {
            Self::Eq(v) => Self::Ne(v),
            Self::Ne(v) => Self::Eq(v),
            Self::Gt(n) => Self::Le(n),
            Self::Ge(n) => Self::Lt(n),
            Self::Lt(n) => Self::Ge(n),
            Self::Le(n) => Self::Gt(n),
            Self::In(l) => Self::NotIn(l),
            Self::NotIn(l) => Self::In(l),
            Self::Like(p) => Self::NotLike(p),
            Self::NotLike(p) => Self::Like(p),
            Self::HostIn(l) => Self::HostNotIn(l),
            Self::HostNotIn(l) => Self::HostIn(l),
            Self::EmailIn(l) => Self::EmailNotIn(l),
            Self::EmailNotIn(l) => Self::EmailIn(l),
            whole => whole,
        }
    }
}

/// Why a test could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Missing value, wrong type, not a URL: the rule rejects.
    Error,
    /// A null, a fraction or an integer beyond 64 bits: the rule rejects, and says why.
    Unrepresentable,
}

fn representable(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Number(n) => n.as_i64().is_some(),
        Value::Array(items) => items.iter().all(representable),
        Value::Object(map) => map.values().all(representable),
        Value::Bool(_) | Value::String(_) => true,
    }
}

/// Lists nest; their elements are the scalars (and records) at any depth.
fn elements(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| elements(i, out)),
        other => out.push(other.clone()),
    }
}

fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| glob(rest, text.get(i..).unwrap_or(&[]))),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob(rest, tail)),
    }
}

fn domain_in(domain: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(parent) => domain.ends_with(&format!(".{parent}")),
        None => domain == p,
    })
}

fn host(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    Some(url.host_str()?.trim_end_matches('.').to_ascii_lowercase())
}

fn email(text: &str) -> Option<String> {
    if text.chars().any(|c| c.is_whitespace() || "<>,".contains(c)) {
        return None;
    }
    let (local, domain) = text.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty())
        .then(|| domain.trim_end_matches('.').to_ascii_lowercase())
}

/// One element against one element test.
fn element(test: &Test, e: &Value) -> Result<bool, Failure> {
    let int = || e.as_i64().ok_or(Failure::Error);
    let text = || e.as_str().ok_or(Failure::Error);
    Ok(match test {
        Test::Eq(v) => e == v,
        Test::Ne(v) => e != v,
        Test::Gt(n) => int()? > *n,
        Test::Ge(n) => int()? >= *n,
        Test::Lt(n) => int()? < *n,
        Test::Le(n) => int()? <= *n,
        Test::In(l) => l.contains(e),
        Test::NotIn(l) => !l.contains(e),
        Test::Like(p) | Test::NotLike(p) => {
            let p: Vec<char> = p.chars().collect();
            let t: Vec<char> = text()?.chars().collect();
            glob(&p, &t) == matches!(test, Test::Like(_))
        }
        Test::HostIn(l) | Test::HostNotIn(l) => {
            let h = host(text()?).ok_or(Failure::Error)?;
            domain_in(&h, l) == matches!(test, Test::HostIn(_))
        }
        Test::EmailIn(l) | Test::EmailNotIn(l) => {
            let d = email(text()?).ok_or(Failure::Error)?;
            domain_in(&d, l) == matches!(test, Test::EmailIn(_))
        }
        Test::Contains(_) | Test::ContainsAny(_) | Test::ContainsAll(_) => {
            return Err(Failure::Error);
        }
    })
}

/// docs/policy.md, "Lists": whether the rule holding `test` (negated by an odd number of
/// `not`s) fires for the argument `value` (`None`: absent), guarded by `present: true` or not.
fn reference(
    test: &Test,
    negated: bool,
    guarded: bool,
    value: Option<&Value>,
) -> Result<bool, Failure> {
    let Some(value) = value else {
        // `present: true` fails (so its negation holds); an unguarded test cannot evaluate.
        return if guarded {
            Ok(negated)
        } else {
            Err(Failure::Error)
        };
    };
    if !representable(value) {
        return Err(Failure::Unrepresentable);
    }
    let mut items = Vec::new();
    elements(value, &mut items);
    if test.is_whole_list() {
        if !value.is_array() {
            return Err(Failure::Error);
        }
        let has = |x: &Value| items.contains(x);
        let holds = match test {
            Test::Contains(x) => has(x),
            Test::ContainsAny(l) => l.iter().any(has),
            _ => matches!(test, Test::ContainsAll(l) if l.iter().all(has)),
        };
        return Ok(holds != negated);
    }
    let test = if negated {
        test.opposite()
    } else {
        test.clone()
    };
    let results: Vec<Result<bool, Failure>> = items.iter().map(|e| element(&test, e)).collect();
    if results.iter().any(Result::is_err) {
        return Err(Failure::Error);
    }
    Ok(results.into_iter().any(|r| r == Ok(true)))
}

/// Ways to write the condition around `args.v: { TESTS }`, and whether each negates it.
const WRAPPERS: &[(&str, bool)] = &[
    ("{ args.v: OPS }", false),
    ("{ not: { args.v: OPS } }", true),
    ("{ not: { not: { args.v: OPS } } }", false),
    (
        "{ any: [ { args.v: OPS }, { args.absent: { present: true } } ] }",
        false,
    ),
    (
        "{ not: { any: [ { args.v: OPS }, { args.absent: { present: true } } ] } }",
        true,
    ),
    ("{ args.v: OPS, args.k: { eq: 1 } }", false),
    ("{ not: { args.v: OPS, args.k: { eq: 1 } } }", true),
];

fn gen_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-2i64..3).prop_map(Value::from),
        prop::sample::select(vec!["a", "b", "ab", "", "*"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn gen_text() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        "https://good.com/x",
        "https://api.good.com",
        "https://evil.com",
        "https://good.com@evil.com/",
        "mailto:a@good.com",
        "not a url",
        "a@good.com",
        "b@Evil.COM",
        "c@api.good.com",
        "Name <a@good.com>",
        "a",
        "ab",
    ])
    .prop_map(Value::from)
}

fn gen_element() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => gen_scalar(),
        4 => gen_text(),
        1 => Just(json!({ "k": "a" })),
        1 => Just(Value::Null),
        1 => Just(json!(1.5)),
        1 => Just(json!(u64::MAX)),
    ]
}

fn gen_value() -> impl Strategy<Value = Value> {
    gen_element().prop_recursive(2, 12, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

fn gen_test() -> impl Strategy<Value = Test> {
    let scalars = || prop::collection::vec(gen_scalar(), 1..3);
    let domains = || {
        prop::collection::vec(
            prop::sample::select(vec!["good.com", "*.good.com", "evil.com"]).prop_map(String::from),
            1..3,
        )
    };
    let pattern = prop::sample::select(vec!["a", "a*", "*b", "*", "*@good.com", "https://*"])
        .prop_map(String::from);
    prop_oneof![
        gen_scalar().prop_map(Test::Eq),
        gen_scalar().prop_map(Test::Ne),
        (-2i64..3).prop_map(Test::Gt),
        (-2i64..3).prop_map(Test::Ge),
        (-2i64..3).prop_map(Test::Lt),
        (-2i64..3).prop_map(Test::Le),
        scalars().prop_map(Test::In),
        scalars().prop_map(Test::NotIn),
        pattern.clone().prop_map(Test::Like),
        pattern.prop_map(Test::NotLike),
        domains().prop_map(Test::HostIn),
        domains().prop_map(Test::HostNotIn),
        domains().prop_map(Test::EmailIn),
        domains().prop_map(Test::EmailNotIn),
        gen_scalar().prop_map(Test::Contains),
        scalars().prop_map(Test::ContainsAny),
        scalars().prop_map(Test::ContainsAll),
    ]
}

#[expect(
    clippy::indexing_slicing,
    reason = "the wrapper index is drawn from the array's range"
)]
fn rule_for(test: &Test, wrapper: usize, guarded: bool) -> (Policy, bool) {
    let (shape, negated) = WRAPPERS[wrapper];
    let ops = if guarded {
        format!("{{ present: true, {} }}", test.yaml())
    } else {
        format!("{{ {} }}", test.yaml())
    };
    (rejecting(&shape.replace("OPS", &ops)), negated)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn invariant_i2_engine_agrees_with_the_reference_on_lists_and_scalars(
        test in gen_test(),
        wrapper in 0..WRAPPERS.len(),
        guarded in any::<bool>(),
        value in proptest::option::of(gen_value()),
    ) {
        let (p, negated) = rule_for(&test, wrapper, guarded);
        // Unrelated arguments, one of them unrepresentable, change nothing.
        let mut args = json!({ "k": 1, "other": 2.5 });
        if let Some(v) = &value {
            args["v"] = v.clone();
        }
        let verdict = p.decide(&Request::new("amber", "t.call").with_args(args.clone()));
        let expected = reference(&test, negated, guarded, value.as_ref());
        let (decision, rules): (Decision, Vec<&str>) = match expected {
            Ok(false) => (decide(&policy("g:\n  t.call: { level: 1 }\n"), json!({})), vec!["g/t.call"]),
            Ok(true) | Err(Failure::Error) => (Decision::Reject, vec!["r"]),
            Err(Failure::Unrepresentable) => (Decision::Reject, vec!["engine:unrepresentable:args.v"]),
        };
        prop_assert_eq!(
            (&verdict.decision, verdict.rules.iter().map(String::as_str).collect::<Vec<_>>()),
            (&decision, rules),
            "{} (negated: {}, guarded: {}) over {}: reference says {:?}",
            test.yaml(), negated, guarded, args, expected
        );
    }

    #[test]
    fn invariant_i2_a_rule_fires_on_a_list_when_it_fires_on_one_of_its_elements(
        test in gen_test(),
        wrapper in 0..WRAPPERS.len(),
        guarded in any::<bool>(),
        e in gen_element(),
        others in prop::collection::vec(gen_value(), 0..4),
        at in any::<prop::sample::Index>(),
    ) {
        let (p, negated) = rule_for(&test, wrapper, guarded);
        // `not` over a whole-list test (`not: { contains: x }`) is about the list, not its
        // elements: adding `x` is meant to stop it firing.
        if negated && test.is_whole_list() {
            return Ok(());
        }
        let one = if test.is_whole_list() { json!([e]) } else { e.clone() };
        if rejects(&p, json!({ "k": 1, "v": one })) {
            let mut list = others.clone();
            list.insert(at.index(others.len() + 1), e.clone());
            let args = json!({ "k": 1, "v": list });
            prop_assert!(rejects(&p, args.clone()), "{} over {}", test.yaml(), args);
        }
    }
}

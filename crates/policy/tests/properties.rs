//! Property tests for policy v2 (issue 18): quantifiers against a small reference evaluator
//! written from docs/policy.md, exact decimal sums, and provenance that never credits the
//! owner with a value the owner did not send.

use p3ak_policy::{Context, Decision, Policy, Request, Source, Transcript};
use proptest::prelude::*;
use serde_json::{Value, json};

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn rejecting(when: &str) -> Policy {
    policy(&format!(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        reject: true\n"
    ))
}

// ---------------------------------------------------------------------------------------------
// Quantifiers

#[derive(Debug, Clone, Copy)]
enum Quant {
    All,
    Any,
    None,
}

#[derive(Debug, Clone)]
enum ItemTest {
    SizeGt(i64),
    ToIn(Vec<String>),
}

impl ItemTest {
    fn yaml(&self) -> String {
        match self {
            Self::SizeGt(n) => format!("{{ item.size: {{ gt: {n} }} }}"),
            Self::ToIn(set) => format!("{{ item.to: {{ in: [{}] }} }}", set.join(", ")),
        }
    }

    /// One item, as the documentation describes: a missing field or a comparison with a
    /// non-number cannot be evaluated; membership across types is simply false.
    fn holds(&self, item: &Value) -> Result<bool, ()> {
        match self {
            Self::SizeGt(n) => item
                .get("size")
                .ok_or(())?
                .as_i64()
                .map(|s| s > *n)
                .ok_or(()),
            Self::ToIn(set) => {
                let to = item.get("to").ok_or(())?;
                Ok(to.as_str().is_some_and(|t| set.iter().any(|s| s == t)))
            }
        }
    }
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// Whether the rule fires (`Ok(true)`), does not (`Ok(false)`), or cannot be evaluated.
fn reference(quant: Quant, tests: &[ItemTest], either: bool, value: &Value) -> Result<bool, ()> {
    let mut items = Vec::new();
    flatten(value, &mut items);
    let mut results = Vec::new();
    for item in &items {
        // `either`: the tests are alternatives (`any: [...]`), else all must hold, each in
        // order with Cedar's short circuit.
        let mut holds = !either;
        for t in tests {
            let r = t.holds(item)?;
            if either && r {
                holds = true;
                break;
            }
            if !either && !r {
                holds = false;
                break;
            }
        }
        results.push(holds);
    }
    Ok(match quant {
        Quant::All => results.iter().all(|r| *r),
        Quant::Any => results.iter().any(|r| *r),
        Quant::None => !results.iter().any(|r| *r),
    })
}

fn gen_item() -> impl Strategy<Value = Value> {
    let size = prop_oneof![
        (0i64..20).prop_map(|n| json!(n)),
        Just(json!("big")),
        Just(Value::Null),
    ];
    prop_oneof![
        8 => (proptest::option::of(size), proptest::sample::select(vec!["a", "b", "c"]))
            .prop_map(|(size, to)| {
                let mut record = serde_json::Map::new();
                record.insert("to".to_owned(), json!(to));
                if let Some(size) = size.filter(|s| !s.is_null()) {
                    record.insert("size".to_owned(), size);
                }
                Value::Object(record)
            }),
        1 => Just(json!(7)),
    ]
}

fn gen_list() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::collection::vec(gen_item(), 0..5).prop_map(Value::Array),
        1 => gen_item(),
        1 => proptest::collection::vec(proptest::collection::vec(gen_item(), 0..3), 0..3)
            .prop_map(|v| json!(v)),
    ]
}

fn gen_tests() -> impl Strategy<Value = Vec<ItemTest>> {
    proptest::collection::vec(
        prop_oneof![
            (0i64..20).prop_map(ItemTest::SizeGt),
            proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..3)
                .prop_map(|s| ItemTest::ToIn(s.into_iter().map(str::to_owned).collect())),
        ],
        1..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn quantifiers_agree_with_the_reference(
        quant in prop_oneof![Just(Quant::All), Just(Quant::Any), Just(Quant::None)],
        tests in gen_tests(),
        either in any::<bool>(),
        negated in any::<bool>(),
        value in gen_list(),
    ) {
        let name = match quant { Quant::All => "all", Quant::Any => "any", Quant::None => "none" };
        let inner = if either || tests.len() == 1 {
            if tests.len() == 1 {
                tests[0].yaml()
            } else {
                format!("{{ any: [{}] }}", tests.iter().map(ItemTest::yaml).collect::<Vec<_>>().join(", "))
            }
        } else {
            // Several tests on different fields in one mapping: all must hold. Two tests on the
            // same field would be a duplicate key, so nest them with `not: { any: [not ...] }`.
            format!(
                "{{ not: {{ any: [{}] }} }}",
                tests.iter().map(|t| format!("{{ not: {} }}", t.yaml())).collect::<Vec<_>>().join(", ")
            )
        };
        let mut when = format!("{{ args.files: {{ {name}: {inner} }} }}");
        if negated {
            when = format!("{{ not: {when} }}");
        }
        let p = rejecting(&when);
        let got = p.decide(&Request::new("amber", "t.call").with_args(json!({ "files": value })));
        let expected = reference(quant, &tests, either || tests.len() == 1, &value)
            .map(|fires| fires != negated);
        let rejected = got.decision == Decision::Reject;
        prop_assert_eq!(rejected, expected.unwrap_or(true), "{} over {}: reference {:?}", when, value, expected);
    }

    #[test]
    fn decimal_sums_are_exact(cents in proptest::collection::vec(0u32..100_000, 1..20)) {
        let p = policy("decimals:\n  args.amount: 2\ntotals:\n  paid: { actions: [t.call], sum: amount, window: 1d }\ng:\n  t.call: { level: 1 }\n");
        let spec = &p.totals()[0];
        let mut sum: i64 = 0;
        for c in &cents {
            // The caller writes the amount in currency units with two places.
            let text = format!("{}.{:02}", c / 100, c % 100);
            let amount: Value = serde_json::from_str(&text).unwrap();
            sum += spec.contribution("t.call", &json!({ "amount": amount })).unwrap();
        }
        prop_assert_eq!(sum, cents.iter().map(|c| i64::from(*c)).sum::<i64>());
    }

    #[test]
    fn provenance_never_credits_the_owner_with_what_the_owner_did_not_send(
        owner in "[a-z @.]{0,40}",
        tool in "[a-z @.]{0,40}",
        value in "[a-z@.]{1,12}",
    ) {
        let mut transcript = Transcript::new();
        transcript.push(Source::Owner, &owner);
        transcript.push(Source::Tool("mail.read".to_owned()), &tool);
        let sources = transcript.sources_of(&value);
        if !owner.contains(value.as_str()) {
            prop_assert!(!sources.contains(&Source::Owner), "{value:?} credited to the owner of {owner:?}");
        }
        // And the policy agrees: `from: [owner]` does not hold.
        let p = rejecting("{ args.to: { not_from: [owner] } }");
        let context = Context { origins: Some(transcript.origins_of(&json!({ "to": value }))), ..Context::default() };
        let verdict = p.decide(&Request::new("amber", "t.call").with_args(json!({ "to": value })).with_context(context));
        if !owner.contains(value.as_str()) {
            prop_assert_eq!(verdict.decision, Decision::Reject);
        }
    }
}

#[test]
fn a_value_the_owner_typed_is_credited_to_the_owner() {
    let mut transcript = Transcript::new();
    transcript.push(
        Source::Owner,
        "pay 98.70 to DE89 3704 0044 0532 0130 00 today",
    );
    let origins =
        transcript.origins_of(&json!({ "iban": "DE89 3704 0044 0532 0130 00", "amount": 98.7 }));
    assert!(
        origins
            .of("de89 3704 0044 0532 0130 00")
            .contains(&Source::Owner)
    );
}

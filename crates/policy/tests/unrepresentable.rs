//! Values the engine cannot represent (issue 16, item 13): a null, a fraction, an integer
//! beyond 64 bits. Any rule that reads one rejects, with a deciding rule id that says why; a
//! rule that does not read it is unaffected.

use p3ak_policy::{Context, Decision, Policy, Request};
use serde_json::{Value, json};

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// An entry at level 1 with one rule `r`: when `when` holds, `effect`.
fn rule(when: &str, effect: &str) -> Policy {
    policy(&format!(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        {effect}\n"
    ))
}

fn verdict(policy: &Policy, args: Value) -> (Decision, Vec<String>) {
    let v = policy.decide(&Request::new("amber", "t.call").with_args(args));
    (v.decision, v.rules)
}

fn rejected_as(policy: &Policy, args: Value, id: &str) {
    let (decision, rules) = verdict(policy, args.clone());
    assert_eq!(decision, Decision::Reject, "{args}");
    assert_eq!(rules, [id], "{args}");
}

fn unrepresentable() -> Vec<Value> {
    vec![
        json!(999_999.99),
        json!(98.70),
        json!(1.0),
        json!(null),
        json!(u64::MAX),
        json!(-1e30),
    ]
}

#[test]
fn invariant_i2_a_guarded_limit_rejects_a_fraction_instead_of_skipping() {
    // The reproduction: `present` held, so the limit must be checked, and it cannot be.
    let p = rule("{ args.amount: { present: true, gt: 100000 } }", "level: 4");
    for amount in unrepresentable() {
        rejected_as(
            &p,
            json!({ "amount": amount }),
            "engine:unrepresentable:args.amount",
        );
    }
    // Whole numbers still decide as before.
    assert_eq!(verdict(&p, json!({ "amount": 99 })).0.required_level(), 1);
    assert_eq!(
        verdict(&p, json!({ "amount": 100_001 })).0.required_level(),
        4
    );
    assert_eq!(verdict(&p, json!({})).0.required_level(), 1);
}

#[test]
fn invariant_i2_negated_and_alternative_reads_reject_too() {
    for when in [
        "{ not: { args.amount: { le: 100000 } } }",
        "{ any: [ { args.payee: { eq: landlord } }, { args.amount: { gt: 100000 } } ] }",
        "{ not: { args.amount: { present: true, le: 100000 } } }",
        "{ args.payee: { eq: nobody }, args.amount: { gt: 1 } }",
    ] {
        let p = rule(when, "level: 4");
        rejected_as(
            &p,
            json!({ "amount": 999_999.99, "payee": "landlord" }),
            "engine:unrepresentable:args.amount",
        );
    }
}

#[test]
fn invariant_i2_presence_alone_does_not_read_the_value() {
    // The value is there; only its number is unknown.
    let p = rule("{ args.amount: { present: true } }", "level: 2");
    assert_eq!(
        verdict(&p, json!({ "amount": 98.70 })).0.required_level(),
        2
    );
    let p = rule("{ args.amount: { present: false } }", "level: 2");
    assert_eq!(verdict(&p, json!({ "amount": null })).0.required_level(), 1);
    // But looking inside it reads it.
    let p = rule("{ args.amount.cents: { present: true } }", "level: 2");
    rejected_as(
        &p,
        json!({ "amount": 1.5 }),
        "engine:unrepresentable:args.amount.cents",
    );
}

#[test]
fn invariant_i2_nested_fields_and_list_elements_are_covered() {
    let p = rule("{ args.payment.amount: { gt: 100 } }", "level: 3");
    rejected_as(
        &p,
        json!({ "payment": { "amount": 1.5 } }),
        "engine:unrepresentable:args.payment.amount",
    );
    let p = rule("{ args.payment: { ne: x } }", "level: 3");
    rejected_as(
        &p,
        json!({ "payment": { "amount": 1.5, "to": "a" } }),
        "engine:unrepresentable:args.payment",
    );
    let p = rule("{ args.payment.to: { eq: a } }", "level: 3");
    assert_eq!(
        verdict(&p, json!({ "payment": { "amount": 1.5, "to": "a" } }))
            .0
            .required_level(),
        3
    );
    let p = rule("{ args.amounts: { gt: 100 } }", "level: 3");
    rejected_as(
        &p,
        json!({ "amounts": [5, 1.5] }),
        "engine:unrepresentable:args.amounts",
    );
    let p = rule("{ args.tags: { in: [secret] } }", "reject: true");
    rejected_as(
        &p,
        json!({ "tags": ["public", null] }),
        "engine:unrepresentable:args.tags",
    );
    rejected_as(
        &p,
        json!({ "tags": [["public", [0.5]]] }),
        "engine:unrepresentable:args.tags",
    );
    let p = rule(
        "{ args.to: { email_domain_not_in: [family.org] } }",
        "level: 3",
    );
    rejected_as(
        &p,
        json!({ "to": ["a@family.org", null] }),
        "engine:unrepresentable:args.to",
    );
}

#[test]
fn invariant_i2_raw_cedar_that_touches_the_value_rejects() {
    let p = rule("{ cedar: 'context.args.amount > 100' }", "level: 3");
    rejected_as(
        &p,
        json!({ "amount": 999.99 }),
        "engine:unrepresentable:args.amount",
    );
    // Reading the whole record reads the value inside it.
    let p = rule("{ cedar: 'context.args == {\"amount\": 1}' }", "level: 3");
    rejected_as(&p, json!({ "amount": 1.5 }), "engine:unrepresentable:args");
    let p = rule(
        "{ cedar: 'context[\"args\"][\"p\"][\"q\"] < 0' }",
        "level: 3",
    );
    rejected_as(
        &p,
        json!({ "p": { "q": null } }),
        "engine:unrepresentable:args.p.q",
    );
    // A raw expression that reads other arguments is unaffected.
    let p = rule("{ cedar: 'context.args.n * 2 > 10' }", "level: 3");
    assert_eq!(
        verdict(&p, json!({ "n": 6, "amount": 1.5 }))
            .0
            .required_level(),
        3
    );
}

#[test]
fn invariant_i2_a_total_fed_an_unrepresentable_amount_rejects() {
    let p = policy(
        "totals:\n  paid: { actions: [t.call], sum: amount, window: 1d }\ng:\n  t.call:\n    level: 1\n    rules:\n      - { id: day, when: { total.paid: { gt: 50000 } }, level: 5 }\n",
    );
    let mut context = Context::default();
    context.totals.insert("paid".to_owned(), 0);
    for amount in unrepresentable() {
        let v = p.decide(
            &Request::new("amber", "t.call")
                .with_args(json!({ "amount": amount }))
                .with_context(context.clone()),
        );
        assert_eq!(v.decision, Decision::Reject, "{amount}");
        assert_eq!(v.rules, ["engine:unrepresentable:total.paid"], "{amount}");
    }
}

#[test]
fn invariant_i2_forbids_that_read_the_value_reject() {
    let p = policy(
        "forbid:\n  - id: big\n    actions: [t.call]\n    when: { args.amount: { gt: 5 } }\ng:\n  t.call: { level: 0 }\n",
    );
    rejected_as(
        &p,
        json!({ "amount": 1.5 }),
        "engine:unrepresentable:args.amount",
    );
}

#[test]
fn rules_that_do_not_read_the_value_are_unaffected() {
    let p = rule("{ args.payee: { not_in: [landlord] } }", "reject: true");
    assert_eq!(
        verdict(
            &p,
            json!({ "payee": "landlord", "amount": 98.70, "memo": null })
        )
        .0
        .required_level(),
        1
    );
    let p = policy("g:\n  t.call: { level: 0 }\n");
    assert!(matches!(
        verdict(&p, json!({ "amount": 98.70 })).0,
        Decision::Allow { .. }
    ));
}

#[test]
fn explain_says_which_value_and_why() {
    let p = rule("{ args.amount: { gt: 100 } }", "level: 3");
    let explained = p.explain(&Request::new("amber", "t.call").with_args(json!({ "amount": 1.5 })));
    let step = explained
        .steps
        .iter()
        .find(|s| s.rule == "r")
        .map(|s| s.outcome.clone())
        .unwrap_or_default();
    assert!(step.starts_with("error: "), "{step}");
    assert!(step.contains("`args.amount`"), "{step}");
    assert!(step.contains("cannot represent"), "{step}");
}

#[test]
fn operators_cannot_name_a_rule_like_the_engine() {
    let err = Policy::from_yaml(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - { id: \"engine:x\", when: { args.a: { eq: 1 } }, level: 2 }\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("invalid rule id `engine:x`"), "{err}");
}

//! Conditions over arguments and runtime context, and the fail-closed rule: any evaluation
//! error rejects.

use p3ak_policy::{Context, Decision, Policy, Request, TimeOfDay};
use serde_json::json;

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn rule(when: &str, effect: &str) -> Policy {
    policy(&format!(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        {effect}\n"
    ))
}

fn level(policy: &Policy, args: serde_json::Value) -> u8 {
    policy
        .decide(&Request::new("amber", "t.call").with_args(args))
        .decision
        .required_level()
}

const REJECTED: u8 = 6;

const BANKING: &str = include_str!("../../../examples/policies/banking/policy.yaml");

/// The banking example, with the set files it reads from beside it.
#[expect(
    clippy::panic,
    reason = "a test helper: an example that does not load fails the test"
)]
fn banking() -> Policy {
    Policy::from_yaml_with_files(BANKING, banking_file).unwrap_or_else(|e| panic!("{e}"))
}

fn banking_file(name: &str) -> std::io::Result<String> {
    match name {
        "payees.txt" => {
            Ok(include_str!("../../../examples/policies/banking/payees.txt").to_owned())
        }
        "accounts.txt" => {
            Ok(include_str!("../../../examples/policies/banking/accounts.txt").to_owned())
        }
        _ => Err(std::io::ErrorKind::NotFound.into()),
    }
}

#[test]
fn numbers_strings_lists_and_patterns() {
    let p = rule("{ args.amount: { gt: 100, le: 1000 } }", "level: 3");
    assert_eq!(level(&p, json!({ "amount": 100 })), 1);
    assert_eq!(level(&p, json!({ "amount": 101 })), 3);
    assert_eq!(level(&p, json!({ "amount": 1001 })), 1);

    let p = rule("{ args.to: { in: [alice, bob] } }", "level: 2");
    assert_eq!(level(&p, json!({ "to": "bob" })), 2);
    assert_eq!(level(&p, json!({ "to": "eve" })), 1);

    let p = rule("{ args.path: { like: \"/etc/*\" } }", "reject: true");
    assert_eq!(level(&p, json!({ "path": "/etc/passwd" })), REJECTED);
    assert_eq!(level(&p, json!({ "path": "/home/x" })), 1);

    let p = rule(
        "{ args.tags: { contains_any: [secret, private] } }",
        "level: 4",
    );
    assert_eq!(level(&p, json!({ "tags": ["a", "private"] })), 4);
    assert_eq!(level(&p, json!({ "tags": ["a"] })), 1);

    let p = rule(
        "{ args.subject: { eq: \"say \\\"hi\\\" \\\\ *\" } }",
        "level: 2",
    );
    assert_eq!(level(&p, json!({ "subject": "say \"hi\" \\ *" })), 2);
    assert_eq!(level(&p, json!({ "subject": "say hi" })), 1);

    let p = rule("{ args.urgent: { eq: true } }", "level: 2");
    assert_eq!(level(&p, json!({ "urgent": true })), 2);
    assert_eq!(level(&p, json!({ "urgent": false })), 1);
}

#[test]
fn url_hosts_and_email_domains() {
    let p = rule(
        "{ args.url: { host_not_in: [example.com, \"*.example.com\"] } }",
        "level: 3",
    );
    assert_eq!(level(&p, json!({ "url": "https://api.example.com/x" })), 1);
    assert_eq!(level(&p, json!({ "url": "https://example.com" })), 1);
    assert_eq!(
        level(&p, json!({ "url": "https://example.com@evil.net/" })),
        3
    );
    assert_eq!(level(&p, json!({ "url": "https://notexample.com" })), 3);
    // A bare host name is a host (issue 18); a port and a path may follow it.
    assert_eq!(level(&p, json!({ "url": "example.com" })), 1);
    assert_eq!(level(&p, json!({ "url": "evil.net:8443/x" })), 3);
    // Not a host: the test cannot be evaluated, so the call is rejected.
    assert_eq!(level(&p, json!({ "url": "not a host" })), REJECTED);
    assert_eq!(level(&p, json!({ "url": "localhost" })), REJECTED);

    let p = rule("{ args.to: { email_domain_in: [family.org] } }", "level: 0");
    let p2 = rule(
        "{ args.to: { email_domain_not_in: [family.org] } }",
        "level: 2",
    );
    assert_eq!(
        level(&p, json!({ "to": ["a@family.org", "b@FAMILY.org"] })),
        1
    );
    assert_eq!(
        level(&p2, json!({ "to": ["a@family.org", "b@family.org"] })),
        1
    );
    assert_eq!(
        level(&p2, json!({ "to": ["a@family.org", "c@other.com"] })),
        2
    );
    assert_eq!(level(&p2, json!({ "to": "Name <c@other.com>" })), REJECTED);
}

#[test]
fn time_of_day_channel_and_agent() {
    let p = rule("{ time: { between: [\"22:00\", \"07:00\"] } }", "level: 3");
    let at = |t: &str| {
        let ctx = Context {
            time: TimeOfDay::parse(t),
            ..Context::default()
        };
        p.decide(&Request::new("amber", "t.call").with_context(ctx))
            .decision
            .required_level()
    };
    assert_eq!(at("23:30"), 3);
    assert_eq!(at("06:59"), 3);
    assert_eq!(at("07:00"), 1);
    assert_eq!(at("12:00"), 1);
    // No time supplied: the condition cannot be evaluated.
    assert_eq!(
        p.decide(&Request::new("amber", "t.call")).decision,
        Decision::Reject
    );

    let p = rule(
        "{ channel: { not_in: [console] }, agent: { like: \"sc*\" } }",
        "level: 4",
    );
    let from = |agent: &str, channel: &str| {
        let ctx = Context {
            channel: Some(channel.to_owned()),
            ..Context::default()
        };
        p.decide(&Request::new(agent, "t.call").with_context(ctx))
            .decision
            .required_level()
    };
    assert_eq!(from("scout", "email"), 4);
    assert_eq!(from("scout", "console"), 1);
    assert_eq!(from("amber", "email"), 1);
}

#[test]
fn any_not_present_and_raw_cedar() {
    let p = rule(
        "{ any: [ { args.a: { eq: 1 } }, { args.b: { eq: 2 } } ] }",
        "level: 2",
    );
    assert_eq!(level(&p, json!({ "a": 1, "b": 0 })), 2);
    assert_eq!(level(&p, json!({ "a": 0, "b": 2 })), 2);
    assert_eq!(level(&p, json!({ "a": 0, "b": 0 })), 1);

    let p = rule("{ not: { args.a: { eq: 1 } } }", "level: 2");
    assert_eq!(level(&p, json!({ "a": 1 })), 1);
    assert_eq!(level(&p, json!({ "a": 3 })), 2);

    let p = rule("{ args.cc: { present: true, ne: \"\" } }", "level: 2");
    assert_eq!(level(&p, json!({})), 1);
    assert_eq!(level(&p, json!({ "cc": "x" })), 2);

    let p = rule("{ cedar: 'context.args.n * 2 > 10' }", "level: 5");
    assert_eq!(level(&p, json!({ "n": 6 })), 5);
    assert_eq!(level(&p, json!({ "n": 5 })), 1);
}

#[test]
fn evaluation_errors_reject_and_are_never_skipped() {
    let p = rule("{ args.amount: { gt: 100 } }", "level: 2");
    for (args, deciding) in [
        (json!({}), "r"),
        (json!({ "amount": "lots" }), "r"),
        (
            json!({ "amount": { "__extn": { "fn": "decimal", "arg": "1.0" } } }),
            "r",
        ),
        // Values the engine cannot represent say so (tests/unrepresentable.rs).
        (
            json!({ "amount": 1.5 }),
            "engine:unrepresentable:args.amount",
        ),
        (
            json!({ "amount": null }),
            "engine:unrepresentable:args.amount",
        ),
        (
            json!({ "amount": u64::MAX }),
            "engine:unrepresentable:args.amount",
        ),
    ] {
        let verdict = p.decide(&Request::new("amber", "t.call").with_args(args.clone()));
        assert_eq!(verdict.decision, Decision::Reject, "{args}");
        assert_eq!(verdict.rules, [deciding]);
    }
    let explained = p.explain(&Request::new("amber", "t.call"));
    let step = explained.steps.iter().find(|s| s.rule == "r").unwrap();
    assert!(step.outcome.starts_with("error: "), "{}", step.outcome);
}

#[test]
fn totals_add_this_call_and_fail_closed_when_missing() {
    let p = policy(
        "totals:\n  spent: { actions: [shop.*], sum: price, window: 1d }\n  calls: { actions: [shop.buy], count: true, window: 1h }\ng:\n  shop.buy:\n    level: 1\n    rules:\n      - { id: cap, when: { total.spent: { gt: 1000 } }, level: 5 }\n      - { id: rate, when: { total.calls: { ge: 3 } }, reject: true }\n",
    );
    assert_eq!(p.totals().len(), 2);
    let decide = |price: i64, spent: Option<i64>, calls: i64| {
        let mut ctx = Context::default();
        if let Some(s) = spent {
            ctx.totals.insert("spent".into(), s);
        }
        ctx.totals.insert("calls".into(), calls);
        p.decide(
            &Request::new("amber", "shop.buy")
                .with_args(json!({ "price": price }))
                .with_context(ctx),
        )
        .decision
        .required_level()
    };
    assert_eq!(decide(400, Some(600), 0), 1);
    assert_eq!(decide(401, Some(600), 0), 5);
    assert_eq!(decide(1, Some(0), 2), REJECTED);
    assert_eq!(decide(1, None, 0), REJECTED);
    assert_eq!(decide(-500, Some(900), 0), REJECTED);
    assert_eq!(decide(1, Some(i64::MAX), 0), REJECTED);
}

#[test]
fn credentials_are_bound_to_actions() {
    let p = policy(
        "credentials:\n  stripe_live: [stripe.*]\ng:\n  stripe.refund: { level: 1 }\n  mail.send: { level: 1 }\n",
    );
    let with = |action: &str, cred: &str| {
        p.decide(&Request::new("amber", action).with_credentials([cred]))
    };
    assert!(matches!(
        with("stripe.refund", "stripe_live").decision,
        Decision::Escalate { .. }
    ));
    let v = with("mail.send", "stripe_live");
    assert_eq!(
        (v.decision, v.rules),
        (Decision::Reject, vec!["credential:stripe_live".to_owned()])
    );
    assert_eq!(
        with("stripe.refund", "undeclared").decision,
        Decision::Reject
    );
}

#[test]
fn most_restrictive_wins_and_escalations_merge() {
    let p = policy(
        "g:\n  m.*: { level: 2, crawfish: 60, notify: [push], timeout: 10m }\n  m.send: { level: 2, crawfish: 300, notify: [sms], timeout: 5m, confirm_twice: true }\n  m.read: { level: 1 }\n",
    );
    let v = p.decide(&Request::new("amber", "m.send"));
    assert_eq!(v.rules, ["g/m.*", "g/m.send"]);
    let Decision::Escalate {
        crawfish,
        notify,
        confirm_twice,
        timeout,
        ..
    } = v.decision
    else {
        panic!("must escalate");
    };
    assert_eq!(crawfish.as_secs(), 300);
    assert_eq!(timeout.as_secs(), 300);
    assert_eq!(notify, ["push", "sms"]);
    assert!(confirm_twice);
    let v = p.decide(&Request::new("amber", "m.read"));
    assert_eq!(
        (v.decision.required_level(), v.rules),
        (2, vec!["g/m.*".to_owned()])
    );
}

#[test]
fn explain_lists_every_rule_that_took_part() {
    let p = banking();
    let request: Request = serde_json::from_value(json!({
        "agent": "ledger",
        "action": "bank.payment_send",
        "args": { "payee": "landlord", "amount": 90.00 },
        "credentials": ["bank_api"],
        "context": {
            "totals": { "paid_24h": 45000, "payments_24h": 5, "payee_paid_24h": 0, "payee_payments_24h": 0 },
            "time": "12:00",
            "transcript": [{ "from": "owner", "text": "pay the landlord 90.00" }],
        },
    }))
    .unwrap();
    let e = p.explain(&request);
    assert_eq!(e.verdict.rules, ["day-total-over-500"]);
    let rules: Vec<&str> = e.steps.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "agents",
            "credential:bank_api",
            "financial/bank.payment_send",
            "unknown-payee",
            "account-from-a-document",
            "new-account",
            "not-a-positive-amount",
            "split-payment",
            "over-100",
            "day-total-over-500",
            "many-payments",
            "night-payment",
        ]
    );
    assert!(e.steps.iter().all(|s| !s.outcome.starts_with("error")));
}

//! The shipped policies load and decide as documented.

use p3ak_policy::cases::Suite;
use p3ak_policy::{Decision, Policy, Request};

const HITL: &str = include_str!("fixtures/hitl-policy.yaml");
const BANKING: &str = include_str!("../../../examples/policies/banking.yaml");
const CASES: &str = include_str!("../../../examples/policies/cases.yaml");

fn level(policy: &Policy, action: &str) -> u8 {
    policy
        .decide(&Request::new("amber", action))
        .decision
        .required_level()
}

#[test]
fn brief_hitl_policy_loads_with_the_levels_it_states() {
    let policy = Policy::from_yaml(HITL).unwrap();
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    for (action, want) in [
        ("vault_search", 0),
        ("email_read", 0),
        ("web_search", 0),
        ("email_send", 1),
        ("drive_share", 2),
        ("file_delete", 3),
        ("vault_delete", 4),
        ("deploy", 3),
        ("payment_send", 5),
        ("vault_rekey", 5),
        ("factory_reset", 5),
    ] {
        assert_eq!(level(&policy, action), want, "{action}");
    }
}

#[test]
fn brief_hitl_policy_keeps_undo_windows_and_channels() {
    let policy = Policy::from_yaml(HITL).unwrap();
    let verdict = policy.decide(&Request::new("amber", "email_send"));
    let Decision::Escalate {
        crawfish,
        notify,
        confirm_twice,
        ..
    } = verdict.decision
    else {
        panic!("email_send should escalate");
    };
    assert_eq!(crawfish.as_secs(), 600);
    assert_eq!(notify, ["voice", "push"]);
    assert!(!confirm_twice);
    assert_eq!(verdict.group.as_deref(), Some("send"));
    assert_eq!(verdict.rules, ["send/email_send"]);

    let Decision::Escalate {
        crawfish,
        confirm_twice,
        ..
    } = policy
        .decide(&Request::new("amber", "factory_reset"))
        .decision
    else {
        panic!("factory_reset should escalate");
    };
    assert_eq!(crawfish.as_secs(), 86_400);
    assert!(confirm_twice);
}

#[test]
fn banking_example_passes_its_cases() {
    let policy = Policy::from_yaml(BANKING).unwrap();
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    let suite = Suite::from_yaml(CASES).unwrap();
    assert!(suite.cases.len() >= 20);
    let failures: Vec<String> = suite
        .run(&policy)
        .into_iter()
        .filter(|o| !o.passed())
        .map(|o| format!("{}: {}", o.name, o.failure.unwrap_or_default()))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn banking_sixth_payment_of_90_crosses_500_and_needs_level_5() {
    let policy = Policy::from_yaml(BANKING).unwrap();
    let mut paid = 0_i64;
    let mut levels = Vec::new();
    for count in 0..6_i64 {
        let request: Request = serde_json::from_value(serde_json::json!({
            "agent": "ledger",
            "action": "bank.payment_send",
            "args": { "payee": "landlord", "amount": 9000 },
            "context": { "totals": { "paid_24h": paid, "payments_24h": count }, "time": "12:00" },
        }))
        .unwrap();
        levels.push(policy.decide(&request).decision.required_level());
        paid += 9000;
    }
    assert_eq!(levels, [1, 1, 1, 1, 1, 5]);
}

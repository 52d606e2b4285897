//! Security invariants (DESIGN.md I2, I3, I8) and the algebraic properties the issue asks for:
//! determinism, forbid monotonicity and level monotonicity.

use std::fmt::Write as _;

use p3ak_policy::{AgentNotice, Decision, Declared, Origin, Policy, PolicyCell, Request, Tier};
use proptest::prelude::*;
use serde_json::json;

const ACTIONS: &[&str] = &["a.x", "a.y", "b.x", "b.z", "c", "d.q"];
const PATTERNS: &[&str] = &["a.*", "a.x", "a.y", "b.x", "b.*", "c", "*"];
const TIERS: &[Tier] = &[Tier::Observe, Tier::Act, Tier::Commit];

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

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// One generated operator entry: pattern, level, and an optional amount rule
/// (threshold, level; `None` level means reject).
#[derive(Debug, Clone)]
struct GenEntry {
    pattern: usize,
    level: u8,
    rule: Option<(i64, Option<u8>)>,
}

#[derive(Debug, Clone)]
struct GenForbid {
    pattern: usize,
    threshold: Option<i64>,
    only_amber: bool,
}

fn gen_entry() -> impl Strategy<Value = GenEntry> {
    (
        0..PATTERNS.len(),
        0u8..=5,
        proptest::option::of((0i64..200, proptest::option::of(0u8..=5))),
    )
        .prop_map(|(pattern, level, rule)| GenEntry {
            pattern,
            level,
            rule,
        })
}

fn gen_forbid() -> impl Strategy<Value = GenForbid> {
    (
        0..PATTERNS.len(),
        proptest::option::of(0i64..200),
        any::<bool>(),
    )
        .prop_map(|(pattern, threshold, only_amber)| GenForbid {
            pattern,
            threshold,
            only_amber,
        })
}

#[expect(
    clippy::indexing_slicing,
    reason = "indices are drawn from ranges over these arrays"
)]
fn render(entries: &[GenEntry], forbids: &[GenForbid], escalate_unknown: bool) -> String {
    let mut out = String::new();
    if escalate_unknown {
        out.push_str("defaults: { unknown: escalate, level: 3 }\n");
    }
    if !forbids.is_empty() {
        out.push_str("forbid:\n");
        for (i, f) in forbids.iter().enumerate() {
            let _ = writeln!(
                out,
                "  - id: f{i}\n    actions: [\"{}\"]",
                PATTERNS[f.pattern]
            );
            if f.only_amber {
                out.push_str("    agents: [amber]\n");
            }
            if let Some(t) = f.threshold {
                let _ = writeln!(out, "    when: {{ args.amount: {{ gt: {t} }} }}");
            }
        }
    }
    out.push_str("group:\n");
    let mut seen = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if seen.contains(&e.pattern) {
            continue;
        }
        seen.push(e.pattern);
        let _ = writeln!(
            out,
            "  \"{}\":\n    level: {}",
            PATTERNS[e.pattern], e.level
        );
        if let Some((t, level)) = e.rule {
            let _ = writeln!(
                out,
                "    rules:\n      - id: r{i}\n        when: {{ args.amount: {{ ge: {t} }} }}"
            );
            match level {
                Some(l) => {
                    let _ = writeln!(out, "        level: {l}");
                }
                None => out.push_str("        reject: true\n"),
            }
        }
    }
    if seen.is_empty() {
        out.push_str("  never.used: { level: 0 }\n");
    }
    out
}

#[expect(
    clippy::indexing_slicing,
    reason = "indices are drawn from ranges over these arrays"
)]
fn gen_request() -> impl Strategy<Value = Request> {
    (
        0..ACTIONS.len(),
        prop_oneof![Just("amber"), Just("ledger")],
        proptest::option::of(-5i64..250),
        proptest::option::of((0..TIERS.len(), any::<bool>())),
    )
        .prop_map(|(action, agent, amount, declared)| {
            let args = match amount {
                Some(a) => json!({ "amount": a }),
                None => json!({}),
            };
            let mut request = Request::new(agent, ACTIONS[action]).with_args(args);
            request.declared = declared.map(|(t, first)| {
                Declared::new(
                    TIERS[t],
                    if first {
                        Origin::FirstParty
                    } else {
                        Origin::ThirdParty
                    },
                )
            });
            request
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decisions_are_deterministic(
        entries in proptest::collection::vec(gen_entry(), 0..6),
        forbids in proptest::collection::vec(gen_forbid(), 0..3),
        escalate in any::<bool>(),
        request in gen_request(),
    ) {
        let yaml = render(&entries, &forbids, escalate);
        let (one, two) = (policy(&yaml), policy(&yaml));
        let first = one.decide(&request);
        prop_assert_eq!(&first, &one.decide(&request));
        prop_assert_eq!(&first, &two.decide(&request));
        prop_assert_eq!(&first, &one.explain(&request).verdict);
    }

    #[test]
    fn adding_a_forbid_never_turns_reject_or_escalate_into_allow(
        entries in proptest::collection::vec(gen_entry(), 0..6),
        forbids in proptest::collection::vec(gen_forbid(), 0..3),
        extra in gen_forbid(),
        escalate in any::<bool>(),
        request in gen_request(),
    ) {
        let before = policy(&render(&entries, &forbids, escalate)).decide(&request);
        let mut more = forbids.clone();
        more.push(extra);
        let after = policy(&render(&entries, &more, escalate)).decide(&request);
        if !matches!(before.decision, Decision::Allow { .. }) {
            let allowed = matches!(after.decision, Decision::Allow { .. });
            prop_assert!(!allowed, "{:?} -> {:?}", before, after);
        }
        prop_assert!(after.decision.rank() >= before.decision.rank());
    }

    #[test]
    fn raising_a_level_never_lowers_the_required_level(
        entries in proptest::collection::vec(gen_entry(), 1..6),
        which in any::<prop::sample::Index>(),
        by in 1u8..=5,
        raise_rule in any::<bool>(),
        request in gen_request(),
    ) {
        let before = policy(&render(&entries, &[], false)).decide(&request);
        let mut raised = entries.clone();
        let e = &mut raised[which.index(entries.len())];
        if raise_rule {
            if let Some((_, Some(level))) = &mut e.rule {
                *level = (*level + by).min(5);
            }
        } else {
            e.level = (e.level + by).min(5);
        }
        let after = policy(&render(&raised, &[], false)).decide(&request);
        prop_assert!(
            after.decision.required_level() >= before.decision.required_level(),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn invariant_i2_unknown_action_is_denied(
        plugin in "[a-z]{1,8}",
        action in "[a-z_]{1,12}",
        agent in "[a-z]{1,8}",
        amount in any::<i64>(),
    ) {
        let policy = policy("read:\n  vault_search: { level: 0 }\n  mail.*: { level: 1 }\n");
        let name = format!("{plugin}.{action}");
        prop_assume!(plugin != "mail");
        let request = Request::new(agent, name).with_args(json!({ "amount": amount }));
        let verdict = policy.decide(&request);
        prop_assert_eq!(verdict.decision, Decision::Reject);
        prop_assert_eq!(verdict.rules, vec!["default:unknown".to_owned()]);
    }

    #[test]
    fn invariant_i2_plugin_cannot_raise_its_own_tier(
        request in gen_request(),
        declared in 0..TIERS.len(),
        first_party in any::<bool>(),
        trusted in any::<bool>(),
    ) {
        let trust = if trusted { "defaults: { trust_declared_tiers: [\"b.*\"] }\n" } else { "" };
        let policy = policy(&format!("{trust}group:\n  a.x: {{ level: 2 }}\n"));
        let origin = if first_party { Origin::FirstParty } else { Origin::ThirdParty };
        let mut request = request;
        request.declared = Some(Declared::new(TIERS[declared], origin));
        let verdict = policy.decide(&request);
        let counts = first_party || (trusted && request.action.starts_with("b."));
        if request.action == "a.x" {
            // The operator spoke: what the plugin declares changes nothing.
            let mut silent = request.clone();
            silent.declared = None;
            prop_assert_eq!(&verdict, &policy.decide(&silent));
        } else if !counts {
            // A stranger's declaration is ignored: the action is unknown.
            prop_assert_eq!(&verdict.decision, &Decision::Reject);
            prop_assert_eq!(verdict.rules, vec!["default:unknown".to_owned()]);
        } else if let Decision::Allow { tier } = verdict.decision {
            // Where the operator is silent, a plugin reaches observe at most.
            prop_assert_eq!(tier, Tier::Observe);
            prop_assert_eq!(TIERS[declared], Tier::Observe);
        } else {
            prop_assert!(TIERS[declared] != Tier::Observe);
            let escalated = matches!(verdict.decision, Decision::Escalate { .. });
            prop_assert!(escalated, "{:?}", verdict);
        }
    }

    #[test]
    fn invariant_i2_agent_arguments_cannot_lower_the_operator_level(
        amount in any::<i64>(),
        payee in ".{0,20}",
        extra in proptest::collection::btree_map("[a-z_]{1,6}", any::<i64>(), 0..4),
    ) {
        let policy = banking();
        let mut args = json!({ "amount": amount, "payee": payee });
        for (k, v) in extra {
            args[k] = json!(v);
        }
        let request: Request = serde_json::from_value(json!({
            "agent": "ledger",
            "action": "bank.payment_send",
            "args": args,
            "context": {
                "totals": { "paid_24h": 0, "payments_24h": 0, "payee_paid_24h": 0, "payee_payments_24h": 0 },
                "time": "12:00",
                "transcript": [{ "from": "owner", "text": format!("pay {payee} {amount}") }],
            },
        })).unwrap();
        prop_assert!(policy.decide(&request).decision.required_level() >= 1);
    }
}

#[test]
fn invariant_i2_unknown_action_escalates_when_the_operator_says_so() {
    let policy = policy("defaults: { unknown: escalate, level: 4 }\nread:\n  a.b: { level: 0 }\n");
    let verdict = policy.decide(&Request::new("amber", "z.z"));
    assert!(matches!(
        verdict.decision,
        Decision::Escalate { level, .. } if level.get() == 4
    ));
}

#[test]
fn invariant_i2_first_party_declared_observe_starts_at_observe_and_other_tiers_escalate() {
    let policy = policy("read:\n  a.b: { level: 0 }\n");
    let observe = policy.decide(
        &Request::new("amber", "p.look").with_declared(Declared::first_party(Tier::Observe)),
    );
    assert_eq!(
        observe.decision,
        Decision::Allow {
            tier: Tier::Observe
        }
    );
    for tier in [Tier::Act, Tier::Commit] {
        let verdict = policy
            .decide(&Request::new("amber", "p.do").with_declared(Declared::first_party(tier)));
        assert!(
            matches!(verdict.decision, Decision::Escalate { .. }),
            "{tier}"
        );
        assert_eq!(verdict.rules, ["default:declared"]);
    }
}

#[test]
fn invariant_i2_agents_may_only_propose_what_they_are_granted() {
    let policy = policy(
        "agent_groups:\n  money: { members: [ledger], actions: [bank.*] }\nagents:\n  scout: { actions: [web.*] }\ngroup:\n  bank.pay: { level: 1 }\n  web.search: { level: 0 }\n",
    );
    assert!(matches!(
        policy.decide(&Request::new("ledger", "bank.pay")).decision,
        Decision::Escalate { .. }
    ));
    assert_eq!(
        policy.decide(&Request::new("scout", "bank.pay")).decision,
        Decision::Reject
    );
    assert_eq!(
        policy
            .decide(&Request::new("stranger", "web.search"))
            .decision,
        Decision::Reject
    );
    assert_eq!(
        policy
            .decide(&Request::new("ledger", "web.search"))
            .decision,
        Decision::Reject
    );
}

#[test]
fn invariant_i3_agent_facing_rejection_carries_nothing_of_the_policy() {
    let policy = policy(
        "forbid:\n  - id: secret-forbid-rule-id\n    actions: [vault.*]\nhidden_group_name:\n  vault.export: { level: 2, notify: [secret_channel] }\n",
    );
    let verdict = policy.decide(&Request::new("amber", "vault.export"));
    assert_eq!(verdict.decision, Decision::Reject);
    assert_eq!(verdict.rules, ["secret-forbid-rule-id"]);
    let notice = verdict.agent_notice();
    assert_eq!(notice, AgentNotice::NotPermitted);
    let shown = [
        notice.to_string(),
        format!("{notice:?}"),
        serde_json::to_string(&notice).unwrap(),
    ];
    assert_eq!(shown[0], "action not permitted");
    for text in shown {
        for secret in ["secret", "forbid", "hidden", "vault", "rule", "level"] {
            assert!(!text.contains(secret), "`{text}` leaks `{secret}`");
        }
    }
    // Every rejection looks the same to the agent, whatever rejected it.
    let unknown = policy.decide(&Request::new("amber", "nothing.here"));
    assert_eq!(unknown.agent_notice(), notice);
}

#[test]
fn invariant_i8_level_5_always_confirms_twice() {
    let policy = policy("money:\n  bank.pay: { level: 5, crawfish: 0 }\n");
    let Decision::Escalate {
        confirm_twice,
        level,
        ..
    } = policy.decide(&Request::new("amber", "bank.pay")).decision
    else {
        panic!("level 5 must escalate");
    };
    assert_eq!(level.get(), 5);
    assert!(confirm_twice);
}

#[test]
fn invariant_i8_escalations_carry_the_operator_window_and_a_timeout() {
    let policy = policy(
        "defaults: { timeout: 5m }\nsend:\n  mail.send: { level: 1, crawfish: 10m, notify: [push] }\n  mail.share: { level: 2, timeout: 1h }\n",
    );
    let Decision::Escalate {
        crawfish, timeout, ..
    } = policy.decide(&Request::new("amber", "mail.send")).decision
    else {
        panic!("must escalate");
    };
    assert_eq!((crawfish.as_secs(), timeout.as_secs()), (600, 300));
    let Decision::Escalate { timeout, .. } =
        policy.decide(&Request::new("amber", "mail.share")).decision
    else {
        panic!("must escalate");
    };
    assert_eq!(timeout.as_secs(), 3600);
}

#[test]
fn hot_swap_keeps_decisions_in_flight_on_their_policy() {
    let cell = PolicyCell::new(policy("read:\n  a.b: { level: 0 }\n"));
    let request = Request::new("amber", "a.b");
    let in_flight = cell.snapshot();
    let old = cell.replace(policy("read:\n  a.b: { level: 3 }\n"));
    assert!(std::sync::Arc::ptr_eq(&old, &in_flight));
    assert_eq!(
        in_flight.decide(&request).decision,
        Decision::Allow {
            tier: Tier::Observe
        }
    );
    assert_eq!(cell.decide(&request).decision.required_level(), 3);
}

#[test]
fn hot_swap_under_concurrent_decisions_sees_whole_policies() {
    let cell = std::sync::Arc::new(PolicyCell::new(policy("read:\n  a.b: { level: 0 }\n")));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let cell = cell.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let level = cell
                        .decide(&Request::new("amber", "a.b"))
                        .decision
                        .required_level();
                    assert!(level == 0 || level == 4);
                }
            })
        })
        .collect();
    for i in 0..200 {
        let level = if i % 2 == 0 { 4 } else { 0 };
        cell.replace(policy(&format!("read:\n  a.b: {{ level: {level} }}\n")));
    }
    for r in readers {
        r.join().unwrap();
    }
}

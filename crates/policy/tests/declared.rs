//! Declared tiers (issue 16, item 5): what a plugin says about its own action counts only
//! when the plugin is first-party or the operator trusts it by name.

use p3ak_policy::cases::Suite;
use p3ak_policy::{Decision, Declared, Policy, Request, Tier};

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const STRICT: &str = "defaults: { unknown: reject }\nread:\n  vault_search: { level: 0 }\n";

#[test]
fn invariant_i2_a_third_party_plugin_cannot_declare_itself_observe() {
    let p = policy(STRICT);
    // `with_declared(tier)` says nothing about who declared it: a stranger, then.
    let v = p.decide(&Request::new("amber", "evil.exfiltrate").with_declared(Tier::Observe));
    assert_eq!(v.decision, Decision::Reject);
    assert_eq!(v.rules, ["default:unknown"]);
    for tier in [Tier::Act, Tier::Commit] {
        let v = p.decide(&Request::new("amber", "evil.exfiltrate").with_declared(tier));
        assert_eq!(v.decision, Decision::Reject, "{tier}");
        assert_eq!(v.rules, ["default:unknown"]);
    }
}

#[test]
fn invariant_i2_masking_hides_what_a_stranger_declared_observe() {
    let p = policy(STRICT);
    assert!(p.never_permits("amber", "evil.exfiltrate", Some(Tier::Observe)));
    assert!(p.never_permits("amber", "evil.exfiltrate", Some(Tier::Act)));
}

#[test]
fn invariant_i2_a_stranger_declaring_act_is_unknown_even_when_unknown_escalates() {
    let p = policy("defaults: { unknown: escalate, level: 4 }\nread:\n  a.b: { level: 0 }\n");
    let v = p.decide(&Request::new("amber", "evil.look").with_declared(Tier::Observe));
    assert!(
        matches!(v.decision, Decision::Escalate { level, .. } if level.get() == 4),
        "{v:?}"
    );
    assert_eq!(
        (v.tier, v.rules),
        (Some(Tier::Commit), vec!["default:unknown".to_owned()])
    );
}

#[test]
fn first_party_declared_tiers_count() {
    let p = policy(STRICT);
    let v = p.decide(
        &Request::new("amber", "files.read").with_declared(Declared::first_party(Tier::Observe)),
    );
    assert_eq!(
        (v.decision, v.rules),
        (
            Decision::Allow {
                tier: Tier::Observe
            },
            vec!["default:declared-observe".to_owned()]
        )
    );
    let v = p.decide(
        &Request::new("amber", "files.write").with_declared(Declared::first_party(Tier::Act)),
    );
    assert!(matches!(v.decision, Decision::Escalate { .. }), "{v:?}");
    assert_eq!(v.rules, ["default:declared"]);
    assert!(!p.never_permits(
        "amber",
        "files.read",
        Some(Declared::first_party(Tier::Observe))
    ));
}

#[test]
fn the_operator_can_trust_named_third_party_plugins() {
    let p = policy(
        "defaults: { unknown: reject, trust_declared_tiers: [weather.*, notes.list] }\nread:\n  vault_search: { level: 0 }\n",
    );
    let observe = |action: &str| {
        p.decide(&Request::new("amber", action).with_declared(Declared::third_party(Tier::Observe)))
            .decision
    };
    let allowed = Decision::Allow {
        tier: Tier::Observe,
    };
    assert_eq!(observe("weather.now"), allowed);
    assert_eq!(observe("notes.list"), allowed);
    assert_eq!(observe("notes.delete"), Decision::Reject);
    assert_eq!(observe("weatherman.now"), Decision::Reject);
    assert!(!p.never_permits("amber", "weather.now", Some(Tier::Observe)));
    assert!(p.never_permits("amber", "notes.delete", Some(Tier::Observe)));
    // Trusted or not, a declaration never reaches above observe without a human.
    let v = p.decide(&Request::new("amber", "weather.alert").with_declared(Tier::Commit));
    assert!(matches!(v.decision, Decision::Escalate { .. }), "{v:?}");
}

#[test]
fn explain_says_a_declared_tier_was_ignored() {
    let p = policy(STRICT);
    let e = p.explain(&Request::new("amber", "evil.look").with_declared(Tier::Observe));
    let step = e
        .steps
        .iter()
        .find(|s| s.kind == "default")
        .map(|s| s.outcome.clone());
    let step = step.unwrap_or_default();
    assert!(step.contains("declared tier `observe` ignored"), "{step}");
    assert!(step.contains("trust_declared_tiers"), "{step}");
}

#[test]
fn invariant_i9_trust_lists_are_checked_at_load() {
    let err = |yaml: &str| {
        Policy::from_yaml(yaml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err("defaults: { trust_declared_tiers: [weather] }\nread:\n  a.b: { level: 0 }\n");
    assert!(
        e.contains("1:36: `weather` in `trust_declared_tiers` is not a plugin action"),
        "{e}"
    );
    assert!(e.contains("`weather.*`"), "{e}");
    let e =
        err("defaults: { trust_declared_tiers: [\"we ather.*\"] }\nread:\n  a.b: { level: 0 }\n");
    assert!(e.contains("invalid action pattern `we ather.*`"), "{e}");
    let e = err("defaults: { trust_declared_tier: [weather.*] }\nread:\n  a.b: { level: 0 }\n");
    assert!(e.contains("unknown field `trust_declared_tier`"), "{e}");
    let p = policy("defaults: { trust_declared_tiers: [\"*\"] }\nread:\n  a.b: { level: 0 }\n");
    let warnings: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("trusts every plugin")),
        "{warnings:?}"
    );
}

#[test]
fn cases_say_who_declared_and_default_to_third_party() {
    let suite = Suite::from_yaml(
        "cases:\n  - name: stranger\n    agent: amber\n    action: evil.look\n    declared: observe\n    expect: reject\n  - name: ours\n    agent: amber\n    action: files.read\n    declared: { tier: observe, origin: first_party }\n    expect: { allow: observe }\n  - name: stranger spelt out\n    agent: amber\n    action: evil.look\n    declared: { tier: observe, origin: third_party }\n    expect: reject\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let outcomes = suite.run(&policy(STRICT));
    assert!(outcomes.iter().all(|o| o.passed()), "{outcomes:?}");
    let bad = Suite::from_yaml(
        "cases:\n  - name: x\n    agent: a\n    action: p.q\n    declared: { tier: observe, origin: mine }\n    expect: reject\n",
    );
    let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("unknown variant `mine`"), "{message}");
}

#[test]
fn requests_read_the_declared_origin_from_json() {
    let r: Request = serde_json::from_value(serde_json::json!({
        "agent": "a", "action": "p.q",
        "declared": { "tier": "observe", "origin": "first_party" },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.declared, Some(Declared::first_party(Tier::Observe)));
    let r: Request = serde_json::from_value(serde_json::json!({
        "agent": "a", "action": "p.q", "declared": "observe",
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.declared, Some(Declared::third_party(Tier::Observe)));
}

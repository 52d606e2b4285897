//! `delegation.*` conditions (issue 22): who handed the proposing agent its work, how deep
//! the chain of asking agents is, and how the work was handed over.

use p3ak_policy::cases::Suite;
use p3ak_policy::{Context, Delegation, Policy, Request};

/// `required_level` of a rejection.
const REJECTED: u8 = 6;

#[expect(
    clippy::panic,
    reason = "a test helper: a policy that does not compile fails the test"
)]
fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn error(yaml: &str) -> String {
    match Policy::from_yaml(yaml) {
        Ok(_) => String::from("(compiled)"),
        Err(e) => e.to_string(),
    }
}

/// `t.call` at level 1 with one rule `r`.
fn with_rule(when: &str, effect: &str) -> Policy {
    policy(&format!(
        "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        {effect}\n"
    ))
}

fn chain(agents: &[&str]) -> Option<Delegation> {
    Some(Delegation::through(
        agents.iter().map(|a| (*a).to_owned()).collect(),
        "ask",
    ))
}

/// The level `agent` needs for `t.call` with this delegation (6: rejected).
fn level_as(p: &Policy, agent: &str, delegation: Option<Delegation>) -> u8 {
    let request = Request::new(agent, "t.call").with_context(Context {
        delegation,
        ..Context::default()
    });
    p.decide(&request).decision.required_level()
}

fn level(p: &Policy, delegation: Option<Delegation>) -> u8 {
    level_as(p, "ledger", delegation)
}

#[test]
fn a_depth_limit_rejects_beyond_it_and_not_within() {
    let p = with_rule("{ delegation.depth: { gt: 1 } }", "reject: true");
    assert_eq!(level(&p, Some(Delegation::none())), 1);
    assert_eq!(level(&p, chain(&["amber"])), 1);
    assert_eq!(level(&p, chain(&["board", "amber"])), REJECTED);
}

#[test]
fn a_rule_on_the_immediate_asker_fires_for_that_agent_only() {
    let p = with_rule("{ delegation.by: { in: [amber] } }", "level: 3");
    assert_eq!(level(&p, chain(&["amber"])), 3);
    assert_eq!(level(&p, chain(&["amber", "scout"])), 1);
    // Only the immediate asker counts, not one further up.
    assert_eq!(level(&p, chain(&["scout"])), 1);
}

#[test]
fn chain_tests_see_every_agent_that_asked() {
    let p = with_rule("{ delegation.chain: { contains: board } }", "level: 2");
    assert_eq!(level(&p, chain(&["board", "amber"])), 2);
    assert_eq!(level(&p, chain(&["amber"])), 1);
    assert_eq!(level(&p, Some(Delegation::none())), 1);

    let any = with_rule(
        "{ delegation.chain: { contains_any: [scout, signal] } }",
        "reject: true",
    );
    assert_eq!(level(&any, chain(&["amber", "signal"])), REJECTED);
    assert_eq!(level(&any, chain(&["amber", "board"])), 1);

    let not = with_rule(
        "{ not: { delegation.chain: { contains: amber } } }",
        "level: 4",
    );
    assert_eq!(level(&not, chain(&["board"])), 4);
    assert_eq!(level(&not, chain(&["amber"])), 1);
}

#[test]
fn quantifiers_go_over_the_chain_like_a_list_argument() {
    // Everyone who asked must be a known agent: an empty chain passes `all`.
    let all = with_rule(
        "{ not: { delegation.chain: { all: { item: { in: [amber, board] } } } } }",
        "reject: true",
    );
    assert_eq!(level(&all, chain(&["amber", "board"])), 1);
    assert_eq!(level(&all, Some(Delegation::none())), 1);
    assert_eq!(level(&all, chain(&["amber", "scout"])), REJECTED);

    let none = with_rule(
        "{ delegation.chain: { none: { item: { like: \"sub-*\" } } } }",
        "level: 2",
    );
    assert_eq!(level(&none, chain(&["amber"])), 2);
    assert_eq!(level(&none, chain(&["amber", "sub-3"])), 1);

    let some = with_rule(
        "{ delegation.chain: { any: { item: { eq: scout } } } }",
        "level: 3",
    );
    assert_eq!(level(&some, chain(&["scout", "amber"])), 3);
    assert_eq!(level(&some, chain(&["amber"])), 1);
}

#[test]
fn the_kind_of_hand_over_and_an_undelegated_turn_are_visible() {
    let p = with_rule("{ delegation.kind: { eq: board } }", "level: 2");
    let board = Delegation::through(vec!["board".to_owned()], "board");
    assert_eq!(level(&p, Some(board)), 2);
    assert_eq!(level(&p, chain(&["amber"])), 1);
    // An undelegated turn has no kind: a test on it cannot be evaluated.
    assert_eq!(level(&p, Some(Delegation::none())), REJECTED);

    let asked = with_rule("{ delegation.by: { present: true } }", "level: 2");
    assert_eq!(level(&asked, Some(Delegation::none())), 1);
    assert_eq!(level(&asked, chain(&["amber"])), 2);
}

#[test]
fn a_rule_on_delegation_rejects_when_the_call_has_none() {
    for when in [
        "{ delegation.depth: { gt: 1 } }",
        "{ delegation.by: { in: [amber] } }",
        "{ delegation.by: { present: false } }",
        "{ delegation.chain: { contains: board } }",
        "{ delegation.chain: { all: { item: { eq: amber } } } }",
        "{ delegation.kind: { eq: route } }",
    ] {
        let p = with_rule(when, "level: 2");
        assert_eq!(level(&p, None), REJECTED, "{when}");
        let explained = p.explain(&Request::new("ledger", "t.call"));
        assert!(
            explained
                .warnings
                .iter()
                .any(|w| w.contains("did not supply the delegation") && w.contains(": r")),
            "{when}: {:?}",
            explained.warnings
        );
    }
}

#[test]
fn a_delegation_whose_fields_disagree_counts_as_missing() {
    let p = with_rule("{ delegation.depth: { gt: 1 } }", "level: 2");
    let lying = Delegation {
        depth: 0,
        chain: vec!["board".to_owned(), "amber".to_owned()],
        by: Some("amber".to_owned()),
        kind: Some("ask".to_owned()),
    };
    assert_eq!(level(&p, Some(lying)), REJECTED);
    let wrong_by = Delegation {
        depth: 1,
        chain: vec!["amber".to_owned()],
        by: Some("board".to_owned()),
        kind: None,
    };
    assert_eq!(level(&p, Some(wrong_by)), REJECTED);
}

#[test]
fn ledger_may_be_asked_only_by_amber_or_board() {
    // The example in docs/policy.md.
    let p = policy(
        "forbid:\n  - id: ledger-asked-by-stranger\n    actions: [\"*\"]\n    agents: [ledger]\n    when: { delegation.by: { present: true, not_in: [amber, board] } }\n    why: ledger works for amber and the board only\ng:\n  t.call: { level: 1 }\n",
    );
    assert_eq!(level(&p, Some(Delegation::none())), 1);
    assert_eq!(level(&p, chain(&["amber"])), 1);
    assert_eq!(level(&p, chain(&["scout", "board"])), 1);
    assert_eq!(level(&p, chain(&["amber", "scout"])), REJECTED);
    // Other agents are not concerned.
    assert_eq!(level_as(&p, "counselor", chain(&["scout"])), 1);
}

#[test]
fn bad_delegation_subjects_and_tests_are_errors_that_name_them() {
    let rule = |when: &str| {
        error(&format!(
            "g:\n  t.call:\n    level: 1\n    rules:\n      - id: r\n        when: {when}\n        reject: true\n"
        ))
    };
    let message = rule("{ delegation.bogus: { eq: 1 } }");
    assert!(
        message.contains("6:17: unknown subject `delegation.bogus`")
            && message.contains("delegation.depth"),
        "{message}"
    );
    for (when, wanted) in [
        (
            "{ delegation.by: { gt: 1 } }",
            "test `gt` on `delegation.by` needs a number",
        ),
        (
            "{ delegation.depth: { eq: amber } }",
            "test `eq` on `delegation.depth` compares values of different types",
        ),
        (
            "{ delegation.by: { contains: amber } }",
            "test `contains` on `delegation.by` needs a list subject",
        ),
        (
            "{ delegation.depth: { all: { item: { eq: 1 } } } }",
            "test `all` on `delegation.depth` needs a list argument (or `delegation.chain`)",
        ),
        (
            "{ delegation.chain: { matches: \"^a\" } }",
            "test `matches` on `delegation.chain` needs an argument",
        ),
    ] {
        let message = rule(when);
        assert!(message.contains(wanted), "{when}: {message}");
    }
}

#[test]
fn case_files_and_requests_carry_a_delegation() {
    let p = with_rule("{ delegation.depth: { gt: 1 } }", "reject: true");
    let suite = Suite::from_yaml(
        "cases:\n  - name: asked once\n    agent: ledger\n    action: t.call\n    context: { delegation: { depth: 1, chain: [amber], by: amber } }\n    expect: { escalate: 1 }\n  - name: asked twice\n    agent: ledger\n    action: t.call\n    context: { delegation: { depth: 2, chain: [board, amber], by: amber, kind: ask } }\n    expect: reject\n    rules: [r]\n  - name: not delegated\n    agent: ledger\n    action: t.call\n    context: { delegation: { depth: 0 } }\n    expect: { escalate: 1 }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let outcomes = suite.run(&p);
    assert!(outcomes.iter().all(|o| o.passed()), "{outcomes:?}");

    let request: Request = serde_json::from_value(serde_json::json!({
        "agent": "ledger", "action": "t.call",
        "context": { "delegation": { "depth": 2, "chain": ["board", "amber"], "by": "amber" } },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let explained = p.explain(&request);
    assert_eq!(explained.verdict.decision.required_level(), REJECTED);
    assert!(explained.warnings.is_empty(), "{:?}", explained.warnings);

    let unknown = Suite::from_yaml(
        "cases:\n  - name: x\n    agent: a\n    action: t.call\n    context: { delegation: { depth: 0, parent: amber } }\n    expect: reject\n",
    );
    let message = unknown.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("unknown field `parent`"), "{message}");
    let no_depth = Suite::from_yaml(
        "cases:\n  - name: x\n    agent: a\n    action: t.call\n    context: { delegation: { chain: [amber] } }\n    expect: reject\n",
    );
    let message = no_depth.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("missing field `depth`"), "{message}");
}

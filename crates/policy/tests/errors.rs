//! Invariant I9: a bad policy or cases file is an error with a position, never a panic.

use p3ak_policy::cases::Suite;
use p3ak_policy::{Policy, Request};
use proptest::prelude::*;

const BANKING: &str = include_str!("../../../examples/policies/banking/policy.yaml");
const CASES: &str = include_str!("../../../examples/policies/banking/cases.yaml");

/// The set files beside the banking example.
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
    reason = "a test helper: an accepted bad policy fails the test"
)]
fn error(yaml: &str) -> String {
    match Policy::from_yaml(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            e.to_string()
        }
    }
}

#[test]
fn invariant_i9_mistakes_are_reported_where_they_are() {
    let entry = |body: &str| format!("g:\n  a.b:\n    level: 1\n    rules:\n      - id: r\n{body}");
    for (yaml, wanted) in [
        ("read:\n  a.b: { level: -1 }\n".to_owned(), "2:17: level `-1` is out of range"),
        ("read:\n  a.b: { level: 1, timeout: soon }\n".to_owned(), "2:29: invalid duration `soon`"),
        ("read:\n  a.b: { level: 1, tier: god }\n".to_owned(), "2:26: unknown variant `god`"),
        ("read:\n  \"a b\": { level: 1 }\n".to_owned(), "2:3: invalid action pattern `a b`"),
        ("read:\n  a.b: { level: 1 }\n  a.b: { level: 2 }\n".to_owned(), "3:3: duplicate"),
        ("Read:\n  a.b: { level: 1 }\n".to_owned(), "1:1: invalid group name `Read`"),
        ("version: 2\nread:\n  a.b: { level: 1 }\n".to_owned(), "1:10: unsupported policy version `2`"),
        ("defaults: { level: 0 }\nread:\n  a.b: { level: 1 }\n".to_owned(), "1:20: the default escalation level must be 1 to 5"),
        ("forbid:\n  - id: f\n    actions: []\n".to_owned(), "forbid `f` lists no actions"),
        ("agents:\n  x: { actions: [a.b] }\nforbid:\n  - id: f\n    actions: [a.b]\n    agents: [nobody]\n".to_owned(), "6:14: unknown agent or agent group `nobody`"),
        ("totals:\n  t: { actions: [a.b], window: 1h }\nread:\n  a.b: { level: 1 }\n".to_owned(), "needs exactly one of `sum: ARG` or `count: true`"),
        (entry("        when: { args.x: { gt: 1 } }\n"), "rule `r` has no effect"),
        (entry("        when: { args.x: { gt: 1 } }\n        reject: true\n        level: 2\n"), "both rejects and sets"),
        (entry("        when: { total.nope: { gt: 1 } }\n        level: 2\n"), "6:17: unknown total `nope`"),
        (entry("        when: { weather: { eq: rain } }\n        level: 2\n"), "6:17: unknown subject `weather`"),
        (entry("        when: { args.x: { between: [\"01:00\", \"02:00\"] } }\n        level: 2\n"), "test `between` on `args.x` applies to `time` only"),
        (entry("        when: { time: { between: [\"25:00\", \"02:00\"] } }\n        level: 2\n"), "invalid time of day `25:00`"),
        (entry("        when: { channel: { gt: 3 } }\n        level: 2\n"), "test `gt` on `channel` needs a number"),
        (entry("        when: { args.u: { host_in: [\"bad host\"] } }\n        level: 2\n"), "invalid domain pattern `bad host`"),
        (entry("        when: {}\n        level: 2\n"), "6:15: empty condition"),
        (entry("        when: { args.x: {} }\n        level: 2\n"), "6:17: no tests for `args.x`"),
        (entry("        when: { args.x: { eq: 1 } }\n        level: 2\n      - id: r\n        when: { args.x: { eq: 2 } }\n        level: 3\n"), "duplicate rule id `r`"),
        (entry("        when: { args.x: { eq: 1 } }\n        level: 2\n        agents: [x]\n        extra: 1\n"), "unknown field `extra`"),
    ] {
        let message = error(&yaml);
        assert!(message.contains(wanted), "wanted `{wanted}`, got `{message}`");
    }
}

#[test]
fn invariant_i9_alias_bombs_are_refused() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(Policy::from_yaml(&yaml).is_err());
}

#[test]
fn invariant_i9_bad_cases_files_are_errors() {
    for (yaml, wanted) in [
        (
            "cases:\n  - name: x\n    agent: a\n    action: b\n    expect: maybe\n",
            "unknown expectation `maybe`",
        ),
        (
            "cases:\n  - name: x\n    agent: a\n    action: b\n    expect: { escalate: 0 }\n",
            "level from 1 to 5",
        ),
        (
            "cases:\n  - name: x\n    agent: a\n    action: b\n    args: [1]\n    expect: allow\n",
            "`args` must be a mapping",
        ),
        (
            "cases:\n  - name: x\n    agent: a\n    action: b\n    context: { weather: 1 }\n    expect: allow\n",
            "unknown field `weather`",
        ),
    ] {
        let message = Suite::from_yaml(yaml).unwrap_err().to_string();
        assert!(
            message.contains(wanted),
            "wanted `{wanted}`, got `{message}`"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariant_i9_arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = Policy::from_yaml(&text);
        let _ = Suite::from_yaml(&text);
    }

    #[test]
    fn invariant_i9_damaged_policies_never_panic(cut in 0..BANKING.len(), byte in any::<u8>(), at in 0..BANKING.len()) {
        let mut bytes = BANKING.as_bytes().to_vec();
        bytes[at] = byte;
        bytes.truncate(cut.max(at + 1));
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(policy) = Policy::from_yaml_with_files(&text, banking_file) {
            let _ = policy.decide(&Request::new("ledger", "bank.payment_send"));
        }
        let _ = Suite::from_yaml(&String::from_utf8_lossy(&CASES.as_bytes()[..cut.min(CASES.len())]));
    }
}

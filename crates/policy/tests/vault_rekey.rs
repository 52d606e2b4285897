//! `vault_rekey`: the schedule of the kernel's vault rekey, parsed and checked like every other
//! section (invariant I9: a mistake is an error with a position).

use std::time::Duration;

use p3ak_policy::{Level, Policy, RekeySchedule};

const BODY: &str = "read:\n  vault_search: { level: 0 }\n";

fn parse(section: &str) -> Result<Policy, p3ak_policy::PolicyError> {
    Policy::from_yaml(&format!("{section}{BODY}"))
}

#[expect(
    clippy::panic,
    reason = "a test helper: an accepted bad policy fails the test"
)]
fn error(section: &str) -> String {
    match parse(section) {
        Ok(_) => panic!("accepted:\n{section}"),
        Err(e) => e.to_string(),
    }
}

const DAY: u64 = 86_400;

#[test]
fn a_schedule_parses_with_its_defaults() {
    let policy = parse("vault_rekey: { every: 90d }\n").unwrap();
    assert_eq!(
        policy.vault_rekey(),
        Some(RekeySchedule {
            every: Duration::from_secs(90 * DAY),
            level: Level::MAX,
            timeout: Duration::from_secs(15 * 60),
            crawfish: Duration::ZERO,
        })
    );
}

#[test]
fn a_schedule_takes_every_setting() {
    let yaml = "defaults: { timeout: 1h }\nvault_rekey:\n  every: 30d12h\n  level: 4\n  timeout: 2h\n  crawfish: 10m\n";
    let policy = parse(yaml).unwrap();
    let schedule = policy.vault_rekey().unwrap();
    assert_eq!(schedule.every, Duration::from_secs(30 * DAY + 12 * 3600));
    assert_eq!(schedule.level, Level::new(4).unwrap());
    assert_eq!(schedule.timeout, Duration::from_secs(7200));
    assert_eq!(schedule.crawfish, Duration::from_secs(600));
    // The timeout falls back to the policy's default timeout.
    let policy =
        parse("defaults: { timeout: 1h }\nvault_rekey: { every: 1d, level: 3 }\n").unwrap();
    assert_eq!(
        policy.vault_rekey().unwrap().timeout,
        Duration::from_secs(3600)
    );
    // Seconds work like everywhere else.
    let policy = parse("vault_rekey: { every: 86400 }\n").unwrap();
    assert_eq!(
        policy.vault_rekey().unwrap().every,
        Duration::from_secs(DAY)
    );
}

#[test]
fn no_section_means_no_schedule() {
    assert_eq!(Policy::from_yaml(BODY).unwrap().vault_rekey(), None);
}

#[test]
fn invariant_i9_bad_schedules_are_reported_where_they_are() {
    for (section, wanted) in [
        (
            "vault_rekey: { every: soon }\n",
            "1:23: invalid duration `soon`",
        ),
        (
            "vault_rekey: { every: 23h }\n",
            "1:23: `vault_rekey.every` is 82800s; it must be at least one day",
        ),
        (
            "vault_rekey:\n  every: 0\n",
            "2:10: `vault_rekey.every` is 0s; it must be at least one day",
        ),
        (
            "vault_rekey: { every: 90d, level: 7 }\n",
            "1:35: level `7` is out of range (0 to 5)",
        ),
        (
            "vault_rekey: { every: 90d, level: 0 }\n",
            "1:35: the rekey level must be 1 to 5",
        ),
        (
            "vault_rekey: { every: 90d, timeout: later }\n",
            "invalid duration `later`",
        ),
        (
            "vault_rekey: { every: 90d, crawfish: -5 }\n",
            "invalid duration `-5`",
        ),
        (
            "vault_rekey: { every: 90d, evry: 3 }\n",
            "unknown field `evry`",
        ),
        ("vault_rekey: { level: 5 }\n", "missing field `every`"),
        ("vault_rekey: 90d\n", "1:14"),
        (
            "vault_rekeys: { every: 90d }\n",
            "1:1: unknown section `vault_rekeys`",
        ),
    ] {
        let message = error(section);
        assert!(
            message.contains(wanted),
            "wanted `{wanted}`, got `{message}`"
        );
    }
}

#[test]
fn bad_schedules_carry_hints() {
    let hint = |section: &str| {
        parse(section).unwrap_err().diagnostics[0]
            .hint
            .clone()
            .unwrap_or_default()
    };
    assert!(hint("vault_rekey: { every: 1h }\n").contains("`90d`"));
    assert!(hint("vault_rekey: { every: 90d, extra: 1 }\n").contains("docs/policy.md"));
    assert!(hint("vault_rekey: { every: soon }\n").contains("durations are"));
    assert!(hint("vault_rekey: { every: 90d, level: 9 }\n").contains("approval levels"));
    assert!(hint("vault_rekeys: { every: 90d }\n").contains("did you mean `vault_rekey`?"));
}

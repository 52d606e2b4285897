//! Schedules: a `[schedules.NAME]` entry sends its message to an agent when its time comes,
//! entering the road like any inbound message with `schedule:NAME` as the channel the policy
//! sees — here on a clock the test moves, so nothing waits for 07:00 to come round.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use p3ak_kernel::schedule::ManualClock;
use p3ak_kernel::{Kernel, KernelOptions};
use p3ak_testkit::Home;
use p3ak_testkit::kernel::sandbox_setting;
use serde_json::{Value, json};

const PASS: &str = "schedules test passphrase";

#[test]
fn a_cron_schedule_fires_at_its_time_on_a_moved_clock_and_the_policy_sees_its_channel() {
    let home = Home::init(PASS);
    let policy = "version: 1
read:
  files.list:
    level: 0
    rules:
      - id: nothing-unattended
        when: { channel: { like: 'schedule:*' } }
        reject: true
";
    home.write_scripted(
        policy,
        &json!({"responses": [
            {"content": "", "tool_calls": [{"name": "files__list", "arguments": {}}]},
            {"content": "Your day: nothing planned."},
        ]}),
    );
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.files]\nbuiltin = \"files\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\n\
             config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
             [schedules.morning]\ncron = \"0 7 * * *\"\nmessage = \"Plan my day.\"\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kernel: Arc<Kernel> = runtime
        .block_on(Kernel::start(KernelOptions {
            home: p3ak_kernel::home::Home::new(home.home()),
            passphrase: p3ak_vault::Passphrase::new(PASS.to_owned()),
            exe: env!("CARGO_BIN_EXE_p3ak").into(),
        }))
        .unwrap();
    let start = jiff::civil::date(2026, 12, 7)
        .at(6, 59, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap();
    let seven = start.timestamp().as_millisecond() + 60_000;
    let clock = Arc::new(ManualClock::new(&start));
    let runner = runtime.spawn(Arc::clone(&kernel).run_schedules(clock.clone(), clock.clone()));
    let requests = || -> Vec<Value> {
        std::fs::read_to_string(home.home().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // The runner waits for 07:00, and nothing has been sent.
    assert!(runtime.block_on(clock.asleep_until(seven, Duration::from_secs(20))));
    assert!(requests().is_empty());
    clock.advance(Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while requests().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not fire"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = &requests()[0];
    assert_eq!(first["messages"][0]["content"], "Plan my day.");
    // The tool call the scheduled turn proposed was decided on the schedule's channel.
    let second = &requests()[1];
    let results: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(results[0]["content"], "action not permitted");
    let entries = runtime
        .block_on(kernel.audit().entries(0, u64::MAX))
        .unwrap();
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let fired = entries
        .iter()
        .find(|e| e["kind"] == "schedule.fired")
        .unwrap();
    assert_eq!(fired["payload"]["name"], "morning", "{fired}");
    let decision = entries.iter().find(|e| e["kind"] == "decision").unwrap();
    assert_eq!(
        decision["payload"]["channel"], "schedule:morning",
        "{decision}"
    );
    assert_eq!(
        decision["payload"]["verdict"]["rules"][0],
        "nothing-unattended"
    );
    // Next, the runner waits for tomorrow's 07:00.
    assert!(runtime.block_on(clock.asleep_until(seven + 86_400_000, Duration::from_secs(20))));
    runner.abort();
    kernel.request_stop();
    runtime.block_on(kernel.serve()).unwrap();
}

#[test]
fn a_crest_schedule_runs_its_goals_next_phase_with_its_message_as_the_note() {
    let home = Home::init(PASS);
    home.write_scripted(
        "version: 1\n",
        &json!({"responses": [
            {"content": "measure: weekly hours worked\nbaseline: 55\ntarget: 45"},
            {"content": "obstacle: evening mail"},
        ]}),
    );
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\n\
             config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
             [schedules.review]\nevery = \"1h\"\ncrest = \"hours\"\n\
             message = \"this week: 52 hours\"\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kernel: Arc<Kernel> = runtime
        .block_on(Kernel::start(KernelOptions {
            home: p3ak_kernel::home::Home::new(home.home()),
            passphrase: p3ak_vault::Passphrase::new(PASS.to_owned()),
            exe: env!("CARGO_BIN_EXE_p3ak").into(),
        }))
        .unwrap();
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    let started = runtime
        .block_on(kernel.crest_start("work less", Some("hours"), None, "owner", events))
        .unwrap();
    assert_eq!(started.goal.next, Some(p3ak_kernel::crest::Phase::Obstacle));

    let start = jiff::civil::date(2026, 12, 7)
        .at(9, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap();
    let due = start.timestamp().as_millisecond() + 3_600_000;
    let clock = Arc::new(ManualClock::new(&start));
    let runner = runtime.spawn(Arc::clone(&kernel).run_schedules(clock.clone(), clock.clone()));
    assert!(runtime.block_on(clock.asleep_until(due, Duration::from_secs(20))));
    clock.advance(Duration::from_secs(3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let goal = loop {
        let goal = runtime
            .block_on(kernel.crest_goals(Some("hours")))
            .unwrap()
            .remove(0);
        if goal.entries.len() == 2 {
            break goal;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not run the phase"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(goal.obstacle.as_deref(), Some("evening mail"));
    assert_eq!(goal.next, Some(p3ak_kernel::crest::Phase::Routines));
    assert_eq!(goal.entries[1].by, "schedule:review");
    assert_eq!(goal.entries[1].note.as_deref(), Some("this week: 52 hours"));
    let entries: Vec<Value> = runtime
        .block_on(kernel.audit().entries(0, u64::MAX))
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let fired = entries
        .iter()
        .find(|e| e["kind"] == "schedule.fired")
        .unwrap();
    assert_eq!(fired["payload"]["agent"], "crest:hours", "{fired}");
    let inbound = entries.iter().rfind(|e| e["kind"] == "inbound").unwrap();
    assert_eq!(inbound["payload"]["channel"], "crest:hours", "{inbound}");
    assert_eq!(inbound["payload"]["sender"], "schedule:review", "{inbound}");
    runner.abort();
    kernel.request_stop();
    runtime.block_on(kernel.serve()).unwrap();
}

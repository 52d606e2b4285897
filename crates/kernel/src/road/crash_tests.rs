//! Crash injection: the road's audit guarantee survives the process dying at any step.
//!
//! The test re-runs its own test binary as a child (`crash_child`) that drives the real road
//! over the real audit log (an encrypted vault, the group-commit writer) and a tool whose side
//! effect is a file it syncs to disk. The child aborts — no destructors, no flush, like a
//! `kill -9` — at one named step of one call, or after a random delay while several turns run
//! at once (to land inside commits). After each crash the parent reopens the vault and checks
//! what the kernel would find on restart: the log verifies, and every action that ran has its
//! proposal, its allowing decision (and approval, if it was escalated) and its execution
//! intent in the log. Then the child runs again on the same vault (a restart) and the log
//! still verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use p3ak_approval::binding::Request;
use p3ak_crypto::Passphrase;
use p3ak_policy::{Declared, Policy, Tier};
use p3ak_proto::{Invoke, Message, ToolCall, ToolResult};
use p3ak_vault::{Access, KdfParams, LogEntry, Protection, Unlock, Vault};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::audit::{AuditEvent, AuditLog, BoxFuture};
use crate::proposal::{OfferedAction, compile_schema, tool_name};

const PASSPHRASE: &str = "crash test";
/// Where the child finds its vault and its tool's side effects.
const DIR_VAR: &str = "P3AK_CRASH_TEST_DIR";
/// The step the child dies at (see [`STEPS`]), or `random:<µs>`.
const POINT_VAR: &str = "P3AK_CRASH_TEST_POINT";
/// Which call (counting from 1) dies at a step: an escalated one for the escalation's steps,
/// else an allowed one; calls before it have finished.
fn dying_call(step: &str) -> usize {
    if matches!(step, "escalation" | "approval") {
        4
    } else {
        3
    }
}
const CALLS: usize = 6;

/// Every step of an allowed and of an escalated call, in road order.
const STEPS: &[&str] = &[
    "proposal",       // before the commit with the proposal (rejected or allowed) starts
    "intent",         // after proposal + decision + execution intent are durable, before the tool
    "escalation",     // after the escalation is durable, before the daemon answers
    "approval",       // before the approval + intent commit
    "tool-start",     // inside the tool, before its side effect
    "tool-done",      // inside the tool, after its side effect is on disk, before it answers
    "result-queued",  // the result handed to the log, not yet durable
    "result-durable", // the result durable
];

/// A tool whose side effect is a file named after the call, synced.
struct MarkerTool {
    dir: PathBuf,
    point: Option<String>,
    calls: AtomicUsize,
}

impl PluginLink for MarkerTool {
    fn request(
        &self,
        message: Message,
        _timeout: Duration,
        _chunks: Option<mpsc::Sender<String>>,
    ) -> BoxFuture<'_, Result<Message, HostError>> {
        Box::pin(async move {
            let Message::Invoke(Invoke { args, .. }) = message else {
                panic!("the road sent a tool something other than an invoke");
            };
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let call = args["call"].as_str().unwrap().to_owned();
            self.crash_if("tool-start", &call);
            let path = self.dir.join("executed").join(&call);
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(b"ran").unwrap();
            file.sync_all().unwrap();
            std::fs::File::open(self.dir.join("executed"))
                .unwrap()
                .sync_all()
                .unwrap();
            self.crash_if("tool-done", &call);
            Ok(Message::Result(ToolResult {
                output: json!({"ran": call, "n": n}),
            }))
        })
    }
}

impl MarkerTool {
    fn crash_if(&self, step: &str, call: &str) {
        if self.point.as_deref() == Some(step) && call == call_id(dying_call(step)) {
            std::process::abort();
        }
    }
}

/// The kernel's audit log, dying at the named step of call [`AT_CALL`].
struct CrashingAudit {
    log: AuditLog,
    point: Option<String>,
}

fn kinds(events: &[AuditEvent]) -> Vec<&'static str> {
    events.iter().map(AuditEvent::declared_kind).collect()
}

/// The call id an entry belongs to, if any.
fn event_call(event: &AuditEvent) -> Option<String> {
    let payload = event.payload();
    payload
        .get("call_id")
        .or_else(|| payload.get("args").and_then(|a| a.get("call")))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl CrashingAudit {
    fn at(&self, step: &str, events: &[AuditEvent]) -> bool {
        self.point.as_deref() == Some(step)
            && events
                .iter()
                .any(|e| event_call(e).as_deref() == Some(&call_id(dying_call(step))))
    }
}

impl AuditSink for CrashingAudit {
    fn append_all(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<u64, KernelError>> {
        Box::pin(async move {
            let kinds = kinds(&events);
            if kinds.first() == Some(&"proposal") && self.at("proposal", &events) {
                std::process::abort();
            }
            if kinds.first() == Some(&"approval") && self.at("approval", &events) {
                std::process::abort();
            }
            let escalated = kinds.contains(&"escalation") && self.at("escalation", &events);
            let intent = kinds.contains(&"execution") && self.at("intent", &events);
            let seq = self.log.append_all(events).await?;
            if escalated || intent {
                std::process::abort();
            }
            Ok(seq)
        })
    }

    fn append_after(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            let queued = self.at("result-queued", &events);
            let durable = self.at("result-durable", &events);
            self.log.append_after(events).await?;
            if queued {
                std::process::abort();
            }
            if durable {
                self.log.flush().await?;
                std::process::abort();
            }
            Ok(())
        })
    }
}

/// Approves every escalation at once.
struct ApprovingDesk {
    pending: Arc<PendingQueue>,
}

impl ApprovalDesk for ApprovingDesk {
    fn stage<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Request, KernelError>> {
        Box::pin(async move {
            self.pending
                .released(request, &request.binding(), vec!["tap".to_owned()])
                .unwrap();
            Ok(request.clone())
        })
    }

    fn withdraw(&self, _id: &str) {}
}

struct OnePlugin(Arc<MarkerTool>);

impl Plugins for OnePlugin {
    fn link(&self, name: &str) -> Option<Arc<dyn PluginLink>> {
        (name == "files").then(|| Arc::clone(&self.0) as Arc<dyn PluginLink>)
    }
}

const POLICY: &str = r"
version: 1
write:
  files.write: { level: 0 }
  files.purge: { level: 1, crawfish: 0s }
";

fn call_id(n: usize) -> String {
    format!("call-{n}")
}

/// Odd calls are allowed outright, even ones escalated and approved.
fn action_of(n: usize) -> &'static str {
    if n % 2 == 1 {
        "files.write"
    } else {
        "files.purge"
    }
}

fn open_or_create(path: &Path) -> Vault {
    let passphrase = Passphrase::new(PASSPHRASE.into());
    if path.exists() {
        return Vault::open(path, Unlock::Passphrase(&passphrase), Access::Write).unwrap();
    }
    Vault::create(
        path,
        Protection::Passphrase {
            passphrase: &passphrase,
            kdf: KdfParams {
                memory_kib: KdfParams::MIN_MEMORY_KIB,
                iterations: 1,
                parallelism: 1,
            },
        },
    )
    .unwrap()
}

fn offered(action: &str, tier: Tier) -> OfferedAction {
    let schema = json!({"type": "object"});
    let (plugin, plugin_action) = action.split_once('.').unwrap();
    OfferedAction {
        tool_name: tool_name(action),
        action: action.to_owned(),
        plugin: plugin.to_owned(),
        plugin_action: plugin_action.to_owned(),
        description: String::new(),
        validator: Arc::new(compile_schema(&schema).unwrap()),
        parameters: schema,
        declared: Declared::first_party(tier),
    }
}

/// Runs [`CALLS`] calls (one turn), or with `random:<µs>` four turns of 50 calls each until
/// a timer aborts the process. Call ids continue after the ones already executed, so that a
/// restart's calls are new ones.
async fn run_child(dir: &Path, point: Option<String>) {
    std::fs::create_dir_all(dir.join("executed")).unwrap();
    let vault = Arc::new(open_or_create(&dir.join("kernel.vault")));
    let broker = Arc::new(Broker::load(&vault).unwrap());
    let log = AuditLog::new(Arc::clone(&vault), Arc::clone(&broker));
    let random = point
        .as_deref()
        .and_then(|p| p.strip_prefix("random:"))
        .map(|us| us.parse::<u64>().unwrap());
    let tool = Arc::new(MarkerTool {
        dir: dir.to_owned(),
        point: point.clone(),
        calls: AtomicUsize::new(0),
    });
    let pending = Arc::new(PendingQueue::default());
    let road = Arc::new(Road::new(RoadParts {
        enforcer: Enforcer::new(Arc::new(p3ak_policy::PolicyCell::new(
            Policy::from_yaml(POLICY).unwrap(),
        ))),
        broker,
        audit: Arc::new(CrashingAudit {
            log: log.clone(),
            point,
        }),
        plugins: Arc::new(OnePlugin(tool)),
        desk: Arc::new(ApprovingDesk {
            pending: Arc::clone(&pending),
        }),
        pending,
        clock: Arc::new(SystemClock),
        tool_timeout: Duration::from_secs(5),
    }));
    let table = Arc::new(ToolTable::new([
        offered("files.write", Tier::Act),
        offered("files.purge", Tier::Commit),
    ]));
    let base = std::fs::read_dir(dir.join("executed")).unwrap().count() * 1000;
    if let Some(us) = random {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(us));
            std::process::abort();
        });
    }
    let (turns, calls) = if random.is_some() {
        (4, 50)
    } else {
        (1, CALLS)
    };
    let mut tasks = Vec::new();
    for turn in 0..turns {
        let (road, table) = (Arc::clone(&road), Arc::clone(&table));
        tasks.push(tokio::spawn(async move {
            let (events, _notices) = mpsc::unbounded_channel();
            for n in 1..=calls {
                let id = if turns == 1 {
                    call_id(n + base)
                } else {
                    format!("turn{turn}-{}", call_id(n + base))
                };
                let call = ToolCall {
                    id: id.clone(),
                    name: tool_name(action_of(n)),
                    arguments: json!({ "call": id }),
                };
                let caller = Caller {
                    agent: "assistant",
                    channel: "cli",
                    conversation: None,
                    sender: None,
                    chain: None,
                };
                road.handle_call(&caller, &call, &table, &events)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    log.flush().await.unwrap();
}

/// The child's entry point; run plainly (no crash point), it is the uncrashed baseline: every
/// call runs and the log holds all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let point = std::env::var(POINT_VAR).ok();
    let Ok(dir) = std::env::var(DIR_VAR) else {
        let dir = tempfile::tempdir().unwrap();
        run_child(dir.path(), None).await;
        let checked = check_after_crash(dir.path());
        assert_eq!(checked.executed.len(), CALLS);
        assert_eq!(checked.results.len(), CALLS);
        return;
    };
    run_child(Path::new(&dir), point).await;
}

/// Runs the child; returns whether it died of SIGABRT (`false`: it finished).
fn run(dir: &Path, point: Option<&str>) -> bool {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "road::crash_tests::crash_child",
            "--exact",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env_remove(POINT_VAR);
    if let Some(point) = point {
        command.env(POINT_VAR, point);
    }
    let out = command.output().unwrap();
    match out.status.signal() {
        Some(6) => true,
        None if out.status.success() => false,
        _ => panic!(
            "the child failed otherwise ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// What a restarted kernel finds.
struct Checked {
    /// Calls whose side effect happened.
    executed: Vec<String>,
    /// Calls with an execution intent in the log.
    intents: Vec<String>,
    /// Calls with a result in the log.
    results: Vec<String>,
}

/// The log verifies, and every executed call has its proposal, its allowing decision, its
/// approval if it was escalated, and its intent in the log, in that order.
fn check_after_crash(dir: &Path) -> Checked {
    // As the restarted kernel opens it: a writer keeps or cuts an interrupted commit. (The
    // in-process baseline's writer thread may still be letting go of its handle.)
    let vault = Vault::open_waiting(
        &dir.join("kernel.vault"),
        Unlock::Passphrase(&Passphrase::new(PASSPHRASE.into())),
        Access::Write,
        Duration::from_secs(10),
    )
    .unwrap();
    let report = vault.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let entries = vault.log_entries(0, vault.log_len()).unwrap();
    let mut by_call: BTreeMap<String, Vec<&LogEntry>> = BTreeMap::new();
    let mut escalations: BTreeMap<String, String> = BTreeMap::new();
    for entry in &entries {
        let call = entry.payload.get("call_id").and_then(Value::as_str);
        if let Some(call) = call {
            by_call.entry(call.to_owned()).or_default().push(entry);
        }
        if entry.kind == "escalation" {
            let call = entry.payload["args"]["call"].as_str().unwrap().to_owned();
            let id = entry.payload["id"].as_str().unwrap().to_owned();
            by_call.entry(call.clone()).or_default().push(entry);
            escalations.insert(id, call);
        }
        if entry.kind == "approval" {
            let call = &escalations[entry.payload["id"].as_str().unwrap()];
            by_call.entry(call.clone()).or_default().push(entry);
        }
    }
    let mut executed: Vec<String> = std::fs::read_dir(dir.join("executed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    executed.sort();
    let with = |kind: &str| -> Vec<String> {
        by_call
            .iter()
            .filter(|(_, es)| es.iter().any(|e| e.kind == kind))
            .map(|(call, _)| call.clone())
            .collect()
    };
    for call in &executed {
        let trail: Vec<&str> = by_call
            .get(call)
            .map(|es| es.iter().map(|e| e.kind.as_str()).collect())
            .unwrap_or_default();
        let expected: &[&str] = if trail.contains(&"escalation") {
            &[
                "proposal",
                "decision",
                "escalation",
                "approval",
                "execution",
            ]
        } else {
            &["proposal", "decision", "execution"]
        };
        assert!(
            trail.starts_with(expected),
            "{call} ran, but its trail in the log is {trail:?}"
        );
        let decision = by_call[call].iter().find(|e| e.kind == "decision").unwrap();
        let verdict = decision.payload["verdict"].to_string();
        assert!(
            verdict.contains("allow") || verdict.contains("escalate"),
            "{call} ran after a decision of {verdict}"
        );
    }
    Checked {
        executed,
        intents: with("execution"),
        results: with("result"),
    }
}

#[test]
fn invariant_i5_a_crash_at_any_step_of_the_road_loses_no_decision() {
    for step in STEPS {
        let dir = tempfile::tempdir().unwrap();
        assert!(run(dir.path(), Some(step)), "{step}: the child did not die");
        let checked = check_after_crash(dir.path());
        let at_call = dying_call(step);
        let dying = call_id(at_call);
        let ran = checked.executed.contains(&dying);
        let intent = checked.intents.contains(&dying);
        let result = checked.results.contains(&dying);
        // Where the crash fell: what ran and what the log holds of the dying call.
        let expected = match *step {
            "proposal" | "escalation" | "approval" => (false, false, false),
            "intent" | "tool-start" => (false, true, false),
            "tool-done" | "result-queued" => (true, true, false),
            "result-durable" => (true, true, true),
            other => panic!("no expectation for {other}"),
        };
        // A queued result may already be durable when the process dies (the writer is
        // fast); it must never be there without its intent.
        let result_ok = if *step == "result-queued" {
            !result || intent
        } else {
            result == expected.2
        };
        assert!(
            ran == expected.0 && intent == expected.1 && result_ok,
            "{step}: ran {ran}, intent {intent}, result {result}"
        );
        // Every call before the dying one ran, and its result is durable once the dying call
        // committed anything (a result is written with the next commit; a crash before that
        // commit loses the last result, never a decision).
        for n in 1..at_call {
            assert!(checked.executed.contains(&call_id(n)), "{step}: call {n}");
            let committed_since = *step != "proposal" || n + 1 < at_call;
            assert!(
                checked.results.contains(&call_id(n)) || !committed_since,
                "{step}: result of call {n}"
            );
        }
        // A restart on the same vault goes on, and the log still verifies.
        assert!(!run(dir.path(), None), "{step}: the restart crashed");
        let after = check_after_crash(dir.path());
        assert_eq!(after.executed.len(), checked.executed.len() + CALLS);
    }
}

#[test]
fn invariant_i5_a_crash_inside_concurrent_commits_loses_no_decision() {
    // Delays spread over a run of four turns (about 200 calls): the process dies inside
    // commits, between fsyncs, while tools run.
    let mut died = 0;
    for us in [1_500u64, 4_000, 9_000, 16_000, 25_000, 40_000] {
        let dir = tempfile::tempdir().unwrap();
        if run(dir.path(), Some(&format!("random:{us}"))) {
            died += 1;
        }
        check_after_crash(dir.path());
        assert!(!run(dir.path(), None), "random:{us}: the restart crashed");
        check_after_crash(dir.path());
    }
    assert!(died > 0, "no run was interrupted");
}

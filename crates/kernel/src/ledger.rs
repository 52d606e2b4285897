//! What the kernel let run: the running totals the policy's `totals:` need, and each
//! session's actions for its `session.*` conditions. Rebuilt from the audit log when the
//! kernel starts, so a daily limit does not restart at zero with the kernel.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use p3ak_policy::{Policy, TotalSpec};
use p3ak_vault::Vault;
use serde::Deserialize;

use crate::KernelError;

/// One call that ran, as the totals need it.
#[derive(Debug, Clone)]
pub(crate) struct Spent {
    /// When, in milliseconds since the Unix epoch (the audit entry's time on a restore).
    pub(crate) at_ms: i64,
    pub(crate) agent: String,
    /// The full action name.
    pub(crate) action: String,
    pub(crate) args: serde_json::Value,
    pub(crate) channel: Option<String>,
    pub(crate) conversation: Option<String>,
}

/// A call being decided, as its totals' keys need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallRef<'a> {
    pub(crate) agent: &'a str,
    pub(crate) args: &'a serde_json::Value,
    pub(crate) channel: Option<&'a str>,
    pub(crate) conversation: Option<&'a str>,
}

impl Spent {
    fn as_ref(&self) -> CallRef<'_> {
        CallRef {
            agent: &self.agent,
            args: &self.args,
            channel: self.channel.as_deref(),
            conversation: self.conversation.as_deref(),
        }
    }
}

/// An `execution` entry of the audit log, as far as the ledger reads it. Entries written
/// before the kernel recorded the channel and conversation have neither.
#[derive(Deserialize)]
struct ExecutionEntry {
    agent: String,
    action: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    conversation: Option<String>,
}

/// Calls that ran (allowed, or approved), kept as long as the longest window needs them,
/// and the actions each conversation ran.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    calls: VecDeque<Spent>,
    sessions: HashMap<String, Vec<String>>,
}

/// How far back a total looks, in milliseconds.
fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a call made at `at_ms` is inside a window ending at `now_ms`. A call stamped
/// after `now_ms` (the wall clock went back) counts: the safe side.
fn within(at_ms: i64, now_ms: i64, window: Duration) -> bool {
    now_ms.saturating_sub(at_ms) < window_ms(window)
}

impl Ledger {
    /// Each total's value for this call's key over its window, before the call. A total by
    /// a key the call does not have (no such argument, no session) is left out: the engine
    /// then rejects the rules that read it.
    pub(crate) fn totals(
        &self,
        specs: &[TotalSpec],
        call: &CallRef<'_>,
        now_ms: i64,
    ) -> BTreeMap<String, i64> {
        let mut totals = BTreeMap::new();
        for spec in specs {
            let Some(key) = key_of(spec, call) else {
                continue;
            };
            let sum = self
                .calls
                .iter()
                .filter(|c| within(c.at_ms, now_ms, spec.window))
                .filter_map(|c| {
                    let amount = spec.contribution(&c.action, &c.args)?;
                    (key.is_none() || key_of(spec, &c.as_ref()).as_ref() == Some(&key))
                        .then_some(amount)
                })
                .fold(0i64, i64::saturating_add);
            totals.insert(spec.name.clone(), sum);
        }
        totals
    }

    /// The actions conversation `id` ran, oldest first.
    pub(crate) fn session(&self, id: &str) -> Vec<String> {
        self.sessions.get(id).cloned().unwrap_or_default()
    }

    /// Records a call that is about to run.
    pub(crate) fn record(&mut self, specs: &[TotalSpec], call: Spent) {
        let keep = specs
            .iter()
            .map(|s| s.window)
            .max()
            .unwrap_or(Duration::ZERO);
        let now_ms = call.at_ms;
        while self
            .calls
            .front()
            .is_some_and(|c| !within(c.at_ms, now_ms, keep))
        {
            self.calls.pop_front();
        }
        if let Some(id) = &call.conversation {
            self.sessions
                .entry(id.clone())
                .or_default()
                .push(call.action.clone());
        }
        if specs
            .iter()
            .any(|s| s.contribution(&call.action, &call.args).is_some())
        {
            self.calls.push_back(call);
        }
    }

    /// [`Ledger::from_log`] off the async threads.
    pub(crate) async fn restore(
        vault: Arc<Vault>,
        policy: &Policy,
        now_ms: i64,
    ) -> Result<Self, KernelError> {
        let specs = policy.totals().to_vec();
        tokio::task::spawn_blocking(move || Self::from_log(&vault, &specs, now_ms))
            .await
            .map_err(KernelError::task("rebuilding the ledger"))?
    }

    /// The ledger as the audit log has it: every `execution` entry, its time the entry's
    /// (wall clock). The log is the record of what ran, written before each tool runs: the
    /// stored sessions are trimmed, written after a turn, and cannot tell a call that ran from
    /// one that was refused, so the ledger and the session histories are derived from the log.
    pub(crate) fn from_log(
        vault: &Vault,
        specs: &[TotalSpec],
        now_ms: i64,
    ) -> Result<Self, KernelError> {
        let mut ledger = Self::default();
        let keep = specs
            .iter()
            .map(|s| s.window)
            .max()
            .unwrap_or(Duration::ZERO);
        for seq in 0..vault.log_len() {
            let (entry, _) = vault.log_entry(seq)?;
            if entry.kind != "execution" {
                continue;
            }
            // An entry this version cannot read is the log's business (`p3ak audit verify`),
            // not a reason to refuse to start; it is noted and left out.
            let execution = match ExecutionEntry::deserialize(&entry.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("ledger: execution entry {seq} left out: {e}");
                    continue;
                }
            };
            let call = Spent {
                at_ms: entry.time_ms,
                agent: execution.agent,
                action: execution.action,
                args: execution.args,
                channel: execution.channel,
                conversation: execution.conversation,
            };
            if let Some(id) = &call.conversation {
                ledger
                    .sessions
                    .entry(id.clone())
                    .or_default()
                    .push(call.action.clone());
            }
            if within(call.at_ms, now_ms, keep)
                && specs
                    .iter()
                    .any(|s| s.contribution(&call.action, &call.args).is_some())
            {
                ledger.calls.push_back(call);
            }
        }
        Ok(ledger)
    }
}

/// The key `call` counts under for `spec` (see [`TotalSpec::key_of`]).
fn key_of(spec: &TotalSpec, call: &CallRef<'_>) -> Option<Option<String>> {
    spec.key_of(call.agent, call.args, call.channel, call.conversation)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use p3ak_policy::Policy;
    use serde_json::json;

    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn policy() -> Policy {
        Policy::from_yaml(
            "version: 1
write:
  bank.pay: { level: 1 }
totals:
  daily: { actions: [bank.pay], sum: amount, window: 24h }
  per_payee: { actions: [bank.pay], sum: amount, window: 24h, by: args.payee }
  per_session: { actions: [bank.pay], count: true, window: 24h, by: session }
",
        )
        .unwrap()
    }

    fn pay(at_ms: i64, payee: &str, amount: i64, conversation: Option<&str>) -> Spent {
        Spent {
            at_ms,
            agent: "assistant".into(),
            action: "bank.pay".into(),
            args: json!({"payee": payee, "amount": amount}),
            channel: Some("cli".into()),
            conversation: conversation.map(str::to_owned),
        }
    }

    #[test]
    fn a_total_by_key_counts_each_payee_apart_and_one_without_a_key_is_left_out() {
        let policy = policy();
        let specs = policy.totals();
        let mut ledger = Ledger::default();
        ledger.record(specs, pay(1_000, "alice", 300, Some("c1")));
        ledger.record(specs, pay(2_000, "bob", 150, Some("c2")));
        ledger.record(specs, pay(3_000, "alice", 20, Some("c1")));
        let next = pay(4_000, "alice", 1, Some("c1"));
        let totals = ledger.totals(specs, &next.as_ref(), 4_000);
        assert_eq!(totals["daily"], 470);
        assert_eq!(totals["per_payee"], 320);
        assert_eq!(totals["per_session"], 2);
        let to_bob = ledger.totals(specs, &pay(4_000, "bob", 1, None).as_ref(), 4_000);
        assert_eq!(to_bob["per_payee"], 150);
        // No conversation: the per-session total is not supplied at all, not zero.
        assert!(!to_bob.contains_key("per_session"), "{to_bob:?}");
        let mut no_payee = pay(4_000, "x", 1, Some("c1"));
        no_payee.args = json!({"amount": 1});
        let totals = ledger.totals(specs, &no_payee.as_ref(), 4_000);
        assert!(!totals.contains_key("per_payee"), "{totals:?}");
        assert_eq!(totals["daily"], 470);
    }

    /// The `execution` entry the road writes for a payment.
    fn execution(payee: &str, amount: i64, conversation: &str) -> crate::audit::AuditEvent {
        crate::audit::AuditEvent::Execution {
            agent: "assistant".into(),
            call_id: "call_1".into(),
            action: "bank.pay".into(),
            args: json!({"payee": payee, "amount": amount}),
            credentials: Vec::new(),
            tier: p3ak_policy::Tier::Commit,
            approval: None,
            channel: "cli".into(),
            conversation: Some(conversation.into()),
            sender: None,
        }
    }

    #[tokio::test]
    async fn a_daily_limit_at_450_is_still_at_450_after_a_restart() {
        use p3ak_crypto::Passphrase;
        use p3ak_vault::{Access, KdfParams, Protection, Unlock};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel.vault");
        let pass = Passphrase::new("ledger test".into());
        {
            let vault = Arc::new(
                Vault::create(
                    &path,
                    Protection::Passphrase {
                        passphrase: &pass,
                        kdf: KdfParams {
                            memory_kib: KdfParams::MIN_MEMORY_KIB,
                            iterations: 1,
                            parallelism: 1,
                        },
                    },
                )
                .unwrap(),
            );
            let broker = Arc::new(crate::broker::Broker::load(&vault).unwrap());
            let log = crate::audit::AuditLog::new(Arc::clone(&vault), broker);
            log.record(execution("alice", 300, "c1")).await.unwrap();
            log.record(crate::audit::AuditEvent::KernelStop { pid: 1 })
                .await
                .unwrap();
            log.record(execution("bob", 150, "c2")).await.unwrap();
        }
        // The kernel starts again: a new ledger over the same vault.
        let vault = Arc::new(Vault::open(&path, Unlock::Passphrase(&pass), Access::Read).unwrap());
        let policy = policy();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let ledger = Ledger::restore(Arc::clone(&vault), &policy, now_ms)
            .await
            .unwrap();
        let next = pay(now_ms, "alice", 1, Some("c1"));
        let totals = ledger.totals(policy.totals(), &next.as_ref(), now_ms);
        assert_eq!(totals["daily"], 450);
        assert_eq!(totals["per_payee"], 300, "bob's payment is his own");
        assert_eq!(totals["per_session"], 1);
        assert_eq!(ledger.session("c2"), ["bank.pay"]);
        // A day later, nothing of it is left in the window.
        let later = now_ms + DAY_MS;
        let ledger = Ledger::restore(vault, &policy, later).await.unwrap();
        let totals = ledger.totals(policy.totals(), &next.as_ref(), later);
        assert_eq!(totals["daily"], 0);
        assert_eq!(
            ledger.session("c1"),
            ["bank.pay"],
            "a session keeps its history"
        );
    }

    #[test]
    fn calls_leave_the_window_and_sessions_keep_their_actions_in_order() {
        let policy = policy();
        let specs = policy.totals();
        let mut ledger = Ledger::default();
        ledger.record(specs, pay(0, "alice", 300, Some("c1")));
        let mut read = pay(10, "alice", 0, Some("c1"));
        read.action = "files.read".into();
        ledger.record(specs, read);
        ledger.record(specs, pay(DAY_MS, "alice", 5, Some("c1")));
        let totals = ledger.totals(specs, &pay(DAY_MS, "alice", 1, None).as_ref(), DAY_MS);
        assert_eq!(totals["daily"], 5, "the first payment is a day old");
        assert_eq!(ledger.session("c1"), ["bank.pay", "files.read", "bank.pay"]);
        assert!(ledger.session("c2").is_empty());
        // A clock that went back: the newer call still counts.
        let totals = ledger.totals(specs, &pay(0, "alice", 1, None).as_ref(), DAY_MS - 1);
        assert_eq!(totals["daily"], 5);
    }
}

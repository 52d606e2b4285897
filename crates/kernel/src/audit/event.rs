//! The audit trail's schema: every entry the kernel writes is one [`AuditEvent`].
//!
//! `docs/audit.md` lists exactly these kinds (a test keeps the two in step). An event is either
//! *required* — a step of the road that does not happen unless it is durable — or *best
//! effort*: a lifecycle note (a plugin restarted, a peer was refused) whose failure to be
//! written is reported in the kernel's log instead, since there is nothing left to stop.

use p3ak_policy::{Tier, Verdict};
use p3ak_proto::{StopReason, Usage};
use serde::Serialize;
use serde_json::Value;

/// Whether an event's step waits for it to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The step does not happen unless the entry is written (invariant I5).
    Required,
    /// A note about something that already happened; a failure to write it is logged.
    BestEffort,
}

macro_rules! audit_events {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $kind:literal, $durability:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ),* $(,)?) => {
        /// One entry of the kernel's audit log; its `kind` is the entry's kind on disk.
        #[derive(Debug, Clone, Serialize)]
        #[serde(tag = "audit_kind")]
        pub enum AuditEvent {
            $(
                $(#[$doc])*
                #[serde(rename = $kind)]
                #[allow(missing_docs)]
                $variant { $( $(#[$field_meta])* $field: $ty ),* },
            )*
        }

        impl AuditEvent {
            /// Every kind, in the order `docs/audit.md` lists them.
            pub const KINDS: &'static [(&'static str, Durability)] =
                &[$(($kind, Durability::$durability)),*];

            /// The kind as `docs/audit.md` lists it (`hitl.*` for the daemon's events).
            #[must_use]
            pub fn declared_kind(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => $kind, )*
                }
            }

            /// Whether the step waits for this entry.
            #[must_use]
            pub fn durability(&self) -> Durability {
                match self {
                    $( Self::$variant { .. } => Durability::$durability, )*
                }
            }
        }
    };
}

audit_events! {
    /// A message for an agent arrived.
    Inbound = "inbound", Required {
        agent: String, conversation: String, sender: String, channel: String, text: String,
        /// The platform's id for the message (connectors), to drop a redelivery.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// What came with it: name, media type, size, whether its content was taken in.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Value>,
    },
    /// A turn ran out of time.
    TurnTimeout = "turn.timeout", Required { agent: String, conversation: String },
    /// A person stopped a running turn (`/stop` in a chat).
    TurnStopped = "turn.stopped", BestEffort { agent: String, conversation: String, by: String },
    /// A chat message from someone not paired: they were shown a pairing code, or nothing.
    ConnectorStranger = "connector.stranger", BestEffort {
        connector: String, sender: String, conversation: String, prompted: bool,
    },
    /// The owner paired a chat identity (`p3ak connectors pair`).
    ConnectorPaired = "connector.paired", Required {
        connector: String, identity: String, by: String,
    },
    /// The owner ended a pairing.
    ConnectorUnpaired = "connector.unpaired", Required { identity: String, by: String },
    /// A chat command, handled by the kernel (never by a model).
    ConnectorCommand = "connector.command", BestEffort {
        connector: String, sender: String, conversation: String, command: String,
    },
    /// A connector's message was refused: its sender over the rate limit, too large, or not
    /// the connector's to speak for.
    ConnectorRefused = "connector.refused", BestEffort {
        connector: String, sender: String, reason: String,
    },
    /// A request to the model.
    InferenceRequest = "inference.request", Required {
        agent: String, provider: String, step: u32, messages: usize, tools: Vec<String>,
    },
    /// The model's answer (scrubbed), with the tool calls it proposed.
    InferenceResponse = "inference.response", Required {
        agent: String, step: u32, content: String, tool_calls: Vec<Value>, stop: StopReason,
        usage: Usage,
    },
    /// The model failed (scrubbed).
    InferenceError = "inference.error", Required { agent: String, error: String },
    /// A turn used all its steps.
    TurnLimit = "turn.limit", Required { agent: String, max_steps: u32 },
    /// Older turns of a conversation were summarised into its session (or, with `error`,
    /// could not be and were kept).
    SessionSummary = "session.summary", Required {
        agent: String, conversation: String, summarised: usize, tokens_before: usize,
        tokens_after: usize, sources: Vec<String>, text: String, usage: Usage,
        error: Option<String>,
    },
    /// A board meeting ended: each member's part (status, tokens, time) and the synthesis's
    /// cost. The members' and the board's own entries carry the meeting's turn.
    BoardMeeting = "board.meeting", Required {
        conversation: String, members: Vec<Value>, board_usage: Usage, wall_ms: u64,
    },
    /// The reply to the person.
    Reply = "reply", Required {
        agent: String, conversation: String, text: String, provider: String,
        model: Option<String>, usage: Usage,
    },
    /// Memory passages put into the agent's prompt.
    MemoryContext = "memory.context", Required { agent: String, passages: String, ranked: String },
    /// A tool call that is not a valid proposal.
    ProposalInvalid = "proposal.invalid", Required { agent: String, call: String, error: String },
    /// A tool call, parsed.
    Proposal = "proposal", Required {
        agent: String, call_id: String, action: String, args: Value, credentials: Vec<String>,
        channel: String,
        /// Who asked, as the channel authenticated them (absent outside a conversation
        /// unless the caller names them, as the API does).
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    /// The enforcer's decision, with the rules that made it.
    Decision = "decision", Required {
        agent: String, call_id: String, action: String, verdict: Verdict, channel: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    /// An action handed to the approval daemon.
    Escalation = "escalation", Required {
        id: String, agent: String, action: String, args: Value, level: u8, rules: Vec<String>,
        category: String, binding: String, timeout_secs: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        undo_window_secs: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        confirm_twice: Option<bool>,
    },
    /// The daemon could not stage an escalation: the action does not run.
    EscalationUnstaged = "escalation.unstaged", Required { id: String, error: String },
    /// A human approved (binding and factors as the daemon released them).
    Approval = "approval", Required { id: String, binding: String, factors: Vec<String> },
    /// A release that does not match what was staged: the action does not run.
    ApprovalMismatch = "approval.mismatch", Required { id: String, error: String },
    /// Nobody answered in time.
    ApprovalTimeout = "approval.timeout", Required {
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ending: Option<String>,
    },
    /// A human (or the daemon's rules) said no.
    Denial = "denial", Required { id: String, ending: String },
    /// The tool's plugin is not running.
    ExecutionUnavailable = "execution.unavailable", Required { agent: String, action: String },
    /// The broker refused a credential the call named: the action does not run.
    CredentialRefused = "credential.refused", Required { agent: String, action: String, error: String },
    /// An authorised call about to run.
    Execution = "execution", Required {
        agent: String, call_id: String, action: String, args: Value, credentials: Vec<String>,
        tier: Tier, approval: Option<String>, channel: String, conversation: Option<String>,
        sender: Option<String>,
    },
    /// What a tool returned (scrubbed, truncated).
    Result = "result", Required {
        agent: String, call_id: String, action: String, elapsed_ms: u64, result: Value,
        channel: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    /// The memory vault was rekeyed.
    VaultRekey = "vault.rekey", Required {
        id: String,
        #[serde(flatten)]
        report: Value,
    },
    /// A rekey failed.
    VaultRekeyFailed = "vault.rekey.failed", Required {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        error: String,
    },
    /// A schedule sent its message (`due_ms`: the time it was due, `late_ms`: how late it
    /// went out; a catch-up after downtime is late); the turn's own entries follow.
    ScheduleFired = "schedule.fired", Required {
        name: String, agent: String, due_ms: i64, late_ms: i64,
        /// Whether this is the one catch-up of runs missed while the kernel was down.
        catch_up: bool,
    },
    /// A schedule's run did not happen: `missed` (downtime, `missed = "skip"`), `too_old`
    /// (missed longer ago than `catch_up`), `overlap` (its previous run still ran).
    ScheduleSkipped = "schedule.skipped", BestEffort { name: String, reason: String, due_ms: i64 },
    /// A schedule's turn failed (the turn's own entries say more, where it got that far).
    ScheduleFailed = "schedule.failed", BestEffort { name: String, error: String },
    /// A schedule's reply could not be sent to its `deliver` identity.
    ScheduleUndelivered = "schedule.undelivered", BestEffort {
        name: String, deliver: String, reason: String,
    },
    /// New state-bus events of an agent's subscriptions went into its prompt (before it was
    /// asked): their sequence numbers, and how many earlier ones were left out.
    BusDelivered = "bus.delivered", Required { agent: String, seqs: Vec<u64>, earlier: usize },
    /// A CREST goal was started (docs/crest.md); its Focus phase's turn follows.
    CrestStart = "crest.start", Required { goal: String, agent: String, text: String },
    /// A phase of a CREST goal ran (its turn's entries precede it, on channel `crest:GOAL`):
    /// `complete` when its reply held the phase's record, else `missing` names what it lacked
    /// and the phase runs again; `next` is the phase after it (`done`: the goal is closed).
    CrestPhase = "crest.phase", Required {
        goal: String, agent: String, cycle: u32, phase: String, complete: bool,
        missing: Vec<String>, next: String,
    },
    /// The kernel started.
    KernelStart = "kernel.start", Required {
        pid: u32, uid: u32, warden: bool, plugins: Vec<String>, agents: Vec<String>,
        policy_rules: usize,
    },
    /// The approval daemon started.
    HitlStart = "hitl.start", Required {
        pid: Option<u32>, console: bool, console_error: Option<String>,
    },
    /// The kernel stopped.
    KernelStop = "kernel.stop", Required { pid: u32 },
    /// Entries appended after their step (a tool's result) that could not be written, even
    /// alone: this entry stands for them, so that the log goes on.
    AuditUnwritten = "audit.unwritten", Required { kinds: Vec<String>, error: String },
    /// A new policy replaced the running one (`source`: `cli` or `sighup`).
    PolicyApplied = "policy.applied", Required { sha256: String, rules: usize, source: String },
    /// A new policy was refused; the running one stays.
    PolicyRefused = "policy.refused", BestEffort { source: String, error: String },
    /// A folder in `skills/` is not a valid skill: it was left out (docs/skills.md).
    SkillInvalid = "skill.invalid", BestEffort { dir: String, error: String },
    /// An approval the owner asked to remember became a grant.
    GrantCreated = "grant.created", Required {
        id: String, approval: String, agent: String, action: String, args: Value, level: u8,
        expires_at: i64,
    },
    /// An approval the owner asked to remember did not become a grant.
    GrantRefused = "grant.refused", BestEffort { approval: String, error: String },
    /// A grant was revoked.
    GrantRevoked = "grant.revoked", Required { id: String, by: String },
    /// An API token was made.
    TokenCreated = "token.created", Required {
        id: String, name: String, scopes: Vec<String>, expires_at: Option<i64>, by: String,
    },
    /// An API token was revoked.
    TokenRevoked = "token.revoked", Required { id: String, by: String },
    /// An API request was refused before it reached anything: no or a bad token, a peer
    /// that is no operator, a missing scope.
    ApiRefused = "api.refused", BestEffort {
        peer: String, route: String, reason: String,
    },
    /// An API caller went over a rate limit.
    ApiRateLimited = "api.rate_limited", BestEffort {
        principal: String, scope: String, route: String,
    },
    /// A peer that is no operator opened the control socket.
    ControlRefused = "control.refused", BestEffort { peer_uid: u32 },
    /// The channel to the approval daemon failed.
    HitlChannelError = "hitl.channel.error", BestEffort { error: String },
    /// One of the approval daemon's own events, forwarded (`hitl.<event>`; see docs/hitl.md).
    Hitl = "hitl.*", BestEffort { event: String, data: Value },
    /// A release the pending queue refused.
    ApprovalReleaseRefused = "approval.release.refused", BestEffort { id: String, error: String },
    /// The approval daemon is gone; everything waiting was refused.
    HitlStopped = "hitl.stopped", BestEffort {},
    /// A plugin process started.
    PluginStart = "plugin.start", BestEffort { plugin: String, pid: u32, sandbox: Value },
    /// A plugin registered its actions.
    PluginRegistered = "plugin.registered", BestEffort {
        plugin: String, kind: p3ak_proto::PluginKind, actions: Vec<String>,
    },
    /// A plugin stopped with the kernel.
    PluginStop = "plugin.stop", BestEffort { plugin: String },
    /// A plugin was held (memory vault rekey).
    PluginHeld = "plugin.held", BestEffort { plugin: String },
    /// A plugin exited.
    PluginExit = "plugin.exit", BestEffort { plugin: String, reason: String },
    /// A plugin broke the protocol.
    PluginMisbehaved = "plugin.misbehaved", BestEffort { plugin: String, reason: String },
    /// A plugin restarted too often: given up.
    PluginFailed = "plugin.failed", BestEffort { plugin: String, reason: String },
    /// A plugin restarts.
    PluginRestart = "plugin.restart", BestEffort { plugin: String },
    /// A plugin killed by a signal.
    PluginSignal = "plugin.signal", BestEffort {
        plugin: String, signal: i32, stopped_by: String, core_dumped: bool,
    },
    /// A sandbox layer stopped a plugin (seccomp, an rlimit).
    SandboxViolation = "sandbox.violation", BestEffort {
        plugin: String, signal: i32, stopped_by: String, core_dumped: bool,
    },
    /// The sandbox refused to start a plugin (a layer missing and required).
    SandboxRefused = "sandbox.refused", BestEffort { plugin: String, missing: Value },
    /// What the host's sandbox offers.
    SandboxHost = "sandbox.host", BestEffort {
        #[serde(flatten)]
        described: Value,
    },
    /// Whether Landlock denials can be read here.
    SandboxDenials = "sandbox.denials", BestEffort {
        audited: bool, why_not: Option<String>, permission_refusals: Value,
    },
    /// The sandbox denied a plugin an access.
    SandboxDenied = "sandbox.denied", BestEffort {
        plugin: String, pid: Value, uid: Value, blockers: Value, detail: Value,
        suppressed_before: u64,
    },
    /// The kernel's own uid was denied an access.
    KernelDenied = "kernel.denied", BestEffort {
        pid: Value, uid: Value, blockers: Value, detail: Value,
    },
}

impl AuditEvent {
    /// The entry's kind as written: the declared kind, or `hitl.<event>` for the daemon's.
    #[must_use]
    pub fn kind(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Hitl { event, .. } => format!("hitl.{event}").into(),
            other => other.declared_kind().into(),
        }
    }

    /// The entry's payload: the event without its kind.
    #[must_use]
    pub fn payload(&self) -> Value {
        if let Self::Hitl { data, .. } = self {
            return data.clone();
        }
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => {
                map.remove("audit_kind");
                Value::Object(map)
            }
            // Every variant is a struct of serialisable fields: an object.
            Ok(other) => other,
            Err(e) => serde_json::json!({"unserialisable": e.to_string()}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the table under "The kernel's entries" in `docs/audit.md`: (kind, durability).
    fn documented_kinds() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/audit.md");
        let text = std::fs::read_to_string(path).unwrap();
        let section = text.split("## The kernel's entries").nth(1).unwrap();
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
            })
            .collect()
    }

    #[test]
    fn docs_audit_lists_exactly_the_kernels_event_kinds() {
        let code: Vec<(String, String)> = AuditEvent::KINDS
            .iter()
            .map(|(kind, durability)| {
                let durability = match durability {
                    Durability::Required => "required",
                    Durability::BestEffort => "best effort",
                };
                ((*kind).to_owned(), durability.to_owned())
            })
            .collect();
        assert_eq!(
            documented_kinds(),
            code,
            "docs/audit.md and AuditEvent differ"
        );
    }

    #[test]
    fn docs_audit_lists_the_fields_the_ledger_is_rebuilt_from() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/audit.md");
        let text = std::fs::read_to_string(path).unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with("| `execution` |"))
            .unwrap();
        let mut documented: Vec<String> = row
            .rsplit('|')
            .nth(1)
            .unwrap()
            .split(',')
            .map(|f| f.trim().trim_matches('`').to_owned())
            .collect();
        let event = AuditEvent::Execution {
            agent: "a".into(),
            call_id: "c".into(),
            action: "files.read".into(),
            args: serde_json::json!({}),
            credentials: Vec::new(),
            tier: Tier::Observe,
            approval: None,
            channel: "cli".into(),
            conversation: Some("console".into()),
            sender: Some("operator (uid 1000)".into()),
        };
        let payload = event.payload();
        let mut written: Vec<String> = payload.as_object().unwrap().keys().cloned().collect();
        documented.sort();
        written.sort();
        assert_eq!(documented, written);
    }

    #[test]
    fn a_payload_is_the_event_without_its_tag_and_keeps_a_field_named_kind() {
        let event = AuditEvent::PluginRegistered {
            plugin: "files".into(),
            kind: p3ak_proto::PluginKind::Tool,
            actions: vec!["read".into()],
        };
        assert_eq!(event.kind(), "plugin.registered");
        assert_eq!(
            event.payload(),
            serde_json::json!({"plugin": "files", "kind": "tool", "actions": ["read"]})
        );
    }

    #[test]
    fn the_daemons_events_are_written_under_their_own_name() {
        let event = AuditEvent::Hitl {
            event: "approved".into(),
            data: serde_json::json!({"id": "a1"}),
        };
        assert_eq!(event.kind(), "hitl.approved");
        assert_eq!(event.declared_kind(), "hitl.*");
        assert_eq!(event.payload(), serde_json::json!({"id": "a1"}));
        assert_eq!(event.durability(), Durability::BestEffort);
    }

    #[test]
    fn kinds_are_unique() {
        let mut kinds: Vec<&str> = AuditEvent::KINDS.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        let before = kinds.len();
        kinds.dedup();
        assert_eq!(before, kinds.len());
    }
}

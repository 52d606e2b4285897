//! The road: one tool call from proposal to the text the model gets back.
//!
//! ```text
//! ToolCall ─▶ Proposal ─▶ Enforcer ─┬─ Allowed ─────────────────────────▶ Authorized ─▶ broker ─▶ plugin
//!  (parse)     (audited)  (audited) ├─ Escalated ─▶ ApprovalDesk ─▶ gate ─┘ (audited)   (inject)
//!                                   └─ Rejected ─▶ "action not permitted"
//! ```
//!
//! [`Road`] owns the enforcer, the broker, the pending approvals and the ledger, and reaches
//! the world only through [`ports`]: an [`AuditSink`], [`Plugins`], an [`ApprovalDesk`] and a
//! [`Clock`]. The kernel plugs in its audit log, plugin host, approval daemon and the system
//! clock; the tests beside this module plug in fakes and check invariants I1–I4 and I8 in
//! milliseconds.

#[cfg(test)]
mod crash_tests;
pub mod ports;
pub mod provenance;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p3ak_policy::{AgentNotice, Context, SessionHistory, TimeOfDay};
use p3ak_proto::{Invoke, Message, ToolCall};
use tokio::sync::mpsc;

pub use ports::{ApprovalDesk, AuditSink, Builtins, Clock, PluginLink, Plugins, SystemClock};
pub use provenance::Conversation;

use crate::KernelError;
use crate::audit::AuditEvent;
use crate::authorize::{ApprovalGate, Authorized, Decided, Enforcer, Escalation};
use crate::broker::Broker;
use crate::control::ControlEvent;
use crate::host::HostError;
use crate::ledger::{CallRef, Ledger, Spent};
use crate::metrics::{ApprovalOutcome, Metrics, Step};
use crate::pending::{PendingQueue, Resolution};
use crate::proposal::{self, Proposal, ToolTable};

/// All a model learns of a call that will not run (invariant I3).
pub const NOT_PERMITTED: &str = "action not permitted";

/// What the road is built from.
pub struct RoadParts {
    /// Decides each proposal.
    pub enforcer: Enforcer,
    /// Injects credentials and scrubs what flows back.
    pub broker: Arc<Broker>,
    /// Where every step is recorded.
    pub audit: Arc<dyn AuditSink>,
    /// The running plugins.
    pub plugins: Arc<dyn Plugins>,
    /// The approval daemon.
    pub desk: Arc<dyn ApprovalDesk>,
    /// Where the daemon's answers arrive.
    pub pending: Arc<PendingQueue>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// How long a tool may take.
    pub tool_timeout: Duration,
}

/// Who proposes a call, and where: the agent, the channel its request came on, and the
/// conversation (with what its model was shown) when the call comes from a turn.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The proposing agent.
    pub agent: &'a str,
    /// The channel (`cli`, `signal`, ...).
    pub channel: &'a str,
    /// The conversation; `None` outside a turn (then the policy gets no session and no
    /// origins).
    pub conversation: Option<&'a Conversation>,
    /// Who asked, as the channel authenticated them, when there is no conversation to say it
    /// (an API call: `uid:1000`, `token:ab12cd34`). A conversation's own sender wins.
    pub sender: Option<&'a str>,
    /// Where the proposing turn stands among agents, when another agent handed it work (see
    /// [`crate::harness`]): the agents whose permissions also bound its calls, the chain the
    /// policy's `delegation` sees. `None` for a turn nobody handed work to.
    pub chain: Option<&'a crate::harness::Chain>,
}

impl Caller<'_> {
    /// The agents whose permissions bound this call besides the proposing agent's.
    #[must_use]
    pub fn bound_by(&self) -> &[String] {
        self.chain.map_or(&[], |c| c.bound_by.as_slice())
    }

    /// The sender the policy and the audit log see.
    #[must_use]
    pub fn sender(&self) -> Option<&str> {
        self.conversation
            .and_then(Conversation::sender)
            .or(self.sender)
    }
}

/// How one call on the road ended. A turn turns it into the text its model reads
/// ([`Outcome::model_text`]); the API answers with it as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The tool ran and returned this (secret values scrubbed, structure kept).
    Done(serde_json::Value),
    /// The policy, the approval or the broker said no — which, the caller is not told (I3).
    NotPermitted,
    /// Not a valid proposal: unknown tool, arguments against the schema.
    Invalid(String),
    /// The tool's plugin is not running.
    Unavailable,
    /// The plugin failed (scrubbed message) with its error kind, or the link to it did.
    Failed {
        /// The plugin's error kind (`invalid`, `transient`, ...); `None` when the link failed.
        kind: Option<p3ak_proto::ErrorKind>,
        /// What went wrong (scrubbed).
        message: String,
    },
}

impl Outcome {
    /// What the model is told.
    #[must_use]
    pub fn model_text(&self) -> String {
        match self {
            Self::Done(output) => output.to_string(),
            Self::NotPermitted => AgentNotice::NotPermitted.to_string(),
            Self::Invalid(e) => format!("invalid tool call: {e}"),
            Self::Unavailable => "action failed: the tool is not available right now".to_owned(),
            Self::Failed {
                kind: Some(kind),
                message,
            } => {
                let kind = serde_json::to_value(kind).unwrap_or_default();
                format!(
                    "action failed ({}): {message}",
                    kind.as_str().unwrap_or("error")
                )
            }
            Self::Failed {
                kind: None,
                message,
            } => format!("action failed: {message}"),
        }
    }
}

/// The one road from a proposed tool call to its execution.
pub struct Road {
    enforcer: Enforcer,
    broker: Arc<Broker>,
    audit: Arc<dyn AuditSink>,
    plugins: Arc<dyn Plugins>,
    desk: Arc<dyn ApprovalDesk>,
    pending: Arc<PendingQueue>,
    clock: Arc<dyn Clock>,
    ledger: Mutex<Ledger>,
    tool_timeout: Duration,
    grants: Arc<crate::grants::GrantBook>,
    metrics: Arc<Metrics>,
    builtins: Option<Arc<dyn Builtins>>,
}

impl Road {
    /// Builds the road.
    #[must_use]
    pub fn new(parts: RoadParts) -> Self {
        Self {
            enforcer: parts.enforcer,
            broker: parts.broker,
            audit: parts.audit,
            plugins: parts.plugins,
            desk: parts.desk,
            pending: parts.pending,
            clock: parts.clock,
            ledger: Mutex::new(Ledger::default()),
            tool_timeout: parts.tool_timeout,
            grants: Arc::new(crate::grants::GrantBook::in_memory()),
            metrics: Arc::new(Metrics::new()),
            builtins: None,
        }
    }

    /// The road with the kernel's own tools.
    #[must_use]
    pub fn with_builtins(mut self, builtins: Arc<dyn Builtins>) -> Self {
        self.builtins = Some(builtins);
        self
    }

    /// The kernel's own tools, if any.
    #[must_use]
    pub fn builtins(&self) -> Option<&Arc<dyn Builtins>> {
        self.builtins.as_ref()
    }

    /// Whether `plugin` is one of the kernel's own tools.
    fn is_builtin(&self, plugin: &str) -> bool {
        self.builtins
            .as_ref()
            .is_some_and(|b| b.registrations().iter().any(|(name, _)| *name == plugin))
    }

    /// The road counting into these metrics (the kernel's; a road of its own otherwise).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Its metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The road with this ledger (the kernel's, rebuilt from its audit log).
    #[must_use]
    pub(crate) fn with_ledger(self, ledger: Ledger) -> Self {
        Self {
            ledger: Mutex::new(ledger),
            ..self
        }
    }

    /// The remembered approvals the policy is told about (none unless set).
    #[must_use]
    pub fn with_grants(mut self, grants: Arc<crate::grants::GrantBook>) -> Self {
        self.grants = grants;
        self
    }

    /// The enforcer (its policy is swapped on reload).
    #[must_use]
    pub fn enforcer(&self) -> &Enforcer {
        &self.enforcer
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// One tool call, from proposal to the text the model gets back. `events` receives the
    /// notices for the person (an approval is needed), never anything the model sees.
    pub async fn handle_call(
        &self,
        caller: &Caller<'_>,
        call: &ToolCall,
        table: &ToolTable,
        events: &mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<String, KernelError> {
        self.call(caller, call, table, events)
            .await
            .map(|outcome| outcome.model_text())
    }

    /// One tool call, from proposal to its [`Outcome`]: the same road as
    /// [`Road::handle_call`], for a caller that wants the result rather than text for a model.
    pub async fn call(
        &self,
        caller: &Caller<'_>,
        call: &ToolCall,
        table: &ToolTable,
        events: &mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<Outcome, KernelError> {
        let _total = self.metrics.time(Step::Total);
        let agent = caller.agent;
        let mut proposal = match proposal::parse(agent, call, table) {
            Ok(p) => p,
            Err(e) => {
                self.audit
                    .append(AuditEvent::ProposalInvalid {
                        agent: agent.to_owned(),
                        call: call.name.clone(),
                        error: e.to_string(),
                    })
                    .await?;
                return Ok(Outcome::Invalid(e.to_string()));
            }
        };
        if proposal.action == provenance::MEMORY_WRITE {
            provenance::stamp_origin(&mut proposal.args, caller.conversation);
        }
        // The proposal and its decision are committed together with what follows from
        // them (the execution intent, the escalation, or nothing for a rejection): one
        // durable commit before anything happens, instead of one per entry.
        let sender = caller.sender().map(str::to_owned);
        let mut trail = vec![AuditEvent::Proposal {
            agent: proposal.agent.clone(),
            call_id: proposal.call_id.clone(),
            action: proposal.action.clone(),
            args: proposal.args.clone(),
            credentials: proposal.credentials.clone(),
            channel: caller.channel.to_owned(),
            sender: sender.clone(),
        }];
        let mut context = self.context(caller, &proposal);
        context.grants = self
            .grants
            .live_for(&proposal.agent, self.clock.unix_ms() / 1000);
        let action = proposal.action.clone();
        let deciding = Instant::now();
        let (decided, verdict) = self
            .enforcer
            .decide_bounded(proposal, context, caller.bound_by());
        self.metrics.observe_step(Step::Decide, deciding.elapsed());
        self.metrics.decision(plugin_of(&action), (&decided).into());
        let rules = verdict.rules.clone();
        let reasons = crate::hitl::approver_reasons(&verdict);
        trail.push(AuditEvent::Decision {
            agent: agent.to_owned(),
            call_id: call.id.clone(),
            action,
            verdict,
            channel: caller.channel.to_owned(),
            sender,
        });
        match decided {
            Decided::Allowed(authorized) => self.execute(authorized, caller, trail).await,
            Decided::Rejected => {
                self.audit.append_all(trail).await?;
                Ok(Outcome::NotPermitted)
            }
            Decided::Escalated(escalation) => {
                self.escalate(escalation, (rules, reasons), caller, events, trail)
                    .await
            }
        }
    }

    /// Stages an escalation with the approval daemon and waits for its answer: a release
    /// (after the undo window) runs the action; anything else is the opaque "not permitted".
    pub(crate) async fn escalate(
        &self,
        escalation: Escalation,
        (rules, reasons): (Vec<String>, Vec<p3ak_approval::binding::Reason>),
        caller: &Caller<'_>,
        events: &mpsc::UnboundedSender<ControlEvent>,
        mut trail: Vec<AuditEvent>,
    ) -> Result<Outcome, KernelError> {
        let p = escalation.proposal();
        let asked_ms = self.clock.unix_ms();
        let timeout = escalation.timeout();
        let category = escalation
            .group()
            .filter(|g| {
                !g.is_empty()
                    && g.len() <= 64
                    && g.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .unwrap_or(p3ak_approval::spool::OTHER)
            .to_owned();
        let request = p3ak_approval::binding::Request {
            id: crate::pending::new_id(),
            agent: p.agent.clone(),
            action: p.action.clone(),
            args: p.args.clone(),
            level: escalation.level().get(),
            rules,
            category,
            asked_ms,
            expires_ms: asked_ms
                .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
            crawfish_secs: escalation.crawfish().as_secs(),
            confirm_twice: escalation.confirm_twice(),
            reasons,
        };
        let id = request.id.clone();
        let ticket = self.pending.add(&request);
        trail.push(AuditEvent::Escalation {
            id: id.clone(),
            agent: request.agent.clone(),
            action: request.action.clone(),
            args: request.args.clone(),
            level: request.level,
            rules: request.rules.clone(),
            category: request.category.clone(),
            binding: request.binding().to_hex(),
            timeout_secs: timeout.as_secs(),
            undo_window_secs: Some(request.undo_window_ms() / 1000),
            confirm_twice: Some(request.confirmations_needed() > 1),
        });
        let recorded = self.audit.append_all(trail).await;
        if let Err(e) = recorded {
            self.pending.withdraw(&id);
            return Err(e);
        }
        let request = match self.desk.stage(&request).await {
            Ok(staged) => staged,
            Err(e) => {
                self.pending.withdraw(&id);
                self.metrics
                    .approval(request.level, ApprovalOutcome::Failed);
                self.audit
                    .append(AuditEvent::EscalationUnstaged {
                        id,
                        error: e.to_string(),
                    })
                    .await?;
                return Ok(Outcome::NotPermitted);
            }
        };
        let _ = events.send(ControlEvent::Approval {
            id: id.clone(),
            level: request.level,
            text: format!(
                "approval needed (level {}, {}): {} wants to run {} {} — `p3ak approve {id}` or `p3ak deny {id}`",
                request.level,
                p3ak_approval::level::Factor::needed_for(request.level),
                request.agent,
                request.action,
                self.broker.scrubber().scrub(&request.args.to_string()),
            ),
            notify: escalation.notify().to_vec(),
        });
        // The daemon decides the timeout; the road waits a little longer, for the undo window
        // and the release to arrive.
        let wait = timeout
            .saturating_add(escalation.crawfish())
            .saturating_add(Duration::from_secs(30));
        let waiting = Instant::now();
        let resolution = ticket.wait(&self.pending, wait).await;
        self.metrics
            .observe_step(Step::ApprovalWait, waiting.elapsed());
        let level = request.level;
        match resolution {
            Some(Resolution::Approved(approval)) => {
                // Committed with the execution intent (or the mismatch) that follows from it.
                let trail = vec![AuditEvent::Approval {
                    id: id.clone(),
                    binding: approval.binding().to_owned(),
                    factors: approval.factors().to_vec(),
                }];
                match ApprovalGate::approve(escalation, &request, approval) {
                    Ok(authorized) => {
                        self.metrics.approval(level, ApprovalOutcome::Released);
                        self.execute(authorized, caller, trail).await
                    }
                    Err(mismatch) => {
                        self.metrics.approval(level, ApprovalOutcome::Failed);
                        let mut trail = trail;
                        trail.push(AuditEvent::ApprovalMismatch {
                            id,
                            error: mismatch.to_string(),
                        });
                        self.audit.append_all(trail).await?;
                        Ok(Outcome::NotPermitted)
                    }
                }
            }
            Some(Resolution::Refused(ending)) => {
                self.metrics
                    .approval(level, ApprovalOutcome::of_refusal(ending));
                let event = if ending.timed_out() {
                    AuditEvent::ApprovalTimeout {
                        id,
                        ending: Some(ending.as_str().to_owned()),
                    }
                } else {
                    AuditEvent::Denial {
                        id,
                        ending: ending.as_str().to_owned(),
                    }
                };
                self.audit.append(event).await?;
                Ok(Outcome::NotPermitted)
            }
            None => {
                self.metrics.approval(level, ApprovalOutcome::Timeout);
                self.desk.withdraw(&id);
                self.audit
                    .append(AuditEvent::ApprovalTimeout {
                        id,
                        ending: Some("kernel gave up waiting".to_owned()),
                    })
                    .await?;
                Ok(Outcome::NotPermitted)
            }
        }
    }

    /// Runs an authorised call. Takes the authorisation by value: it is spent here. `trail`
    /// holds the entries that led here; they are committed with the execution intent, before
    /// the tool runs (or with the reason it does not).
    pub(crate) async fn execute(
        &self,
        authorized: Authorized,
        caller: &Caller<'_>,
        mut trail: Vec<AuditEvent>,
    ) -> Result<Outcome, KernelError> {
        let p = authorized.proposal();
        let target = authorized.target();
        let plugin = target.plugin.clone();
        let builtin = self.is_builtin(&plugin);
        let link = if builtin {
            None
        } else {
            self.plugins.link(&plugin)
        };
        if !builtin && link.is_none() {
            trail.push(AuditEvent::ExecutionUnavailable {
                agent: p.agent.clone(),
                action: p.action.clone(),
            });
            self.audit.append_all(trail).await?;
            return Ok(Outcome::Unavailable);
        }
        let injected = match self.broker.inject(&target.full(), &p.args) {
            Ok(args) => args,
            Err(e) => {
                trail.push(AuditEvent::CredentialRefused {
                    agent: p.agent.clone(),
                    action: p.action.clone(),
                    error: e.to_string(),
                });
                self.audit.append_all(trail).await?;
                // The policy allowed the call; the broker did not: the model must not learn
                // which (invariant I3). The detail is in the audit entry above.
                return Ok(Outcome::NotPermitted);
            }
        };
        trail.push(AuditEvent::Execution {
            agent: p.agent.clone(),
            call_id: p.call_id.clone(),
            action: target.full(),
            args: p.args.clone(),
            credentials: p.credentials.clone(),
            tier: authorized.tier(),
            approval: authorized.approval().map(str::to_owned),
            channel: caller.channel.to_owned(),
            conversation: caller.conversation.map(|c| c.id().to_owned()),
            sender: caller.sender().map(str::to_owned),
        });
        // Counted before the await, so a concurrent call is decided with this one in its
        // totals; a call whose intent then fails to commit stays counted (the safe side).
        let spent = Spent {
            at_ms: self.clock.unix_ms(),
            agent: p.agent.clone(),
            action: target.full(),
            args: p.args.clone(),
            channel: Some(caller.channel.to_owned()),
            conversation: caller.conversation.map(|c| c.id().to_owned()),
        };
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.record(self.enforcer.policy().totals(), spent);
        }
        let committing = Instant::now();
        self.audit.append_all(trail).await?;
        self.metrics
            .observe_step(Step::Commit, committing.elapsed());
        let started = Instant::now();
        let answer = match (&self.builtins, link) {
            (Some(builtins), None) => {
                let args = injected.value().clone();
                drop(injected);
                builtins
                    .run(*caller, &target.plugin, &target.action, args)
                    .await
                    .map(|output| Message::Result(p3ak_proto::ToolResult { output }))
            }
            (_, Some(link)) => {
                let invoke = Message::Invoke(Invoke {
                    agent: p.agent.clone(),
                    action: target.action.clone(),
                    args: injected.value().clone(),
                    deadline_ms: u64::try_from(self.tool_timeout.as_millis()).ok(),
                });
                drop(injected);
                link.request(invoke, self.tool_timeout, None).await
            }
            (None, None) => Err(HostError::NotRunning(plugin.clone())),
        };
        let took = started.elapsed();
        self.metrics.observe_step(Step::Tool, took);
        if target.full() == SEARCH_ACTION {
            self.metrics.search(took);
        }
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let scrubber = self.broker.scrubber();
        let (outcome, record) = match answer {
            Ok(Message::Result(result)) => {
                let mut output = result.output;
                scrubber.scrub_value(&mut output);
                let record = serde_json::json!({"output": output.clone()});
                (Outcome::Done(output), record)
            }
            Ok(other) => {
                let e = HostError::Unexpected(plugin.clone(), other.type_name());
                (
                    Outcome::Failed {
                        kind: None,
                        message: e.to_string(),
                    },
                    serde_json::json!({"error": e.to_string()}),
                )
            }
            Err(HostError::Plugin(e)) => {
                let message = scrubber.scrub(&e.message);
                let kind = serde_json::to_value(e.kind).unwrap_or_default();
                (
                    Outcome::Failed {
                        kind: Some(e.kind),
                        message: message.clone(),
                    },
                    serde_json::json!({"error": message, "kind": kind}),
                )
            }
            Err(e) => {
                let message = scrubber.scrub(&e.to_string());
                (
                    Outcome::Failed {
                        kind: None,
                        message: message.clone(),
                    },
                    serde_json::json!({"error": message}),
                )
            }
        };
        // The action has run: its result is committed with the next group, before any later
        // step of any turn (which waits for its own commit) takes effect.
        self.audit
            .append_after(vec![AuditEvent::Result {
                agent: p.agent.clone(),
                call_id: p.call_id.clone(),
                action: p.action.clone(),
                elapsed_ms,
                result: truncate_json(record),
                channel: caller.channel.to_owned(),
                sender: caller.sender().map(str::to_owned),
            }])
            .await?;
        Ok(outcome)
    }

    /// What the policy sees of the moment: the time, the channel, the running totals for
    /// this call's keys, what the session already ran, and where the call's values came from.
    fn context(&self, caller: &Caller<'_>, proposal: &Proposal) -> Context {
        let now = self.clock.now();
        let time = u8::try_from(now.hour())
            .ok()
            .zip(u8::try_from(now.minute()).ok())
            .and_then(|(h, m)| TimeOfDay::new(h, m));
        let call = CallRef {
            agent: caller.agent,
            args: &proposal.args,
            channel: Some(caller.channel),
            conversation: caller.conversation.map(Conversation::id),
        };
        let (totals, session) = self
            .ledger
            .lock()
            .map(|l| {
                let totals = l.totals(
                    self.enforcer.policy().totals(),
                    &call,
                    now.timestamp().as_millisecond(),
                );
                let session = caller.conversation.map(|c| SessionHistory {
                    id: c.id().to_owned(),
                    actions: l.session(c.id()),
                });
                (totals, session)
            })
            .unwrap_or_default();
        Context {
            totals,
            time,
            channel: Some(caller.channel.to_owned()),
            sender: caller.sender().map(str::to_owned),
            session,
            origins: caller
                .conversation
                .map(|c| c.transcript().origins_of(&proposal.args)),
            // Always supplied: a turn nobody handed work to is depth 0.
            delegation: Some(caller.chain.map_or_else(Default::default, |chain| {
                p3ak_policy::Delegation {
                    depth: u32::try_from(chain.depth()).unwrap_or(u32::MAX),
                    chain: chain.agents.clone(),
                    by: chain.agents.last().cloned(),
                    kind: chain.kind.map(|k| k.as_str().to_owned()),
                }
            })),
            ..Context::default()
        }
    }
}

/// The action whose duration is `p3ak_search_seconds`.
const SEARCH_ACTION: &str = "vault.search";

/// The plugin part of `plugin.action`.
fn plugin_of(action: &str) -> &str {
    action.split_once('.').map_or(action, |(plugin, _)| plugin)
}

impl From<&Decided> for crate::metrics::Verdict {
    fn from(decided: &Decided) -> Self {
        match decided {
            Decided::Allowed(_) => Self::Allow,
            Decided::Rejected => Self::Reject,
            Decided::Escalated(_) => Self::Escalate,
        }
    }
}

/// Keeps audit entries of results bounded.
fn truncate_json(value: serde_json::Value) -> serde_json::Value {
    const MAX: usize = 64 * 1024;
    let text = value.to_string();
    if text.len() <= MAX {
        return value;
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": text.len(), "head": text.get(..cut)})
}

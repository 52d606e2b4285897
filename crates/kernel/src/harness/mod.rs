//! The Harness: agents that hand work to each other — on the road, like every other action.
//!
//! The kernel has one tool of its own, `agents`, with two actions the policy decides like any
//! plugin's:
//!
//! - **`agents.route {agent}`** hands the message the turn answers, *unchanged*, to another
//!   agent, which answers the person with its own permissions. The router writes nothing the
//!   new agent reads, so the new agent learns nothing it could not have been told directly: a
//!   route gains no privilege, and the policy decides who may route to whom (`args.agent`).
//! - **`agents.ask {agent, task, tools?}`** gives a sub-task to another agent (narrowed to
//!   `tools`, a fresh sub-agent). The delegate's every call is decided for the delegate *and*
//!   for every agent that asked on the way down, and the strictest decision wins: a delegate
//!   can never do through the asker what the policy denies the asker, nor the asker through
//!   the delegate. The task is the asker's text: the delegate's policy sees it as the output
//!   of `agents.ask` (provenance), on top of what the asker's conversation had been shown.
//!
//! Every turn runs inside a [`Scope`] (a task-local): its id, the turn that handed it work,
//! the chain of agents above it. Every audit entry written inside a turn carries them
//! (`turn: {id, parent, depth, chain, kind}`), and the limits on depth and fan-out are checked
//! here. Board meetings ([`board`]) ask several agents at once, each on its own road.

pub mod board;

pub use board::{BoardReport, Meeting, MemberReport, MemberStatus};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use p3ak_policy::{Pattern, Source};
use p3ak_proto::{ActionSpec, ErrorKind, ErrorMessage, Inbound, Register, Tier, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::audit::BoxFuture;
use crate::control::ControlEvent;
use crate::host::HostError;
use crate::host::registration::{self, Registration};
use crate::kernel::Kernel;
use crate::road::{Caller, Conversation};

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// The agents `p3ak init` writes besides `assistant`, `signal` and `scout`: the seed's team.
pub const ROSTER: &[(&str, &str)] = &[
    ("amber", include_str!("roster/amber.toml")),
    ("ledger", include_str!("roster/ledger.toml")),
    ("counselor", include_str!("roster/counselor.toml")),
    ("architect", include_str!("roster/architect.toml")),
    ("board", include_str!("roster/board.toml")),
];

/// What an asked agent that timed out is reported as (`<agent> did not answer within 1m`).
pub(crate) const DID_NOT_ANSWER: &str = "did not answer within";

/// The plugin name of the kernel's own tool.
pub const AGENTS: &str = "agents";

/// How a turn got its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handover {
    /// The person's message, routed by another agent.
    Route,
    /// A sub-task another agent asked for.
    Ask,
    /// A question of a board meeting.
    Board,
}

impl Handover {
    /// As the audit log and the policy name it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Ask => "ask",
            Self::Board => "board",
        }
    }
}

/// Where a turn stands among agents.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    /// This turn's id.
    pub turn: String,
    /// The turn that handed it work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The agents that handed work down to it, outermost first (not itself).
    pub agents: Vec<String>,
    /// The agents whose permissions bound its calls besides its own: those that *asked* on
    /// the way down (a route adds none).
    pub bound_by: Vec<String>,
    /// How it got its work; `None` for a turn that answers a message directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Handover>,
}

impl Chain {
    /// A turn nobody handed work to.
    #[must_use]
    pub fn top() -> Self {
        Self {
            turn: crate::pending::new_id(),
            parent: None,
            agents: Vec::new(),
            bound_by: Vec::new(),
            kind: None,
        }
    }

    /// How many agents are above it.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.agents.len()
    }

    /// The chain of a turn that `agent`, in this chain, hands work to.
    fn below(&self, agent: &str, kind: Handover) -> Self {
        let mut agents = self.agents.clone();
        agents.push(agent.to_owned());
        let mut bound_by = self.bound_by.clone();
        if kind != Handover::Route {
            bound_by.push(agent.to_owned());
        }
        Self {
            turn: crate::pending::new_id(),
            parent: Some(self.turn.clone()),
            agents,
            bound_by,
            kind: Some(kind),
        }
    }

    /// What the audit entries of the turn carry.
    #[must_use]
    pub fn audit_value(&self) -> serde_json::Value {
        let mut value = serde_json::json!({"id": self.turn, "depth": self.depth()});
        if let Some(map) = value.as_object_mut() {
            if let Some(parent) = &self.parent {
                map.insert("parent".to_owned(), parent.clone().into());
            }
            if !self.agents.is_empty() {
                map.insert("chain".to_owned(), self.agents.clone().into());
            }
            if let Some(kind) = self.kind {
                map.insert("kind".to_owned(), kind.as_str().into());
            }
        }
        value
    }
}

/// One turn in progress, as the kernel's own tool and the audit log see it.
pub(crate) struct Scope {
    pub(crate) chain: Chain,
    /// The agent whose turn it is.
    pub(crate) agent: String,
    /// The message it answers (a route hands it on).
    pub(crate) inbound: Inbound,
    /// The channel it came on: a delegate's calls are decided on the same channel.
    pub(crate) channel: String,
    /// Where the turn's notices and streamed text go.
    pub(crate) events: mpsc::UnboundedSender<ControlEvent>,
    /// Routes and asks made so far.
    handed: AtomicU32,
    /// The reply of the agent this turn routed to: the turn ends with it.
    routed: Mutex<Option<String>>,
    /// Whether it is a board meeting (its asks are the meeting's questions).
    meeting: bool,
}

impl Scope {
    pub(crate) fn new(
        chain: Chain,
        agent: &str,
        (inbound, channel): (Inbound, &str),
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Arc<Self> {
        Arc::new(Self {
            chain,
            agent: agent.to_owned(),
            inbound,
            channel: channel.to_owned(),
            events,
            handed: AtomicU32::new(0),
            routed: Mutex::new(None),
            meeting: false,
        })
    }

    /// The scope of a board meeting chaired by `agent`.
    pub(crate) fn meeting(
        chain: Chain,
        agent: &str,
        message: (Inbound, &str),
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Arc<Self> {
        let mut scope = Self::new(chain, agent, message, events);
        if let Some(scope) = Arc::get_mut(&mut scope) {
            scope.meeting = true;
        }
        scope
    }

    /// The reply of the agent this turn routed the message to, once it answered.
    pub(crate) fn routed_reply(&self) -> Option<String> {
        self.routed.lock().ok().and_then(|r| r.clone())
    }
}

/// The turn running on this task, if any.
pub(crate) fn current() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// What audit entries written now carry about their turn.
pub(crate) fn audit_turn() -> Option<serde_json::Value> {
    SCOPE.try_with(|s| s.chain.audit_value()).ok()
}

/// Runs `work` as the turn `scope`.
pub(crate) async fn within<F: Future>(scope: Arc<Scope>, work: F) -> F::Output {
    SCOPE.scope(scope, work).await
}

/// What a turn produced, for whoever handed it the work.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnOutput {
    pub(crate) reply: String,
    pub(crate) usage: Usage,
    /// How the plan's preset calls ended, in order.
    pub(crate) preset: Vec<crate::road::Outcome>,
}

/// How a turn is run: the message, the session it reads and keeps, and what it starts from.
pub(crate) struct TurnPlan<'a> {
    pub(crate) agent: &'a Agent,
    pub(crate) inbound: &'a Inbound,
    pub(crate) channel: &'a str,
    /// Whether the conversation's stored session is read and kept (an ask starts afresh and
    /// keeps nothing: its record is the audit log).
    pub(crate) stored: bool,
    /// What the model was already shown, with sources, when the turn inherits it (an ask
    /// inherits its asker's); the message is then labelled `message_source`.
    pub(crate) inherited: Option<Conversation>,
    /// The source of the message text (the person's, unless inherited).
    pub(crate) message_source: Option<Source>,
    /// When set, only the agent's tools matching one of these are offered.
    pub(crate) narrowed: Option<Vec<Pattern>>,
    /// Calls the kernel makes for the agent before its model is first asked (a board
    /// meeting's questions), with the text its model is told they were.
    pub(crate) preset: Vec<p3ak_proto::ToolCall>,
    /// Text the kernel adds to the system prompt, labelled with its source (a CREST goal's
    /// state, which earlier replies wrote: not the person's words).
    pub(crate) context: Option<(Source, String)>,
}

impl<'a> TurnPlan<'a> {
    /// A turn answering `inbound` directly, in its stored session.
    pub(crate) fn answering(agent: &'a Agent, inbound: &'a Inbound, channel: &'a str) -> Self {
        Self {
            agent,
            inbound,
            channel,
            stored: true,
            inherited: None,
            message_source: None,
            narrowed: None,
            preset: Vec::new(),
            context: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteArgs {
    agent: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    agent: String,
    task: String,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

/// The kernel's own tools, each answering for its plugin name (`agents`, ...).
pub(crate) struct KernelTools {
    tools: Vec<Box<dyn crate::road::Builtins>>,
}

impl KernelTools {
    /// The kernel's tools, holding the kernel weakly (they run its turns and read its vault).
    pub(crate) fn new(
        kernel: &Weak<Kernel>,
        agents: &std::collections::BTreeMap<String, Agent>,
    ) -> Self {
        let mut tools: Vec<Box<dyn crate::road::Builtins>> = Vec::new();
        if let Some(tool) = AgentsTool::new(kernel.clone(), agents) {
            tools.push(Box::new(tool));
        }
        if let Some(tool) = crate::bus::BusTool::new(kernel.clone()) {
            tools.push(Box::new(tool));
        }
        if let Some(tool) = crate::crest::CrestTool::new(kernel.clone()) {
            tools.push(Box::new(tool));
        }
        Self { tools }
    }
}

impl crate::road::Builtins for KernelTools {
    fn registrations(&self) -> Vec<(&str, &Registration)> {
        self.tools.iter().flat_map(|t| t.registrations()).collect()
    }

    fn run<'a>(
        &'a self,
        caller: Caller<'a>,
        plugin: &'a str,
        action: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<serde_json::Value, HostError>> {
        match self
            .tools
            .iter()
            .find(|t| t.registrations().iter().any(|(name, _)| *name == plugin))
        {
            Some(tool) => tool.run(caller, plugin, action, args),
            None => Box::pin(async move { Err(HostError::NotRunning(plugin.to_owned())) }),
        }
    }
}

/// The kernel's own tool, `agents`.
pub(crate) struct AgentsTool {
    kernel: Weak<Kernel>,
    registration: Registration,
}

impl AgentsTool {
    /// The tool, describing `agents` to the models that may route or ask.
    pub(crate) fn new(
        kernel: Weak<Kernel>,
        agents: &std::collections::BTreeMap<String, Agent>,
    ) -> Option<Self> {
        let roster = agents
            .values()
            .map(|a| {
                if a.description.is_empty() {
                    format!("- {}", a.name)
                } else {
                    format!("- {}: {}", a.name, a.description)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let names: Vec<&str> = agents.keys().map(String::as_str).collect();
        let register = Register {
            kind: p3ak_proto::PluginKind::Tool,
            actions: vec![
                ActionSpec {
                    name: "route".to_owned(),
                    description: format!(
                        "Hand the person's message, unchanged, to the agent whose domain it \
                         is; that agent answers them and your turn ends. The agents:\n{roster}"
                    ),
                    parameters: serde_json::json!({
                        "type": "object",
                        "properties": {"agent": {"type": "string", "enum": names}},
                        "required": ["agent"],
                        "additionalProperties": false,
                    }),
                    tier: Tier::Observe,
                },
                ActionSpec {
                    name: "ask".to_owned(),
                    description: format!(
                        "Give another agent a sub-task and get its answer. Say everything it \
                         needs in `task`: it does not see this conversation. `tools` narrows \
                         what it may use (action patterns such as `vault.search`). The \
                         agents:\n{roster}"
                    ),
                    parameters: serde_json::json!({
                        "type": "object",
                        "properties": {
                            "agent": {"type": "string", "enum": names},
                            "task": {"type": "string", "minLength": 1, "maxLength": 16384},
                            "tools": {
                                "type": "array",
                                "items": {"type": "string", "maxLength": 128},
                                "maxItems": 32,
                            },
                            "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 3600},
                        },
                        "required": ["agent", "task"],
                        "additionalProperties": false,
                    }),
                    tier: Tier::Observe,
                },
            ],
        };
        match registration::validate(AGENTS, register) {
            Ok(registration) => Some(Self {
                kernel,
                registration,
            }),
            Err(e) => {
                tracing::error!("the kernel's `agents` tool is not offered: {e}");
                None
            }
        }
    }
}

impl crate::road::Builtins for AgentsTool {
    fn registrations(&self) -> Vec<(&str, &Registration)> {
        vec![(AGENTS, &self.registration)]
    }

    fn run<'a>(
        &'a self,
        caller: Caller<'a>,
        plugin: &'a str,
        action: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<serde_json::Value, HostError>> {
        Box::pin(async move {
            let Some(kernel) = self.kernel.upgrade() else {
                return Err(HostError::NotRunning(plugin.to_owned()));
            };
            let Some(scope) = current() else {
                return Err(failure(
                    ErrorKind::Invalid,
                    format!("`{plugin}.{action}` works only inside an agent's turn"),
                ));
            };
            match action {
                "route" => {
                    let args: RouteArgs = parse(args)?;
                    kernel.route_to(&scope, &args.agent).await
                }
                "ask" => {
                    let args: AskArgs = parse(args)?;
                    let narrowed = match &args.tools {
                        None => None,
                        Some(tools) => Some(
                            tools
                                .iter()
                                .map(|t| {
                                    Pattern::parse(t).map_err(|e| {
                                        failure(ErrorKind::Invalid, format!("tools: `{t}`: {e}"))
                                    })
                                })
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                    };
                    let limit = kernel.config.agents.ask_timeout;
                    let timeout = args
                        .timeout_secs
                        .map_or(limit, |s| Duration::from_secs(s).min(limit));
                    let ask = Ask {
                        agent: &args.agent,
                        task: &args.task,
                        narrowed,
                        timeout,
                        kind: if scope.meeting {
                            Handover::Board
                        } else {
                            Handover::Ask
                        },
                    };
                    kernel.ask(&scope, caller, ask).await
                }
                other => Err(failure(
                    ErrorKind::Invalid,
                    format!("`{plugin}` has no action `{other}`"),
                )),
            }
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(args: serde_json::Value) -> Result<T, HostError> {
    serde_json::from_value(args).map_err(|e| failure(ErrorKind::Invalid, e.to_string()))
}

fn failure(kind: ErrorKind, message: String) -> HostError {
    HostError::Plugin(ErrorMessage {
        kind,
        message,
        retry_after_ms: None,
    })
}

/// A sub-task for another agent.
pub(crate) struct Ask<'a> {
    pub(crate) agent: &'a str,
    pub(crate) task: &'a str,
    pub(crate) narrowed: Option<Vec<Pattern>>,
    pub(crate) timeout: Duration,
    pub(crate) kind: Handover,
}

impl Kernel {
    /// Checks that the turn `scope` may hand work to `agent`: it exists, is not already in the
    /// chain, the chain stays within `max_depth` and the turn within `max_fanout`. Counts the
    /// hand-over.
    fn may_hand_to(&self, scope: &Scope, agent: &str) -> Result<Agent, HostError> {
        let Some(target) = self.agents.get(agent).cloned() else {
            return Err(failure(
                ErrorKind::Invalid,
                format!("there is no agent `{agent}`"),
            ));
        };
        if agent == scope.agent || scope.chain.agents.iter().any(|a| a == agent) {
            return Err(failure(
                ErrorKind::Permanent,
                format!("`{agent}` is already working on this request: ask another agent"),
            ));
        }
        let limits = &self.config.agents;
        let depth = u32::try_from(scope.chain.depth() + 1).unwrap_or(u32::MAX);
        if depth > limits.max_depth {
            return Err(failure(
                ErrorKind::Permanent,
                format!(
                    "agents may hand work down at most {} levels: answer with what you have",
                    limits.max_depth
                ),
            ));
        }
        let handed = scope.handed.fetch_add(1, Ordering::SeqCst);
        if handed >= limits.max_fanout {
            return Err(failure(
                ErrorKind::Permanent,
                format!(
                    "one turn may hand work to at most {} agents: answer with what you have",
                    limits.max_fanout
                ),
            ));
        }
        Ok(target)
    }

    /// `agents.route`: the message of the turn `scope`, to `agent`, whose reply ends it.
    async fn route_to(&self, scope: &Scope, agent: &str) -> Result<serde_json::Value, HostError> {
        if scope.chain.kind.is_some() {
            return Err(failure(
                ErrorKind::Permanent,
                "only the agent a message came to may route it".to_owned(),
            ));
        }
        if scope.routed_reply().is_some() {
            return Err(failure(
                ErrorKind::Permanent,
                "this message was routed already".to_owned(),
            ));
        }
        let target = self.may_hand_to(scope, agent)?;
        let mut inbound = scope.inbound.clone();
        inbound.agent = Some(target.name.clone());
        let chain = scope.chain.below(&scope.agent, Handover::Route);
        let channel = scope.channel.clone();
        let child = Scope::new(
            chain,
            &target.name,
            (inbound.clone(), &channel),
            scope.events.clone(),
        );
        let plan = TurnPlan::answering(&target, &inbound, &channel);
        let output = within(child, self.run_turn(plan))
            .await
            .map_err(|e| failure(ErrorKind::Transient, e.to_string()))?;
        if let Ok(mut routed) = scope.routed.lock() {
            *routed = Some(output.reply.clone());
        }
        Ok(serde_json::json!({
            "routed_to": target.name,
            "reply": output.reply,
        }))
    }

    /// `agents.ask` (and a board meeting's questions): `ask.task` to `ask.agent`, whose calls
    /// are bound by the askers' permissions too; its answer comes back.
    pub(crate) async fn ask(
        &self,
        scope: &Scope,
        caller: Caller<'_>,
        ask: Ask<'_>,
    ) -> Result<serde_json::Value, HostError> {
        let target = self.may_hand_to(scope, ask.agent)?;
        let mut inbound = Inbound::new(
            scope.inbound.conversation.clone(),
            scope.inbound.sender.clone(),
            ask.task.to_owned(),
        );
        inbound.agent = Some(target.name.clone());
        let chain = scope.chain.below(&scope.agent, ask.kind);
        let channel = scope.channel.clone();
        // The asker reads the answer; the person is not shown it streaming, but hears of any
        // approval the delegate needs.
        let (events, mut passing) = mpsc::unbounded_channel();
        let person = scope.events.clone();
        tokio::spawn(async move {
            while let Some(event) = passing.recv().await {
                if !matches!(event, ControlEvent::Chunk { .. }) {
                    let _ = person.send(event);
                }
            }
        });
        let child = Scope::new(chain, &target.name, (inbound.clone(), &channel), events);
        let mut inherited = caller
            .conversation
            .cloned()
            .unwrap_or_else(|| Conversation::new(&inbound.conversation));
        if let Some(sender) = caller.sender() {
            inherited = inherited.answering(sender);
        }
        let plan = TurnPlan {
            agent: &target,
            inbound: &inbound,
            channel: &channel,
            stored: false,
            inherited: Some(inherited),
            message_source: Some(Source::Tool(format!("{AGENTS}.{}", ask.kind.ask_action()))),
            narrowed: ask.narrowed,
            preset: Vec::new(),
            context: None,
        };
        let started = std::time::Instant::now();
        let output =
            match tokio::time::timeout(ask.timeout, within(child, self.run_turn(plan))).await {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => return Err(failure(ErrorKind::Transient, e.to_string())),
                Err(_) => {
                    return Err(failure(
                        ErrorKind::Transient,
                        format!(
                            "`{}` {DID_NOT_ANSWER} {}",
                            target.name,
                            humantime::format_duration(ask.timeout)
                        ),
                    ));
                }
            };
        Ok(serde_json::json!({
            "agent": target.name,
            "answer": output.reply,
            "usage": output.usage,
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }))
    }
}

impl Handover {
    /// The action whose output an asked agent's task counts as, for provenance.
    fn ask_action(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Ask | Self::Board => "ask",
        }
    }
}

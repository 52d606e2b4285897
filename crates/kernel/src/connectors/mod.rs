//! Chat connectors' traffic: who may talk to which agent, the kernel's own chat commands, and
//! replies streamed back into the chat.
//!
//! ```text
//! connector ─ inbound ─▶ checks (its own identities, sizes) ─▶ seen before? ─▶ rate limit
//!   ─▶ paired? (no: a pairing code, nothing else) ─▶ /command? (the kernel answers, no model)
//!   ─▶ `inbound` audited ─▶ `accepted` ─▶ the conversation's queue ─▶ turn ─▶ outbound + edits
//! ```
//!
//! A conversation's messages are taken one turn at a time, in order; `/stop` ends the running
//! one. A message is acknowledged to the connector (which only then tells its platform) once its
//! `inbound` entry is durable, and a redelivered message id is dropped: restarts lose and
//! repeat nothing. Commands cannot approve anything: approvals in a chat are the approval
//! daemon's, sealed end to end (`p3ak_approval::chat`).

mod approvals;
mod commands;
pub(crate) mod pairing;
mod reply;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use p3ak_proto::{ErrorKind, ErrorMessage, Inbound, Message, ToolResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::KernelError;
use crate::audit::AuditEvent;
use crate::config::ConnectorSettings;
use crate::host::{Connection, PluginEvent};
use crate::kernel::Kernel;
use crate::road::Clock as _;
pub use pairing::{Paired, Waiting};

/// Message ids remembered per connector to drop redeliveries (and read back from the audit
/// log's newest entries at start).
const SEEN: usize = 4096;
/// Audit entries read back at start for the ids seen.
const SEEN_SCAN: u64 = 20_000;

/// One connector's state, for `p3ak connectors status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectorStatus {
    /// The connector plugin.
    pub name: String,
    /// Its platform (`telegram`), when first-party.
    pub platform: Option<String>,
    /// Plugin state (`running`, `restarting`, …).
    pub state: String,
    /// Whether it is registered and connected to the kernel now.
    pub connected: bool,
    /// The agent its conversations go to.
    pub agent: String,
    /// Messages taken in since the kernel started.
    pub messages: u64,
    /// When the last one came (ms since the epoch).
    pub last_event_ms: Option<i64>,
    /// Messages refused or failed since the start.
    pub errors: u64,
    /// The last refusal or failure.
    pub last_error: Option<String>,
    /// Identities paired on it.
    pub paired: usize,
    /// Restarts of its plugin.
    pub restarts: u32,
}

#[derive(Default)]
struct Counters {
    messages: u64,
    last_event_ms: Option<i64>,
    errors: u64,
    last_error: Option<String>,
}

#[derive(Default)]
struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > SEEN {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// One conversation's queue and its running turn.
struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    running: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

struct Job {
    agent: crate::agent::Agent,
    inbound: Inbound,
    connection: Arc<Connection>,
}

/// The connectors' router, part of the kernel.
pub(crate) struct Router {
    settings: ConnectorSettings,
    pub(crate) pairings: Arc<pairing::Pairings>,
    limiter: DefaultKeyedRateLimiter<String>,
    seen: Mutex<HashMap<String, SeenIds>>,
    /// Conversation → agent chosen with `/agent`.
    routes: Mutex<HashMap<String, String>>,
    lanes: Mutex<HashMap<String, Lane>>,
    counters: Mutex<BTreeMap<String, Counters>>,
}

impl Router {
    /// The router for `vault`'s pairings, with the message ids the audit log saw recently.
    pub(crate) fn load(
        vault: &p3ak_vault::Vault,
        settings: &ConnectorSettings,
    ) -> Result<Self, KernelError> {
        let per_minute = NonZeroU32::new(settings.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            settings: settings.clone(),
            pairings: Arc::new(pairing::Pairings::load(vault, settings.pairing_ttl)?),
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
            seen: Mutex::new(seen_in_log(vault)),
            routes: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
        })
    }

    fn count(&self, connector: &str, error: Option<String>) {
        if let Ok(mut counters) = self.counters.lock() {
            let c = counters.entry(connector.to_owned()).or_default();
            c.last_event_ms = Some(crate::road::SystemClock.unix_ms());
            match error {
                Some(e) => {
                    c.errors += 1;
                    c.last_error = Some(e);
                }
                None => c.messages += 1,
            }
        }
    }

    fn seen(&self, connector: &str, id: &str) -> bool {
        self.seen
            .lock()
            .is_ok_and(|s| s.get(connector).is_some_and(|ids| ids.contains(id)))
    }

    fn remember(&self, connector: &str, id: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.entry(connector.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
    }
}

/// The message ids of the newest `inbound` entries, by channel.
fn seen_in_log(vault: &p3ak_vault::Vault) -> HashMap<String, SeenIds> {
    let mut seen: HashMap<String, SeenIds> = HashMap::new();
    let len = vault.log_len();
    for seq in len.saturating_sub(SEEN_SCAN)..len {
        let Ok((entry, _)) = vault.log_entry(seq) else {
            continue;
        };
        if entry.kind != "inbound" {
            continue;
        }
        let field = |name: &str| entry.payload.get(name).and_then(|v| v.as_str());
        if let (Some(channel), Some(id)) = (field("channel"), field("message_id")) {
            seen.entry(channel.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
    }
    seen
}

/// Why a connector's message is refused, as it hears it.
fn refusal(kind: ErrorKind, message: impl Into<String>, retry_after_ms: Option<u64>) -> Message {
    Message::Error(ErrorMessage {
        kind,
        message: message.into(),
        retry_after_ms,
    })
}

fn accepted(duplicate: bool) -> Message {
    Message::Result(ToolResult {
        output: serde_json::json!({"accepted": true, "duplicate": duplicate}),
    })
}

impl Kernel {
    /// Serves the connectors' requests until the kernel stops.
    pub(crate) async fn serve_connectors(
        self: Arc<Self>,
        mut requests: mpsc::Receiver<PluginEvent>,
    ) {
        while let Some(event) = requests.recv().await {
            match event {
                PluginEvent::Up(connection) => {
                    let kernel = Arc::clone(&self);
                    tokio::spawn(async move { kernel.connector_up(&connection).await });
                }
                PluginEvent::Request {
                    connection,
                    id,
                    message,
                } => match message {
                    // In order, one at a time: admission is quick (one audit commit), and a
                    // conversation's messages must reach its queue in the order they came.
                    Message::Inbound(inbound) => {
                        let answer = self.take_inbound(&connection, inbound).await;
                        connection.reply(id, answer).await;
                    }
                    Message::ApprovalPress(press) => {
                        let kernel = Arc::clone(&self);
                        tokio::spawn(async move {
                            let answer = kernel.relay_press(connection.name(), press).await;
                            connection.reply(id, answer).await;
                        });
                    }
                    other => {
                        let answer = refusal(
                            ErrorKind::Invalid,
                            format!("`{}` is not a request the kernel serves", other.type_name()),
                            None,
                        );
                        connection.reply(id, answer).await;
                    }
                },
            }
        }
    }

    /// The agent a connector's conversation goes to.
    fn route(&self, connector: &str, conversation: &str) -> String {
        if let Some(agent) = self
            .connectors
            .routes
            .lock()
            .ok()
            .and_then(|r| r.get(conversation).cloned())
        {
            return agent;
        }
        self.config
            .plugins
            .get(connector)
            .and_then(|p| p.agent.clone())
            .unwrap_or_else(|| self.config.kernel.default_agent.clone())
    }

    /// Takes one message from a connector: the answer it hears.
    async fn take_inbound(
        self: &Arc<Self>,
        connection: &Arc<Connection>,
        mut inbound: Inbound,
    ) -> Message {
        let connector = connection.name().to_owned();
        let router = &self.connectors;
        let prefix = format!("{connector}:");
        // A connector speaks for its own platform's people and conversations only.
        if !inbound.sender.starts_with(&prefix) || !inbound.conversation.starts_with(&prefix) {
            let reason = format!(
                "sender `{}` / conversation `{}` is not `{prefix}…`",
                truncate(&inbound.sender, 80),
                truncate(&inbound.conversation, 80)
            );
            let reason = self.refuse(&connector, &inbound.sender, reason).await;
            return refusal(ErrorKind::Invalid, reason, None);
        }
        if !crate::session::valid_conversation(&inbound.conversation) {
            let reason =
                KernelError::BadConversation(truncate(&inbound.conversation, 80)).to_string();
            let reason = self.refuse(&connector, &inbound.sender, reason).await;
            return refusal(ErrorKind::Invalid, reason, None);
        }
        if inbound.text.len() > router.settings.max_message_bytes {
            let reason = format!(
                "a message of {} bytes is over the limit of {} (`[connectors] max_message_bytes`)",
                inbound.text.len(),
                router.settings.max_message_bytes,
            );
            let reason = self.refuse(&connector, &inbound.sender, reason).await;
            return refusal(ErrorKind::Invalid, reason, None);
        }
        let attached: usize = inbound
            .attachments
            .iter()
            .filter_map(|a| a.data.as_ref())
            .map(|d| d.len() / 4 * 3)
            .sum();
        if attached > router.settings.max_attachment_bytes {
            let reason = format!(
                "attachments of {attached} bytes are over the limit of {} \
                 (`[connectors] max_attachment_bytes`)",
                router.settings.max_attachment_bytes
            );
            let reason = self.refuse(&connector, &inbound.sender, reason).await;
            return refusal(ErrorKind::Invalid, reason, None);
        }
        if let Some(id) = &inbound.message_id
            && router.seen(&connector, id)
        {
            return accepted(true);
        }
        if let Err(not_until) = router.limiter.check_key(&inbound.sender) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let reason = format!("`{}` is over the rate limit", inbound.sender);
            let reason = self.refuse(&connector, &inbound.sender, reason).await;
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            return refusal(ErrorKind::RateLimited, reason, Some(ms));
        }
        if !router.pairings.is_paired(&inbound.sender) {
            return self.stranger(connection, &inbound).await;
        }
        let agent_name = self.route(&connector, &inbound.conversation);
        inbound.agent = Some(agent_name);
        if let Some(command) = commands::Command::parse(&inbound.text) {
            // A command a skill claims (docs/skills.md) is a message for the agent: the
            // skill's body, then what the person wrote after the command.
            let skill = matches!(command, commands::Command::Unknown(_))
                .then(|| {
                    let agent = inbound.agent.as_deref().unwrap_or_default();
                    self.skills.expand_command(agent, &inbound.text)
                })
                .flatten()
                .map(|(_, text)| text);
            match skill {
                Some(text) => inbound.text = text,
                None => {
                    let answer = self.command(connection, &inbound, command).await;
                    if let Some(id) = &inbound.message_id {
                        router.remember(&connector, id);
                    }
                    return answer;
                }
            }
        }
        let agent = match self.admit(&inbound, &connector).await {
            Ok(agent) => agent,
            Err(e) => {
                let reason = e.to_string();
                router.count(&connector, Some(reason.clone()));
                return refusal(ErrorKind::Transient, reason, Some(1000));
            }
        };
        if let Some(id) = &inbound.message_id {
            router.remember(&connector, id);
        }
        router.count(&connector, None);
        self.enqueue(Job {
            agent,
            inbound,
            connection: Arc::clone(connection),
        });
        accepted(false)
    }

    /// Counts and audits a refused message; the reason, for the connector.
    async fn refuse(&self, connector: &str, sender: &str, reason: String) -> String {
        self.connectors.count(connector, Some(reason.clone()));
        self.audit
            .record(AuditEvent::ConnectorRefused {
                connector: connector.to_owned(),
                sender: truncate(sender, 80),
                reason: reason.clone(),
            })
            .await
            .ok();
        reason
    }

    /// An unpaired sender: a pairing code in a direct chat (once per code), nothing in a group.
    async fn stranger(&self, connection: &Arc<Connection>, inbound: &Inbound) -> Message {
        let connector = connection.name();
        let prompt = if inbound.direct {
            match self.connectors.pairings.stranger(
                connector,
                &inbound.sender,
                inbound.sender_name.as_deref(),
                &inbound.conversation,
            ) {
                Ok(pairing::Stranger::Prompt(code)) => Some(code),
                Ok(pairing::Stranger::Quiet) => None,
                Err(e) => {
                    tracing::warn!("pairing code: {e}");
                    None
                }
            }
        } else {
            None
        };
        self.audit
            .record(AuditEvent::ConnectorStranger {
                connector: connector.to_owned(),
                sender: inbound.sender.clone(),
                conversation: inbound.conversation.clone(),
                prompted: prompt.is_some(),
            })
            .await
            .ok();
        if let Some(id) = &inbound.message_id {
            self.connectors.remember(connector, id);
        }
        if let Some(code) = prompt {
            let minutes = self.connectors.settings.pairing_ttl.as_secs().div_ceil(60);
            let text = format!(
                "This assistant is private. If you are its owner, run this on its machine \
                 within {minutes} minutes:\n\np3ak connectors pair {code}"
            );
            reply::post(connection, &inbound.conversation, &text).await;
        }
        accepted(false)
    }

    /// Puts a job on its conversation's queue, starting the queue's worker if needed.
    fn enqueue(self: &Arc<Self>, job: Job) {
        let Ok(mut lanes) = self.connectors.lanes.lock() else {
            return;
        };
        let key = job.inbound.conversation.clone();
        let job = match lanes.get(&key) {
            Some(lane) => match lane.jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let running = Arc::new(Mutex::new(None));
        let kernel = Arc::clone(self);
        let slot = Arc::clone(&running);
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let kernel = Arc::clone(&kernel);
                let work = tokio::spawn(async move { kernel.chat_turn(job).await });
                if let Ok(mut r) = slot.lock() {
                    *r = Some(work.abort_handle());
                }
                let _ = work.await;
                if let Ok(mut r) = slot.lock() {
                    *r = None;
                }
            }
        });
        let _ = jobs.send(job);
        lanes.insert(key, Lane { jobs, running });
    }

    /// One turn of a chat, its reply streamed into the conversation.
    async fn chat_turn(&self, job: Job) {
        let Job {
            agent,
            inbound,
            connection,
        } = job;
        let (events, mut receiver) = mpsc::unbounded_channel();
        let mut stream = reply::Stream::new(
            Arc::clone(&connection),
            inbound.conversation.clone(),
            self.connectors.settings.edit_interval,
        );
        let channel = connection.name().to_owned();
        let turn = self.turn_admitted(&agent, &inbound, &channel, &events);
        tokio::pin!(turn);
        let result = loop {
            tokio::select! {
                result = &mut turn => break result,
                Some(event) = receiver.recv() => stream.event(event).await,
            }
        };
        while let Ok(event) = receiver.try_recv() {
            stream.event(event).await;
        }
        match result {
            Ok(text) => stream.finish(&text).await,
            Err(e) => {
                self.connectors
                    .count(&channel, Some(format!("turn failed: {e}")));
                stream.finish(&format!("error: {e}")).await;
            }
        }
    }

    /// A connector came up: the approval daemon sends it what waits for approval.
    async fn connector_up(&self, connection: &Arc<Connection>) {
        self.resend_chat_approvals(connection.name()).await;
    }

    /// The connectors and how they are doing.
    pub(crate) fn connector_status(&self) -> Vec<ConnectorStatus> {
        let paired = self.connectors.pairings.list();
        let status = self.host.status();
        self.config
            .plugins
            .iter()
            .filter(|(name, p)| {
                p.is_connector()
                    || p.agent.is_some()
                    || status.iter().any(|s| {
                        &s.name == *name && s.kind == Some(p3ak_proto::PluginKind::Connector)
                    })
            })
            .map(|(name, plugin)| {
                let row = status.iter().find(|s| &s.name == name);
                let counters = self.connectors.counters.lock().ok();
                let c = counters.as_ref().and_then(|c| c.get(name));
                ConnectorStatus {
                    name: name.clone(),
                    platform: plugin.builtin.clone(),
                    state: row.map_or_else(|| "off".to_owned(), |r| state_text(&r.state)),
                    connected: self.host.connection(name).is_some(),
                    agent: plugin
                        .agent
                        .clone()
                        .unwrap_or_else(|| self.config.kernel.default_agent.clone()),
                    messages: c.map_or(0, |c| c.messages),
                    last_event_ms: c.and_then(|c| c.last_event_ms),
                    errors: c.map_or(0, |c| c.errors),
                    last_error: c.and_then(|c| c.last_error.clone()),
                    paired: paired.iter().filter(|p| &p.connector == name).count(),
                    restarts: row.map_or(0, |r| r.restarts),
                }
            })
            .collect()
    }

    /// The owner confirms a pairing code.
    pub(crate) async fn pair(&self, code: &str, by: &str) -> Result<Paired, KernelError> {
        let vault = Arc::clone(&self.vault);
        let code = code.to_owned();
        let now = crate::road::SystemClock.unix_ms();
        let pairings = Arc::clone(&self.connectors.pairings);
        let paired = tokio::task::spawn_blocking(move || pairings.confirm(&vault, &code, now))
            .await
            .map_err(KernelError::task("pairing"))??;
        self.audit
            .record(AuditEvent::ConnectorPaired {
                connector: paired.connector.clone(),
                identity: paired.identity.clone(),
                by: by.to_owned(),
            })
            .await?;
        if let Some(connection) = self.host.connection(&paired.connector) {
            let text = "Paired. You can talk to the assistant here; /help lists the commands.";
            reply::post(&connection, &paired.conversation, text).await;
        }
        Ok(paired)
    }

    /// Posts `text` into the direct conversation of the paired `identity` (a schedule's
    /// `deliver`); why not, when it could not.
    pub(crate) async fn deliver_to(&self, identity: &str, text: &str) -> Result<(), String> {
        let Some(paired) = self
            .connectors
            .pairings
            .list()
            .into_iter()
            .find(|p| p.identity == identity)
        else {
            return Err(format!("`{identity}` is not paired"));
        };
        let Some(connection) = self.host.connection(&paired.connector) else {
            return Err(format!("connector `{}` is not running", paired.connector));
        };
        match reply::post(&connection, &paired.conversation, text).await {
            Some(_) => Ok(()),
            None => Err(format!("connector `{}` did not post it", paired.connector)),
        }
    }

    /// The owner ends a pairing.
    pub(crate) async fn unpair(&self, identity: &str, by: &str) -> Result<bool, KernelError> {
        let vault = Arc::clone(&self.vault);
        let pairings = Arc::clone(&self.connectors.pairings);
        let who = identity.to_owned();
        let removed = tokio::task::spawn_blocking(move || pairings.unpair(&vault, &who))
            .await
            .map_err(KernelError::task("unpairing"))??;
        if removed {
            self.audit
                .record(AuditEvent::ConnectorUnpaired {
                    identity: identity.to_owned(),
                    by: by.to_owned(),
                })
                .await?;
        }
        Ok(removed)
    }
}

fn state_text(state: &crate::host::PluginState) -> String {
    use crate::host::PluginState;
    match state {
        PluginState::Starting => "starting".to_owned(),
        PluginState::Running => "running".to_owned(),
        PluginState::Restarting(why) => format!("restarting: {why}"),
        PluginState::Failed(why) => format!("failed: {why}"),
        PluginState::Stopped => "stopped".to_owned(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// The first-party plugin that pushes notices to a URL (ntfy, a webhook): a connector that only
/// posts.
pub const PUSH_BUILTIN: &str = "webhook";

impl Kernel {
    /// Tells the push targets among `notify` (plugins `builtin = "webhook"`) that an approval
    /// waits. What goes out is only that: the level, never the action's arguments (a push
    /// service is someone else's server). Chat connectors are not pushed to: the approval
    /// daemon announces every escalation to their approvers, with its buttons.
    pub(crate) fn push_notices(&self, level: u8, notify: &[String]) {
        for name in notify {
            let is_push = self
                .config
                .plugins
                .get(name)
                .is_some_and(|p| p.builtin.as_deref() == Some(PUSH_BUILTIN));
            if !is_push {
                continue;
            }
            let Some(connection) = self.host.connection(name) else {
                tracing::warn!("notify: `{name}` is not running");
                continue;
            };
            let conversation = format!("{name}:push");
            let text = format!(
                "P3AK: an action waits for your approval (level {level}). Open your chat or the \
                 console to see it."
            );
            tokio::spawn(async move {
                reply::post(&connection, &conversation, &text).await;
            });
        }
    }
}

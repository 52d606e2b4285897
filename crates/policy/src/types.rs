//! The values that go into and come out of the engine.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provenance::{Origins, Said};

/// What kind of effect an action has. Ordered from least to most consequential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Reads and looks; changes nothing outside the kernel.
    Observe,
    /// Changes something that can be undone.
    Act,
    /// Changes something that cannot easily be undone (money, deletion, deployment).
    Commit,
}

impl Tier {
    /// The tier an operator entry gets when it states a level but no tier.
    #[must_use]
    pub fn for_level(level: Level) -> Self {
        match level.get() {
            0 => Self::Observe,
            1 | 2 => Self::Act,
            _ => Self::Commit,
        }
    }

    /// The lowercase name used in policy files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Act => "act",
            Self::Commit => "commit",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human-approval level, 0 (none) to 5 (strongest factor, confirmed twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Level(u8);

impl Level {
    /// The highest level.
    pub const MAX: Level = Level(5);

    /// A level, if `value` is in 0–5.
    #[must_use]
    pub const fn new(value: u8) -> Option<Self> {
        if value <= 5 { Some(Self(value)) } else { None }
    }

    /// The level as a number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Level;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an approval level from 0 to 5")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Level, E> {
                u8::try_from(v)
                    .ok()
                    .and_then(Level::new)
                    .ok_or_else(|| E::custom(format!("level `{v}` is out of range (0 to 5)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Level, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("level `{v}` is out of range (0 to 5)")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A time of day, minutes after midnight (0–1439), in the operator's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// `hour:minute`, if both are in range.
    #[must_use]
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then(|| Self(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// Minutes after midnight.
    #[must_use]
    pub fn minutes(self) -> u16 {
        self.0
    }

    /// Parses `HH:MM` (24-hour clock).
    pub fn parse(text: &str) -> Option<Self> {
        let (h, m) = text.split_once(':')?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(h.parse().ok()?, m.parse().ok()?)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TimeOfDay::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid time of day `{text}`: expected `HH:MM` on a 24-hour clock"
            ))
        })
    }
}

/// What the runtime knows about the moment of the call. The engine never looks at a clock or
/// a history itself: the kernel supplies both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// For each total the policy declares (see [`crate::Policy::totals`]), its value over the
    /// window *before* this call. The engine adds this call's own contribution.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub totals: BTreeMap<String, i64>,
    /// Local time of day of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeOfDay>,
    /// The channel the request came from (`console`, `signal`, `voice`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Who sent the message the turn answers, as the channel authenticated them
    /// (`telegram:7`; `operator (uid 1000)` on the local console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// What this session (one conversation) has already run, for `session.*` conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionHistory>,
    /// Where each value of the call's arguments came from, for `from:` tests: computed by the
    /// kernel with [`crate::Transcript::origins_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origins: Option<Origins>,
    /// The session's labelled texts, for case files and `explain`: when `origins` is absent
    /// the engine computes them from these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Vec<Said>>,
    /// Remembered approvals the owner granted that have not expired (the kernel drops the
    /// expired ones; the engine reads no clock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// Who handed this turn's work to the proposing agent, for `delegation.*` conditions. The
    /// kernel always supplies it: `{ depth: 0, chain: [] }` for a turn nobody delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
}

/// How the work of a turn reached the proposing agent: the agents that asked, outermost first.
///
/// Agent `ledger` answering `amber`, who was asked by `board`, has `chain: [board, amber]`,
/// `by: amber`, `depth: 2`. A turn nobody delegated has `depth: 0` and an empty chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// How many agents asked before this one: the chain's length.
    pub depth: u32,
    /// The agents that asked, outermost first, not including the proposing agent.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The agent that asked directly (the last of the chain); absent when nobody delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// How the work was handed over: `route`, `ask` or `board`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Delegation {
    /// A turn nobody delegated.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Work handed over along `chain` (outermost first) in the way `kind` names; `depth` and
    /// `by` follow from the chain.
    #[must_use]
    pub fn through(chain: Vec<String>, kind: impl Into<String>) -> Self {
        Self {
            depth: u32::try_from(chain.len()).unwrap_or(u32::MAX),
            by: chain.last().cloned(),
            kind: Some(kind.into()),
            chain,
        }
    }

    /// Whether the fields agree: `depth` is the chain's length and `by` its last agent. The
    /// engine treats a delegation that does not as missing, so every condition on it rejects.
    #[must_use]
    pub fn is_consistent(&self) -> bool {
        usize::try_from(self.depth).is_ok_and(|d| d == self.chain.len())
            && self.by.as_ref() == self.chain.last()
    }
}

/// What one session has already run: the actions allowed or approved, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionHistory {
    /// The session's id (the conversation), for totals kept per session.
    #[serde(default)]
    pub id: String,
    /// The actions that ran, oldest first.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A remembered approval: the owner approved an escalated call and chose to allow calls like
/// it for a while. It is never wider than what was approved: the same action, the same values
/// for the arguments it pins, and at most the level that was approved. It turns an escalation
/// into an allowance, never a rejection, and never stands in for level 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Its id, shown in the verdict's rules as `grant:ID`.
    pub id: String,
    /// The exact action it covers.
    pub action: String,
    /// Argument paths (`to`, `payee.iban`) and the exact values it was granted for.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
    /// The highest escalation level it stands in for (1–4).
    pub level: Level,
    /// When it stops, in seconds since the Unix epoch (for display; the kernel enforces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Who wrote the plugin that declared an action's tier.
///
/// The kernel knows: a plugin it runs as `p3ak plugin run NAME` is first-party; any other
/// executable is third-party. A third-party plugin's declared tier counts only where the
/// operator trusts it (`defaults.trust_declared_tiers`); otherwise its action is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Shipped with P3AK.
    FirstParty,
    /// Anything else. The default: a declaration nobody vouched for opens nothing.
    #[default]
    ThirdParty,
}

impl Origin {
    /// The name used in case files and JSON (`first_party`, `third_party`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstParty => "first_party",
            Self::ThirdParty => "third_party",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier a plugin recommended for an action when it registered it, and who the plugin is.
///
/// In JSON and case files: `{ "tier": "observe", "origin": "first_party" }`, or just the tier
/// (`"observe"`), which is third-party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Declared {
    /// The recommended tier.
    pub tier: Tier,
    /// Who declared it.
    pub origin: Origin,
}

impl Declared {
    /// A tier declared by a plugin of the given origin.
    #[must_use]
    pub const fn new(tier: Tier, origin: Origin) -> Self {
        Self { tier, origin }
    }

    /// A tier declared by a first-party plugin.
    #[must_use]
    pub const fn first_party(tier: Tier) -> Self {
        Self::new(tier, Origin::FirstParty)
    }

    /// A tier declared by a third-party plugin.
    #[must_use]
    pub const fn third_party(tier: Tier) -> Self {
        Self::new(tier, Origin::ThirdParty)
    }
}

/// A bare tier says nothing about who declared it, so it is third-party.
impl From<Tier> for Declared {
    fn from(tier: Tier) -> Self {
        Self::third_party(tier)
    }
}

impl<'de> Deserialize<'de> for Declared {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer as _, MapAccess};
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Declared;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tier (`observe`, `act`, `commit`) or `{ tier: TIER, origin: first_party | third_party }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Declared, E> {
                let tier = Tier::deserialize(v.into_deserializer())?;
                Ok(Declared::third_party(tier))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Declared, A::Error> {
                let mut tier: Option<Tier> = None;
                let mut origin: Option<Origin> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "tier" if tier.is_none() => tier = Some(map.next_value()?),
                        "origin" if origin.is_none() => origin = Some(map.next_value()?),
                        "tier" | "origin" => {
                            return Err(de::Error::custom(format!("duplicate key `{key}`")));
                        }
                        other => return Err(de::Error::unknown_field(other, &["tier", "origin"])),
                    }
                }
                let tier = tier.ok_or_else(|| de::Error::missing_field("tier"))?;
                Ok(Declared::new(tier, origin.unwrap_or_default()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A proposed call, as the kernel parsed it from a model's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The agent that proposed the call.
    pub agent: String,
    /// `<plugin>.<action>`, or a bare name for a kernel built-in tool.
    pub action: String,
    /// The call's arguments (a JSON object). Amounts are integers in minor units.
    #[serde(default = "empty_object")]
    pub args: serde_json::Value,
    /// Names of the credentials the call asks the broker to inject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// The tier the plugin recommended when it registered the action, if it declared it, and
    /// whether that plugin is first-party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
    /// What the runtime supplies: totals, time of day, channel.
    #[serde(default)]
    pub context: Context,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl Request {
    /// A request with no arguments, credentials or context.
    #[must_use]
    pub fn new(agent: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            action: action.into(),
            args: empty_object(),
            credentials: Vec::new(),
            declared: None,
            context: Context::default(),
        }
    }

    /// Sets the arguments.
    #[must_use]
    pub fn with_args(mut self, args: serde_json::Value) -> Self {
        self.args = args;
        self
    }

    /// Sets the runtime context.
    #[must_use]
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }

    /// Sets the tier the plugin declared for the action: a [`Declared`], or a bare [`Tier`],
    /// which counts as declared by a third-party plugin (the safe default). Use
    /// [`Declared::first_party`] for a plugin shipped with P3AK.
    #[must_use]
    pub fn with_declared(mut self, declared: impl Into<Declared>) -> Self {
        self.declared = Some(declared.into());
        self
    }

    /// Sets the credentials the call references.
    #[must_use]
    pub fn with_credentials(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.credentials = names.into_iter().map(Into::into).collect();
        self
    }
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run it now, at this tier.
    Allow {
        /// The tier the action runs at.
        tier: Tier,
    },
    /// Do not run it. The agent learns nothing more than that.
    Reject,
    /// Ask a human first.
    Escalate {
        /// The approval level needed (1–5).
        level: Level,
        /// Undo window after approval, during which the operator can pull the action back.
        #[serde(rename = "crawfish_secs", serialize_with = "secs")]
        crawfish: Duration,
        /// Channels to notify.
        notify: Vec<String>,
        /// Whether the approval must be given twice.
        confirm_twice: bool,
        /// How long to wait for an approval; when it runs out the action is denied.
        #[serde(rename = "timeout_secs", serialize_with = "secs")]
        timeout: Duration,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Decision {
    /// A total order on restrictiveness: allow (by tier) < escalate (by level) < reject.
    #[must_use]
    pub fn rank(&self) -> u8 {
        match self {
            Self::Allow { tier } => *tier as u8,
            Self::Escalate { level, .. } => 2 + level.get(),
            Self::Reject => 8,
        }
    }

    /// The approval level this decision requires: 0 for allow, the level for escalate, and
    /// one past the maximum for reject (nothing can approve it).
    #[must_use]
    pub fn required_level(&self) -> u8 {
        match self {
            Self::Allow { .. } => 0,
            Self::Escalate { level, .. } => level.get(),
            Self::Reject => Level::MAX.get() + 1,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { tier } => write!(f, "allow ({tier})"),
            Self::Reject => f.write_str("reject"),
            Self::Escalate {
                level,
                crawfish,
                notify,
                confirm_twice,
                timeout,
            } => {
                write!(
                    f,
                    "escalate to level {level} (undo window {}s, timeout {}s",
                    crawfish.as_secs(),
                    timeout.as_secs()
                )?;
                if *confirm_twice {
                    f.write_str(", confirm twice")?;
                }
                if !notify.is_empty() {
                    write!(f, ", notify {}", notify.join(", "))?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A decision together with what the operator's audit log needs. Never show this to a model:
/// use [`Verdict::agent_notice`] for that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allow, reject or escalate.
    #[serde(flatten)]
    pub decision: Decision,
    /// The tier the action runs at once it may run (absent for a rejection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The operator group of the deciding entry (`financial`, `send`, ...), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Ids of the rules that decided, for the audit log.
    pub rules: Vec<String>,
    /// Every rule that asked for more than an allowance (the deciding ones and the others),
    /// strictest first, each with the operator's `why:`. For the approver and the audit log,
    /// never for a model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// A rule that contributed to a decision, and what the operator wrote about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The rule's id.
    pub rule: String,
    /// What the rule asked for.
    pub effect: Decision,
    /// The operator's explanation (`why:`), if they wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Verdict {
    /// What the agent may be told: nothing about the policy.
    #[must_use]
    pub fn agent_notice(&self) -> AgentNotice {
        match self.decision {
            Decision::Allow { .. } => AgentNotice::Permitted,
            Decision::Escalate { .. } => AgentNotice::AwaitingApproval,
            Decision::Reject => AgentNotice::NotPermitted,
        }
    }
}

/// The only thing about a decision that may reach a model (invariant I3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentNotice {
    /// The call goes ahead.
    Permitted,
    /// A human has been asked.
    AwaitingApproval,
    /// The call will not run.
    NotPermitted,
}

impl fmt::Display for AgentNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Permitted => "action permitted",
            Self::AwaitingApproval => "action awaiting approval",
            Self::NotPermitted => "action not permitted",
        })
    }
}

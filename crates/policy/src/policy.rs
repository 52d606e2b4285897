//! A compiled policy and the decision procedure.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{Entities, EntityUid, EvalResult, RestrictedExpression};
use serde::Serialize;
use serde_saphyr::Spanned;

use crate::condition::{Compiler, Condition, Facts, Need};
use crate::decimal;
use crate::error::{Diagnostic, PolicyError, Position};
use crate::pattern::Pattern;
use crate::provenance::{Origins, Transcript, normalise};
use crate::raw::{self, RawEntry, RawPolicy, Unknown};
use crate::raw::{RawSet, Scalar};
use crate::types::{Decision, Declared, Grant, Level, Origin, Reason, Request, Tier, Verdict};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_LEVEL: Level = match Level::new(2) {
    Some(level) => level,
    None => Level::MAX,
};

/// What a total adds up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TotalKind {
    /// The sum of an integer argument (e.g. `amount`, in minor units).
    Sum {
        /// Path of the argument, dot-separated.
        arg: String,
    },
    /// The number of calls.
    Count,
}

/// A cumulative value the kernel must supply in [`crate::Context::totals`]: `kind` over the
/// calls to `actions` during the last `window`, not counting the call being decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalSpec {
    /// The name conditions use (`total.NAME`).
    pub name: String,
    /// Which actions count.
    pub actions: Vec<String>,
    /// Sum or count.
    #[serde(flatten)]
    pub kind: TotalKind,
    /// How far back to look.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Decimal places of a sum of a decimal argument: the total counts units of
    /// `10^-decimals` (`None`: whole numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    /// Kept apart per value of this key (per payee, per channel, ...); `None`: one total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<TotalKey>,
    #[serde(skip)]
    patterns: Vec<Pattern>,
    #[serde(skip)]
    path: Vec<String>,
}

impl TotalSpec {
    /// What one call adds to this total: `None` when the action does not count, or when a
    /// sum's argument is missing, negative, not a number, or does not fit its declared decimal
    /// places. The kernel's ledger uses this so that it counts exactly what the engine adds.
    #[must_use]
    pub fn contribution(&self, action: &str, args: &serde_json::Value) -> Option<i64> {
        if !self.patterns.iter().any(|p| p.matches(action)) {
            return None;
        }
        match self.kind {
            TotalKind::Count => Some(1),
            TotalKind::Sum { .. } => {
                let value = crate::condition::lookup(args, &self.path)?;
                let amount = match self.decimals {
                    Some(scale) => decimal::scaled(value, scale).ok()?,
                    None => value.as_i64()?,
                };
                (amount >= 0).then_some(amount)
            }
        }
    }
}

/// What a total is kept apart by (`by:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotalKey {
    /// An argument's value (`by: args.payee`): a text, or a number's JSON text.
    Arg(String),
    /// The channel the call came from.
    Channel,
    /// The proposing agent.
    Agent,
    /// The session (conversation) the call belongs to.
    Session,
}

impl std::fmt::Display for TotalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Arg(path) => write!(f, "args.{path}"),
            Self::Channel => f.write_str("channel"),
            Self::Agent => f.write_str("agent"),
            Self::Session => f.write_str("session"),
        }
    }
}

impl Serialize for TotalKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl TotalKey {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "channel" => Some(Self::Channel),
            "agent" => Some(Self::Agent),
            "session" => Some(Self::Session),
            _ => {
                let path = text.strip_prefix("args.")?;
                (!path.split('.').any(str::is_empty)).then(|| Self::Arg(path.to_owned()))
            }
        }
    }
}

impl TotalSpec {
    /// The key a call is counted under: `Some(None)` for a total kept as one; `None` when the
    /// call has no value for the key (a missing argument, a list or record, no channel or
    /// session), which makes the total unavailable for that call.
    #[must_use]
    pub fn key_of(
        &self,
        agent: &str,
        args: &serde_json::Value,
        channel: Option<&str>,
        session: Option<&str>,
    ) -> Option<Option<String>> {
        let Some(by) = &self.by else {
            return Some(None);
        };
        let key = match by {
            TotalKey::Arg(path) => {
                let mut value = args;
                for segment in path.split('.') {
                    value = value.get(segment)?;
                }
                crate::provenance::leaf_text(value)?
            }
            TotalKey::Channel => channel?.to_owned(),
            TotalKey::Agent => agent.to_owned(),
            TotalKey::Session => session?.to_owned(),
        };
        Some(Some(key))
    }

    /// [`TotalSpec::key_of`] for a request.
    #[must_use]
    pub fn key_of_request(&self, request: &Request) -> Option<Option<String>> {
        self.key_of(
            &request.agent,
            &request.args,
            request.context.channel.as_deref(),
            request.context.session.as_ref().map(|s| s.id.as_str()),
        )
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The shortest rekey interval a policy may ask for.
pub const MIN_REKEY_EVERY: Duration = Duration::from_secs(86_400);

/// `vault_rekey`: how often the kernel stages a rekey of its vault (a new master key under the
/// same passphrase), and how the operator approves it. The engine only describes the schedule;
/// the kernel keeps the clock and the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RekeySchedule {
    /// A rekey is due when this long has passed since the last one (or since the vault was
    /// created). At least [`MIN_REKEY_EVERY`].
    #[serde(rename = "every_secs", serialize_with = "secs")]
    pub every: Duration,
    /// The approval level the staged rekey needs (1–5; 5 unless the policy says otherwise).
    pub level: Level,
    /// How long the staged rekey waits for an approval; then it is denied.
    #[serde(rename = "timeout_secs", serialize_with = "secs")]
    pub timeout: Duration,
    /// Undo window after approval (level 5 never has one: the kernel runs it at once).
    #[serde(rename = "crawfish_secs", serialize_with = "secs")]
    pub crawfish: Duration,
}

#[derive(Debug, Clone)]
struct Settings {
    level: Level,
    tier: Tier,
    crawfish: Duration,
    notify: Vec<String>,
    confirm_twice: bool,
    timeout: Duration,
}

impl Settings {
    fn decision(&self) -> Decision {
        if self.level.get() == 0 {
            Decision::Allow { tier: self.tier }
        } else {
            Decision::Escalate {
                level: self.level,
                crawfish: self.crawfish,
                notify: self.notify.clone(),
                // Invariant I8: level 5 always asks twice.
                confirm_twice: self.confirm_twice || self.level == Level::MAX,
                timeout: self.timeout,
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: String,
    why: Option<String>,
    group: String,
    settings: Settings,
    rules: Vec<usize>,
}

#[derive(Debug)]
enum Effect {
    Reject,
    Apply(Settings),
}

#[derive(Debug)]
struct CondRule {
    id: String,
    why: Option<String>,
    agents: Option<HashSet<String>>,
    condition: Condition,
    effect: Effect,
}

#[derive(Debug)]
struct Forbid {
    id: String,
    why: Option<String>,
    agents: Option<HashSet<String>>,
    condition: Option<Condition>,
}

/// Finds the entries whose pattern matches an action without scanning exact names.
#[derive(Debug, Default)]
struct Index {
    exact: HashMap<String, Vec<usize>>,
    patterns: Vec<(Pattern, usize)>,
}

impl Index {
    fn insert(&mut self, pattern: &Pattern, at: usize) {
        match pattern {
            Pattern::Exact(name) => self.exact.entry(name.clone()).or_default().push(at),
            other => self.patterns.push((other.clone(), at)),
        }
    }

    fn lookup(&self, action: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self.exact.get(action).cloned().unwrap_or_default();
        out.extend(
            self.patterns
                .iter()
                .filter(|(p, _)| p.matches(action))
                .map(|(_, i)| *i),
        );
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Debug)]
struct Defaults {
    unknown: Unknown,
    level: Level,
    timeout: Duration,
    crawfish: Duration,
    notify: Vec<String>,
    /// `trust_declared_tiers`: third-party actions whose declared tier counts.
    trust: Vec<Pattern>,
}

/// What the engine makes of a plugin's declared tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Honoured {
    /// Nothing was declared.
    Undeclared,
    /// First-party, or third-party and trusted by the operator: the tier counts.
    Tier(Tier),
    /// Third-party and not trusted: the action is unknown, whatever it declared.
    Ignored(Tier),
}

/// An operator's policy, parsed, checked and compiled. Immutable: to change the policy,
/// compile a new one and swap it in with [`crate::PolicyCell`].
#[derive(Debug)]
pub struct Policy {
    entries: Vec<Entry>,
    entry_index: Index,
    rules: Vec<CondRule>,
    forbids: Vec<Forbid>,
    forbid_index: Index,
    acl: Option<HashMap<String, Vec<Pattern>>>,
    credentials: HashMap<String, Vec<Pattern>>,
    totals: Vec<TotalSpec>,
    vault_rekey: Option<RekeySchedule>,
    defaults: Defaults,
    /// Argument paths with declared decimal places.
    decimals: Vec<(Vec<String>, u32)>,
    /// Every value of the named sets, normalised: what the operator wrote counts as coming
    /// from the operator for `from:` tests.
    operator_values: HashSet<String>,
    /// `sensitive`: actions after which `session.sensitive` holds.
    sensitive: Vec<Pattern>,
    warnings: Vec<Diagnostic>,
    uids: (EntityUid, EntityUid, EntityUid),
    entities: Entities,
}

/// One rule's part in a decision, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The rule id (`group/action` for entries; `default:...`, `agents`, `credential:NAME`
    /// for the built-in checks).
    pub rule: String,
    /// `forbid`, `agents`, `credential`, `entry`, `rule` or `default`.
    pub kind: &'static str,
    /// What happened: `applies`, `matched`, `not matched`, `permitted`, or `error: ...`.
    pub outcome: String,
    /// What the rule asks for, when it took effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<Decision>,
    /// The compiled Cedar condition, if the rule has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A verdict and every rule that took part in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The decision, as [`Policy::decide`] returns it.
    pub verdict: Verdict,
    /// The rules consulted, in order.
    pub steps: Vec<Step>,
    /// What the request left out that the rules consulted read (a total, the time, the
    /// channel, the session, provenance): each such rule rejects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Explanation {
    /// The explanation as `p3ak policy explain` prints it, one line each (warnings aside):
    /// the decision, its tier and group, the deciding rules, the reasons the approver sees,
    /// then every rule consulted. Unsanitised: a terminal's caller escapes control characters.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let verdict = &self.verdict;
        let mut out = vec![format!("decision: {}", verdict.decision)];
        if let Some(tier) = verdict.tier {
            out.push(format!("tier: {tier}"));
        }
        if let Some(group) = &verdict.group {
            out.push(format!("group: {group}"));
        }
        out.push(format!("decided by: {}", verdict.rules.join(", ")));
        if let Some(grant) = verdict.rules.iter().find_map(|r| r.strip_prefix("grant:")) {
            out.push(format!(
                "a remembered approval applies: grant `{grant}` (`p3ak policy grants revoke {grant}`)"
            ));
        }
        if !verdict.reasons.is_empty() {
            out.push("why (as the approver sees it):".to_owned());
            for reason in &verdict.reasons {
                let why = reason
                    .why
                    .as_deref()
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default();
                out.push(format!("  {} ({}){why}", reason.rule, reason.effect));
            }
        }
        out.push("rules consulted:".to_owned());
        for step in &self.steps {
            let effect = step
                .effect
                .as_ref()
                .map(|e| format!(" -> {e}"))
                .unwrap_or_default();
            out.push(format!(
                "  {:<10} {}: {}{effect}",
                step.kind, step.rule, step.outcome
            ));
            if let Some(condition) = &step.condition {
                out.push(format!("             when {condition}"));
            }
        }
        out
    }
}

struct Candidate {
    forbid: bool,
    decision: Decision,
    tier: Option<Tier>,
    group: Option<String>,
    rule: String,
    why: Option<String>,
}

impl Policy {
    /// Parses, checks and compiles a policy file. A set read from a file (`{ file: NAME }`) is
    /// an error here: use [`Policy::from_yaml_with_files`].
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        Self::from_yaml_with_files(text, |_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "sets from files need the policy's location (load the policy from its file)",
            ))
        })
    }

    /// Parses, checks and compiles a policy file; `read` gives the text of a file named by a
    /// set (`{ file: NAME }`, a plain relative name resolved beside the policy by the caller).
    pub fn from_yaml_with_files(
        text: &str,
        read: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Self, PolicyError> {
        if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            return Err(PolicyError::one(
                Diagnostic::new(Position { line: 1, column: 1 }, "the policy is empty")
                    .with_hint("an empty policy would reject everything; see examples/policies/"),
            ));
        }
        let raw: RawPolicy = serde_saphyr::from_str(text)
            .map_err(|e| PolicyError::one(Diagnostic::from_yaml(&e)))?;
        compile(raw, &read)
    }

    /// Problems that do not stop the policy from loading (rules shadowed by a forbid, ...).
    #[must_use]
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The totals the kernel must supply with each request.
    #[must_use]
    pub fn totals(&self) -> &[TotalSpec] {
        &self.totals
    }

    /// The scheduled vault rekey, when the policy asks for one (`vault_rekey`).
    #[must_use]
    pub fn vault_rekey(&self) -> Option<RekeySchedule> {
        self.vault_rekey
    }

    /// The action groups the policy names (`read`, `send`, …), sorted, each once: the HITL
    /// spool files escalations by them.
    #[must_use]
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.entries.iter().map(|e| e.group.clone()).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// How many rules the policy holds (entries, conditional rules and forbids).
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.entries.len() + self.rules.len() + self.forbids.len()
    }

    /// Decides a request. Pure: the same policy and request always give the same verdict.
    #[must_use]
    pub fn decide(&self, request: &Request) -> Verdict {
        self.run(request, None)
    }

    /// Whether no call of `action` by `agent` could ever run, whatever its arguments, context or
    /// approval: an unconditional forbid covers it, the agent may not propose it, or nothing
    /// mentions it and the default rejects. The kernel masks such actions so that no model
    /// ever sees them. A conditional rule never makes an action "never": it might not hold.
    ///
    /// `declared` is read exactly as [`Policy::decide`] reads [`Request::declared`]: a bare
    /// [`Tier`] is third-party, and a third-party tier the operator does not trust is ignored.
    #[must_use]
    pub fn never_permits(
        &self,
        agent: &str,
        action: &str,
        declared: Option<impl Into<Declared>>,
    ) -> bool {
        let declared = declared.map(Into::into);
        let forbidden = self
            .forbid_index
            .lookup(action)
            .into_iter()
            .filter_map(|i| self.forbids.get(i))
            .any(|f| f.condition.is_none() && f.agents.as_ref().is_none_or(|a| a.contains(agent)));
        if forbidden {
            return true;
        }
        if let Some(acl) = &self.acl {
            let permitted = acl
                .get(agent)
                .is_some_and(|patterns| patterns.iter().any(|p| p.matches(action)));
            if !permitted {
                return true;
            }
        }
        if self.entry_index.lookup(action).is_empty() {
            let honoured = self.honoured(action, declared);
            return matches!(self.default_for(honoured).0, Decision::Reject);
        }
        false
    }

    /// The one place that decides whether a declared tier counts (invariant I2): always for a
    /// first-party plugin, for a third-party one only where `defaults.trust_declared_tiers`
    /// names the action.
    fn honoured(&self, action: &str, declared: Option<Declared>) -> Honoured {
        match declared {
            None => Honoured::Undeclared,
            Some(Declared {
                tier,
                origin: Origin::FirstParty,
            }) => Honoured::Tier(tier),
            Some(Declared {
                tier,
                origin: Origin::ThirdParty,
            }) => {
                if self.defaults.trust.iter().any(|p| p.matches(action)) {
                    Honoured::Tier(tier)
                } else {
                    Honoured::Ignored(tier)
                }
            }
        }
    }

    /// Decides a request and records every rule that took part.
    #[must_use]
    pub fn explain(&self, request: &Request) -> Explanation {
        let mut steps = Vec::new();
        let verdict = self.run(request, Some(&mut steps));
        let warnings = self.missing_context(request);
        Explanation {
            verdict,
            steps,
            warnings,
        }
    }

    /// For each part of the context the request lacks, the consulted rules that read it.
    fn missing_context(&self, request: &Request) -> Vec<String> {
        let agent = request.agent.as_str();
        let applies =
            |agents: &Option<HashSet<String>>| agents.as_ref().is_none_or(|a| a.contains(agent));
        let forbids = self
            .forbid_index
            .lookup(&request.action)
            .into_iter()
            .filter_map(|i| self.forbids.get(i))
            .filter(|f| applies(&f.agents))
            .filter_map(|f| Some((f.id.as_str(), f.condition.as_ref()?)));
        let rules = self
            .entry_index
            .lookup(&request.action)
            .into_iter()
            .filter_map(|i| self.entries.get(i))
            .flat_map(|e| e.rules.iter().filter_map(|i| self.rules.get(*i)))
            .filter(|r| applies(&r.agents))
            .map(|r| (r.id.as_str(), &r.condition));
        let mut missing: Vec<(Need, Vec<&str>)> = Vec::new();
        for (id, condition) in forbids.chain(rules) {
            for need in condition.needs.iter().filter(|n| !supplied(request, n)) {
                match missing.iter_mut().find(|(n, _)| n == need) {
                    Some((_, ids)) => ids.push(id),
                    None => missing.push((need.clone(), vec![id])),
                }
            }
        }
        missing
            .into_iter()
            .map(|(need, ids)| {
                format!(
                    "this call did not supply {need}; the rules reading it reject: {}",
                    ids.join(", ")
                )
            })
            .collect()
    }

    fn run(&self, request: &Request, mut trace: Option<&mut Vec<Step>>) -> Verdict {
        let action = request.action.as_str();
        let agent = request.agent.as_str();
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut record = |step: Step| {
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(step);
            }
        };
        let applies =
            |agents: &Option<HashSet<String>>| agents.as_ref().is_none_or(|a| a.contains(agent));

        let forbids: Vec<&Forbid> = self
            .forbid_index
            .lookup(action)
            .into_iter()
            .filter_map(|i| self.forbids.get(i))
            .filter(|f| applies(&f.agents))
            .collect();
        let entries: Vec<&Entry> = self
            .entry_index
            .lookup(action)
            .into_iter()
            .filter_map(|i| self.entries.get(i))
            .collect();
        let rules: Vec<(&Entry, &CondRule)> = entries
            .iter()
            .flat_map(|e| {
                e.rules
                    .iter()
                    .filter_map(|i| self.rules.get(*i))
                    .map(move |r| (*e, r))
            })
            .filter(|(_, r)| applies(&r.agents))
            .collect();

        let conditions: Vec<&Condition> = forbids
            .iter()
            .filter_map(|f| f.condition.as_ref())
            .chain(rules.iter().map(|(_, r)| &r.condition))
            .collect();
        let env = if conditions.is_empty() {
            None
        } else {
            Some(self.environment(request, &conditions))
        };
        let eval = |condition: &Condition| -> Result<bool, Failure> {
            let env = match &env {
                Some(Ok(env)) => env,
                Some(Err(e)) => return Err(Failure::Error(e.clone())),
                None => return Err(Failure::Error("no evaluation context".to_owned())),
            };
            // A rule that reads a value the engine cannot represent rejects, whichever way its
            // branches would have gone: it is never skipped.
            for read in &condition.reads {
                if let Some((_, why)) = env.unrepresentable.iter().find(|(at, _)| read.touches(at))
                {
                    return Err(Failure::Unrepresentable(read.name(), why.clone()));
                }
            }
            // A list element that could not be judged explains the error better than Cedar.
            let why = |cedar: String| {
                condition
                    .derived
                    .iter()
                    .find_map(|d| env.derived_errors.get(&d.key))
                    .cloned()
                    .unwrap_or(cedar)
            };
            // Cedar's own error names its internals; a missing part of the request says more.
            let missing = || {
                condition
                    .needs
                    .iter()
                    .find(|need| !supplied(request, need))
                    .map(|need| format!("this call did not supply {need}"))
            };
            // A condition that is one fact decided in Rust needs no Cedar evaluation.
            if let Some(key) = &condition.direct
                && let Some(fact) = env.facts.get(key)
            {
                return fact.clone().map_err(Failure::Error);
            }
            let cedar = match &env.request {
                Some(Ok(cedar)) => cedar,
                Some(Err(e)) => return Err(Failure::Error(e.clone())),
                None => return Err(Failure::Error("no evaluation context".to_owned())),
            };
            match cedar_policy::eval_expression(cedar, &self.entities, &condition.expr) {
                Ok(EvalResult::Bool(b)) => Ok(b),
                Ok(_) => Err(Failure::Error(why("condition is not a boolean".to_owned()))),
                Err(e) => Err(Failure::Error(
                    missing().unwrap_or_else(|| why(e.to_string())),
                )),
            }
        };

        // 1. Forbids: a match or an error rejects.
        for forbid in forbids {
            let outcome = match &forbid.condition {
                None => Ok(true),
                Some(c) => eval(c),
            };
            let (hit, text, rule) = match outcome {
                Ok(true) => (true, "matched".to_owned(), forbid.id.clone()),
                Ok(false) => (false, "not matched".to_owned(), forbid.id.clone()),
                Err(failure) => (true, failure.outcome(), failure.rule(&forbid.id)),
            };
            if hit {
                candidates.push(Candidate {
                    forbid: true,
                    decision: Decision::Reject,
                    tier: None,
                    group: None,
                    rule,
                    why: forbid.why.clone(),
                });
            }
            record(Step {
                rule: forbid.id.clone(),
                kind: "forbid",
                outcome: text,
                effect: hit.then_some(Decision::Reject),
                condition: forbid.condition.as_ref().map(Condition::describe),
            });
        }

        // 2. Which agents may propose which actions.
        if let Some(acl) = &self.acl {
            let permitted = acl
                .get(agent)
                .is_some_and(|patterns| patterns.iter().any(|p| p.matches(action)));
            if !permitted {
                candidates.push(Candidate {
                    forbid: false,
                    decision: Decision::Reject,
                    tier: None,
                    group: None,
                    rule: "agents".to_owned(),
                    why: None,
                });
            }
            record(Step {
                rule: "agents".to_owned(),
                kind: "agents",
                outcome: if permitted {
                    "permitted"
                } else {
                    "not permitted"
                }
                .to_owned(),
                effect: (!permitted).then_some(Decision::Reject),
                condition: None,
            });
        }

        // 3. Which actions may use which credentials.
        for name in &request.credentials {
            let permitted = self
                .credentials
                .get(name)
                .is_some_and(|patterns| patterns.iter().any(|p| p.matches(action)));
            let rule = format!("credential:{name}");
            if !permitted {
                candidates.push(Candidate {
                    forbid: false,
                    decision: Decision::Reject,
                    tier: None,
                    group: None,
                    rule: rule.clone(),
                    why: None,
                });
            }
            record(Step {
                rule,
                kind: "credential",
                outcome: if permitted {
                    "permitted"
                } else {
                    "not permitted"
                }
                .to_owned(),
                effect: (!permitted).then_some(Decision::Reject),
                condition: None,
            });
        }

        // 4. The operator's entries and their conditional rules, or the defaults.
        if entries.is_empty() {
            let honoured = self.honoured(action, request.declared);
            let (decision, tier, rule) = self.default_for(honoured);
            let outcome = match honoured {
                Honoured::Ignored(tier) => format!(
                    "applies (declared tier `{tier}` ignored: a third-party plugin not trusted by `defaults.trust_declared_tiers`)"
                ),
                Honoured::Undeclared | Honoured::Tier(_) => "applies".to_owned(),
            };
            record(Step {
                rule: rule.to_owned(),
                kind: "default",
                outcome,
                effect: Some(decision.clone()),
                condition: None,
            });
            candidates.push(Candidate {
                forbid: false,
                decision,
                tier,
                group: None,
                rule: rule.to_owned(),
                why: None,
            });
        }
        for entry in &entries {
            let decision = entry.settings.decision();
            record(Step {
                rule: entry.id.clone(),
                kind: "entry",
                outcome: "applies".to_owned(),
                effect: Some(decision.clone()),
                condition: None,
            });
            candidates.push(Candidate {
                forbid: false,
                decision,
                tier: Some(entry.settings.tier),
                group: Some(entry.group.clone()),
                rule: entry.id.clone(),
                why: entry.why.clone(),
            });
        }
        for (entry, rule) in rules {
            let mut deciding = rule.id.clone();
            let (effect, outcome) = match eval(&rule.condition) {
                Ok(true) => match &rule.effect {
                    Effect::Reject => (Some((Decision::Reject, None)), "matched".to_owned()),
                    Effect::Apply(s) => (Some((s.decision(), Some(s.tier))), "matched".to_owned()),
                },
                Ok(false) => (None, "not matched".to_owned()),
                Err(failure) => {
                    deciding = failure.rule(&rule.id);
                    (Some((Decision::Reject, None)), failure.outcome())
                }
            };
            record(Step {
                rule: rule.id.clone(),
                kind: "rule",
                outcome,
                effect: effect.as_ref().map(|(d, _)| d.clone()),
                condition: Some(rule.condition.describe()),
            });
            if let Some((decision, tier)) = effect {
                candidates.push(Candidate {
                    forbid: false,
                    decision,
                    tier,
                    group: Some(entry.group.clone()),
                    rule: deciding,
                    why: rule.why.clone(),
                });
            }
        }
        let verdict = combine(candidates);
        self.apply_grants(request, verdict, &mut record)
    }

    /// A remembered approval turns an escalation it covers into an allowance: the same action,
    /// the same value at every argument it pins, a level no higher than the one approved, and
    /// never level 5. It cannot touch a rejection.
    fn apply_grants(
        &self,
        request: &Request,
        verdict: Verdict,
        record: &mut impl FnMut(Step),
    ) -> Verdict {
        let Decision::Escalate { level, .. } = &verdict.decision else {
            return verdict;
        };
        let level = *level;
        let covers = |grant: &Grant| {
            grant.action == request.action
                && level <= grant.level
                && level < Level::MAX
                && grant.args.iter().all(|(path, want)| {
                    let path: Vec<String> = path.split('.').map(str::to_owned).collect();
                    crate::condition::lookup(&request.args, &path) == Some(want)
                })
        };
        let Some(grant) = request.context.grants.iter().find(|g| covers(g)) else {
            return verdict;
        };
        let rule = format!("grant:{}", grant.id);
        let tier = verdict.tier.unwrap_or(Tier::Act);
        record(Step {
            rule: rule.clone(),
            kind: "grant",
            outcome: format!(
                "applies: remembered approval for `{}` up to level {}",
                grant.action, grant.level
            ),
            effect: Some(Decision::Allow { tier }),
            condition: None,
        });
        Verdict {
            decision: Decision::Allow { tier },
            tier: Some(tier),
            group: verdict.group,
            rules: vec![rule],
            reasons: verdict.reasons,
        }
    }

    fn default_for(&self, declared: Honoured) -> (Decision, Option<Tier>, &'static str) {
        let escalate = |tier: Tier| {
            let settings = Settings {
                level: self.defaults.level,
                tier,
                crawfish: self.defaults.crawfish,
                notify: self.defaults.notify.clone(),
                confirm_twice: false,
                timeout: self.defaults.timeout,
            };
            (settings.decision(), Some(tier))
        };
        match declared {
            // A plugin the operator relies on can lower its own action to observe, never raise
            // it (invariant I2).
            Honoured::Tier(Tier::Observe) => (
                Decision::Allow {
                    tier: Tier::Observe,
                },
                Some(Tier::Observe),
                "default:declared-observe",
            ),
            Honoured::Tier(tier) => {
                let (d, t) = escalate(tier);
                (d, t, "default:declared")
            }
            // What a stranger declares opens nothing: its action is unknown.
            Honoured::Undeclared | Honoured::Ignored(_) => match self.defaults.unknown {
                Unknown::Reject => (Decision::Reject, None, "default:unknown"),
                Unknown::Escalate => {
                    let (d, t) = escalate(Tier::Commit);
                    (d, t, "default:unknown")
                }
            },
        }
    }

    /// Everything the conditions of one decision are evaluated against.
    fn environment(&self, request: &Request, conditions: &[&Condition]) -> Result<Env, String> {
        let mut unrepresentable: Vec<(Vec<String>, Option<String>)> = Vec::new();
        // Decimal arguments become whole numbers of their smallest unit.
        let mut args = std::borrow::Cow::Borrowed(&request.args);
        for (path, scale) in &self.decimals {
            if crate::condition::lookup(&request.args, path.get(..1).unwrap_or_default()).is_some()
            {
                let mut at = vec!["args".to_owned()];
                scale_at(args.to_mut(), path, *scale, &mut at, &mut unrepresentable);
            }
        }
        let mut plain = Vec::new();
        unrepresentable_at(&args, &mut vec!["args".to_owned()], &mut plain);
        for at in plain {
            if !unrepresentable.iter().any(|(p, _)| *p == at) {
                unrepresentable.push((at, None));
            }
        }
        // A sum fed such a value is unknown too, and says so.
        for spec in &self.totals {
            let TotalKind::Sum { .. } = spec.kind else {
                continue;
            };
            if !spec.patterns.iter().any(|p| p.matches(&request.action)) {
                continue;
            }
            let arg: Vec<String> = std::iter::once("args".to_owned())
                .chain(spec.path.iter().cloned())
                .collect();
            if let Some((_, why)) = unrepresentable
                .iter()
                .find(|(at, _)| at.starts_with(&arg) || arg.starts_with(at))
            {
                let why = why.clone();
                unrepresentable.push((vec!["total".to_owned(), spec.name.clone()], why));
            }
        }
        let needs_provenance = conditions
            .iter()
            .any(|c| c.needs.contains(&Need::Provenance));
        let computed: Option<Origins>;
        let origins = match (&request.context.origins, &request.context.transcript) {
            (Some(origins), _) => Some(origins),
            (None, Some(said)) if needs_provenance => {
                let transcript: Transcript = said.iter().cloned().collect();
                computed = Some(transcript.origins_of(&request.args));
                computed.as_ref()
            }
            _ => None,
        };
        let facts = Facts {
            origins,
            operator: &self.operator_values,
        };
        // The chain as a list, only for the quantifiers over it.
        let chain = conditions
            .iter()
            .flat_map(|c| c.derived.iter())
            .any(crate::condition::Derived::on_chain)
            .then(|| delegation(request))
            .flatten()
            .map(|d| serde_json::Value::from(d.chain.clone()));
        let mut derived = HashMap::new();
        let mut derived_errors = HashMap::new();
        for d in conditions.iter().flat_map(|c| c.derived.iter()) {
            if let Some(fact) = d.evaluate(&args, chain.as_ref(), &facts) {
                if let Err(why) = &fact {
                    derived_errors.insert(d.key.clone(), why.clone());
                }
                derived.insert(d.key.clone(), fact);
            }
        }
        // Cedar is only asked when some condition is more than one fact decided in Rust.
        let cedar = conditions
            .iter()
            .any(|c| c.direct.is_none())
            .then(|| self.cedar_request(request, &args, &derived));
        Ok(Env {
            request: cedar,
            facts: derived,
            unrepresentable,
            derived_errors,
        })
    }

    fn cedar_request(
        &self,
        request: &Request,
        args: &serde_json::Value,
        facts: &HashMap<String, Result<bool, String>>,
    ) -> Result<cedar_policy::Request, String> {
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(7);
        pairs.push((
            "agent".to_owned(),
            RestrictedExpression::new_string(request.agent.clone()),
        ));
        pairs.push(("args".to_owned(), to_cedar(args)));
        let mut totals = Vec::new();
        for spec in &self.totals {
            if let Some(value) = total_value(spec, request, args) {
                totals.push((spec.name.clone(), RestrictedExpression::new_long(value)));
            }
        }
        pairs.push((
            "total".to_owned(),
            RestrictedExpression::new_record(totals).map_err(|e| e.to_string())?,
        ));
        if let Some(time) = request.context.time {
            pairs.push((
                "time".to_owned(),
                RestrictedExpression::new_long(i64::from(time.minutes())),
            ));
        }
        if let Some(channel) = &request.context.channel {
            pairs.push((
                "channel".to_owned(),
                RestrictedExpression::new_string(channel.clone()),
            ));
        }
        if let Some(sender) = &request.context.sender {
            pairs.push((
                "sender".to_owned(),
                RestrictedExpression::new_string(sender.clone()),
            ));
        }
        if let Some(session) = &request.context.session {
            let sensitive = session
                .actions
                .iter()
                .any(|a| self.sensitive.iter().any(|p| p.matches(a)));
            let calls = i64::try_from(session.actions.len()).unwrap_or(i64::MAX);
            let record = RestrictedExpression::new_record([
                (
                    "actions".to_owned(),
                    RestrictedExpression::new_set(
                        session
                            .actions
                            .iter()
                            .map(|a| RestrictedExpression::new_string(a.clone())),
                    ),
                ),
                (
                    "sensitive".to_owned(),
                    RestrictedExpression::new_bool(sensitive),
                ),
                ("calls".to_owned(), RestrictedExpression::new_long(calls)),
            ])
            .map_err(|e| e.to_string())?;
            pairs.push(("session".to_owned(), record));
        }
        if let Some(delegation) = delegation(request) {
            let mut fields = vec![
                (
                    "depth".to_owned(),
                    RestrictedExpression::new_long(i64::from(delegation.depth)),
                ),
                (
                    "chain".to_owned(),
                    RestrictedExpression::new_set(
                        delegation
                            .chain
                            .iter()
                            .map(|a| RestrictedExpression::new_string(a.clone())),
                    ),
                ),
            ];
            for (name, value) in [("by", &delegation.by), ("kind", &delegation.kind)] {
                if let Some(value) = value {
                    fields.push((
                        name.to_owned(),
                        RestrictedExpression::new_string(value.clone()),
                    ));
                }
            }
            let record = RestrictedExpression::new_record(fields).map_err(|e| e.to_string())?;
            pairs.push(("delegation".to_owned(), record));
        }
        let derived = facts.iter().map(|(key, fact)| {
            let value = match fact {
                Ok(b) => RestrictedExpression::new_bool(*b),
                // Not a boolean: a condition that reaches it fails to evaluate, and rejects.
                Err(why) => RestrictedExpression::new_string(why.clone()),
            };
            (key.clone(), value)
        });
        pairs.push((
            "derived".to_owned(),
            RestrictedExpression::new_record(derived).map_err(|e| e.to_string())?,
        ));
        let context = cedar_policy::Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        let (principal, action, resource) = &self.uids;
        cedar_policy::Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }
}

/// The request's delegation, if it has one whose fields agree (an inconsistent one counts as
/// missing, so that every condition on it rejects).
fn delegation(request: &Request) -> Option<&crate::types::Delegation> {
    request
        .context
        .delegation
        .as_ref()
        .filter(|d| d.is_consistent())
}

/// Whether a request carries what a condition needs from the kernel.
pub(crate) fn supplied(request: &Request, need: &Need) -> bool {
    let context = &request.context;
    match need {
        Need::Total(name) => context.totals.contains_key(name),
        Need::Time => context.time.is_some(),
        Need::Channel => context.channel.is_some(),
        Need::Sender => context.sender.is_some(),
        Need::Session => context.session.is_some(),
        Need::Delegation => delegation(request).is_some(),
        Need::Provenance => context.origins.is_some() || context.transcript.is_some(),
    }
}

/// Converts the numbers at `path` (under `value`, reached through records and, element by
/// element, through lists) to whole units of `10^-scale`. A number that does not fit is
/// recorded with why, at the path down to the first list (a condition reads a list whole).
fn scale_at(
    value: &mut serde_json::Value,
    path: &[String],
    scale: u32,
    at: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    scale_inner(value, path, scale, at, false, out);
}

fn scale_inner(
    value: &mut serde_json::Value,
    path: &[String],
    scale: u32,
    at: &mut Vec<String>,
    listed: bool,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    use serde_json::Value;
    match (path.split_first(), value) {
        (_, Value::Array(items)) => {
            for item in items {
                scale_inner(item, path, scale, at, true, out);
            }
        }
        (None, leaf @ Value::Number(_)) => match decimal::scaled(leaf, scale) {
            Ok(units) => *leaf = Value::from(units),
            Err(e) => {
                if !out.iter().any(|(p, _)| p == at) {
                    out.push((at.clone(), Some(e.to_string())));
                }
            }
        },
        (Some((first, rest)), Value::Object(map)) => {
            if let Some(child) = map.get_mut(first) {
                if !listed {
                    at.push(first.clone());
                }
                scale_inner(child, rest, scale, at, listed, out);
                if !listed {
                    at.pop();
                }
            }
        }
        _ => {}
    }
}

/// The prior value the kernel supplied plus this call's own part. `None` (and so a failed
/// condition, and a rejection) when the kernel did not supply it, when this call's amount is
/// missing, negative or not a number in its unit, or on overflow.
fn total_value(spec: &TotalSpec, request: &Request, args: &serde_json::Value) -> Option<i64> {
    let prior = *request.context.totals.get(&spec.name)?;
    if !spec.patterns.iter().any(|p| p.matches(&request.action)) {
        return Some(prior);
    }
    let own = match spec.kind {
        TotalKind::Count => 1,
        TotalKind::Sum { .. } => {
            let amount = crate::condition::lookup(args, &spec.path)?.as_i64()?;
            if amount < 0 {
                return None;
            }
            amount
        }
    };
    prior.checked_add(own)
}

/// What the conditions of one decision are evaluated against.
struct Env {
    /// The Cedar request, when some condition needs Cedar.
    request: Option<Result<cedar_policy::Request, String>>,
    /// The facts decided in Rust, by key.
    facts: HashMap<String, Result<bool, String>>,
    /// Paths in the context (`["args", "amount"]`, `["total", "paid"]`) of values the engine
    /// cannot represent, and why when more can be said; a list holding one is listed whole.
    unrepresentable: Vec<(Vec<String>, Option<String>)>,
    /// Why a derived fact could not be decided, by key.
    derived_errors: HashMap<String, String>,
}

/// Why a condition did not give an answer. Either way the rule rejects.
enum Failure {
    /// Cedar (or Rust, for a derived fact) could not evaluate it.
    Error(String),
    /// It reads (the named subject reaches) a value the engine cannot represent, and why
    /// when more can be said (a decimal that does not fit its places).
    Unrepresentable(String, Option<String>),
}

impl Failure {
    /// The deciding rule id: the rule's own, or one that says the engine could not read.
    fn rule(&self, id: &str) -> String {
        match self {
            Self::Error(_) => id.to_owned(),
            Self::Unrepresentable(read, _) => format!("engine:unrepresentable:{read}"),
        }
    }

    /// For `explain`.
    fn outcome(&self) -> String {
        match self {
            Self::Error(e) => format!("error: {e}"),
            Self::Unrepresentable(read, None) => format!(
                "error: reading `{read}` meets a value the engine cannot represent (a null, a fraction or an integer beyond 64 bits); rejected as `engine:unrepresentable:{read}`"
            ),
            Self::Unrepresentable(read, Some(why)) => format!(
                "error: reading `{read}`: {why}; rejected as `engine:unrepresentable:{read}`"
            ),
        }
    }
}

/// Whether the engine can represent `value` exactly: no null, no number but a 64-bit integer.
fn representable(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => false,
        Value::Number(n) => n.as_i64().is_some(),
        Value::Bool(_) | Value::String(_) => true,
        Value::Array(items) => items.iter().all(representable),
        Value::Object(map) => map.values().all(representable),
    }
}

/// Collects the paths of unrepresentable values under `value` (at `path`). Paths stop at
/// lists: a condition reads a list whole.
fn unrepresentable_at(
    value: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                unrepresentable_at(child, path, out);
                path.pop();
            }
        }
        other if !representable(other) => out.push(path.clone()),
        _ => {}
    }
}

/// JSON to a Cedar value, built directly (never through Cedar's JSON format, whose `__entity`
/// and `__extn` escapes a caller could otherwise smuggle in). Nulls, fractions and integers
/// beyond `i64` have no Cedar form: they become an empty record, so that `present` sees them.
/// No condition ever reads one: `Env::unrepresentable` rejects the rules that would.
fn to_cedar(value: &serde_json::Value) -> RestrictedExpression {
    use serde_json::Value;
    let placeholder = || {
        RestrictedExpression::new_record(std::iter::empty::<(String, RestrictedExpression)>())
            .unwrap_or_else(|_| RestrictedExpression::new_bool(false))
    };
    match value {
        Value::Null => placeholder(),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(placeholder, RestrictedExpression::new_long),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().map(to_cedar)),
        Value::Object(map) => {
            RestrictedExpression::new_record(map.iter().map(|(k, v)| (k.clone(), to_cedar(v))))
                .unwrap_or_else(|_| placeholder())
        }
    }
}

/// Most restrictive wins; ties between escalations merge to the stricter of each setting.
fn combine(candidates: Vec<Candidate>) -> Verdict {
    let Some(top) = candidates.iter().map(|c| c.decision.rank()).max() else {
        return Verdict {
            decision: Decision::Reject,
            tier: None,
            group: None,
            rules: vec!["default:unknown".to_owned()],
            reasons: Vec::new(),
        };
    };
    // Every rule that asked for more than an allowance, strictest first, for the approver.
    let mut reasons: Vec<Reason> = Vec::new();
    let mut asking: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !matches!(c.decision, Decision::Allow { .. }))
        .collect();
    asking.sort_by_key(|c| std::cmp::Reverse(c.decision.rank()));
    for c in asking {
        if !reasons.iter().any(|r| r.rule == c.rule) {
            reasons.push(Reason {
                rule: c.rule.clone(),
                effect: c.decision.clone(),
                why: c.why.clone(),
            });
        }
    }
    // A forbid always wins: when one matched, it alone is the deciding rule.
    let forbidden = candidates.iter().any(|c| c.forbid);
    let mut decision: Option<Decision> = None;
    let mut tier: Option<Tier> = None;
    let mut group: Option<String> = None;
    let mut rules: Vec<String> = Vec::new();
    for c in candidates
        .into_iter()
        .filter(|c| c.decision.rank() == top && (c.forbid || !forbidden))
    {
        if !rules.contains(&c.rule) {
            rules.push(c.rule);
        }
        tier = tier.max(c.tier);
        if group.is_none() {
            group = c.group;
        }
        decision = Some(match (decision, c.decision) {
            (
                Some(Decision::Escalate {
                    level,
                    crawfish,
                    notify,
                    confirm_twice,
                    timeout,
                }),
                Decision::Escalate {
                    crawfish: c2,
                    notify: n2,
                    confirm_twice: t2,
                    timeout: o2,
                    ..
                },
            ) => {
                let mut notify = notify;
                for n in n2 {
                    if !notify.contains(&n) {
                        notify.push(n);
                    }
                }
                Decision::Escalate {
                    level,
                    crawfish: crawfish.max(c2),
                    notify,
                    confirm_twice: confirm_twice || t2,
                    timeout: timeout.min(o2),
                }
            }
            (Some(d), _) => d,
            (None, d) => d,
        });
    }
    let decision = decision.unwrap_or(Decision::Reject);
    if decision == Decision::Reject {
        tier = None;
    }
    Verdict {
        decision,
        tier,
        group,
        rules,
        reasons,
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation

struct Checker {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    ids: HashMap<String, Position>,
}

impl Checker {
    fn pattern(&mut self, text: &Spanned<String>) -> Option<Pattern> {
        match Pattern::parse(&text.value) {
            Ok(p) => Some(p),
            Err(e) => {
                self.errors.push(Diagnostic::at(&text.referenced, e));
                None
            }
        }
    }

    fn patterns(&mut self, texts: &[Spanned<String>]) -> Vec<Pattern> {
        texts.iter().filter_map(|t| self.pattern(t)).collect()
    }

    fn rule_id(&mut self, id: &Spanned<String>) -> String {
        let text = id.value.as_str();
        let position = Position::of(&id.referenced);
        if text.is_empty()
            || text.contains('/')
            || text.chars().any(char::is_whitespace)
            || text.starts_with("default:")
            || text.starts_with("credential:")
            || text.starts_with("engine:")
            || text == "agents"
        {
            self.errors.push(
                Diagnostic::new(position, format!("invalid rule id `{text}`")).with_hint(
                    "ids are non-empty, without spaces or `/`, and not `agents`, `default:...`, `credential:...` or `engine:...`",
                ),
            );
        } else if let Some(first) = self.ids.get(text) {
            self.errors.push(Diagnostic::new(
                position,
                format!("duplicate rule id `{text}` (first used at {first})"),
            ));
        } else {
            self.ids.insert(text.to_owned(), position);
        }
        text.to_owned()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn compile(
    raw: RawPolicy,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Policy, PolicyError> {
    let mut ck = Checker {
        errors: Vec::new(),
        warnings: Vec::new(),
        ids: HashMap::new(),
    };

    for (key, close) in &raw.misspelt {
        ck.errors.push(
            Diagnostic::at(&key.referenced, format!("unknown section `{}`", key.value)).with_hint(
                format!("did you mean `{close}`? other top-level keys are action groups"),
            ),
        );
    }
    if let Some(version) = &raw.version
        && version.value != 1
    {
        ck.errors.push(
            Diagnostic::at(
                &version.referenced,
                format!("unsupported policy version `{}`", version.value),
            )
            .with_hint("this engine reads version 1"),
        );
    }

    let raw_defaults = raw.defaults.unwrap_or_default();
    let level = match raw_defaults.level {
        Some(l) if l.value.get() == 0 => {
            ck.errors.push(
                Diagnostic::at(&l.referenced, "the default escalation level must be 1 to 5")
                    .with_hint("level 0 would let unknown actions run unapproved"),
            );
            DEFAULT_LEVEL
        }
        Some(l) => l.value,
        None => DEFAULT_LEVEL,
    };
    let trust = trusted_patterns(&mut ck, &raw_defaults.trust_declared_tiers);
    let defaults = Defaults {
        unknown: raw_defaults.unknown,
        level,
        timeout: raw_defaults.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
        crawfish: raw_defaults.crawfish.map_or(Duration::ZERO, |d| d.0),
        notify: raw_defaults.notify.unwrap_or_default(),
        trust,
    };

    let vault_rekey = raw
        .vault_rekey
        .as_ref()
        .and_then(|r| rekey_schedule(&mut ck, r, &defaults));

    // Agents and agent groups.
    let mut agent_groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut acl: Option<HashMap<String, Vec<Pattern>>> = None;
    if raw.agents.is_some() || raw.agent_groups.is_some() {
        let mut map: HashMap<String, Vec<Pattern>> = HashMap::new();
        for (name, agent) in raw.agents.iter().flat_map(|m| m.0.iter()) {
            if !valid_name(&name.value) {
                ck.errors.push(Diagnostic::at(
                    &name.referenced,
                    format!("invalid agent name `{}`", name.value),
                ));
            }
            let patterns = ck.patterns(&agent.actions);
            map.entry(name.value.clone()).or_default().extend(patterns);
        }
        for (name, group) in raw.agent_groups.iter().flat_map(|m| m.0.iter()) {
            if !valid_name(&name.value) {
                ck.errors.push(Diagnostic::at(
                    &name.referenced,
                    format!("invalid agent group name `{}`", name.value),
                ));
            }
            if map.contains_key(&name.value) {
                ck.errors.push(Diagnostic::at(
                    &name.referenced,
                    format!("`{}` is both an agent and an agent group", name.value),
                ));
            }
            let patterns = ck.patterns(&group.actions);
            let mut members = Vec::new();
            for member in &group.members {
                members.push(member.value.clone());
                map.entry(member.value.clone())
                    .or_default()
                    .extend(patterns.iter().cloned());
            }
            agent_groups.insert(name.value.clone(), members);
        }
        acl = Some(map);
    }
    let resolve_agents =
        |ck: &mut Checker, list: &Option<Vec<Spanned<String>>>| -> Option<HashSet<String>> {
            let list = list.as_ref()?;
            let mut set = HashSet::new();
            for name in list {
                if let Some(members) = agent_groups.get(&name.value) {
                    set.extend(members.iter().cloned());
                } else if acl.as_ref().is_some_and(|a| !a.contains_key(&name.value)) {
                    ck.errors.push(
                        Diagnostic::at(
                            &name.referenced,
                            format!("unknown agent or agent group `{}`", name.value),
                        )
                        .with_hint("declare it under `agents:` or `agent_groups:`"),
                    );
                } else {
                    set.insert(name.value.clone());
                }
            }
            Some(set)
        };

    let sets = compile_sets(&mut ck, &raw.sets, read);
    let operator_values: HashSet<String> = sets
        .values()
        .flatten()
        .filter_map(|item| match item {
            Scalar::Str(text) => Some(normalise(text)),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Bool(_) | Scalar::Frac(_) => None,
        })
        .collect();
    let mut decimals: Vec<(Vec<String>, u32)> = Vec::new();
    for (key, places) in &raw.decimals.0 {
        let path: Option<Vec<String>> = key
            .value
            .strip_prefix("args.")
            .map(|p| p.split('.').map(str::to_owned).collect())
            .filter(|p: &Vec<String>| !p.iter().any(String::is_empty));
        match path {
            None => ck.errors.push(
                Diagnostic::at(
                    &key.referenced,
                    format!("invalid argument path `{}`", key.value),
                )
                .with_hint(
                    "`decimals` maps argument paths to decimal places, e.g. `args.amount: 2`",
                ),
            ),
            Some(_) if places.value > decimal::MAX_SCALE => ck.errors.push(Diagnostic::at(
                &places.referenced,
                format!(
                    "`{}` declares {} decimal places; at most {} are supported",
                    key.value,
                    places.value,
                    decimal::MAX_SCALE
                ),
            )),
            Some(path) => decimals.push((path, places.value)),
        }
    }
    let sensitive = ck.patterns(&raw.sensitive);

    // Totals.
    let mut totals = Vec::new();
    for (name, spec) in &raw.totals.0 {
        if !valid_name(&name.value) || name.value.contains('-') {
            ck.errors.push(Diagnostic::at(
                &name.referenced,
                format!(
                    "invalid total name `{}`: use letters, digits and `_`",
                    name.value
                ),
            ));
        }
        let patterns = ck.patterns(&spec.value.actions);
        if spec.value.actions.is_empty() {
            ck.errors.push(Diagnostic::at(
                &spec.referenced,
                format!("total `{}` lists no actions", name.value),
            ));
        }
        if spec.value.window.0.is_zero() {
            ck.errors.push(Diagnostic::at(
                &spec.referenced,
                format!("total `{}` has an empty window", name.value),
            ));
        }
        let kind = match (&spec.value.sum, spec.value.count) {
            (Some(arg), None | Some(false)) => {
                let path: Vec<String> = arg.value.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    ck.errors.push(Diagnostic::at(
                        &arg.referenced,
                        format!("invalid argument path `{}`", arg.value),
                    ));
                }
                Some((
                    TotalKind::Sum {
                        arg: arg.value.clone(),
                    },
                    path,
                ))
            }
            (None, Some(true)) => Some((TotalKind::Count, Vec::new())),
            _ => {
                ck.errors.push(Diagnostic::at(
                    &spec.referenced,
                    format!(
                        "total `{}` needs exactly one of `sum: ARG` or `count: true`",
                        name.value
                    ),
                ));
                None
            }
        };
        let by = spec.value.by.as_ref().and_then(|by| {
            let key = TotalKey::parse(&by.value);
            if key.is_none() {
                ck.errors.push(
                    Diagnostic::at(&by.referenced, format!("invalid total key `{}`", by.value))
                        .with_hint("`by` is `args.NAME`, `channel`, `agent` or `session`"),
                );
            }
            key
        });
        if let Some((kind, path)) = kind {
            let scale = decimals.iter().find(|(p, _)| *p == path).map(|(_, s)| *s);
            totals.push(TotalSpec {
                decimals: scale.filter(|_| matches!(kind, TotalKind::Sum { .. })),
                by,
                name: name.value.clone(),
                actions: spec.value.actions.iter().map(|a| a.value.clone()).collect(),
                kind,
                window: spec.value.window.0,
                patterns,
                path,
            });
        }
    }
    let total_names: Vec<(String, Option<u32>)> = totals
        .iter()
        .map(|t| (t.name.clone(), t.decimals))
        .collect();
    let mut compiler = Compiler {
        totals: &total_names,
        decimals: &decimals,
        sets: &sets,
        used_sets: HashSet::new(),
        next_derived: 0,
    };

    // Credentials.
    let mut credentials = HashMap::new();
    for (name, actions) in &raw.credentials.0 {
        if !valid_name(&name.value) {
            ck.errors.push(Diagnostic::at(
                &name.referenced,
                format!("invalid credential name `{}`", name.value),
            ));
        }
        let patterns = ck.patterns(actions);
        credentials.insert(name.value.clone(), patterns);
    }

    // Forbids.
    let mut forbids = Vec::new();
    let mut forbid_index = Index::default();
    let mut unconditional: Vec<(String, Vec<Pattern>)> = Vec::new();
    for forbid in &raw.forbid {
        let f = &forbid.value;
        let id = ck.rule_id(&f.id);
        if f.actions.is_empty() {
            ck.errors.push(Diagnostic::at(
                &forbid.referenced,
                format!("forbid `{id}` lists no actions"),
            ));
        }
        let patterns = ck.patterns(&f.actions);
        let agents = resolve_agents(&mut ck, &f.agents);
        let condition = f
            .when
            .as_ref()
            .and_then(|w| compiler.compile(w, &mut ck.errors, &mut ck.warnings));
        if f.when.is_none() && agents.is_none() {
            unconditional.push((id.clone(), patterns.clone()));
        }
        let at = forbids.len();
        for p in &patterns {
            forbid_index.insert(p, at);
        }
        forbids.push(Forbid {
            id,
            why: f.why.clone(),
            agents,
            condition,
        });
    }

    // Groups and their entries.
    let mut entries: Vec<Entry> = Vec::new();
    let mut entry_index = Index::default();
    let mut rules: Vec<CondRule> = Vec::new();
    let mut seen_patterns: HashMap<Pattern, String> = HashMap::new();
    for (group, actions) in &raw.groups {
        let name = group.value.as_str();
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) || !valid_name(name) {
            ck.errors.push(Diagnostic::at(
                &group.referenced,
                format!("invalid group name `{name}`"),
            ));
        }
        for (action, entry) in &actions.0 {
            let Some(pattern) = ck.pattern(action) else {
                continue;
            };
            let id = format!("{name}/{}", action.value);
            if let Some(first) = seen_patterns.get(&pattern) {
                ck.errors.push(Diagnostic::at(
                    &action.referenced,
                    format!("action `{}` is already set in `{first}`", action.value),
                ));
                continue;
            }
            seen_patterns.insert(pattern.clone(), id.clone());
            let settings = entry_settings(&entry.value, &defaults);
            let mut rule_ids = Vec::new();
            for rule in &entry.value.rules {
                if let Some(compiled) =
                    compile_rule(&mut ck, &mut compiler, rule, &settings, &resolve_agents)
                {
                    rule_ids.push(rules.len());
                    rules.push(compiled);
                }
            }
            for (forbid, patterns) in &unconditional {
                if patterns.iter().any(|p| p.covers(&pattern)) {
                    ck.warnings.push(
                        Diagnostic::at(
                            &action.referenced,
                            format!("`{id}` is shadowed by forbid `{forbid}`"),
                        )
                        .with_hint(
                            "the forbid always wins, so this entry and its rules never take effect",
                        ),
                    );
                }
            }
            let at = entries.len();
            entry_index.insert(&pattern, at);
            entries.push(Entry {
                id,
                why: entry.value.why.clone(),
                group: name.to_owned(),
                settings,
                rules: rule_ids,
            });
        }
    }

    for (name, spec) in &raw.sets.0 {
        if !compiler.used_sets.contains(&name.value) {
            ck.warnings.push(
                Diagnostic::at(
                    &name.referenced,
                    format!("set `{}` is never used", name.value),
                )
                .with_hint(format!(
                    "use it in a test as `${}` (`in`, `not_in`, `host_in`, ...), or remove it",
                    name.value
                )),
            );
        }
        let _ = spec;
    }
    if !ck.errors.is_empty() {
        ck.errors.sort_by_key(|d| d.position);
        return Err(PolicyError {
            diagnostics: ck.errors,
        });
    }
    ck.warnings.sort_by_key(|d| d.position);
    let uid = |text: &str| {
        EntityUid::from_str(text).map_err(|e| {
            PolicyError::one(Diagnostic::new(
                Position::default(),
                format!("internal error: {e}"),
            ))
        })
    };
    Ok(Policy {
        entries,
        entry_index,
        rules,
        forbids,
        forbid_index,
        acl,
        credentials,
        totals,
        vault_rekey,
        defaults,
        decimals,
        operator_values,
        sensitive,
        warnings: ck.warnings,
        uids: (
            uid("P3ak::Agent::\"agent\"")?,
            uid("P3ak::Action::\"call\"")?,
            uid("P3ak::Call::\"call\"")?,
        ),
        entities: Entities::empty(),
    })
}

/// `defaults.trust_declared_tiers`: action patterns of third-party plugins whose declared
/// tiers the operator trusts. A name without a dot is a kernel tool, which declares nothing,
/// so it is almost certainly a plugin name missing its `.*`.
fn trusted_patterns(ck: &mut Checker, texts: &[Spanned<String>]) -> Vec<Pattern> {
    let mut out = Vec::new();
    for text in texts {
        let Some(pattern) = ck.pattern(text) else {
            continue;
        };
        match &pattern {
            Pattern::Exact(name) if !name.contains('.') => {
                ck.errors.push(
                    Diagnostic::at(
                        &text.referenced,
                        format!("`{name}` in `trust_declared_tiers` is not a plugin action"),
                    )
                    .with_hint(format!(
                        "plugin actions are `PLUGIN.ACTION`; write `{name}.*` to trust every tier the plugin `{name}` declares"
                    )),
                );
                continue;
            }
            Pattern::Any => ck.warnings.push(
                Diagnostic::at(
                    &text.referenced,
                    "`trust_declared_tiers: [\"*\"]` trusts every plugin: any third-party plugin can declare its actions `observe` and run them without a human",
                )
                .with_hint("name the plugins you trust instead, e.g. `weather.*`"),
            ),
            Pattern::Exact(_) | Pattern::Prefix(_) => {}
        }
        out.push(pattern);
    }
    out
}

const REKEY_LEVEL: Level = Level::MAX;

fn rekey_schedule(
    ck: &mut Checker,
    raw: &Spanned<raw::RawRekey>,
    defaults: &Defaults,
) -> Option<RekeySchedule> {
    let r = &raw.value;
    let mut ok = true;
    let every = r.every.value.0;
    if every < MIN_REKEY_EVERY {
        ck.errors.push(
            Diagnostic::at(
                &r.every.referenced,
                format!(
                    "`vault_rekey.every` is {}s; it must be at least one day",
                    every.as_secs()
                ),
            )
            .with_hint("a rekey rewrites the whole vault; use `1d` or more, e.g. `90d`"),
        );
        ok = false;
    }
    let level = match &r.level {
        Some(l) if l.value.get() == 0 => {
            ck.errors.push(
                Diagnostic::at(&l.referenced, "the rekey level must be 1 to 5")
                    .with_hint("level 0 would let a rekey run unapproved"),
            );
            ok = false;
            REKEY_LEVEL
        }
        Some(l) => l.value,
        None => REKEY_LEVEL,
    };
    ok.then(|| RekeySchedule {
        every,
        level,
        timeout: r.timeout.map_or(defaults.timeout, |d| d.0),
        crawfish: r.crawfish.map_or(Duration::ZERO, |d| d.0),
    })
}

fn entry_settings(entry: &RawEntry, defaults: &Defaults) -> Settings {
    Settings {
        level: entry.level,
        tier: entry.tier.unwrap_or_else(|| Tier::for_level(entry.level)),
        crawfish: entry.crawfish.map_or(defaults.crawfish, |d| d.0),
        notify: entry
            .notify
            .clone()
            .unwrap_or_else(|| defaults.notify.clone()),
        confirm_twice: entry.confirm_twice.unwrap_or(false),
        timeout: entry.timeout.map_or(defaults.timeout, |d| d.0),
    }
}

type AgentResolver<'a> =
    dyn Fn(&mut Checker, &Option<Vec<Spanned<String>>>) -> Option<HashSet<String>> + 'a;

fn compile_rule(
    ck: &mut Checker,
    compiler: &mut Compiler<'_>,
    rule: &Spanned<raw::RawRule>,
    base: &Settings,
    resolve_agents: &AgentResolver<'_>,
) -> Option<CondRule> {
    let r = &rule.value;
    let id = ck.rule_id(&r.id);
    let agents = resolve_agents(ck, &r.agents);
    let has_settings = r.level.is_some()
        || r.tier.is_some()
        || r.crawfish.is_some()
        || r.notify.is_some()
        || r.confirm_twice.is_some()
        || r.timeout.is_some();
    let effect = match (r.reject, has_settings) {
        (true, false) => Effect::Reject,
        (false, true) => {
            let level = r.level.unwrap_or(base.level);
            Effect::Apply(Settings {
                level,
                tier: r
                    .tier
                    .unwrap_or_else(|| base.tier.max(Tier::for_level(level))),
                crawfish: r.crawfish.map_or(base.crawfish, |d| d.0),
                notify: r.notify.clone().unwrap_or_else(|| base.notify.clone()),
                confirm_twice: r.confirm_twice.unwrap_or(base.confirm_twice),
                timeout: r.timeout.map_or(base.timeout, |d| d.0),
            })
        }
        (true, true) => {
            ck.errors.push(Diagnostic::at(
                &rule.referenced,
                format!("rule `{id}` both rejects and sets a level or other settings"),
            ));
            return None;
        }
        (false, false) => {
            ck.errors.push(
                Diagnostic::at(&rule.referenced, format!("rule `{id}` has no effect"))
                    .with_hint("give it `reject: true` or a `level` (and optionally `crawfish`, `notify`, `confirm_twice`, `timeout`)"),
            );
            return None;
        }
    };
    if let Effect::Apply(settings) = &effect
        && settings.level <= base.level
        && r.tier.is_none_or(|t| t <= base.tier)
        && r.crawfish.is_none()
        && r.notify.is_none()
        && r.confirm_twice.is_none_or(|c| !c || base.confirm_twice)
        && r.timeout.is_none()
    {
        ck.warnings.push(
            Diagnostic::at(
                &rule.referenced,
                format!(
                    "rule `{id}` can never change a decision: its entry already asks for level {}",
                    base.level
                ),
            )
            .with_hint(
                "rules only make a decision stricter; give it a higher level, or `reject: true`",
            ),
        );
    }
    let condition = compiler.compile(&r.when, &mut ck.errors, &mut ck.warnings)?;
    Some(CondRule {
        id,
        why: r.why.clone(),
        agents,
        condition,
        effect,
    })
}

/// The longest set file the engine reads.
const MAX_SET_FILE: usize = 1 << 20;

/// `sets:`: each named set's items, inline or one per line of a file beside the policy
/// (blank lines and lines starting with `#` skipped).
fn compile_sets(
    ck: &mut Checker,
    raw: &raw::OrderedMap<Spanned<RawSet>>,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> HashMap<String, Vec<Scalar>> {
    let mut sets = HashMap::new();
    for (name, spec) in &raw.0 {
        if !valid_name(&name.value) {
            ck.errors.push(
                Diagnostic::at(
                    &name.referenced,
                    format!("invalid set name `{}`", name.value),
                )
                .with_hint("use letters, digits, `_` and `-`"),
            );
            continue;
        }
        let items = match &spec.value {
            RawSet::Items(items) => {
                if let Some(bad) = items.iter().find(|i| matches!(i, Scalar::Frac(_))) {
                    ck.errors.push(Diagnostic::at(
                        &spec.referenced,
                        format!(
                            "set `{}` holds a fraction ({bad:?}); sets hold text, whole numbers and booleans",
                            name.value
                        ),
                    ));
                    continue;
                }
                items.clone()
            }
            RawSet::File(file) => {
                let plain = !file.value.is_empty()
                    && !file.value.starts_with('/')
                    && !file
                        .value
                        .split(['/', '\\'])
                        .any(|part| part == ".." || part.is_empty());
                if !plain {
                    ck.errors.push(
                        Diagnostic::at(
                            &file.referenced,
                            format!(
                                "set file `{}` is not a plain name beside the policy",
                                file.value
                            ),
                        )
                        .with_hint(
                            "write a relative path inside the policy's directory, without `..`",
                        ),
                    );
                    continue;
                }
                match read(&file.value) {
                    Ok(text) if text.len() > MAX_SET_FILE => {
                        ck.errors.push(Diagnostic::at(
                            &file.referenced,
                            format!(
                                "set file `{}` is larger than {} bytes",
                                file.value, MAX_SET_FILE
                            ),
                        ));
                        continue;
                    }
                    Ok(text) => text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| Scalar::Str(l.to_owned()))
                        .collect(),
                    Err(e) => {
                        ck.errors.push(Diagnostic::at(
                            &file.referenced,
                            format!("cannot read set file `{}`: {e}", file.value),
                        ));
                        continue;
                    }
                }
            }
        };
        sets.insert(name.value.clone(), items);
    }
    sets
}

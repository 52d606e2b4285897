//! The kernel's metrics, in the Prometheus/OpenMetrics text format (`GET /metrics` on the API
//! server; `docs/operations.md` lists every family).
//!
//! Events are counted where they happen (the road, the turn, the API server) with atomic
//! counters and histograms that take a short lock, never across an await. What is a state
//! rather than an event (plugins up, restarts so far, vault file sizes) is read when the text
//! is encoded.
//!
//! Labels are low-cardinality on purpose: a step, a verdict, a level, a plugin, a provider, a
//! channel, a route template, a scope. Never an argument, a sender, a conversation or a
//! path with ids in it: each distinct label value is a series kept for the process's life.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::home::Home;
use crate::host::{Host, PluginState};

/// Longest label value kept; longer ones are cut (a guard, not a format).
const MAX_LABEL: usize = 64;

/// Seconds, from half a millisecond (a decision) to half an hour (an approval wait).
const SECONDS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// The approval levels as label values.
const LEVELS: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS)
}

/// A step of the road, timed by `p3ak_road_step_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The enforcer's decision.
    Decide,
    /// The audit commit before a tool runs (proposal, decision, execution intent).
    Commit,
    /// Waiting for the approval daemon's answer (undo window included).
    ApprovalWait,
    /// The plugin call.
    Tool,
    /// The whole call, from proposal to the text the model gets back.
    Total,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Self::Decide => "decide",
            Self::Commit => "commit",
            Self::ApprovalWait => "approval_wait",
            Self::Tool => "tool",
            Self::Total => "total",
        }
    }
}

/// The enforcer's verdict, counted by `p3ak_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Rejected.
    Reject,
    /// Escalated to a human.
    Escalate,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Reject => "reject",
            Self::Escalate => "escalate",
        }
    }
}

/// How an escalation ended, counted by `p3ak_approvals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Approved and out of its undo window: it ran.
    Released,
    /// The operator said no (or the kernel withdrew it).
    Refused,
    /// Nobody answered in time.
    Timeout,
    /// Pulled back in its undo window.
    PulledBack,
    /// Could not be staged, read back or matched, or the daemon went away.
    Failed,
}

impl ApprovalOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::PulledBack => "pulled_back",
            Self::Failed => "failed",
        }
    }

    /// The outcome of an escalation the daemon (or the kernel) refused.
    #[must_use]
    pub fn of_refusal(refused: crate::pending::Refused) -> Self {
        use crate::pending::Refused;
        use p3ak_approval::wire::Refusal;
        match refused {
            Refused::Daemon(Refusal::Denied | Refusal::Withdrawn) => Self::Refused,
            Refused::Daemon(Refusal::Expired) => Self::Timeout,
            Refused::Daemon(Refusal::PulledBack) => Self::PulledBack,
            Refused::Daemon(Refusal::Invalid | Refusal::Spool | Refusal::Unreadable)
            | Refused::Mismatch
            | Refused::DaemonStopped => Self::Failed,
        }
    }
}

/// How a turn ended, counted by `p3ak_turns_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// A reply (the step limit's notice included).
    Reply,
    /// `turn_timeout` ran out.
    Timeout,
    /// An error (no provider, the provider failed, the audit log could not be written).
    Error,
}

impl TurnOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    verdict: &'static str,
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    level: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TurnLabels {
    channel: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    vault: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The kernel's metrics: one per kernel ([`Kernel::metrics`](crate::Kernel::metrics)).
pub struct Metrics {
    registry: Registry,
    road_step: Histograms<StepLabels>,
    decisions: Family<DecisionLabels, Counter>,
    approvals: Family<ApprovalLabels, Counter>,
    search: Histogram,
    tokens: Family<TokenLabels, Counter>,
    turns: Family<TurnLabels, Counter>,
    inbound: Family<ChannelLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Histograms<RouteLabels>,
    rate_limited: Family<ScopeLabels, Counter>,
    sources: Arc<Sources>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, at zero; plugins and vaults appear once [`Metrics::watch_host`] and
    /// [`Metrics::watch_home`] are called.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("p3ak");
        let road_step =
            Histograms::<StepLabels>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "road_step",
            "Time a tool call spends in each step of the road (total: proposal to result)",
            Unit::Seconds,
            road_step.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "The enforcer's decisions by verdict and plugin",
            decisions.clone(),
        );
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register(
            "approvals",
            "Escalations that ended, by approval level and outcome",
            approvals.clone(),
        );
        let search = seconds_histogram();
        registry.register_with_unit(
            "search",
            "Duration of vault.search tool calls",
            Unit::Seconds,
            search.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "model_tokens",
            "Tokens the providers reported, by provider and direction",
            tokens.clone(),
        );
        let turns = Family::<TurnLabels, Counter>::default();
        registry.register("turns", "Agent turns by channel and outcome", turns.clone());
        let inbound = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "inbound",
            "Inbound messages admitted, by channel",
            inbound.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests by route template and status",
            http_requests.clone(),
        );
        let http_seconds =
            Histograms::<RouteLabels>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request",
            "API request duration by route template",
            Unit::Seconds,
            http_seconds.clone(),
        );
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "API requests refused by a rate limit, by scope",
            rate_limited.clone(),
        );
        let sources = Arc::new(Sources::default());
        registry.register_collector(Box::new(StateCollector {
            sources: Arc::clone(&sources),
        }));
        Self {
            registry,
            road_step,
            decisions,
            approvals,
            search,
            tokens,
            turns,
            inbound,
            http_requests,
            http_seconds,
            rate_limited,
            sources,
        }
    }

    /// Reports the plugins' states (`p3ak_plugin_up`, `p3ak_plugin_restarts_total`) from
    /// `host` at each encoding. The first host given stays.
    pub fn watch_host(&self, host: Arc<Host>) {
        let _ = self.sources.host.set(host);
    }

    /// Reports the sizes of the vault files under `home` (`p3ak_vault_bytes`,
    /// `p3ak_kernel_vault_bytes`) at each encoding. The first home given stays.
    pub fn watch_home(&self, home: &Home) {
        let _ = self.sources.home.set(home.root().to_owned());
    }

    /// Records how long a step of the road took.
    pub fn observe_step(&self, step: Step, elapsed: Duration) {
        self.road_step
            .get_or_create(&StepLabels { step: step.label() })
            .observe(elapsed.as_secs_f64());
    }

    /// Times a step until the returned guard is dropped (every way out of a function).
    #[must_use = "the step is timed until the guard is dropped"]
    pub fn time(&self, step: Step) -> StepTimer<'_> {
        StepTimer {
            metrics: self,
            step,
            started: Instant::now(),
        }
    }

    /// Counts a decision on an action of `plugin`.
    pub fn decision(&self, plugin: &str, verdict: Verdict) {
        self.decisions
            .get_or_create(&DecisionLabels {
                verdict: verdict.label(),
                plugin: label(plugin),
            })
            .inc();
    }

    /// Counts an escalation at `level` that ended with `outcome`.
    pub fn approval(&self, level: u8, outcome: ApprovalOutcome) {
        let level = LEVELS.get(usize::from(level)).copied().unwrap_or("other");
        self.approvals
            .get_or_create(&ApprovalLabels {
                level,
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Records how long a `vault.search` call took.
    pub fn search(&self, elapsed: Duration) {
        self.search.observe(elapsed.as_secs_f64());
    }

    /// Adds the tokens a provider reported for one inference.
    pub fn tokens(&self, provider: &str, usage: p3ak_proto::Usage) {
        let provider = label(provider);
        for (direction, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider: provider.clone(),
                    direction,
                })
                .inc_by(n);
        }
    }

    /// Counts a turn that ended.
    pub fn turn(&self, channel: &str, outcome: TurnOutcome) {
        self.turns
            .get_or_create(&TurnLabels {
                channel: label(channel),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts an inbound message admitted on `channel`.
    pub fn inbound(&self, channel: &str) {
        self.inbound
            .get_or_create(&ChannelLabels {
                channel: label(channel),
            })
            .inc();
    }

    /// Counts an API request and its duration. `route` is the route's template
    /// (`/v1/vaults/{vault}`), never the request's path: each value is a series.
    pub fn http_request(&self, route: &str, status: u16, elapsed: Duration) {
        let route = label(route);
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused by the rate limit of `scope` (`uid`, `token`, a token scope).
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited
            .get_or_create(&ScopeLabels {
                scope: label(scope),
            })
            .inc();
    }

    /// Every family in the OpenMetrics text format (ends with `# EOF`); serve it with the
    /// content type [`CONTENT_TYPE`].
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would leave the text cut short.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("the metrics could not be encoded whole");
        }
        text
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Times a step of the road until dropped ([`Metrics::time`]).
pub struct StepTimer<'a> {
    metrics: &'a Metrics,
    step: Step,
    started: Instant,
}

impl Drop for StepTimer<'_> {
    fn drop(&mut self) {
        self.metrics.observe_step(self.step, self.started.elapsed());
    }
}

/// A label value, cut to [`MAX_LABEL`] bytes.
fn label(value: &str) -> String {
    if value.len() <= MAX_LABEL {
        return value.to_owned();
    }
    let mut cut = MAX_LABEL;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    value.get(..cut).unwrap_or_default().to_owned()
}

/// What is read at encoding time.
#[derive(Default)]
struct Sources {
    host: OnceLock<Arc<Host>>,
    home: OnceLock<PathBuf>,
}

/// Encodes the states: plugins (from the host) and vault sizes (from the home's files).
struct StateCollector {
    sources: Arc<Sources>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = Family::<PluginLabels, Gauge>::default();
        let restarts = Family::<PluginLabels, Counter>::default();
        if let Some(host) = self.sources.host.get() {
            for plugin in host.status() {
                let labels = PluginLabels {
                    plugin: label(&plugin.name),
                };
                up.get_or_create(&labels)
                    .set(i64::from(plugin.state == PluginState::Running));
                restarts
                    .get_or_create(&labels)
                    .inc_by(u64::from(plugin.restarts));
            }
        }
        let described = encoder.encode_descriptor(
            "plugin_up",
            "1 while the plugin is connected and registered, else 0",
            None,
            up.metric_type(),
        )?;
        up.encode(described)?;
        let described = encoder.encode_descriptor(
            "plugin_restarts",
            "Times the plugin host restarted the plugin since the kernel started",
            None,
            restarts.metric_type(),
        )?;
        restarts.encode(described)?;

        let vaults = Family::<VaultLabels, Gauge>::default();
        let kernel_vault = Gauge::<i64>::default();
        if let Some(root) = self.sources.home.get() {
            let home = Home::new(root);
            for (name, bytes) in vault_sizes(&root.join("vaults")) {
                vaults
                    .get_or_create(&VaultLabels {
                        vault: label(&name),
                    })
                    .set(bytes);
            }
            if let Ok(meta) = std::fs::metadata(home.kernel_vault()) {
                kernel_vault.set(i64::try_from(meta.len()).unwrap_or(i64::MAX));
            }
        }
        let described = encoder.encode_descriptor(
            "vault",
            "Size of each vault file under vaults/",
            Some(&Unit::Bytes),
            vaults.metric_type(),
        )?;
        vaults.encode(described)?;
        let described = encoder.encode_descriptor(
            "kernel_vault",
            "Size of the kernel's vault (audit log, sessions, secrets)",
            Some(&Unit::Bytes),
            kernel_vault.metric_type(),
        )?;
        kernel_vault.encode(described)?;
        Ok(())
    }
}

/// `(name, bytes)` of each `*.vault` file in `dir` (at most 1000).
fn vault_sizes(dir: &std::path::Path) -> Vec<(String, i64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("vault") {
                return None;
            }
            let name = path.file_stem()?.to_str()?.to_owned();
            let meta = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((name, i64::try_from(meta.len()).unwrap_or(i64::MAX)))
        })
        .take(1000)
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One sample line: its name, its labels, its value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// Parses the text format strictly enough to catch a broken encoding: `# TYPE` lines into
    /// a map, every other non-comment line into a sample.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        assert!(text.ends_with("# EOF\n"), "no EOF marker: {text}");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap();
                    let labels = inner
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap();
                            let v = v.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
                            (k.to_owned(), v.to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name}"
            );
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn every_family_encodes_with_its_name_type_and_labels() {
        let m = Metrics::new();
        m.observe_step(Step::Decide, Duration::from_micros(300));
        m.observe_step(Step::Total, Duration::from_millis(20));
        m.decision("files", Verdict::Allow);
        m.decision("files", Verdict::Allow);
        m.decision("shell", Verdict::Reject);
        m.decision("files", Verdict::Escalate);
        m.approval(3, ApprovalOutcome::Released);
        m.approval(9, ApprovalOutcome::Failed);
        m.search(Duration::from_millis(7));
        m.tokens(
            "claude",
            p3ak_proto::Usage {
                input_tokens: 120,
                output_tokens: 30,
            },
        );
        m.turn("cli", TurnOutcome::Reply);
        m.inbound("telegram");
        m.http_request("/v1/search", 200, Duration::from_millis(4));
        m.rate_limited("token");

        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(dir.path().join("vaults")).unwrap();
        std::fs::create_dir_all(dir.path().join("audit")).unwrap();
        std::fs::write(dir.path().join("vaults/memory.vault"), vec![0u8; 1234]).unwrap();
        std::fs::write(dir.path().join("vaults/notes.txt"), "not a vault").unwrap();
        std::fs::write(home.kernel_vault(), vec![0u8; 99]).unwrap();
        m.watch_home(&home);

        let text = m.encode();
        let (types, samples) = parse(&text);
        for (name, kind) in [
            ("p3ak_road_step_seconds", "histogram"),
            ("p3ak_decisions", "counter"),
            ("p3ak_approvals", "counter"),
            ("p3ak_search_seconds", "histogram"),
            ("p3ak_model_tokens", "counter"),
            ("p3ak_turns", "counter"),
            ("p3ak_inbound", "counter"),
            ("p3ak_http_requests", "counter"),
            ("p3ak_http_request_seconds", "histogram"),
            ("p3ak_rate_limited", "counter"),
            ("p3ak_plugin_up", "gauge"),
            ("p3ak_plugin_restarts", "counter"),
            ("p3ak_vault_bytes", "gauge"),
            ("p3ak_kernel_vault_bytes", "gauge"),
        ] {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some(kind),
                "{name}:\n{text}"
            );
        }
        let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
        assert_eq!(
            v(
                "p3ak_decisions_total",
                &[("verdict", "allow"), ("plugin", "files")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v(
                "p3ak_decisions_total",
                &[("verdict", "reject"), ("plugin", "shell")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("p3ak_decisions_total", &[("verdict", "escalate")]),
            Some(1.0)
        );
        assert_eq!(
            v("p3ak_road_step_seconds_count", &[("step", "decide")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "p3ak_road_step_seconds_bucket",
                &[("step", "decide"), ("le", "0.0005")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "p3ak_road_step_seconds_bucket",
                &[("step", "total"), ("le", "0.01")]
            ),
            Some(0.0)
        );
        assert_eq!(
            v(
                "p3ak_approvals_total",
                &[("level", "3"), ("outcome", "released")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "p3ak_approvals_total",
                &[("level", "other"), ("outcome", "failed")]
            ),
            Some(1.0)
        );
        assert_eq!(v("p3ak_search_seconds_count", &[]), Some(1.0));
        assert_eq!(
            v(
                "p3ak_model_tokens_total",
                &[("provider", "claude"), ("direction", "input")]
            ),
            Some(120.0)
        );
        assert_eq!(
            v(
                "p3ak_model_tokens_total",
                &[("provider", "claude"), ("direction", "output")]
            ),
            Some(30.0)
        );
        assert_eq!(
            v(
                "p3ak_turns_total",
                &[("channel", "cli"), ("outcome", "reply")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("p3ak_inbound_total", &[("channel", "telegram")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "p3ak_http_requests_total",
                &[("route", "/v1/search"), ("status", "200")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "p3ak_http_request_seconds_count",
                &[("route", "/v1/search")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("p3ak_rate_limited_total", &[("scope", "token")]),
            Some(1.0)
        );
        assert_eq!(v("p3ak_vault_bytes", &[("vault", "memory")]), Some(1234.0));
        assert_eq!(v("p3ak_kernel_vault_bytes", &[]), Some(99.0));
        assert!(
            samples
                .iter()
                .all(|s| s.labels.get("vault").map(String::as_str) != Some("notes")),
            "only .vault files are vaults"
        );
    }

    #[test]
    fn a_label_value_is_cut_and_escaped_never_breaks_the_format() {
        let m = Metrics::new();
        let long = "é".repeat(100);
        m.inbound(&long);
        m.rate_limited("a\"b\\c\nd");
        let text = m.encode();
        let (_, samples) = parse(&text);
        let inbound = samples
            .iter()
            .find(|s| s.name == "p3ak_inbound_total")
            .unwrap();
        assert!(inbound.labels["channel"].len() <= MAX_LABEL);
        assert!(text.contains(r#"scope="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn a_step_timer_records_on_every_way_out() {
        let m = Metrics::new();
        let early = |fail: bool| -> Result<(), ()> {
            let _t = m.time(Step::Total);
            if fail {
                return Err(());
            }
            Ok(())
        };
        let _ = early(true);
        let _ = early(false);
        let (_, samples) = parse(&m.encode());
        assert_eq!(
            value(
                &samples,
                "p3ak_road_step_seconds_count",
                &[("step", "total")]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn refusals_map_to_the_outcomes_operators_read() {
        use crate::pending::Refused;
        use p3ak_approval::wire::Refusal;
        let of = ApprovalOutcome::of_refusal;
        assert_eq!(
            of(Refused::Daemon(Refusal::Denied)),
            ApprovalOutcome::Refused
        );
        assert_eq!(
            of(Refused::Daemon(Refusal::Expired)),
            ApprovalOutcome::Timeout
        );
        assert_eq!(
            of(Refused::Daemon(Refusal::PulledBack)),
            ApprovalOutcome::PulledBack
        );
        assert_eq!(of(Refused::DaemonStopped), ApprovalOutcome::Failed);
        assert_eq!(of(Refused::Mismatch), ApprovalOutcome::Failed);
    }
}

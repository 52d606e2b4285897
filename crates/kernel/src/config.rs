//! `config.toml`: runtime settings and the plugins to start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::KernelError;

/// First-party plugins `p3ak plugin run` knows.
pub const BUILTINS: &[&str] = &[
    "files",
    "http",
    "mail",
    "mcp",
    "shell",
    "skills",
    "vault",
    "scripted",
    "anthropic",
    "openai",
    "ollama",
    "telegram",
    "slack",
    "discord",
    "webhook",
    "calendar",
    "web",
];

/// The first-party model providers: their `credential` goes with each inference request,
/// not in `welcome`.
pub const PROVIDER_BUILTINS: &[&str] = &["anthropic", "openai", "ollama", "scripted"];

/// The first-party chat connectors: the kernel hands each its platform token (the plugin's
/// `credential`) in `welcome` and routes its people's messages to an agent.
pub const CONNECTOR_BUILTINS: &[&str] = &["telegram", "slack", "discord"];

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kernel settings.
    #[serde(default)]
    pub kernel: KernelSettings,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The approval daemon and its web console.
    #[serde(default)]
    pub hitl: HitlSettings,
    /// What chat connectors may bring in.
    #[serde(default)]
    pub connectors: ConnectorSettings,
    /// The REST API and MCP server.
    #[serde(default)]
    pub api: ApiSettings,
    /// How agents hand work to each other.
    #[serde(default)]
    pub agents: AgentSettings,
    /// Messages sent to an agent at set times (`[schedules.NAME]`).
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleConfig>,
}

/// `[agents]`: limits on agents handing work to each other (`agents.route`, `agents.ask`,
/// board meetings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// How long a chain of agents may grow: a route or an ask is refused when the new turn
    /// would be deeper (the person's turn is depth 0).
    pub max_depth: u32,
    /// How many agents one turn may route to or ask (a board meeting asks each member once).
    pub max_fanout: u32,
    /// How long an asked agent may take before the asker hears it timed out.
    #[serde(with = "humantime_serde_compat")]
    pub ask_timeout: Duration,
    /// How long each member of a board meeting may take.
    #[serde(with = "humantime_serde_compat")]
    pub board_timeout: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_fanout: 8,
            ask_timeout: Duration::from_secs(120),
            board_timeout: Duration::from_secs(90),
        }
    }
}

/// `[schedules.NAME]`: a message sent to an agent at set times, as if it came in on channel
/// `schedule:NAME` (see `crate::schedule`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A 5-field cron expression in the kernel's local time zone (`0 7 * * *`).
    #[serde(default)]
    pub cron: Option<String>,
    /// Or a heartbeat: every this long (`30m`; at least a minute).
    #[serde(default)]
    pub every: Option<String>,
    /// The agent (default: `[kernel] default_agent`).
    #[serde(default)]
    pub agent: Option<String>,
    /// What is sent (with `crest`: the note for the phase, may be empty).
    #[serde(default)]
    pub message: String,
    /// Instead of a message to an agent, run this CREST goal's next phase (docs/crest.md).
    #[serde(default)]
    pub crest: Option<String>,
    /// After downtime: one catch-up run at start, or none.
    #[serde(default)]
    pub missed: Missed,
    /// How old a missed run may be and still be caught up.
    #[serde(default = "twelve_hours", with = "humantime_serde_compat")]
    pub catch_up: Duration,
    /// Set to false to keep the entry without running it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also send the reply to this paired identity (`telegram:7`).
    #[serde(default)]
    pub deliver: Option<String>,
}

/// What a schedule does about runs that fell due while the kernel was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// One catch-up run at start for the latest missed time, if within `catch_up`.
    #[default]
    Once,
    /// None: the next run is the next time after the start.
    Skip,
}

fn twelve_hours() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl ScheduleConfig {
    /// The agent it messages.
    #[must_use]
    pub fn agent_or<'a>(&'a self, default_agent: &'a str) -> &'a str {
        self.agent.as_deref().unwrap_or(default_agent)
    }

    /// Whom it runs, as `p3ak schedules` and its audit entries name it: the agent, or
    /// `crest:GOAL` for a goal's phase (which the goal's own agent runs).
    #[must_use]
    pub fn target(&self, default_agent: &str) -> String {
        match &self.crest {
            Some(goal) => format!("crest:{goal}"),
            None => self.agent_or(default_agent).to_owned(),
        }
    }

    /// Checks one entry; the error names `schedules.NAME.KEY`.
    fn check(&self, name: &str) -> Result<(), String> {
        if !valid_plugin_name(name) {
            return Err(format!(
                "schedule name `{name}`: use letters, digits, `_` and `-` (no `__`)"
            ));
        }
        crate::schedule::Timing::parse(name, self)?;
        match &self.crest {
            None if self.message.trim().is_empty() => {
                return Err(format!("schedules.{name}.message must not be empty"));
            }
            None => {}
            Some(goal) => {
                crate::crest::check_id(goal).map_err(|e| format!("schedules.{name}.crest: {e}"))?;
                if self.agent.is_some() {
                    return Err(format!(
                        "schedules.{name}: a `crest` schedule runs the goal's own agent; remove \
                         `agent`"
                    ));
                }
            }
        }
        if self.catch_up.is_zero() {
            return Err(format!("schedules.{name}.catch_up must be more than zero"));
        }
        if let Some(agent) = &self.agent
            && !valid_plugin_name(agent)
        {
            return Err(format!(
                "schedules.{name}.agent `{agent}` is not an agent name"
            ));
        }
        if let Some(deliver) = &self.deliver {
            let ok = deliver
                .split_once(':')
                .is_some_and(|(c, id)| valid_plugin_name(c) && !id.is_empty());
            if !ok || !crate::session::valid_conversation(deliver) {
                return Err(format!(
                    "schedules.{name}.deliver `{deliver}` is not a paired identity like `telegram:7`"
                ));
            }
        }
        Ok(())
    }
}

/// Plugin names the kernel keeps for the tools built into it.
pub const KERNEL_TOOLS: &[&str] = &["agents", "bus"];

/// Scopes an API token (or a Unix-socket peer) may hold.
pub const API_SCOPES: &[&str] = &[
    "status",
    "vault:read",
    "vault:write",
    "chat",
    "audit:read",
    "tokens",
];

/// Rate-limit quotas beside the scopes: callers that fail to authenticate (per peer) and the
/// HTTP requests of `/mcp` (per caller).
pub const API_QUOTAS: &[&str] = &["unauthenticated", "mcp"];

/// One scope's rate limit: a token bucket per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRate {
    /// Requests per minute, on average.
    pub per_minute: u32,
    /// Requests at once beyond the average.
    pub burst: u32,
}

/// `[api]`: the REST API and MCP server (`p3ak-server`), inside the kernel's process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Serve the API on `run/api.sock`, where the peer's uid identifies the caller: an
    /// operator's uid has every scope, others need a token.
    pub enabled: bool,
    /// Also listen on TCP (`127.0.0.1:8420`), bearer tokens only; `"off"` for none.
    pub listen: String,
    /// Allow a `listen` address beyond loopback; it then needs `tls_cert` and `tls_key`.
    pub public: bool,
    /// PEM certificate chain for TLS on `listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on `listen`.
    pub tls_key: Option<PathBuf>,
    /// The largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// The largest file `POST /v1/documents/ingest` takes (the plugin frame also caps it).
    pub max_upload_bytes: usize,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request head.
    #[serde(with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// How long a request may take, streamed chats excepted (they end with the turn).
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Calls one caller may have waiting for a human's approval at once; beyond it the
    /// caller's vault calls are refused (429) before the road until a person answers some.
    pub max_waiting_approvals: usize,
    /// Rate limits by scope (and `unauthenticated`, `mcp`); one not named keeps its default.
    pub rates: BTreeMap<String, ApiRate>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "off".to_owned(),
            public: false,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 16 << 20,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_waiting_approvals: 16,
            rates: BTreeMap::new(),
        }
    }
}

/// Why `api.listen` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Not an address.
    #[error("api.listen `{0}` is not an address like `127.0.0.1:8420` (or \"off\")")]
    NotAnAddress(String),
    /// Beyond this machine without `public`.
    #[error(
        "api.listen `{0}` is not a loopback address; set api.public = true (with TLS) to serve the API beyond this machine"
    )]
    NotLoopback(std::net::SocketAddr),
    /// Beyond this machine without TLS.
    #[error(
        "api.listen `{0}` is public: set api.tls_cert and api.tls_key (bearer tokens must not cross a network in clear)"
    )]
    NoTls(std::net::SocketAddr),
}

impl ApiSettings {
    /// The TCP address to listen on, if any.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ListenError> {
        if self.listen == "off" {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self
            .listen
            .parse()
            .map_err(|_| ListenError::NotAnAddress(self.listen.clone()))?;
        if !addr.ip().is_loopback() {
            if !self.public {
                return Err(ListenError::NotLoopback(addr));
            }
            if self.tls_cert.is_none() || self.tls_key.is_none() {
                return Err(ListenError::NoTls(addr));
            }
        }
        Ok(Some(addr))
    }

    /// The rate limit for `scope`: the configured one, or the default.
    #[must_use]
    pub fn rate(&self, scope: &str) -> ApiRate {
        if let Some(rate) = self.rates.get(scope) {
            return *rate;
        }
        let (per_minute, burst) = match scope {
            "vault:write" => (120, 20),
            "chat" => (30, 5),
            "audit:read" => (120, 30),
            "tokens" => (30, 10),
            // A caller that fails to authenticate.
            "unauthenticated" => (30, 10),
            // `/mcp`'s HTTP requests, whatever they carry (each tool call also counts
            // against its tool's scope).
            "mcp" => (600, 60),
            _ => (600, 60),
        };
        ApiRate { per_minute, burst }
    }

    fn check(&self) -> Result<(), String> {
        self.listen_addr().map_err(|e| e.to_string())?;
        if (self.tls_cert.is_some()) != (self.tls_key.is_some()) {
            return Err("api.tls_cert and api.tls_key go together".to_owned());
        }
        for (scope, rate) in &self.rates {
            if !API_SCOPES.contains(&scope.as_str()) && !API_QUOTAS.contains(&scope.as_str()) {
                return Err(format!(
                    "api.rates: unknown scope `{scope}` (known: {}, unauthenticated, mcp)",
                    API_SCOPES.join(", ")
                ));
            }
            if rate.per_minute == 0 || rate.burst == 0 {
                return Err(format!(
                    "api.rates.\"{scope}\": per_minute and burst must be more than zero"
                ));
            }
        }
        for (name, value, least) in [
            ("max_body_bytes", self.max_body_bytes, 1024),
            ("max_upload_bytes", self.max_upload_bytes, 1024),
            ("max_header_bytes", self.max_header_bytes, 1024),
            ("max_connections", self.max_connections, 1),
            ("max_waiting_approvals", self.max_waiting_approvals, 1),
        ] {
            if value < least {
                return Err(format!("api.{name} must be at least {least}"));
            }
        }
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("api.{name} must be more than zero"));
            }
        }
        Ok(())
    }
}

/// `[connectors]`: limits on what people send through the chat connectors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorSettings {
    /// Messages one sender may send per minute (on average).
    pub per_minute: u32,
    /// Messages one sender may send at once, beyond the average.
    pub burst: u32,
    /// The longest message text taken in, in bytes; longer ones are refused.
    pub max_message_bytes: usize,
    /// The most attachment bytes one message may carry (decoded).
    pub max_attachment_bytes: usize,
    /// How long a pairing code is valid.
    #[serde(with = "humantime_serde_compat")]
    pub pairing_ttl: Duration,
    /// The shortest time between two edits of a reply being streamed into a chat.
    #[serde(with = "humantime_serde_compat")]
    pub edit_interval: Duration,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            per_minute: 20,
            burst: 5,
            max_message_bytes: 16 * 1024,
            max_attachment_bytes: 8 << 20,
            pairing_ttl: Duration::from_secs(10 * 60),
            edit_interval: Duration::from_millis(800),
        }
    }
}

/// `[hitl]`: the approval daemon and its web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HitlSettings {
    /// Where the web console listens (`127.0.0.1:7325`), or `"off"`.
    pub console: String,
    /// The address the browser uses (default `http://localhost:PORT`: WebAuthn needs a host
    /// name, and `localhost` is a secure context without TLS).
    pub console_origin: Option<String>,
    /// Allow a console address other than loopback. Off: approvals are for this machine.
    pub console_public: bool,
    /// As root: the approval daemon's uid (and gid), and the kernel's own: `p3ak up` runs
    /// the kernel under it, with no privilege, and it stages escalations as that user.
    pub ids: (u32, u32),
    /// More uids (beside the one that runs `p3ak up`) that may approve on the daemon's
    /// operator socket and talk to the kernel's control socket.
    pub operators: Vec<u32>,
}

impl Default for HitlSettings {
    fn default() -> Self {
        Self {
            console: "127.0.0.1:7325".to_owned(),
            console_origin: None,
            console_public: false,
            ids: (60990, 60991),
            operators: Vec::new(),
        }
    }
}

/// Why `hitl.console` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleAddrError {
    /// Not an address.
    #[error("hitl.console `{console}` is not an address like `127.0.0.1:7325` (or \"off\")")]
    NotAnAddress {
        /// What it says.
        console: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// Beyond this machine without `console_public`.
    #[error(
        "hitl.console `{0}` is not a loopback address; set hitl.console_public = true to serve approvals beyond this machine"
    )]
    NotLoopback(std::net::SocketAddr),
}

impl HitlSettings {
    /// The console's address; `None` when it is off.
    pub fn console_addr(&self) -> Result<Option<std::net::SocketAddr>, ConsoleAddrError> {
        if self.console == "off" {
            return Ok(None);
        }
        let addr: std::net::SocketAddr =
            self.console
                .parse()
                .map_err(|source| ConsoleAddrError::NotAnAddress {
                    console: self.console.clone(),
                    source,
                })?;
        if !addr.ip().is_loopback() && !self.console_public {
            return Err(ConsoleAddrError::NotLoopback(addr));
        }
        Ok(Some(addr))
    }
}

/// `[kernel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSettings {
    /// The agent a connector gets when it names none.
    pub default_agent: String,
    /// Largest frame a plugin may send.
    pub max_frame: usize,
    /// How often plugins are pinged.
    #[serde(with = "humantime_serde_compat")]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered.
    #[serde(with = "humantime_serde_compat")]
    pub ping_timeout: Duration,
    /// Model calls per turn.
    pub max_steps: u32,
    /// Longest a turn may take.
    #[serde(with = "humantime_serde_compat")]
    pub turn_timeout: Duration,
    /// Longest a tool call may take.
    #[serde(with = "humantime_serde_compat")]
    pub tool_timeout: Duration,
    /// Longest one model call may take.
    #[serde(with = "humantime_serde_compat")]
    pub inference_timeout: Duration,
    /// Restarts within `restart_window` before a plugin is given up.
    pub restart_limit: u32,
    /// The window `restart_limit` counts in.
    #[serde(with = "humantime_serde_compat")]
    pub restart_window: Duration,
    /// How long a started plugin has to connect, say hello and register.
    #[serde(with = "humantime_serde_compat")]
    pub start_timeout: Duration,
    /// `"enforce"` (default): plugins start only inside the full sandbox (own uid, Landlock,
    /// seccomp, limits). `"degraded"`: on a host that lacks a layer, start them with what
    /// there is, and say what is missing.
    pub sandbox: p3ak_sandbox::Mode,
    /// The uids (and gids) plugins get, first and last; nothing in `/etc/passwd` is needed.
    pub plugin_ids: (u32, u32),
    /// Each plugin's `[plugins.NAME.sandbox]`, copied here by [`Config::parse`] so that the
    /// plugin host has them.
    #[serde(skip)]
    pub plugin_sandbox: BTreeMap<String, PluginSandbox>,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            default_agent: "assistant".to_owned(),
            max_frame: p3ak_proto::DEFAULT_MAX_FRAME,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            max_steps: 8,
            turn_timeout: Duration::from_secs(30 * 60),
            tool_timeout: Duration::from_secs(120),
            inference_timeout: Duration::from_secs(300),
            restart_limit: 5,
            restart_window: Duration::from_secs(300),
            start_timeout: Duration::from_secs(10),
            sandbox: p3ak_sandbox::Mode::Enforce,
            plugin_ids: (61000, 61999),
            plugin_sandbox: BTreeMap::new(),
        }
    }
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A first-party plugin, run as `p3ak plugin run BUILTIN`.
    #[serde(default)]
    pub builtin: Option<String>,
    /// A third-party executable.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Settings handed to the plugin in `welcome`.
    #[serde(default = "empty_table")]
    pub config: toml::Table,
    /// Set to false to keep the entry without starting it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The secret (`p3ak secret set NAME`) the plugin logs in with. For providers: sent as the
    /// API key with every inference request; for connectors: the platform token, handed over
    /// in `welcome`; for tools (mail, calendar, web search): their password or API key, handed
    /// over in `welcome` — and, if the secret is bound to hosts, only when every URL in
    /// `config` is within them. Never part of `config`.
    #[serde(default)]
    pub credential: Option<String>,
    /// For connectors: the agent their conversations go to (default: `[kernel] default_agent`).
    #[serde(default)]
    pub agent: Option<String>,
    /// How it is sandboxed, beyond what its kind implies.
    #[serde(default)]
    pub sandbox: PluginSandbox,
    /// Whether it relays approvals to a chat (it gets a key for the approval daemon's sealed
    /// messages). Always so for `builtin = "telegram" | "slack" | "discord"`.
    #[serde(default)]
    pub approvals: bool,
}

/// `[plugins.NAME.sandbox]`: what a plugin may reach. First-party plugins need none of it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSandbox {
    /// Its seccomp class: `tool`, `provider`, `network`, `shell` or `script`. Default: by
    /// builtin; `script` for a `path` plugin.
    pub class: Option<p3ak_sandbox::Class>,
    /// Whether it keeps the host's network. Default: `http` and the model providers that
    /// call a service do; everything else gets an empty network namespace.
    pub network: Option<bool>,
    /// Share the Unix user of this identity instead of having its own (`files` and `shell`
    /// share `workspaces`: both work in the agents' workspaces).
    pub user: Option<String>,
    /// More files and trees it may read.
    pub read: Vec<PathBuf>,
    /// More files and trees it may read and execute.
    pub exec: Vec<PathBuf>,
    /// More trees it may write (made its own: chowned to its user).
    pub write: Vec<PathBuf>,
    /// Environment variables passed through from the kernel's environment.
    pub env: Vec<String>,
    /// Address space, MiB (default 4096).
    pub memory_mib: Option<u64>,
    /// Open files (default 256).
    pub open_files: Option<u64>,
    /// Processes and threads of its user (default 64; 256 for `shell`).
    pub processes: Option<u64>,
    /// CPU seconds over its life (default 3600).
    pub cpu_seconds: Option<u64>,
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}

fn yes() -> bool {
    true
}

/// How to start a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `p3ak plugin run NAME`.
    Builtin(String),
    /// An executable.
    Path(PathBuf),
}

impl PluginConfig {
    /// How to start it.
    #[must_use]
    pub fn launch(&self) -> Option<Launch> {
        match (&self.builtin, &self.path) {
            (Some(name), None) => Some(Launch::Builtin(name.clone())),
            (None, Some(path)) => Some(Launch::Path(path.clone())),
            _ => None,
        }
    }

    /// Whether it is a first-party model provider.
    #[must_use]
    pub fn is_provider(&self) -> bool {
        self.builtin
            .as_deref()
            .is_some_and(|b| PROVIDER_BUILTINS.contains(&b))
    }

    /// Whether it is a chat connector (a first-party one: third-party connectors register as
    /// such, but get no token and no agent binding from here).
    #[must_use]
    pub fn is_connector(&self) -> bool {
        self.builtin
            .as_deref()
            .is_some_and(|b| CONNECTOR_BUILTINS.contains(&b))
    }
}

impl Config {
    /// Reads and checks `config.toml`.
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let text = std::fs::read_to_string(path)
            .map_err(KernelError::io(format!("cannot read `{}`", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a config file; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KernelError> {
        let error = |message: String| KernelError::Config {
            path: path.to_owned(),
            message,
        };
        let mut config: Config =
            toml::from_str(text).map_err(|e| error(one_line(&e.to_string())))?;
        for (name, plugin) in &config.plugins {
            if !valid_plugin_name(name) {
                return Err(error(format!(
                    "plugin name `{name}`: use letters, digits, `_` and `-` (no `__`)"
                )));
            }
            if KERNEL_TOOLS.contains(&name.as_str()) {
                return Err(error(format!(
                    "plugin name `{name}` is the kernel's own tool: choose another name"
                )));
            }
            match plugin.launch() {
                None => {
                    return Err(error(format!(
                        "plugin `{name}`: set exactly one of `builtin` and `path`"
                    )));
                }
                Some(Launch::Builtin(builtin)) if !BUILTINS.contains(&builtin.as_str()) => {
                    return Err(error(format!(
                        "plugin `{name}`: unknown builtin `{builtin}` (known: {})",
                        BUILTINS.join(", ")
                    )));
                }
                Some(Launch::Path(p)) if !p.is_absolute() => {
                    return Err(error(format!(
                        "plugin `{name}`: path `{}` must be absolute",
                        p.display()
                    )));
                }
                Some(_) => {}
            }
            if plugin.agent.is_some() && plugin.builtin.is_some() && !plugin.is_connector() {
                return Err(error(format!(
                    "plugin `{name}`: `agent` is for connectors ({}, or a third party's)",
                    CONNECTOR_BUILTINS.join(", ")
                )));
            }
            let sandbox = &plugin.sandbox;
            for (what, paths) in [
                ("read", &sandbox.read),
                ("exec", &sandbox.exec),
                ("write", &sandbox.write),
            ] {
                if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
                    return Err(error(format!(
                        "plugin `{name}`: sandbox.{what} path `{}` must be absolute",
                        p.display()
                    )));
                }
            }
            if let Some(user) = &sandbox.user
                && !valid_plugin_name(user)
            {
                return Err(error(format!(
                    "plugin `{name}`: sandbox.user `{user}`: use letters, digits, `_` and `-`"
                )));
            }
            for (what, value) in [
                ("memory_mib", sandbox.memory_mib),
                ("open_files", sandbox.open_files),
                ("processes", sandbox.processes),
                ("cpu_seconds", sandbox.cpu_seconds),
            ] {
                if value == Some(0) {
                    return Err(error(format!(
                        "plugin `{name}`: sandbox.{what} must be more than zero"
                    )));
                }
            }
            if let Some(secret) = &plugin.credential
                && !crate::broker::valid_secret_name(secret)
            {
                return Err(error(format!(
                    "plugin `{name}`: credential `{secret}` is not a secret name \
                     (letters, digits, `_` and `-`)"
                )));
            }
        }
        let a = &config.agents;
        if !(1..=8).contains(&a.max_depth) {
            return Err(error("agents.max_depth must be between 1 and 8".to_owned()));
        }
        if !(1..=32).contains(&a.max_fanout) {
            return Err(error(
                "agents.max_fanout must be between 1 and 32".to_owned(),
            ));
        }
        if a.ask_timeout.is_zero() || a.board_timeout.is_zero() {
            return Err(error(
                "agents.ask_timeout and agents.board_timeout must be more than zero".to_owned(),
            ));
        }
        let k = &config.kernel;
        if k.max_frame < 1024 || k.max_frame > 64 << 20 {
            return Err(error(
                "kernel.max_frame must be between 1024 and 67108864".to_owned(),
            ));
        }
        let (first, last) = k.plugin_ids;
        if first < 1000 || last < first {
            return Err(error(format!(
                "kernel.plugin_ids [{first}, {last}] must be a range of ids from 1000 up"
            )));
        }
        config
            .hitl
            .console_addr()
            .map_err(|e| error(e.to_string()))?;
        config.api.check().map_err(error)?;
        for (name, schedule) in &config.schedules {
            schedule.check(name).map_err(error)?;
        }
        let (daemon_id, writer_id) = config.hitl.ids;
        if daemon_id < 1000 || writer_id < 1000 || daemon_id == writer_id {
            return Err(error(format!(
                "hitl.ids [{daemon_id}, {writer_id}] must be two different ids from 1000 up"
            )));
        }
        if (first..=last).contains(&daemon_id) || (first..=last).contains(&writer_id) {
            return Err(error(format!(
                "hitl.ids [{daemon_id}, {writer_id}] must lie outside kernel.plugin_ids [{first}, {last}]"
            )));
        }
        for uid in &config.hitl.operators {
            if *uid == daemon_id || *uid == writer_id || (first..=last).contains(uid) {
                return Err(error(format!(
                    "hitl.operators: uid {uid} is the daemon's, the kernel's or a plugin's; an \
                     operator is a person's account"
                )));
            }
        }
        if k.max_steps == 0 {
            return Err(error("kernel.max_steps must be at least 1".to_owned()));
        }
        for (name, d) in [
            ("ping_interval", k.ping_interval),
            ("ping_timeout", k.ping_timeout),
            ("turn_timeout", k.turn_timeout),
            ("tool_timeout", k.tool_timeout),
            ("inference_timeout", k.inference_timeout),
            ("start_timeout", k.start_timeout),
        ] {
            if d.is_zero() {
                return Err(error(format!("kernel.{name} must be more than zero")));
            }
        }
        config.kernel.plugin_sandbox = config
            .plugins
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.sandbox.clone()))
            .collect();
        Ok(config)
    }
}

/// Plugin names: what the policy prefixes actions with.
#[must_use]
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// TOML errors span several lines with a caret diagram; keep the message line.
pub(crate) fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = lines.first().copied().unwrap_or_default().to_owned();
    match lines.get(1..).and_then(<[&str]>::last) {
        Some(last) if *last != first => format!("{first}: {last}"),
        _ => first,
    }
}

/// Durations as `"10s"`, `"5m"` (humantime) or whole seconds.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map_err(|e| serde::de::Error::custom(format!("`{t}`: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses() {
        let config = Config::parse(crate::home::DEFAULT_CONFIG, Path::new("config.toml")).unwrap();
        assert!(config.plugins.contains_key("files"));
        assert_eq!(config.kernel.max_steps, 8);
        assert_eq!(
            config.hitl.console_addr().unwrap(),
            Some("127.0.0.1:7325".parse().unwrap())
        );
        let public = Config::parse(
            "[hitl]\nconsole = \"0.0.0.0:7325\"\nconsole_public = true\n",
            Path::new("config.toml"),
        )
        .unwrap();
        assert!(public.hitl.console_addr().unwrap().is_some());
        let off = Config::parse("[hitl]\nconsole = \"off\"\n", Path::new("c")).unwrap();
        assert_eq!(off.hitl.console_addr().unwrap(), None);
    }

    #[test]
    fn bad_files_give_one_line_errors() {
        for (text, expect) in [
            ("[kernel]\nmax_steps = 0\n", "max_steps"),
            ("[plugins.x]\n", "exactly one"),
            ("[plugins.x]\nbuiltin = \"nope\"\n", "unknown builtin"),
            ("[plugins.x]\npath = \"rel/p\"\n", "absolute"),
            ("[plugins.\"a b\"]\nbuiltin = \"files\"\n", "plugin name"),
            ("[kernel]\nping_interval = \"soon\"\n", "soon"),
            ("[kernel]\ntypo = 1\n", "typo"),
            ("[hitl]\nconsole = \"0.0.0.0:7325\"\n", "console_public"),
            ("[hitl]\nconsole = \"localhost\"\n", "not an address"),
            (
                "[hitl]\nids = [61005, 61006]\n",
                "outside kernel.plugin_ids",
            ),
            ("[hitl]\nids = [60990, 60990]\n", "two different ids"),
            ("[hitl]\noperators = [60991]\n", "a person's account"),
            ("[hitl]\noperators = [61002]\n", "a person's account"),
            ("[hitl]\nconsol = \"off\"\n", "consol"),
            (
                "[kernel]\nsandbox = \"off\"\n",
                "expected `enforce` or `degraded`",
            ),
            ("[kernel]\nplugin_ids = [10, 20]\n", "plugin_ids"),
            (
                "[plugins.x]\nbuiltin = \"files\"\nsandbox = { read = [\"rel\"] }\n",
                "absolute",
            ),
            (
                "[plugins.x]\nbuiltin = \"files\"\nsandbox = { class = \"root\" }\n",
                "unknown variant `root`",
            ),
            ("not toml", ""),
        ] {
            let error = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expect), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}

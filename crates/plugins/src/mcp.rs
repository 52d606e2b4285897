//! `mcp`: a bridge to one Model Context Protocol server, its tools offered as actions.
//!
//! One plugin instance per MCP server; the instance's name is the server's name. A `.`
//! separates plugin and action and may not appear inside an action name, so the MCP tool
//! `echo` of the server configured as `[plugins.everything]` is the action
//! `everything.echo` (what the issue calls `mcp.<server>.<tool>` is spelled
//! `<server>.<tool>`). Because each server is its own plugin, the kernel runs it under its own
//! uid, sandbox and policy rules, and a stdio server runs as this bridge's child inside that
//! sandbox.
//!
//! Config (exactly one of `command` and `url`):
//! - `command = ["node", "/path/server-everything/dist/index.js", "stdio"]`: a stdio server,
//!   started as a child (program and arguments; the program is looked up on `PATH`);
//! - `url = "http://127.0.0.1:3001/mcp"`: a streamable HTTP server (`http` or `https`); the
//!   plugin's credential (`credential = "SECRET"`), when set, is sent as a bearer token.
//!   Redirects are not followed and proxies from the environment are not used;
//! - `timeout_secs` (start-up and each call, default 60, at most 600), `max_output` (bytes of
//!   a result's text kept, default 256 KiB, at most 16 MiB; also under half the frame limit).
//!
//! At start the bridge connects, says `initialize`, and reads `tools/list` (following its
//! cursors) once: a server's later changes are picked up when the plugin restarts, and
//! `notifications/tools/list_changed` is ignored. Each tool becomes an action:
//! - its name with every character other than ASCII letters, digits, `_` and `-` replaced by
//!   `_` (and `__` squeezed to `_`, at most [`MAX_NAME`] bytes); the bridge keeps the map back
//!   to the MCP name. Two tools that come out the same are both left out (said on standard
//!   error), as are tools whose schema the kernel would refuse, and tools past
//!   [`MAX_TOOLS`] or past what one `register` frame holds;
//! - its description (its title first when it has one), cut at [`MAX_DESCRIPTION`] bytes;
//! - its `inputSchema` as the parameters (a `$schema` draft the kernel's validator does not
//!   know is dropped; a schema without `"type": "object"` gets it);
//! - tier `act`, or `commit` when the server annotates it `destructiveHint: true`. A
//!   `readOnlyHint` never lowers the tier (a server's hints are not trusted): the description
//!   says `[server hints: read-only]` for the operator who writes the policy.
//!
//! `invoke` is a `tools/call`. The output is `{text, truncated}` (plus `structured` when the
//! server sent `structuredContent` and it fits): text items joined by blank lines, images,
//! audio and resources described in brackets (never dumped), cut at `max_output`. A result
//! with `isError` is a `permanent` failure carrying the server's text; a JSON-RPC "invalid
//! params" or "method not found" error is `invalid`; a server that died, timed out or cannot
//! be reached is `transient` (a stdio server that died is started again at the next call).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use p3ak_proto::{ActionSpec, Credential, Tier};
use rmcp::model::{CallToolRequestParams, PaginatedRequestParams};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::{
    StreamableHttpClientTransport, TokioChildProcess,
    streamable_http_client::StreamableHttpClientTransportConfig,
};
use rmcp::{ServiceExt, model::ErrorCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::PluginError;
use p3ak_sdk::args::shorten;
use p3ak_sdk::connector::Log;
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Longest timeout an operator may configure, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Largest `max_output` an operator may configure.
pub const MAX_OUTPUT_LIMIT: usize = 16 << 20;
/// Most tools registered (the kernel's limit of actions per plugin).
pub const MAX_TOOLS: usize = 256;
/// Longest description registered (the kernel's limit).
pub const MAX_DESCRIPTION: usize = 4096;
/// Longest action name made from a tool's name.
pub const MAX_NAME: usize = 64;
/// Most `tools/list` pages read.
pub const MAX_PAGES: usize = 64;
/// Longest message kept from a server's error.
const MAX_MESSAGE: usize = 1000;

/// The `$schema` drafts the kernel's validator knows.
const KNOWN_DRAFTS: &[&str] = &[
    "http://json-schema.org/draft-04/schema",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
];

fn default_timeout() -> u64 {
    60
}

fn default_max_output() -> usize {
    256 << 10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_output")]
    max_output: usize,
}

/// Where the server is.
enum Server {
    Stdio(Vec<String>),
    Http {
        url: String,
        token: Option<Credential>,
    },
}

type Client = RunningService<RoleClient, ()>;

/// The `mcp` bridge.
pub struct Mcp {
    runtime: tokio::runtime::Runtime,
    server: Server,
    client: Option<Client>,
    actions: Vec<ActionSpec>,
    /// Action name → the MCP tool's name.
    tools: HashMap<String, String>,
    timeout: Duration,
    max_output: usize,
    log: Log,
}

impl Mcp {
    /// Starts (or connects to) the server, reads its tools and builds the bridge. `plugin`
    /// names it in log lines; `key` is the bearer token for an HTTP server.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for a bad config, a server that cannot be started or reached,
    /// or one that fails `initialize` or `tools/list`.
    pub fn from_welcome(
        plugin: &str,
        config: &Value,
        key: Option<&Credential>,
        max_frame: usize,
    ) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting("max_output", config.max_output, MAX_OUTPUT_LIMIT, " bytes")?;
        let server = match (config.command, config.url) {
            (Some(command), None) => {
                if command.first().is_none_or(String::is_empty) {
                    return Err(PluginError::Config(
                        "`command` needs a program: [\"program\", \"arg\", …]".into(),
                    ));
                }
                Server::Stdio(command)
            }
            (None, Some(url)) => {
                check_url(&url)?;
                Server::Http {
                    url,
                    token: key.cloned(),
                }
            }
            _ => {
                return Err(PluginError::Config(
                    "give exactly one of `command` (a stdio server) and `url` (a streamable \
                     HTTP server)"
                        .into(),
                ));
            }
        };
        let log = Log::new(
            plugin,
            match &server {
                Server::Http {
                    token: Some(token), ..
                } => Some(token.expose()),
                _ => None,
            },
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PluginError::Config(format!("cannot start the async runtime: {e}")))?;
        let mut bridge = Self {
            runtime,
            server,
            client: None,
            actions: Vec::new(),
            tools: HashMap::new(),
            timeout: Duration::from_secs(config.timeout_secs),
            max_output: config.max_output.min(max_frame / 2).max(1),
            log,
        };
        bridge.connect().map_err(|e| {
            PluginError::Config(format!("the MCP server did not start: {}", e.message))
        })?;
        let listed = bridge.list().map_err(|e| {
            PluginError::Config(format!("the MCP server's tools/list failed: {}", e.message))
        })?;
        bridge.register(listed, max_frame);
        Ok(bridge)
    }

    /// Starts or connects to the server and does `initialize`.
    fn connect(&mut self) -> Result<(), ToolFailure> {
        let timeout = self.timeout;
        // Spawning the child and the HTTP worker need the runtime's reactor.
        let _entered = self.runtime.enter();
        let client = match &self.server {
            Server::Stdio(command) => {
                let mut cmd = tokio::process::Command::new(command.first().map_or("", |s| s));
                cmd.args(command.iter().skip(1)).kill_on_drop(true);
                let (transport, _) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| {
                        ToolFailure::transient(format!(
                            "cannot start `{}`: {e}",
                            shorten(command.first().map_or("", |s| s))
                        ))
                    })?;
                self.runtime
                    .block_on(async { tokio::time::timeout(timeout, ().serve(transport)).await })
            }
            Server::Http { url, token } => {
                install_provider();
                let http = reqwest::Client::builder()
                    .user_agent(crate::SOFTWARE.replace(' ', "/"))
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .connect_timeout(timeout)
                    .build()
                    .map_err(|e| {
                        ToolFailure::permanent(format!("cannot build the HTTP client: {e}"))
                    })?;
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(token) = token {
                    config = config.auth_header(token.expose().to_owned());
                }
                let transport = StreamableHttpClientTransport::with_client(http, config);
                self.runtime
                    .block_on(async { tokio::time::timeout(timeout, ().serve(transport)).await })
            }
        };
        let client = client
            .map_err(|_| {
                ToolFailure::transient(format!(
                    "no answer to `initialize` within {} s",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| {
                ToolFailure::transient(self.log.redact(&one_line(&crate::http::chain(&e))))
            })?;
        self.client = Some(client);
        Ok(())
    }

    /// Every page of `tools/list`, at most [`MAX_PAGES`].
    fn list(&mut self) -> Result<Vec<rmcp::model::Tool>, ToolFailure> {
        let timeout = self.timeout;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ToolFailure::transient("not connected"))?;
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor
                .take()
                .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            let page = self
                .runtime
                .block_on(async { tokio::time::timeout(timeout, client.list_tools(params)).await })
                .map_err(|_| ToolFailure::transient("no answer to `tools/list`"))?
                .map_err(|e| self.failure(&e))?;
            tools.extend(page.tools);
            match page.next_cursor {
                Some(next) if !next.is_empty() && tools.len() <= MAX_TOOLS => cursor = Some(next),
                _ => break,
            }
        }
        Ok(tools)
    }

    /// Turns the listed tools into actions, leaving out (and saying) what cannot be offered.
    fn register(&mut self, listed: Vec<rmcp::model::Tool>, max_frame: usize) {
        let mut named: HashMap<String, Vec<String>> = HashMap::new();
        for tool in &listed {
            named
                .entry(action_name(&tool.name))
                .or_default()
                .push(tool.name.to_string());
        }
        let clashing: HashSet<&String> = named
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, _)| k)
            .collect();
        // What one `register` frame can carry, with room for the envelope.
        let budget = max_frame.saturating_sub(1024);
        let mut used = 0usize;
        for tool in &listed {
            let name = action_name(&tool.name);
            if name.is_empty() {
                self.log.line(&format!(
                    "left out tool `{}`: no usable characters in its name",
                    shorten(&tool.name)
                ));
                continue;
            }
            if clashing.contains(&name) {
                self.log.line(&format!(
                    "left out tool `{}`: its action name `{name}` is shared with another tool",
                    shorten(&tool.name)
                ));
                continue;
            }
            if self.actions.len() >= MAX_TOOLS {
                self.log.line(&format!(
                    "left out tool `{}`: more than {MAX_TOOLS} tools",
                    shorten(&tool.name)
                ));
                continue;
            }
            let parameters = match normalise_schema(&tool.input_schema) {
                Ok(schema) => schema,
                Err(reason) => {
                    self.log.line(&format!(
                        "left out tool `{}`: its input schema {reason}",
                        shorten(&tool.name)
                    ));
                    continue;
                }
            };
            let annotations = tool.annotations.as_ref();
            let destructive = annotations.and_then(|a| a.destructive_hint) == Some(true);
            let read_only = annotations.and_then(|a| a.read_only_hint) == Some(true);
            let spec = ActionSpec {
                description: describe(
                    tool.title
                        .as_deref()
                        .or(annotations.and_then(|a| a.title.as_deref())),
                    tool.description.as_deref(),
                    read_only,
                    destructive,
                ),
                name: name.clone(),
                parameters,
                tier: if destructive { Tier::Commit } else { Tier::Act },
            };
            let size = serde_json::to_vec(&spec).map_or(usize::MAX, |v| v.len());
            if used.saturating_add(size) > budget {
                self.log.line(&format!(
                    "left out tool `{}`: the tools' schemas fill the frame limit of {max_frame} bytes",
                    shorten(&tool.name)
                ));
                continue;
            }
            used += size;
            self.tools.insert(name, tool.name.to_string());
            self.actions.push(spec);
        }
    }

    fn failure(&self, e: &ServiceError) -> ToolFailure {
        match e {
            ServiceError::McpError(data) => {
                let message = format!("the MCP server refused: {}", cut(&data.message));
                if data.code == ErrorCode::INVALID_PARAMS
                    || data.code == ErrorCode::METHOD_NOT_FOUND
                {
                    ToolFailure::invalid(message)
                } else {
                    ToolFailure::permanent(message)
                }
            }
            ServiceError::Timeout { .. } => ToolFailure::transient(format!(
                "the MCP server did not answer within {} s",
                self.timeout.as_secs()
            )),
            other => ToolFailure::transient(format!(
                "the MCP server is unreachable: {}",
                self.log.redact(&cut(&crate::http::chain(other)))
            )),
        }
    }

    fn call(&mut self, action: &str, args: Value) -> Result<Value, ToolFailure> {
        let Some(tool) = self.tools.get(action).cloned() else {
            return Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(action)
            )));
        };
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => {
                return Err(ToolFailure::invalid(format!(
                    "`{action}`: the arguments must be an object"
                )));
            }
        };
        if self.client.as_ref().is_none_or(RunningService::is_closed) {
            // A stdio server that died is started again; an HTTP one is reconnected.
            self.client = None;
            self.connect()?;
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ToolFailure::transient("not connected"))?;
        let mut params = CallToolRequestParams::new(tool);
        params.arguments = arguments;
        let timeout = self.timeout;
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, client.call_tool(params)).await })
            .map_err(|_| {
                ToolFailure::transient(format!(
                    "the MCP server did not answer within {} s",
                    timeout.as_secs()
                ))
            })?;
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                let failure = self.failure(&e);
                if matches!(
                    e,
                    ServiceError::TransportClosed | ServiceError::TransportSend(_)
                ) {
                    // Gone: the next call starts (or reconnects to) the server again.
                    self.client = None;
                }
                return Err(failure);
            }
        };
        let content = serde_json::to_value(&result.content).unwrap_or(Value::Null);
        let (text, truncated) = render(&content, self.max_output);
        if result.is_error == Some(true) {
            let text = if text.trim().is_empty() {
                "the tool failed without saying why".to_owned()
            } else {
                cut(&text)
            };
            return Err(ToolFailure::permanent(format!("`{action}` failed: {text}")));
        }
        let mut output = json!({"text": text, "truncated": truncated});
        if let Some(structured) = result.structured_content
            && serde_json::to_vec(&structured).is_ok_and(|v| v.len() <= self.max_output)
            && let Value::Object(out) = &mut output
        {
            out.insert("structured".into(), structured);
        }
        Ok(output)
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let timeout = Duration::from_secs(2);
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(timeout, client.cancel()).await });
        }
    }
}

fn install_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when the process already chose a provider; reqwest then uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Only absolute `http` and `https` URLs with a host.
fn check_url(text: &str) -> Result<(), PluginError> {
    let url = url::Url::parse(text)
        .map_err(|e| PluginError::Config(format!("`url` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PluginError::Config(format!(
            "`url` must be http or https, not `{}`",
            shorten(url.scheme())
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(PluginError::Config("`url` has no host".into()));
    }
    Ok(())
}

/// The action name for an MCP tool name: `[A-Za-z0-9_-]`, no `__`, at most [`MAX_NAME`] bytes.
#[must_use]
pub fn action_name(tool: &str) -> String {
    let mut out = String::new();
    for c in tool.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        if out.len() >= MAX_NAME {
            break;
        }
        out.push(c);
    }
    out
}

/// The registered description: title, text, the server's hints, cut at [`MAX_DESCRIPTION`].
fn describe(
    title: Option<&str>,
    description: Option<&str>,
    read_only: bool,
    destructive: bool,
) -> String {
    let mut out = String::new();
    if let Some(title) = title.filter(|t| !t.trim().is_empty()) {
        out.push_str(title.trim());
        out.push_str(": ");
    }
    out.push_str(description.unwrap_or("").trim());
    let hint = if destructive {
        " [server hints: destructive]"
    } else if read_only {
        " [server hints: read-only]"
    } else {
        ""
    };
    let room = MAX_DESCRIPTION.saturating_sub(hint.len());
    if out.len() > room {
        let mut end = room.saturating_sub(3);
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out.push_str(hint);
    out
}

/// The tool's input schema as the kernel will take it, or why it cannot.
fn normalise_schema(schema: &Map<String, Value>) -> Result<Value, String> {
    let mut schema = schema.clone();
    if let Some(draft) = schema.get("$schema") {
        let known = draft
            .as_str()
            .is_some_and(|d| KNOWN_DRAFTS.contains(&d.trim_end_matches('#')));
        if !known {
            schema.remove("$schema");
        }
    }
    match schema.get("type") {
        None => {
            schema.insert("type".into(), Value::String("object".into()));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(_) => return Err("is not of type object".to_owned()),
    }
    let schema = Value::Object(schema);
    jsonschema::validator_for(&schema)
        .map_err(|e| format!("is invalid: {}", cut(&e.to_string())))?;
    Ok(schema)
}

/// A result's content as text: text items, the rest described. Cut at `max` bytes.
fn render(content: &Value, max: usize) -> (String, bool) {
    let mut parts = Vec::new();
    for item in content.as_array().map_or(&[][..], Vec::as_slice) {
        let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or("");
        let part = match field("type") {
            "text" => field("text").to_owned(),
            "image" | "audio" => format!(
                "[{} {}, {} bytes of base64, not shown]",
                field("type"),
                shorten(field("mimeType")),
                field("data").len()
            ),
            "resource" => {
                let resource = item.get("resource");
                let inner = |name: &str| {
                    resource
                        .and_then(|r| r.get(name))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                let size = if inner("text").is_empty() {
                    format!("{} bytes of base64", inner("blob").len())
                } else {
                    format!("{} bytes of text", inner("text").len())
                };
                format!(
                    "[resource {} ({}), {size}, not shown]",
                    shorten(inner("uri")),
                    shorten(inner("mimeType"))
                )
            }
            "resource_link" => format!(
                "[resource link {} ({})]",
                shorten(field("uri")),
                shorten(field("name"))
            ),
            other => format!("[{} content, not shown]", shorten(other)),
        };
        parts.push(part);
    }
    let mut text = parts.join("\n\n");
    let truncated = text.len() > max;
    if truncated {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    (text, truncated)
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// One line of a server's text, at most [`MAX_MESSAGE`] bytes.
fn cut(text: &str) -> String {
    let mut line = one_line(text.trim());
    if line.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

impl Tool for Mcp {
    fn actions(&self) -> Vec<ActionSpec> {
        self.actions.clone()
    }

    fn invoke(&mut self, _agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        self.call(action, args)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(action_name("echo"), "echo");
        assert_eq!(action_name("get-sum"), "get-sum");
        assert_eq!(action_name("fs.read_file"), "fs_read_file");
        assert_eq!(action_name("a__b"), "a_b");
        assert_eq!(action_name("a./b"), "a_b");
        assert_eq!(action_name("ünï"), "_n_");
        assert_eq!(action_name(&"x".repeat(100)).len(), MAX_NAME);
        for name in ["a.b", "x__y", "ä.__.ö"] {
            let action = action_name(name);
            assert!(!action.contains('.') && !action.contains("__"), "{action}");
        }
    }

    #[test]
    fn schemas() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let s = normalise_schema(&obj(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "properties": {"a": {"type": "number"}}
        })))
        .unwrap();
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
        let s = normalise_schema(&obj(json!({
            "$schema": "https://example.invalid/my-draft", "properties": {}
        })))
        .unwrap();
        assert!(s.get("$schema").is_none());
        assert_eq!(s["type"], "object");
        normalise_schema(&obj(json!({"type": "array"}))).unwrap_err();
        normalise_schema(&obj(
            json!({"type": "object", "properties": {"a": {"type": 5}}}),
        ))
        .unwrap_err();
    }

    #[test]
    fn descriptions() {
        let d = describe(Some("Echo"), Some("Echoes."), true, false);
        assert_eq!(d, "Echo: Echoes. [server hints: read-only]");
        let long = "é".repeat(MAX_DESCRIPTION);
        let d = describe(None, Some(&long), false, true);
        assert!(d.len() <= MAX_DESCRIPTION && d.ends_with("[server hints: destructive]"));
    }

    #[test]
    fn content() {
        let (text, truncated) = render(
            &json!([
                {"type": "text", "text": "hello"},
                {"type": "image", "mimeType": "image/png", "data": "AAAA"},
                {"type": "resource", "resource": {"uri": "file:///x", "mimeType": "text/plain", "text": "secret stuff"}},
                {"type": "resource_link", "uri": "test://1", "name": "one"},
            ]),
            1000,
        );
        assert!(!truncated);
        assert_eq!(
            text,
            "hello\n\n[image image/png, 4 bytes of base64, not shown]\n\n[resource file:///x \
             (text/plain), 12 bytes of text, not shown]\n\n[resource link test://1 (one)]"
        );
        let (text, truncated) = render(&json!([{"type": "text", "text": "ééé"}]), 3);
        assert!(truncated);
        assert_eq!(text, "é");
    }
}

//! Language-model providers over HTTP: `anthropic` (Messages API), `openai` (Chat
//! Completions, and any server that speaks it) and `ollama` (`/api/chat`).
//!
//! What they share lives here: the settings every provider takes, one blocking HTTP client,
//! retries with backoff on 429 and 5xx that honour `retry-after`, typed failures, bounded
//! reads, and the assembly of a reply (text, tool calls, stop reason, usage) from either a
//! whole JSON body or a stream of events.
//!
//! The API key arrives with each `inference_request` (the kernel's broker puts it there; see
//! `credential` in docs/protocol.md). It is used for one request's headers and dropped; every
//! message a provider sends back has it replaced by `[redacted]`, even where a server echoes it.
//!
//! Each answers up to `concurrency` requests at once (default 4, from 1 to 32): their state
//! is the settings and the HTTP client, so agents sharing one provider plugin (a board
//! meeting) wait for the model, not for each other.

pub mod anthropic;
mod client;
pub mod ollama;
pub mod openai;
mod sse;

use std::time::Duration;

use p3ak_proto::{InferenceRequest, InferenceResponse, StopReason, ToolCall, Usage};
use serde::Deserialize;
use serde_json::Value;

use crate::PluginError;
use p3ak_sdk::runtime::ToolFailure;

pub(crate) use client::{Endpoint, Redactor};

/// Largest response body (whole or streamed) a provider reads, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Largest error body read to explain a failure, in bytes.
pub const MAX_ERROR_BYTES: usize = 64 << 10;
/// Upper bound of `timeout_secs`.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Upper bound of `max_retries`.
pub const MAX_RETRIES: u32 = 10;
/// Upper bound of `max_retry_wait_secs`.
pub const MAX_RETRY_WAIT_SECS: u64 = 600;
/// Upper bound of `concurrency`.
pub const MAX_CONCURRENCY: usize = 32;
/// Requests answered at once when `concurrency` is not set.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Settings every HTTP provider takes in its `config` table, beside its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Common {
    /// The API's base URL.
    #[serde(default)]
    pub(crate) base_url: Option<String>,
    /// The model when the agent names none.
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// The most tokens to generate.
    #[serde(default)]
    pub(crate) max_tokens: Option<u32>,
    /// Longest wait for the response to start, and between two pieces of a streamed one.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_secs: u64,
    /// Retries after a 429, a 5xx or a network failure (0: none).
    #[serde(default = "default_retries")]
    pub(crate) max_retries: u32,
    /// First backoff delay; it doubles with each retry.
    #[serde(default = "default_backoff")]
    pub(crate) retry_base_ms: u64,
    /// A `retry-after` longer than this is not waited for: the kernel gets `rate_limited`.
    #[serde(default = "default_retry_wait")]
    pub(crate) max_retry_wait_secs: u64,
    /// How many requests are answered at the same time.
    #[serde(default = "default_concurrency")]
    pub(crate) concurrency: usize,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn default_timeout() -> u64 {
    120
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> u64 {
    500
}
fn default_retry_wait() -> u64 {
    60
}

impl Common {
    /// Checks the ranges; `what` names the provider in messages.
    pub(crate) fn check(&self) -> Result<(), PluginError> {
        p3ak_sdk::check_setting("timeout_secs", self.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting("retry_base_ms", self.retry_base_ms, 60_000, "")?;
        p3ak_sdk::check_setting(
            "max_retry_wait_secs",
            self.max_retry_wait_secs,
            MAX_RETRY_WAIT_SECS,
            "",
        )?;
        p3ak_sdk::check_setting("concurrency", self.concurrency, MAX_CONCURRENCY, "")?;
        if self.max_retries > MAX_RETRIES {
            return Err(PluginError::Config(format!(
                "`max_retries` must be from 0 to {MAX_RETRIES}, not {}",
                self.max_retries
            )));
        }
        if let Some(n) = self.max_tokens {
            p3ak_sdk::check_setting("max_tokens", n, 1_000_000, "")?;
        }
        if self.model.as_deref().is_some_and(str::is_empty) {
            return Err(PluginError::Config(
                "`model` is empty: leave it out or name a model".to_owned(),
            ));
        }
        Ok(())
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The model for `request`: the agent's, else the configured one.
    pub(crate) fn model(&self, request: &InferenceRequest) -> Result<String, ToolFailure> {
        request
            .model
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| self.model.clone())
            .ok_or_else(|| {
                ToolFailure::invalid(
                    "no model: set `model` in the agent's file or in the provider's `config`",
                )
            })
    }
}

/// Splits a provider's `welcome` config: the keys in `own` are parsed as `T` (the
/// provider's own settings), the rest as [`Common`]. Unknown keys are refused either way.
pub(crate) fn split_config<T: serde::de::DeserializeOwned>(
    config: &Value,
    own: &[&str],
) -> Result<(Common, T), PluginError> {
    let mut common = match config {
        Value::Null => serde_json::Map::new(),
        Value::Object(map) => map.clone(),
        _ => return Err(PluginError::Config("expected a table".to_owned())),
    };
    let mut mine = serde_json::Map::new();
    for key in own {
        if let Some(value) = common.remove(*key) {
            mine.insert((*key).to_owned(), value);
        }
    }
    let common: Common = p3ak_sdk::parse_config(&Value::Object(common))?;
    let mine: T = p3ak_sdk::parse_config(&Value::Object(mine))?;
    common.check()?;
    Ok((common, mine))
}

/// A reply being put together, from a whole body or a stream.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) content: String,
    pub(crate) calls: Vec<PendingCall>,
    pub(crate) stop: Option<StopReason>,
    pub(crate) usage: Usage,
    /// A refusal's text (OpenAI sends it apart from the content).
    pub(crate) refusal: String,
}

/// A tool call as the model wrote it; `arguments` may still be raw text.
#[derive(Debug, Default, Clone)]
pub(crate) struct PendingCall {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    pub(crate) arguments: Arguments,
}

/// Tool-call arguments as they came.
#[derive(Debug, Clone)]
pub(crate) enum Arguments {
    /// Already JSON (Anthropic's non-streamed `input`, Ollama's `arguments`).
    Value(Value),
    /// Text to parse (OpenAI's `arguments`, streamed fragments).
    Text(String),
}

impl Default for Arguments {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl Arguments {
    /// The JSON value. Text that does not parse stays a string, so that the kernel tells the
    /// model its call was malformed and why (a syntax matter, not a policy one).
    fn into_value(self) -> Value {
        match self {
            Self::Value(v) => v,
            Self::Text(t) if t.trim().is_empty() => Value::Object(serde_json::Map::new()),
            Self::Text(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
        }
    }
}

/// Hands out `call_N` ids to calls that came without one (Ollama never sends ids), unique
/// across the requests a provider answers at the same time.
#[derive(Debug, Default)]
pub(crate) struct CallIds {
    next: std::sync::atomic::AtomicU64,
}

impl CallIds {
    fn next(&self) -> String {
        let n = self
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1);
        format!("call_{n}")
    }
}

impl Reply {
    /// The response for the kernel. A reply with tool calls stops for `tool_use` whatever the
    /// server said; a refusal's text becomes the content.
    pub(crate) fn finish(self, ids: &CallIds) -> InferenceResponse {
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .filter(|c| !c.name.is_empty())
            .map(|c| ToolCall {
                id: c.id.filter(|i| !i.is_empty()).unwrap_or_else(|| ids.next()),
                name: c.name,
                arguments: c.arguments.into_value(),
            })
            .collect();
        let mut content = self.content;
        let mut stop = self.stop.unwrap_or(StopReason::EndTurn);
        if !self.refusal.is_empty() {
            if content.is_empty() {
                content = self.refusal;
            }
            stop = StopReason::Refusal;
        }
        if !tool_calls.is_empty() {
            stop = StopReason::ToolUse;
        }
        InferenceResponse {
            content,
            tool_calls,
            stop,
            usage: self.usage,
        }
    }
}

/// Arguments for a request's history: an object as it was; anything else (a malformed call
/// kept in the conversation) as an empty object, which every API accepts.
pub(crate) fn history_arguments(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// Tools in the `{"type": "function", "function": {…}}` shape OpenAI and Ollama share.
pub(crate) fn function_tools(request: &InferenceRequest) -> Value {
    request
        .tools
        .iter()
        .map(|t| {
            serde_json::json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters,
            }})
        })
        .collect()
}

/// One request to an API that takes an optional bearer token (OpenAI, Ollama): checks that
/// the key may go to the endpoint, posts `body` to `path`, reads the reply with `read`. Every
/// failure has the key redacted.
pub(crate) fn bearer_call(
    endpoint: &Endpoint,
    request: &InferenceRequest,
    path: &str,
    body: impl FnOnce() -> Result<Value, ToolFailure>,
    read: impl FnOnce(reqwest::blocking::Response) -> Result<Reply, ToolFailure>,
) -> Result<Reply, ToolFailure> {
    let key = request.credential.as_ref().map(|c| c.expose());
    let run = || {
        endpoint.check_secure(key.is_some())?;
        let body = body()?;
        let bearer = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        read(endpoint.post(path, &headers, &body)?)
    };
    run().map_err(|f| Redactor(key).failure(f))
}

/// Sets `key` on a JSON object (a no-op on anything else).
pub(crate) fn put(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

/// Reads `name` from a JSON object as a `u64`, 0 when absent.
pub(crate) fn count(value: &Value, name: &str) -> u64 {
    value.get(name).and_then(Value::as_u64).unwrap_or(0)
}

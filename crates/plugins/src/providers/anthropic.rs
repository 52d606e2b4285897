//! `anthropic`: the Messages API (`POST {base_url}/v1/messages`), tool use and streaming.
//!
//! Config (all optional): `base_url` (`https://api.anthropic.com`), `model` (used when the
//! agent names none), `max_tokens` (4096; the API requires one), `anthropic_version`
//! (`2023-06-01`), and the shared `timeout_secs`, `max_retries`, `retry_base_ms`,
//! `max_retry_wait_secs`, `concurrency` (requests answered at once: 4, from 1 to 32). The
//! API key is the request's `credential` (`[plugins.NAME] credential = "SECRET"`), sent as
//! `x-api-key`.
//!
//! The conversation maps onto the API's content blocks: an assistant turn's calls become
//! `tool_use` blocks, each `tool` message a `tool_result` block in a user turn, and turns of
//! the same role are merged (the API wants them alternating). Streamed replies are read from
//! `message_start`, `content_block_*`, `message_delta` and `message_stop` events; text deltas
//! go to the kernel as they come, tool input arrives as JSON fragments joined at the block's
//! end. A stream that stops before `message_stop` is a transient failure, an `error` event
//! a typed one.

use p3ak_proto::{InferenceRequest, InferenceResponse, Role, StopReason};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Events, data_json};
use super::{Arguments, CallIds, Common, Endpoint, PendingCall, Redactor, Reply};
use crate::PluginError;
use p3ak_sdk::runtime::{SharedProvider, StreamSink, ToolFailure};

/// The default API address.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version header sent by default.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` when the config sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default)]
    anthropic_version: Option<String>,
}

/// The `anthropic` provider.
pub struct Anthropic {
    endpoint: Endpoint,
    common: Common,
    version: String,
    ids: CallIds,
}

impl Anthropic {
    /// How many requests it answers at the same time (`concurrency`).
    #[must_use]
    pub fn concurrency(&self) -> usize {
        self.common.concurrency
    }

    /// Builds the provider from its `welcome` config.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for an unknown or out-of-range setting or a bad `base_url`.
    pub fn from_config(config: &Value) -> Result<Self, PluginError> {
        let (common, own): (Common, Own) = super::split_config(config, &["anthropic_version"])?;
        let endpoint = Endpoint::new("anthropic", &common, DEFAULT_BASE_URL)?;
        Ok(Self {
            endpoint,
            common,
            version: own
                .anthropic_version
                .unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
            ids: CallIds::default(),
        })
    }

    fn body(&self, request: &InferenceRequest) -> Result<Value, ToolFailure> {
        let mut body = json!({
            "model": self.common.model(request)?,
            "max_tokens": self.common.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages(request),
            "stream": request.stream,
        });
        if !request.system.is_empty() {
            super::put(&mut body, "system", Value::String(request.system.clone()));
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                           "input_schema": t.parameters})
                })
                .collect();
            super::put(&mut body, "tools", Value::Array(tools));
        }
        Ok(body)
    }
}

impl SharedProvider for Anthropic {
    fn infer(
        &self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure> {
        let key = request.credential.as_ref().map(|c| c.expose());
        let redact = Redactor(key);
        let Some(key) = key else {
            return Err(ToolFailure::new(
                p3ak_proto::ErrorKind::Auth,
                "anthropic: no API key: set `credential` in [plugins.NAME] and store it with \
                 `p3ak secret set`",
            ));
        };
        let mut run = || -> Result<Reply, ToolFailure> {
            self.endpoint.check_secure(true)?;
            let body = self.body(request)?;
            let headers = [
                ("x-api-key", key),
                ("anthropic-version", self.version.as_str()),
            ];
            let response = self.endpoint.post("v1/messages", &headers, &body)?;
            if request.stream {
                read_stream(
                    Events::new(response, &self.endpoint),
                    &self.endpoint,
                    stream,
                )
            } else {
                read_message(&self.endpoint.read_json(response)?, &self.endpoint)
            }
        };
        let reply = run().map_err(|f| redact.failure(f))?;
        Ok(reply.finish(&self.ids))
    }
}

/// The conversation as Messages API turns.
fn messages(request: &InferenceRequest) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::User => (
                "user",
                text_block(&message.content).into_iter().collect::<Vec<_>>(),
            ),
            Role::Assistant => {
                let mut blocks: Vec<Value> = text_block(&message.content).into_iter().collect();
                blocks.extend(message.tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name,
                           "input": super::history_arguments(&c.arguments)})
                }));
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.content,
                })],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// The API refuses empty text blocks.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn stop_reason(text: &str) -> StopReason {
    match text {
        "tool_use" => StopReason::ToolUse,
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "refusal" => StopReason::Refusal,
        _ => StopReason::EndTurn,
    }
}

fn usage_into(reply: &mut Reply, usage: &Value) {
    if let Some(n) = usage.get("input_tokens").and_then(Value::as_u64) {
        reply.usage.input_tokens = n
            + super::count(usage, "cache_creation_input_tokens")
            + super::count(usage, "cache_read_input_tokens");
    }
    if let Some(n) = usage.get("output_tokens").and_then(Value::as_u64) {
        reply.usage.output_tokens = n;
    }
}

/// A whole `message` object.
fn read_message(body: &Value, endpoint: &Endpoint) -> Result<Reply, ToolFailure> {
    let Some(blocks) = body.get("content").and_then(Value::as_array) else {
        return Err(endpoint.malformed("no `content` array"));
    };
    let mut reply = Reply::default();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                reply
                    .content
                    .push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => reply.calls.push(PendingCall {
                id: block.get("id").and_then(Value::as_str).map(str::to_owned),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: Arguments::Value(block.get("input").cloned().unwrap_or(Value::Null)),
            }),
            _ => {}
        }
    }
    reply.stop = body
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(stop_reason);
    if let Some(usage) = body.get("usage") {
        usage_into(&mut reply, usage);
    }
    Ok(reply)
}

/// A streamed message, text deltas sent on as they come.
fn read_stream(
    mut events: Events<'_>,
    endpoint: &Endpoint,
    sink: &mut StreamSink<'_>,
) -> Result<Reply, ToolFailure> {
    let mut reply = Reply::default();
    // Content blocks by index: `Some(call position)` for tool_use blocks.
    let mut blocks: Vec<(u64, Option<usize>)> = Vec::new();
    while let Some(event) = events.next()? {
        if event.event == "ping" {
            continue;
        }
        let data = data_json(&event, endpoint)?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    usage_into(&mut reply, usage);
                }
            }
            "content_block_start" => {
                let index = super::count(&data, "index");
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        reply.calls.push(PendingCall {
                            id: block.get("id").and_then(Value::as_str).map(str::to_owned),
                            name: block
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            arguments: Arguments::Text(String::new()),
                        });
                        blocks.push((index, Some(reply.calls.len() - 1)));
                    }
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            sink.send(text)?;
                            reply.content.push_str(text);
                        }
                        blocks.push((index, None));
                    }
                    _ => blocks.push((index, None)),
                }
            }
            "content_block_delta" => {
                let index = super::count(&data, "index");
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            sink.send(text)?;
                            reply.content.push_str(text);
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let call = blocks
                            .iter()
                            .rev()
                            .find(|(i, _)| *i == index)
                            .and_then(|(_, call)| *call)
                            .and_then(|at| reply.calls.get_mut(at));
                        match call {
                            Some(PendingCall {
                                arguments: Arguments::Text(text),
                                ..
                            }) => text.push_str(part),
                            _ => {
                                return Err(endpoint.malformed(
                                    "input_json_delta for a block that is not tool_use",
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    reply.stop = Some(stop_reason(reason));
                }
                if let Some(usage) = data.get("usage") {
                    usage_into(&mut reply, usage);
                }
            }
            "message_stop" => return Ok(reply),
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let error_type = error.get("type").and_then(Value::as_str).unwrap_or("error");
                let message = error.get("message").and_then(Value::as_str).unwrap_or("");
                return Err(ToolFailure::new(
                    super::client::kind_of(error_type),
                    format!("anthropic: {error_type}: {message}"),
                ));
            }
            _ => {}
        }
    }
    Err(endpoint.dropped())
}

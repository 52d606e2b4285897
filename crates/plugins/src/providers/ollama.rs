//! `ollama`: Ollama's chat API (`POST {base_url}/api/chat`) with tools and streaming.
//!
//! Config (all optional): `base_url` (`http://127.0.0.1:11434`), `model`, `max_tokens`
//! (sent as `options.num_predict`), `keep_alive` (how long Ollama keeps the model loaded,
//! e.g. `"5m"`), and the shared `timeout_secs`, `max_retries`, `retry_base_ms`,
//! `max_retry_wait_secs`, `concurrency` (requests answered at once: 4, from 1 to 32).
//! Ollama needs no key; one named by `credential` is sent as `Authorization: Bearer` (for a
//! proxy in front of it).
//!
//! A streamed reply is one JSON object per line; the last has `"done": true` with the token
//! counts (`prompt_eval_count`, `eval_count`). Ollama gives tool calls no ids: they get
//! `call_N`. A line `{"error": …}` or a body that ends before `done` is a failure.

use std::collections::HashMap;

use p3ak_proto::{InferenceRequest, InferenceResponse, Role, StopReason};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::JsonLines;
use super::{Arguments, CallIds, Common, Endpoint, PendingCall, Reply};
use crate::PluginError;
use p3ak_sdk::runtime::{SharedProvider, StreamSink, ToolFailure};

/// The default API address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default)]
    keep_alive: Option<String>,
}

/// The `ollama` provider.
pub struct Ollama {
    endpoint: Endpoint,
    common: Common,
    keep_alive: Option<String>,
    ids: CallIds,
}

impl Ollama {
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
        let (common, own): (Common, Own) = super::split_config(config, &["keep_alive"])?;
        let endpoint = Endpoint::new("ollama", &common, DEFAULT_BASE_URL)?;
        Ok(Self {
            endpoint,
            common,
            keep_alive: own.keep_alive,
            ids: CallIds::default(),
        })
    }

    fn body(&self, request: &InferenceRequest) -> Result<Value, ToolFailure> {
        let mut body = json!({
            "model": self.common.model(request)?,
            "messages": messages(request),
            "stream": request.stream,
        });
        if let Some(n) = self.common.max_tokens {
            super::put(&mut body, "options", json!({"num_predict": n}));
        }
        if let Some(keep) = &self.keep_alive {
            super::put(&mut body, "keep_alive", Value::String(keep.clone()));
        }
        if !request.tools.is_empty() {
            super::put(&mut body, "tools", super::function_tools(request));
        }
        Ok(body)
    }
}

impl SharedProvider for Ollama {
    fn infer(
        &self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure> {
        let reply = super::bearer_call(
            &self.endpoint,
            request,
            "api/chat",
            || self.body(request),
            |response| {
                if request.stream {
                    return read_stream(
                        JsonLines::new(response, &self.endpoint),
                        &self.endpoint,
                        stream,
                    );
                }
                let body = self.endpoint.read_json(response)?;
                let mut reply = Reply::default();
                if !apply(&mut reply, &body, &self.endpoint, None)? {
                    return Err(self.endpoint.malformed("`done` is not true"));
                }
                Ok(reply)
            },
        )?;
        Ok(reply.finish(&self.ids))
    }
}

/// The conversation as Ollama messages; a tool result names its tool (`tool_name`).
fn messages(request: &InferenceRequest) -> Vec<Value> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        out.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        out.push(match message.role {
            Role::User => json!({"role": "user", "content": message.content}),
            Role::Assistant => {
                let mut m = json!({"role": "assistant", "content": message.content});
                if !message.tool_calls.is_empty() {
                    for c in &message.tool_calls {
                        names.insert(c.id.as_str(), c.name.as_str());
                    }
                    super::put(
                        &mut m,
                        "tool_calls",
                        message
                            .tool_calls
                            .iter()
                            .map(|c| {
                                json!({"function": {
                                    "name": c.name,
                                    "arguments": super::history_arguments(&c.arguments),
                                }})
                            })
                            .collect(),
                    );
                }
                m
            }
            Role::Tool => {
                let mut m = json!({"role": "tool", "content": message.content});
                if let Some(name) = message.tool_call_id.as_deref().and_then(|id| names.get(id)) {
                    super::put(&mut m, "tool_name", Value::String((*name).to_owned()));
                }
                m
            }
        });
    }
    out
}

/// Folds one response object into `reply`; `true` once it is the last (`done`).
fn apply(
    reply: &mut Reply,
    object: &Value,
    endpoint: &Endpoint,
    sink: Option<&mut StreamSink<'_>>,
) -> Result<bool, ToolFailure> {
    if let Some(error) = object.get("error") {
        let text = error.as_str().unwrap_or("error");
        return Err(ToolFailure::transient(format!("ollama: {text}")));
    }
    if !object.is_object() {
        return Err(endpoint.malformed("a line is not a JSON object"));
    }
    if let Some(message) = object.get("message") {
        if let Some(text) = message.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            if let Some(sink) = sink {
                sink.send(text)?;
            }
            reply.content.push_str(text);
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let function = call.get("function").unwrap_or(&Value::Null);
            reply.calls.push(PendingCall {
                id: call.get("id").and_then(Value::as_str).map(str::to_owned),
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: match function.get("arguments") {
                    Some(Value::String(text)) => Arguments::Text(text.clone()),
                    Some(other) => Arguments::Value(other.clone()),
                    None => Arguments::Text(String::new()),
                },
            });
        }
    }
    let done = object.get("done").and_then(Value::as_bool).unwrap_or(false);
    if done {
        reply.usage.input_tokens = super::count(object, "prompt_eval_count");
        reply.usage.output_tokens = super::count(object, "eval_count");
        reply.stop = Some(match object.get("done_reason").and_then(Value::as_str) {
            Some("length") => StopReason::MaxTokens,
            _ => StopReason::EndTurn,
        });
    }
    Ok(done)
}

fn read_stream(
    mut lines: JsonLines<'_>,
    endpoint: &Endpoint,
    sink: &mut StreamSink<'_>,
) -> Result<Reply, ToolFailure> {
    let mut reply = Reply::default();
    while let Some(object) = lines.next()? {
        if apply(&mut reply, &object, endpoint, Some(sink))? {
            return Ok(reply);
        }
    }
    Err(endpoint.dropped())
}

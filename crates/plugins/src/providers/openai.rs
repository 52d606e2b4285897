//! `openai`: Chat Completions (`POST {base_url}/chat/completions`) with tools and streaming,
//! for OpenAI and any server that speaks the same API (llama.cpp's `llama-server`, vLLM,
//! LM Studio, …) given its `base_url`.
//!
//! Config (all optional): `base_url` (`https://api.openai.com/v1`), `model`, `max_tokens`
//! (sent as `max_tokens` when set), `stream_usage` (`true`: ask for usage in the last
//! streamed chunk with `stream_options.include_usage`; set `false` for servers that refuse
//! the option), and the shared `timeout_secs`, `max_retries`, `retry_base_ms`,
//! `max_retry_wait_secs`, `concurrency` (requests answered at once: 4, from 1 to 32). The
//! API key, when `[plugins.NAME]` names a `credential`, is sent as `Authorization: Bearer`;
//! local servers usually need none.
//!
//! Tool-call arguments arrive as JSON text (in fragments when streamed, joined by the call's
//! `index`); text that does not parse is passed on as a string so that the kernel tells the
//! model the call was malformed. A `refusal` becomes the content with stop `refusal`; so does
//! `finish_reason: content_filter`. A stream must end with `data: [DONE]` or a chunk with a
//! `finish_reason`; anything shorter is a transient failure.

use p3ak_proto::{InferenceRequest, InferenceResponse, Role, StopReason};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Events, data_json};
use super::{Arguments, CallIds, Common, Endpoint, PendingCall, Reply};
use crate::PluginError;
use p3ak_sdk::runtime::{SharedProvider, StreamSink, ToolFailure};

/// The default API address.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default = "yes")]
    stream_usage: bool,
}

fn yes() -> bool {
    true
}

/// The `openai` provider.
pub struct OpenAi {
    endpoint: Endpoint,
    common: Common,
    stream_usage: bool,
    ids: CallIds,
}

impl OpenAi {
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
        let (common, own): (Common, Own) = super::split_config(config, &["stream_usage"])?;
        let endpoint = Endpoint::new("openai", &common, DEFAULT_BASE_URL)?;
        Ok(Self {
            endpoint,
            common,
            stream_usage: own.stream_usage,
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
            super::put(&mut body, "max_tokens", n.into());
        }
        if request.stream && self.stream_usage {
            super::put(&mut body, "stream_options", json!({"include_usage": true}));
        }
        if !request.tools.is_empty() {
            super::put(&mut body, "tools", super::function_tools(request));
        }
        Ok(body)
    }
}

impl SharedProvider for OpenAi {
    fn infer(
        &self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure> {
        let reply = super::bearer_call(
            &self.endpoint,
            request,
            "chat/completions",
            || self.body(request),
            |response| {
                if request.stream {
                    read_stream(
                        Events::new(response, &self.endpoint),
                        &self.endpoint,
                        stream,
                    )
                } else {
                    read_completion(&self.endpoint.read_json(response)?, &self.endpoint)
                }
            },
        )?;
        Ok(reply.finish(&self.ids))
    }
}

/// The conversation as Chat Completions messages, the system prompt first.
fn messages(request: &InferenceRequest) -> Vec<Value> {
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        out.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        out.push(match message.role {
            Role::User => json!({"role": "user", "content": message.content}),
            Role::Assistant if message.tool_calls.is_empty() => {
                json!({"role": "assistant", "content": message.content})
            }
            Role::Assistant => {
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = super::history_arguments(&c.arguments).to_string();
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": arguments}})
                    })
                    .collect();
                let content = if message.content.is_empty() {
                    Value::Null
                } else {
                    Value::String(message.content.clone())
                };
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            }),
        });
    }
    out
}

fn stop_reason(text: &str) -> StopReason {
    match text {
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::Refusal,
        _ => StopReason::EndTurn,
    }
}

fn usage_into(reply: &mut Reply, usage: &Value) {
    if usage.is_object() {
        reply.usage.input_tokens = super::count(usage, "prompt_tokens");
        reply.usage.output_tokens = super::count(usage, "completion_tokens");
    }
}

/// A whole `chat.completion` object.
fn read_completion(body: &Value, endpoint: &Endpoint) -> Result<Reply, ToolFailure> {
    let Some(choice) = body.pointer("/choices/0") else {
        return Err(endpoint.malformed("no `choices`"));
    };
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut reply = Reply {
        content: message
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        refusal: message
            .get("refusal")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        ..Reply::default()
    };
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        reply.calls.push(PendingCall {
            id: call.get("id").and_then(Value::as_str).map(str::to_owned),
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            arguments: match call.pointer("/function/arguments") {
                Some(Value::String(text)) => Arguments::Text(text.clone()),
                Some(other) => Arguments::Value(other.clone()),
                None => Arguments::Text(String::new()),
            },
        });
    }
    reply.stop = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(stop_reason);
    if let Some(usage) = body.get("usage") {
        usage_into(&mut reply, usage);
    }
    Ok(reply)
}

/// A streamed completion: `chat.completion.chunk`s, then `[DONE]`.
fn read_stream(
    mut events: Events<'_>,
    endpoint: &Endpoint,
    sink: &mut StreamSink<'_>,
) -> Result<Reply, ToolFailure> {
    let mut reply = Reply::default();
    // Call positions by the stream's `index`.
    let mut by_index: Vec<(u64, usize)> = Vec::new();
    let mut finished = false;
    while let Some(event) = events.next()? {
        if event.data.trim() == "[DONE]" {
            return Ok(reply);
        }
        let chunk = data_json(&event, endpoint)?;
        if let Some(error) = chunk.get("error") {
            let detail = super::client::error_detail(&chunk).unwrap_or_default();
            let error_type = error
                .get("type")
                .or_else(|| error.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(ToolFailure::new(
                super::client::kind_of(error_type),
                format!("openai: {detail}"),
            ));
        }
        if let Some(usage) = chunk.get("usage") {
            usage_into(&mut reply, usage);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            continue;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            sink.send(text)?;
            reply.content.push_str(text);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            reply.refusal.push_str(text);
        }
        for part in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = super::count(part, "index");
            let at = match by_index.iter().find(|(i, _)| *i == index) {
                Some((_, at)) => *at,
                None => {
                    reply.calls.push(PendingCall::default());
                    by_index.push((index, reply.calls.len() - 1));
                    reply.calls.len() - 1
                }
            };
            let Some(call) = reply.calls.get_mut(at) else {
                continue;
            };
            if let Some(id) = part.get("id").and_then(Value::as_str) {
                call.id = Some(id.to_owned());
            }
            if let Some(name) = part.pointer("/function/name").and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(args) = part.pointer("/function/arguments").and_then(Value::as_str)
                && let Arguments::Text(text) = &mut call.arguments
            {
                text.push_str(args);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            reply.stop = Some(stop_reason(reason));
            finished = true;
        }
    }
    // Some servers close after the last chunk without `[DONE]`.
    if finished {
        Ok(reply)
    } else {
        Err(endpoint.dropped())
    }
}

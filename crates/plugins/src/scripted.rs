//! `scripted`: a deterministic provider for tests and the offline demo.
//!
//! Config: `script` (path of a JSON file, read and checked at startup) and optional `record`
//! (path of a file to which every `inference_request` received is appended as one JSON
//! line, created 0600). **The record is plaintext**: it holds whole conversations, tool
//! results included. It is a testing aid; never set it on a real deployment.
//!
//! The script:
//!
//! ```json
//! {"responses": [
//!   {"content": "text", "tool_calls": [{"name": "files__read", "arguments": {"path": "a.txt"}}]},
//!   {"error": {"kind": "rate_limited", "message": "slow down", "retry_after_ms": 2000}},
//!   {"content": "final answer"}
//! ]}
//! ```
//!
//! Each request takes the next response, in order. Tool calls get the ids `call_1`,
//! `call_2`, … counted across the whole run; `stop` is `tool_use` when there are tool calls,
//! else `end_turn`. Usage is deterministic: `input_tokens` is the characters of the request's
//! message contents over 4, `output_tokens` the characters of the reply's content over 4,
//! both rounded up. An `error` response is sent as `error {kind, message, retry_after_ms}`.
//! Once the script is used up every request gets `(the script has no more replies)`. With
//! `stream: true` the content is first sent as `stream_chunk`s, one word (with the space
//! after it) each; a response with `"chunks": ["…", "…"]` streams exactly those pieces instead,
//! and its content, unless given, is their concatenation (a secret split across chunks).
//!
//! Any response may take `"delay_ms": N` (at most 60000): the provider waits that long before
//! answering it, as a slow model would. Requests are answered one at a time, in script order,
//! so two agents sharing one scripted plugin wait for each other; give each its own plugin to
//! have them answered at the same time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use p3ak_proto::{ErrorKind, InferenceRequest, InferenceResponse, StopReason, ToolCall, Usage};
use serde::Deserialize;
use serde_json::Value;

use crate::PluginError;
use p3ak_sdk::runtime::{Provider, StreamSink, ToolFailure};

/// The content sent once the script is used up.
pub const EXHAUSTED: &str = "(the script has no more replies)";
/// Largest script file, in bytes.
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;
/// Longest `delay_ms` of a response.
pub const MAX_DELAY_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    script: PathBuf,
    #[serde(default)]
    record: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    responses: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    chunks: Option<Vec<String>>,
    #[serde(default)]
    tool_calls: Vec<Call>,
    #[serde(default)]
    error: Option<Failure>,
    #[serde(default)]
    delay_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    name: String,
    #[serde(default = "empty_object")]
    arguments: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Failure {
    kind: ErrorKind,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// One scripted reply, and how long to wait before giving it.
struct Step {
    delay: std::time::Duration,
    reply: Reply,
}

/// What one scripted reply says.
enum Reply {
    Answer {
        content: String,
        chunks: Option<Vec<String>>,
        calls: Vec<(String, Value)>,
    },
    Error(ToolFailure),
}

/// The `scripted` provider.
pub struct Scripted {
    replies: std::vec::IntoIter<Step>,
    next_call: u64,
    record: Option<std::fs::File>,
}

impl Scripted {
    /// Reads and checks the script named by the `welcome` config, and opens the record file.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] with a one-line reason: a missing `script`, an unreadable or
    /// malformed script (with the response's position), a record file that cannot be opened.
    pub fn from_config(config: &Value) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        let shown = config.script.display().to_string();
        let bad = |reason: String| PluginError::Config(format!("script `{shown}`: {reason}"));
        let size = std::fs::metadata(&config.script)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if size > MAX_SCRIPT_BYTES {
            return Err(bad(format!(
                "{size} bytes, over the limit of {MAX_SCRIPT_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(&config.script).map_err(|e| bad(e.to_string()))?;
        let replies = parse_script(&text).map_err(|e| bad(e.to_string()))?;
        let record = match &config.record {
            None => None,
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        PluginError::Config(format!(
                            "cannot open the record `{}`: {e}",
                            path.display()
                        ))
                    })?,
            ),
        };
        Ok(Self {
            replies: replies.into_iter(),
            next_call: 1,
            record,
        })
    }
}

/// Why a script does not parse.
#[derive(Debug, thiserror::Error)]
enum ScriptError {
    /// Not the script's JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// One response is inconsistent.
    #[error("response {index}: {reason}")]
    Response {
        /// From 1.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

fn parse_script(text: &str) -> Result<Vec<Step>, ScriptError> {
    let file: ScriptFile = serde_json::from_str(text)?;
    file.responses
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = |reason: &str| ScriptError::Response {
                index: i + 1,
                reason: reason.to_owned(),
            };
            let delay = match entry.delay_ms {
                Some(ms) if ms > MAX_DELAY_MS => {
                    return Err(at(&format!(
                        "`delay_ms` must be at most {MAX_DELAY_MS}, not {ms}"
                    )));
                }
                ms => std::time::Duration::from_millis(ms.unwrap_or(0)),
            };
            let reply = match entry.error {
                Some(failure) => {
                    if entry.content.is_some()
                        || entry.chunks.is_some()
                        || !entry.tool_calls.is_empty()
                    {
                        return Err(at(
                            "an `error` response has no `content`, `chunks` or `tool_calls`",
                        ));
                    }
                    Reply::Error(ToolFailure {
                        retry_after_ms: failure.retry_after_ms,
                        ..ToolFailure::new(failure.kind, failure.message)
                    })
                }
                None => {
                    let mut calls = Vec::with_capacity(entry.tool_calls.len());
                    for call in entry.tool_calls {
                        if call.name.is_empty() {
                            return Err(at("a tool call has an empty `name`"));
                        }
                        if !call.arguments.is_object() {
                            return Err(at(&format!(
                                "the `arguments` of `{}` must be a JSON object",
                                call.name
                            )));
                        }
                        calls.push((call.name, call.arguments));
                    }
                    let content = match (entry.content, &entry.chunks) {
                        (Some(content), _) => content,
                        (None, Some(chunks)) => chunks.concat(),
                        (None, None) => String::new(),
                    };
                    Reply::Answer {
                        content,
                        chunks: entry.chunks,
                        calls,
                    }
                }
            };
            Ok(Step { delay, reply })
        })
        .collect()
}

/// Characters over 4, rounded up.
fn tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

impl Provider for Scripted {
    fn infer(
        &mut self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure> {
        if let Some(record) = &mut self.record {
            let mut line = serde_json::to_vec(request)
                .map_err(|e| ToolFailure::permanent(format!("cannot record the request: {e}")))?;
            line.push(b'\n');
            record
                .write_all(&line)
                .map_err(|e| ToolFailure::permanent(format!("cannot record the request: {e}")))?;
        }
        let step = self.replies.next();
        if let Some(step) = &step
            && !step.delay.is_zero()
        {
            std::thread::sleep(step.delay);
        }
        let (content, chunks, calls) = match step.map(|s| s.reply) {
            Some(Reply::Error(failure)) => return Err(failure),
            Some(Reply::Answer {
                content,
                chunks,
                calls,
            }) => (content, chunks, calls),
            None => (EXHAUSTED.to_owned(), None, Vec::new()),
        };
        if request.stream {
            match &chunks {
                Some(chunks) => {
                    for chunk in chunks {
                        stream.send(chunk)?;
                    }
                }
                None => {
                    for word in content.split_inclusive(char::is_whitespace) {
                        stream.send(word)?;
                    }
                }
            }
        }
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(name, arguments)| {
                let id = format!("call_{}", self.next_call);
                self.next_call += 1;
                ToolCall {
                    id,
                    name,
                    arguments,
                }
            })
            .collect();
        let input_chars: usize = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        Ok(InferenceResponse {
            stop: if tool_calls.is_empty() {
                StopReason::EndTurn
            } else {
                StopReason::ToolUse
            },
            usage: Usage {
                input_tokens: tokens(input_chars),
                output_tokens: tokens(content.chars().count()),
            },
            content,
            tool_calls,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn script_errors_say_where() {
        let e = parse_script(r#"{"responses": [{"content": "a"}, {"error": {"kind": "nope"}}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
        let e = parse_script(
            r#"{"responses": [{"content": "a"}, {"tool_calls": [{"name": "x", "arguments": 3}]}]}"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("response 2:"), "{e}");
        let e = parse_script(r#"{"responses": [{"error": {"kind": "auth"}, "content": "x"}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("response 1:"), "{e}");
        let e = parse_script(r#"{"responses": [{"error": {"kind": "auth"}, "chunks": ["x"]}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("response 1:"), "{e}");
        let Some(Step {
            reply: Reply::Answer { content, .. },
            ..
        }) = parse_script(r#"{"responses": [{"chunks": ["ab", "cd"]}]}"#)
            .unwrap()
            .into_iter()
            .next()
        else {
            panic!("an answer")
        };
        assert_eq!(content, "abcd");
        assert!(parse_script("{").is_err());
        assert!(parse_script(r#"{"responses": [], "extra": 1}"#).is_err());
        assert_eq!(parse_script(r#"{"responses": []}"#).unwrap().len(), 0);
        assert_eq!(tokens(0), 0);
        assert_eq!(tokens(5), 2);
    }

    #[test]
    fn delays_are_parsed_per_response_and_bounded() {
        let steps = parse_script(
            r#"{"responses": [{"content": "a", "delay_ms": 2000}, {"content": "b"},
                {"error": {"kind": "transient"}, "delay_ms": 60000}]}"#,
        )
        .unwrap();
        let delays: Vec<u128> = steps.iter().map(|s| s.delay.as_millis()).collect();
        assert_eq!(delays, [2000, 0, 60_000]);
        let e = parse_script(
            r#"{"responses": [{"content": "a"}, {"content": "b", "delay_ms": 60001}]}"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(e, "response 2: `delay_ms` must be at most 60000, not 60001");
        for bad in [r#"-1"#, r#""2s""#, r#"1.5"#] {
            let script = format!(r#"{{"responses": [{{"content": "a", "delay_ms": {bad}}}]}}"#);
            assert!(parse_script(&script).is_err(), "{bad}");
        }
    }
}

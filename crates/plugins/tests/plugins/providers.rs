//! `anthropic`, `openai`, `ollama` against fake servers on loopback that follow each API's
//! documented request and response formats: tool calls (several in one turn), streaming,
//! refusals, errors, 429 with `retry-after`, 5xx, dropped streams, malformed tool calls.

use std::time::{Duration, Instant};

use p3ak_proto::{
    ChatMessage, Credential, ErrorKind, InferenceRequest, Role, StopReason, ToolCall,
    ToolDefinition,
};
use serde_json::{Value, json};

use crate::fake_api::{Canned, FakeApi};
use crate::kernel::{Kernel, start, start_failing, user};

const KEY: &str = "sk-ant-test-7c1f0e9d8b6a5f4e3d2c";

fn fixture(path: &str) -> String {
    let full = format!(
        "{}/tests/fixtures/providers/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// A provider pointed at `api`, retrying fast.
fn provider(builtin: &str, api: &FakeApi, extra: Value) -> Kernel {
    let mut config = json!({
        "base_url": api.base, "model": "test-model", "retry_base_ms": 5, "timeout_secs": 5,
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    start(builtin, config)
}

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition {
            name: "files__read".to_owned(),
            description: "Reads a file".to_owned(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}},
                               "required": ["path"]}),
        },
        ToolDefinition {
            name: "files__list".to_owned(),
            description: "Lists files".to_owned(),
            parameters: json!({"type": "object", "properties": {}}),
        },
    ]
}

/// A conversation with a finished tool round: user, assistant calling two tools, two
/// results, then a new user message.
fn conversation() -> Vec<ChatMessage> {
    vec![
        user("read a and list"),
        ChatMessage {
            role: Role::Assistant,
            content: "On it.".to_owned(),
            tool_calls: vec![
                ToolCall {
                    id: "toolu_1".to_owned(),
                    name: "files__read".to_owned(),
                    arguments: json!({"path": "a.txt"}),
                },
                ToolCall {
                    id: "toolu_2".to_owned(),
                    name: "files__list".to_owned(),
                    arguments: json!({}),
                },
            ],
            tool_call_id: None,
        },
        ChatMessage {
            role: Role::Tool,
            content: "alpha".to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: Some("toolu_1".to_owned()),
        },
        ChatMessage {
            role: Role::Tool,
            content: "[\"a.txt\"]".to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: Some("toolu_2".to_owned()),
        },
        user("thanks, now b"),
    ]
}

fn request(stream: bool, key: Option<&str>) -> InferenceRequest {
    InferenceRequest {
        model: None,
        system: "You are terse.".to_owned(),
        messages: conversation(),
        tools: tools(),
        stream,
        credential: key.map(|k| Credential::new(k.to_owned())),
    }
}

fn names(calls: &[ToolCall]) -> Vec<(&str, &str, Value)> {
    calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.clone()))
        .collect()
}

// --- anthropic -------------------------------------------------------------------------

#[test]
fn anthropic_sends_the_documented_request_and_reads_two_tool_calls() {
    let api = FakeApi::start(vec![Canned::ok(&fixture(
        "anthropic/message_tool_use.json",
    ))]);
    let mut k = provider("anthropic", &api, json!({"max_tokens": 1000}));
    assert_eq!(k.register.kind, p3ak_proto::PluginKind::Provider);
    let (chunks, reply) = k.infer(request(false, Some(KEY)));
    let reply = reply.unwrap();
    assert!(chunks.is_empty());
    assert_eq!(reply.content, "I'll read both files.");
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(
        names(&reply.tool_calls),
        [
            (
                "toolu_01A09q90qw90lq917835lq9",
                "files__read",
                json!({"path": "notes/a.txt"})
            ),
            (
                "toolu_01B18r81rx81mr826744mr8",
                "files__read",
                json!({"path": "notes/b.txt"})
            ),
        ]
    );
    // Cache reads count as input.
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (512, 88)
    );

    let sent = &api.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let body = &sent.body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 1000);
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["stream"], false);
    assert_eq!(body["tools"][0]["name"], "files__read");
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["path"])
    );
    // Turns alternate: the two tool results share one user turn with the next message.
    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        messages[1]["content"],
        json!([
            {"type": "text", "text": "On it."},
            {"type": "tool_use", "id": "toolu_1", "name": "files__read", "input": {"path": "a.txt"}},
            {"type": "tool_use", "id": "toolu_2", "name": "files__list", "input": {}},
        ])
    );
    assert_eq!(
        messages[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "alpha"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "[\"a.txt\"]"},
            {"type": "text", "text": "thanks, now b"},
        ])
    );
    k.shutdown();
}

#[test]
fn anthropic_streams_text_and_joins_tool_input_fragments() {
    let api = FakeApi::start(vec![Canned::sse(&fixture("anthropic/stream_tool_use.sse"))]);
    let mut k = provider("anthropic", &api, json!({}));
    let (chunks, reply) = k.infer(request(true, Some(KEY)));
    let reply = reply.unwrap();
    assert_eq!(chunks, ["Okay, let me", " check the weather."]);
    assert_eq!(reply.content, "Okay, let me check the weather.");
    assert_eq!(
        names(&reply.tool_calls),
        [
            (
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "http__request",
                json!({"method": "GET", "url": "https://wttr.in/Lafayette"})
            ),
            ("toolu_02U2y2gK45rBnl3uOUsO8Vq7", "files__list", json!({})),
        ]
    );
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (472, 89)
    );
    assert_eq!(api.requests()[0].body["stream"], true);
    assert_eq!(api.requests()[0].body["max_tokens"], 4096);
    k.shutdown();
}

#[test]
fn anthropic_malformed_tool_input_reaches_the_kernel_as_text() {
    let api = FakeApi::start(vec![Canned::sse(&fixture(
        "anthropic/stream_malformed_input.sse",
    ))]);
    let mut k = provider("anthropic", &api, json!({}));
    let reply = k.infer(request(true, Some(KEY))).1.unwrap();
    // Left as a string: the kernel refuses it and tells the model what was malformed.
    assert_eq!(reply.tool_calls[0].arguments, json!("{\"path\": \"a.txt"));
    k.shutdown();
}

#[test]
fn anthropic_refusal_is_a_refusal() {
    let api = FakeApi::start(vec![Canned::ok(&fixture("anthropic/message_refusal.json"))]);
    let mut k = provider("anthropic", &api, json!({}));
    let reply = k.infer(request(false, Some(KEY))).1.unwrap();
    assert_eq!(reply.stop, StopReason::Refusal);
    assert_eq!(reply.content, "I can't help with that.");
    assert!(reply.tool_calls.is_empty());
    k.shutdown();
}

#[test]
fn anthropic_retries_429_after_the_servers_delay_then_succeeds() {
    let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
    let api = FakeApi::start(vec![
        Canned::status(429, vec![("retry-after", "1".to_owned())], limited),
        Canned::status(
            529,
            Vec::new(),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        Canned::ok(&fixture("anthropic/message_refusal.json")),
    ]);
    let mut k = provider("anthropic", &api, json!({}));
    let started = Instant::now();
    let reply = k.infer(request(false, Some(KEY))).1.unwrap();
    assert_eq!(reply.content, "I can't help with that.");
    assert_eq!(api.requests().len(), 3);
    // The 429 asked for a second; the 529 got the 5 ms backoff.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    k.shutdown();
}

#[test]
fn anthropic_gives_up_with_rate_limited_when_the_wait_is_too_long() {
    let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let api = FakeApi::start(vec![Canned::status(
        429,
        vec![("retry-after", "3600".to_owned())],
        limited,
    )]);
    let mut k = provider("anthropic", &api, json!({"max_retry_wait_secs": 30}));
    let error = k.infer(request(false, Some(KEY))).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert_eq!(error.retry_after_ms, Some(3_600_000));
    assert_eq!(
        error.message,
        "anthropic: HTTP 429 Too Many Requests: rate_limit_error: slow down"
    );
    assert_eq!(api.requests().len(), 1, "no retry beyond the limit");
    k.shutdown();
}

#[test]
fn anthropic_server_errors_are_retried_then_reported_as_transient() {
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let api = FakeApi::start(
        (0..3)
            .map(|_| Canned::status(529, Vec::new(), overloaded))
            .collect(),
    );
    let mut k = provider("anthropic", &api, json!({"max_retries": 2}));
    let error = k.infer(request(false, Some(KEY))).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert!(
        error.message.contains("overloaded_error: Overloaded"),
        "{error:?}"
    );
    assert_eq!(api.requests().len(), 3);
    k.shutdown();
}

#[test]
fn anthropic_auth_failure_never_echoes_the_key() {
    let body = format!(
        r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {KEY}"}}}}"#
    );
    let api = FakeApi::start(vec![Canned::status(401, Vec::new(), &body)]);
    let mut k = provider("anthropic", &api, json!({}));
    let error = k.infer(request(false, Some(KEY))).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Auth);
    assert!(!error.message.contains(KEY), "{error:?}");
    assert!(
        error.message.contains("invalid x-api-key: [redacted]"),
        "{error:?}"
    );
    assert_eq!(api.requests().len(), 1, "a 401 is not retried");
    k.shutdown();
}

#[test]
fn anthropic_without_a_key_says_how_to_set_one() {
    let api = FakeApi::start(Vec::new());
    let mut k = provider("anthropic", &api, json!({}));
    let error = k.infer(request(false, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Auth);
    assert!(error.message.contains("p3ak secret set"), "{error:?}");
    assert!(api.requests().is_empty());
    k.shutdown();
}

#[test]
fn anthropic_survives_a_dropped_stream_and_an_error_event() {
    let api = FakeApi::start(vec![
        Canned::sse(&fixture("anthropic/stream_tool_use.sse")).dropped_after(5),
        Canned::sse(&fixture("anthropic/stream_overloaded.sse")),
        Canned::sse(&fixture("anthropic/stream_tool_use.sse")),
    ]);
    let mut k = provider("anthropic", &api, json!({}));
    let (chunks, reply) = k.infer(request(true, Some(KEY)));
    let error = reply.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient, "{error:?}");
    assert_eq!(chunks, ["Okay, let me", " check the weather."]);
    let error = k.infer(request(true, Some(KEY))).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert_eq!(error.message, "anthropic: overloaded_error: Overloaded");
    // The plugin still serves.
    let reply = k.infer(request(true, Some(KEY))).1.unwrap();
    assert_eq!(reply.tool_calls.len(), 2);
    k.shutdown();
}

#[test]
fn anthropic_refuses_to_send_a_key_over_plain_http_to_another_host() {
    let mut k = start(
        "anthropic",
        json!({"base_url": "http://api.example.invalid", "model": "m"}),
    );
    let error = k.infer(request(false, Some(KEY))).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert!(error.message.contains("plain http"), "{error:?}");
    k.shutdown();
}

#[test]
fn provider_configs_are_checked() {
    for (builtin, config, expect) in [
        (
            "anthropic",
            json!({"temperature": 1}),
            "unknown field `temperature`",
        ),
        (
            "openai",
            json!({"base_url": "ftp://x"}),
            "must be an http or https URL",
        ),
        (
            "ollama",
            json!({"timeout_secs": 0}),
            "`timeout_secs` must be from 1",
        ),
        (
            "openai",
            json!({"max_retries": 99}),
            "`max_retries` must be from 0 to 10",
        ),
        ("anthropic", json!({"model": ""}), "`model` is empty"),
        (
            "openai",
            json!({"concurrency": 0}),
            "`concurrency` must be from 1 to 32, not 0",
        ),
        (
            "ollama",
            json!({"concurrency": 33}),
            "`concurrency` must be from 1 to 32, not 33",
        ),
        ("anthropic", json!({"concurrency": "many"}), "invalid type"),
    ] {
        let (sent, returned) = start_failing(builtin, config, p3ak_plugins::Launch::new(builtin));
        assert_eq!(sent.kind, ErrorKind::Invalid);
        assert!(sent.message.contains(expect), "{builtin}: {}", sent.message);
        assert!(returned.to_string().contains(expect), "{returned}");
    }
}

#[test]
fn a_request_without_any_model_is_invalid() {
    let api = FakeApi::start(Vec::new());
    let mut k = start("ollama", json!({"base_url": api.base}));
    let error = k.infer(request(false, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid);
    assert!(error.message.starts_with("no model"), "{error:?}");
    // The agent's model wins over the configured one.
    let api = FakeApi::start(vec![Canned::ok(&fixture("ollama/chat_tool_calls.json"))]);
    let mut k = provider("ollama", &api, json!({}));
    let mut r = request(false, None);
    r.model = Some("qwen3:4b".to_owned());
    k.infer(r).1.unwrap();
    assert_eq!(api.requests()[0].body["model"], "qwen3:4b");
    k.shutdown();
}

// --- openai ----------------------------------------------------------------------------

#[test]
fn openai_sends_chat_completions_and_reads_two_tool_calls() {
    let api = FakeApi::start(vec![Canned::ok(&fixture(
        "openai/completion_tool_calls.json",
    ))]);
    let mut k = provider("openai", &api, json!({"max_tokens": 256}));
    let reply = k.infer(request(false, Some(KEY))).1.unwrap();
    assert_eq!(
        names(&reply.tool_calls),
        [
            ("call_Fq1", "files__read", json!({"path": "a.txt"})),
            ("call_Fq2", "files__list", json!({})),
        ]
    );
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(reply.content, "");
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (82, 17)
    );

    let sent = &api.requests()[0];
    assert_eq!(sent.path, "/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = &sent.body;
    assert_eq!(body["max_tokens"], 256);
    assert!(body.get("stream_options").is_none());
    assert_eq!(
        body["tools"][1],
        json!({"type": "function", "function": {
        "name": "files__list", "description": "Lists files",
        "parameters": {"type": "object", "properties": {}}}})
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(
        messages[2]["tool_calls"][0],
        json!({"id": "toolu_1", "type": "function",
               "function": {"name": "files__read", "arguments": "{\"path\":\"a.txt\"}"}})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "alpha"})
    );
    assert_eq!(messages.len(), 6);
    k.shutdown();
}

#[test]
fn openai_streams_and_assembles_interleaved_tool_call_fragments() {
    let api = FakeApi::start(vec![Canned::sse(&fixture("openai/stream_tool_calls.sse"))]);
    // A local server: no key, a base URL with a path.
    let mut k = start(
        "openai",
        json!({"base_url": format!("{}/v1", api.base), "model": "llama", "retry_base_ms": 5}),
    );
    let (chunks, reply) = k.infer(request(true, None));
    let reply = reply.unwrap();
    assert_eq!(chunks, ["Looking", " now."]);
    assert_eq!(reply.content, "Looking now.");
    assert_eq!(
        names(&reply.tool_calls),
        [
            ("call_A1", "files__read", json!({"path": "a.txt"})),
            ("call_B2", "files__list", json!({})),
        ]
    );
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (120, 31)
    );
    let sent = &api.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    k.shutdown();
}

/// A Chat Completions stream saying `text`.
fn openai_says(text: &str) -> Canned {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-m", "object": "chat.completion.chunk", "model": "test-model",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    Canned::sse(&format!(
        "{}{}data: [DONE]\n\n",
        chunk(json!({"role": "assistant", "content": text}), Value::Null),
        chunk(json!({}), json!("stop")),
    ))
}

/// Sends `n` streamed requests at once (ids 101, 102, ...) and returns, by id, the chunks and
/// the content of each answer.
fn infer_at_once(k: &mut Kernel, n: u64) -> std::collections::BTreeMap<u64, (String, String)> {
    for id in 101..101 + n {
        let mut r = request(true, None);
        r.system = format!("request {id}");
        k.send(id, p3ak_proto::Message::InferenceRequest(r));
    }
    let mut out = std::collections::BTreeMap::<u64, (String, String)>::new();
    let mut done = 0;
    while done < n {
        let reply = k.recv();
        let entry = out.entry(reply.id).or_default();
        match reply.message {
            p3ak_proto::Message::StreamChunk(c) => entry.0.push_str(&c.text),
            p3ak_proto::Message::InferenceResponse(r) => {
                entry.1 = r.content;
                done += 1;
            }
            other => panic!("request {}: {other:?}", reply.id),
        }
    }
    out
}

#[test]
fn openai_with_concurrency_one_sends_one_request_at_a_time() {
    // Nobody comes to meet: each request is answered alone once the short wait is over.
    let api = FakeApi::start_concurrent(2, Duration::from_millis(200), |met| {
        openai_says(&format!("met {met}"))
    });
    let mut k = provider("openai", &api, json!({"concurrency": 1}));
    let answers = infer_at_once(&mut k, 2);
    assert_eq!(api.peak(), 1);
    assert!(
        answers.values().all(|(_, content)| content == "met 1"),
        "{answers:?}"
    );
    k.shutdown();
}

#[test]
fn openai_refusals_and_malformed_arguments() {
    let api = FakeApi::start(vec![
        Canned::ok(&fixture("openai/completion_refusal.json")),
        Canned::sse(&fixture("openai/stream_malformed_arguments.sse")),
    ]);
    let mut k = provider("openai", &api, json!({"stream_usage": false}));
    let reply = k.infer(request(false, None)).1.unwrap();
    assert_eq!(reply.stop, StopReason::Refusal);
    assert_eq!(reply.content, "I'm sorry, I can't help with that.");
    let reply = k.infer(request(true, None)).1.unwrap();
    assert_eq!(reply.tool_calls[0].arguments, json!("{'path': a.txt}"));
    assert!(api.requests()[1].body.get("stream_options").is_none());
    k.shutdown();
}

#[test]
fn openai_retries_5xx_and_429_with_retry_after_ms() {
    let api = FakeApi::start(vec![
        Canned::status(503, Vec::new(), "upstream unavailable"),
        Canned::status(
            429,
            vec![("retry-after-ms", "20".to_owned())],
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
        Canned::ok(&fixture("openai/completion_tool_calls.json")),
    ]);
    let mut k = provider("openai", &api, json!({}));
    let reply = k.infer(request(false, None)).1.unwrap();
    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(api.requests().len(), 3);
    k.shutdown();
}

#[test]
fn openai_errors_are_typed() {
    let api = FakeApi::start(vec![
        Canned::status(
            400,
            Vec::new(),
            r#"{"error":{"message":"Invalid 'messages[1].content'","type":"invalid_request_error","param":"messages","code":null}}"#,
        ),
        Canned::Stream {
            content_type: "text/event-stream",
            pieces: vec![
                "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n"
                    .to_owned(),
            ],
            drop: false,
            pause: Duration::ZERO,
        },
        Canned::sse(&fixture("openai/stream_tool_calls.sse")).dropped_after(3),
        Canned::sse("data: {not json}\n\n"),
    ]);
    let mut k = provider("openai", &api, json!({}));
    let error = k.infer(request(false, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid);
    assert_eq!(
        error.message,
        "openai: HTTP 400 Bad Request: invalid_request_error: Invalid 'messages[1].content'"
    );
    let error = k.infer(request(true, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert!(
        error.message.contains("The server had an error"),
        "{error:?}"
    );
    let (chunks, reply) = k.infer(request(true, None));
    assert_eq!(reply.unwrap_err().kind, ErrorKind::Transient);
    assert_eq!(chunks, ["Looking", " now."]);
    let error = k.infer(request(true, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert!(error.message.contains("malformed"), "{error:?}");
    k.shutdown();
}

// --- ollama ----------------------------------------------------------------------------

#[test]
fn ollama_reads_tool_calls_and_names_tool_results() {
    let api = FakeApi::start(vec![Canned::ok(&fixture("ollama/chat_tool_calls.json"))]);
    let mut k = provider(
        "ollama",
        &api,
        json!({"max_tokens": 64, "keep_alive": "10m"}),
    );
    let reply = k.infer(request(false, None)).1.unwrap();
    assert_eq!(
        names(&reply.tool_calls),
        [
            ("call_1", "files__read", json!({"path": "a.txt"})),
            ("call_2", "files__list", json!({})),
        ]
    );
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (201, 33)
    );
    let sent = &api.requests()[0];
    assert_eq!(sent.path, "/api/chat");
    let body = &sent.body;
    assert_eq!(body["options"], json!({"num_predict": 64}));
    assert_eq!(body["keep_alive"], "10m");
    assert_eq!(body["stream"], false);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages[2]["tool_calls"][0],
        json!({"function": {"name": "files__read", "arguments": {"path": "a.txt"}}})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "content": "alpha", "tool_name": "files__read"})
    );
    assert_eq!(messages[4]["tool_name"], "files__list");
    k.shutdown();
}

#[test]
fn ollama_streams_lines_and_tool_calls() {
    let api = FakeApi::start(vec![
        Canned::ndjson(&fixture("ollama/stream_text.ndjson")),
        Canned::ndjson(&fixture("ollama/stream_tool_calls.ndjson")),
    ]);
    let mut k = provider("ollama", &api, json!({}));
    let (chunks, reply) = k.infer(request(true, None));
    let reply = reply.unwrap();
    assert_eq!(chunks, ["The", " sky", " is blue."]);
    assert_eq!(reply.content, "The sky is blue.");
    assert_eq!(reply.stop, StopReason::EndTurn);
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (26, 5)
    );
    // Call ids keep counting across requests.
    let reply = k.infer(request(true, None)).1.unwrap();
    assert_eq!(
        names(&reply.tool_calls),
        [
            ("call_1", "files__read", json!({"path": "a.txt"})),
            (
                "call_2",
                "http__request",
                json!({"method": "GET", "url": "https://example.org/"})
            ),
        ]
    );
    k.shutdown();
}

#[test]
fn ollama_failures_are_typed_and_survived() {
    let api = FakeApi::start(vec![
        Canned::status(
            404,
            Vec::new(),
            r#"{"error":"model \"nope\" not found, try pulling it first"}"#,
        ),
        Canned::ndjson(&fixture("ollama/stream_text.ndjson")).dropped_after(2),
        Canned::ndjson("{\"error\":\"an error was encountered while running the model\"}\n"),
        Canned::ndjson(&fixture("ollama/stream_text.ndjson")),
    ]);
    let mut k = provider("ollama", &api, json!({}));
    let error = k.infer(request(true, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid);
    assert!(
        error.message.contains("not found, try pulling it first"),
        "{error:?}"
    );
    let (chunks, reply) = k.infer(request(true, None));
    assert_eq!(reply.unwrap_err().kind, ErrorKind::Transient);
    assert_eq!(chunks, ["The", " sky"]);
    let error = k.infer(request(true, None)).1.unwrap_err();
    assert_eq!(
        error.message,
        "ollama: an error was encountered while running the model"
    );
    assert_eq!(
        k.infer(request(true, None)).1.unwrap().content,
        "The sky is blue."
    );
    k.shutdown();
}

#[test]
fn a_silent_server_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    let mut k = start(
        "ollama",
        json!({"base_url": base, "model": "m", "timeout_secs": 1, "max_retries": 0}),
    );
    let error = k.infer(request(false, None)).1.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert!(error.message.contains("no answer within 1 s"), "{error:?}");
    drop(silent);
    k.shutdown();
}

//! `docs/schema/` describes exactly what `p3ak_proto` encodes and accepts.
//!
//! Every sample message is encoded with [`p3ak_proto::encode`] and validated against
//! `envelope.schema.json` and its type's schema. Then each sample is mutated in every place
//! (a field removed, an unknown field added, a value replaced by values of other JSON types)
//! and the schemas and [`p3ak_proto::decode`] must agree on every mutant: both accept or both
//! refuse.

#![cfg(test)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use p3ak_proto::{
    ActionSpec, Approval, ApprovalPress, Attachment, ChatMessage, DEFAULT_MAX_FRAME, Envelope,
    ErrorKind, ErrorMessage, HEADER_LEN, Hello, Inbound, InferenceRequest, InferenceResponse,
    Invoke, Message, Outbound, Ping, PluginKind, Pong, Register, Registered, Role, Shutdown,
    StopReason, StreamChunk, Tier, ToolCall, ToolDefinition, ToolResult, Usage, Welcome, decode,
    encode,
};
use serde_json::{Value, json};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema")
}

fn load(file: &str) -> Value {
    let path = schema_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
}

fn validator(file: &str) -> jsonschema::Validator {
    let schema = load(file);
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{file} is not a valid draft 2020-12 schema: {e}");
    }
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Fails to compile when a message type is added, so that it gets samples here.
fn covered(message: &Message) {
    match message {
        Message::Hello(_)
        | Message::Welcome(_)
        | Message::Register(_)
        | Message::Registered(_)
        | Message::Invoke(_)
        | Message::Result(_)
        | Message::StreamChunk(_)
        | Message::Error(_)
        | Message::Inbound(_)
        | Message::Outbound(_)
        | Message::Approval(_)
        | Message::ApprovalPress(_)
        | Message::InferenceRequest(_)
        | Message::InferenceResponse(_)
        | Message::Ping(_)
        | Message::Pong(_)
        | Message::Shutdown(_) => {}
    }
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments,
    }
}

fn chat(role: Role, content: &str) -> ChatMessage {
    ChatMessage {
        role,
        content: content.to_owned(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

/// Several messages of every type: every field set, optional ones left out, every enum value.
fn samples() -> Vec<Message> {
    let action = |name: &str, tier| ActionSpec {
        name: name.to_owned(),
        description: format!("does {name}"),
        parameters: json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": false
        }),
        tier,
    };
    let error = |kind, retry_after_ms| {
        Message::Error(ErrorMessage {
            kind,
            message: "it failed".to_owned(),
            retry_after_ms,
        })
    };
    let mut all = vec![
        Message::Hello(Hello {
            plugin: "wordcount".to_owned(),
            versions: vec![1],
            software: Some("wordcount.py 0.1".to_owned()),
        }),
        Message::Hello(Hello {
            plugin: "files".to_owned(),
            versions: vec![3, 2, 1],
            software: None,
        }),
        Message::Hello(Hello {
            plugin: String::new(),
            versions: Vec::new(),
            software: None,
        }),
        Message::Welcome(Welcome {
            version: 1,
            config: json!({"root": "/srv/files", "depth": 3, "follow": false}),
            key: None,
        }),
        Message::Welcome(Welcome {
            version: 1,
            config: Value::Null,
            key: None,
        }),
        Message::Register(Register {
            kind: PluginKind::Tool,
            actions: vec![
                action("count", Tier::Observe),
                action("shout", Tier::Act),
                action("delete", Tier::Commit),
                ActionSpec {
                    name: "bare".to_owned(),
                    description: String::new(),
                    parameters: json!({"type": "object"}),
                    tier: Tier::Observe,
                },
            ],
        }),
        Message::Register(Register {
            kind: PluginKind::Connector,
            actions: Vec::new(),
        }),
        Message::Register(Register {
            kind: PluginKind::Provider,
            actions: Vec::new(),
        }),
        Message::Registered(Registered {}),
        Message::Invoke(Invoke {
            agent: "amber".to_owned(),
            action: "count".to_owned(),
            args: json!({"text": "one two", "token": "s3cr3t"}),
            deadline_ms: Some(30_000),
        }),
        Message::Invoke(Invoke {
            agent: "amber".to_owned(),
            action: "shout".to_owned(),
            args: json!({}),
            deadline_ms: None,
        }),
        Message::Result(ToolResult {
            output: json!({"words": 2, "lines": 1, "chars": 7}),
        }),
        Message::Result(ToolResult {
            output: json!("plain text"),
        }),
        Message::Result(ToolResult {
            output: Value::Null,
        }),
        Message::StreamChunk(StreamChunk {
            text: "Hel".to_owned(),
        }),
        Message::StreamChunk(StreamChunk {
            text: String::new(),
        }),
        error(ErrorKind::RateLimited, Some(1500)),
        Message::Error(ErrorMessage {
            kind: ErrorKind::Rejected,
            message: String::new(),
            retry_after_ms: None,
        }),
        Message::Inbound(Inbound {
            conversation: "telegram:42".to_owned(),
            sender: "telegram:7".to_owned(),
            text: "what is on today?".to_owned(),
            agent: Some("amber".to_owned()),
            message_id: Some("901".to_owned()),
            sender_name: Some("Ann".to_owned()),
            direct: true,
            attachments: vec![Attachment {
                name: "note.txt".to_owned(),
                media_type: "text/plain".to_owned(),
                size: 5,
                data: Some("aGVsbG8=".to_owned()),
            }],
        }),
        Message::Inbound(Inbound::new("c", "s", "")),
        Message::Outbound(Outbound {
            conversation: "telegram:42".to_owned(),
            text: "Two meetings.".to_owned(),
            edit: None,
            partial: false,
        }),
        Message::Outbound(Outbound {
            conversation: "telegram:42".to_owned(),
            text: "Two meet".to_owned(),
            edit: Some("77".to_owned()),
            partial: true,
        }),
        Message::Approval(Approval {
            sealed: "c2VhbGVk".to_owned(),
        }),
        Message::ApprovalPress(ApprovalPress {
            sealed: "c2VhbGVk".to_owned(),
        }),
        Message::InferenceRequest(InferenceRequest {
            model: Some("llama3.1:8b".to_owned()),
            system: "You are Amber.".to_owned(),
            messages: vec![
                chat(Role::User, "count the words in 'a b c'"),
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![call("call_1", "wordcount__count", json!({"text": "a b c"}))],
                    tool_call_id: None,
                },
                ChatMessage {
                    role: Role::Tool,
                    content: r#"{"words":3}"#.to_owned(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some("call_1".to_owned()),
                },
                chat(Role::Assistant, "Three."),
            ],
            tools: vec![ToolDefinition {
                name: "wordcount__count".to_owned(),
                description: "Counts words".to_owned(),
                parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            }],
            stream: true,
            credential: Some(p3ak_proto::Credential::new("sk-test-0123456789".to_owned())),
        }),
        Message::InferenceRequest(InferenceRequest {
            model: None,
            system: String::new(),
            messages: vec![chat(Role::User, "hi")],
            tools: Vec::new(),
            stream: false,
            credential: None,
        }),
        Message::InferenceRequest(InferenceRequest {
            model: None,
            system: String::new(),
            messages: Vec::new(),
            tools: Vec::new(),
            stream: false,
            credential: None,
        }),
        Message::InferenceResponse(InferenceResponse {
            content: "Let me count.".to_owned(),
            tool_calls: vec![
                call("call_1", "wordcount__count", json!({"text": "a b c"})),
                call(
                    "call_2",
                    "files__read",
                    json!({"path": {"$secret": "TOKEN"}}),
                ),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input_tokens: 120,
                output_tokens: 18,
            },
        }),
        Message::Ping(Ping {}),
        Message::Pong(Pong {}),
        Message::Shutdown(Shutdown {}),
    ];
    for kind in [
        ErrorKind::Transient,
        ErrorKind::Permanent,
        ErrorKind::Auth,
        ErrorKind::Invalid,
    ] {
        all.push(error(kind, None));
    }
    for stop in [
        StopReason::EndTurn,
        StopReason::MaxTokens,
        StopReason::Refusal,
    ] {
        all.push(Message::InferenceResponse(InferenceResponse {
            content: String::new(),
            tool_calls: Vec::new(),
            stop,
            usage: Usage::default(),
        }));
    }
    all
}

/// The JSON object on the wire: encoded, header stripped.
fn wire(id: u64, message: &Message) -> Value {
    let frame = encode(&Envelope::new(id, message.clone()), DEFAULT_MAX_FRAME).unwrap();
    let len = u32::from_be_bytes(frame[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN, "header length");
    serde_json::from_slice(&frame[HEADER_LEN..]).unwrap()
}

struct Schemas {
    envelope: jsonschema::Validator,
    types: Vec<(String, jsonschema::Validator)>,
}

impl Schemas {
    fn load() -> Self {
        let names = type_names();
        Self {
            envelope: validator("envelope.schema.json"),
            types: names
                .iter()
                .map(|name| (name.clone(), validator(&format!("{name}.schema.json"))))
                .collect(),
        }
    }

    fn of(&self, type_name: &str) -> &jsonschema::Validator {
        &self
            .types
            .iter()
            .find(|(name, _)| name == type_name)
            .unwrap_or_else(|| panic!("no schema for `{type_name}`"))
            .1
    }

    /// Valid against the envelope and against the schema of `type_name`.
    fn accepts(&self, type_name: &str, value: &Value) -> bool {
        self.envelope.is_valid(value) && self.of(type_name).is_valid(value)
    }

    fn explain(&self, type_name: &str, value: &Value) -> String {
        self.envelope
            .iter_errors(value)
            .chain(self.of(type_name).iter_errors(value))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The `type` names the envelope schema lists.
fn type_names() -> Vec<String> {
    let envelope = load("envelope.schema.json");
    envelope["properties"]["type"]["enum"]
        .as_array()
        .expect("envelope lists the types")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_type_has_a_schema_and_samples() {
    let listed: BTreeSet<String> = type_names().into_iter().collect();
    let sampled: BTreeSet<String> = samples()
        .iter()
        .map(|m| {
            covered(m);
            m.type_name().to_owned()
        })
        .collect();
    assert_eq!(listed, sampled, "envelope's `type` enum vs the Rust types");
    let files: BTreeSet<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".schema.json").map(str::to_owned))
        .filter(|name| name != "envelope")
        .collect();
    assert_eq!(
        files, sampled,
        "docs/schema/*.schema.json vs the Rust types"
    );
    for name in &sampled {
        let schema = load(&format!("{name}.schema.json"));
        assert_eq!(schema["additionalProperties"], json!(false), "{name}");
        assert_eq!(schema["properties"]["type"]["const"], json!(name), "{name}");
        for (def, body) in schema
            .get("$defs")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert_eq!(body["additionalProperties"], json!(false), "{name}: {def}");
        }
    }
}

#[test]
fn encoded_messages_match_their_schemas() {
    let schemas = Schemas::load();
    for (n, message) in samples().iter().enumerate() {
        for id in [0, n as u64, u64::MAX] {
            let value = wire(id, message);
            let name = message.type_name();
            assert!(
                schemas.accepts(name, &value),
                "{value} refused: {}",
                schemas.explain(name, &value)
            );
            // No other type's schema takes it: `type` is a constant in each.
            for (other, schema) in &schemas.types {
                if other != name {
                    assert!(!schema.is_valid(&value), "{other} accepts {value}");
                }
            }
            let bytes = serde_json::to_vec(&value).unwrap();
            assert_eq!(decode(&bytes).unwrap(), Envelope::new(id, message.clone()));
        }
    }
}

/// Values of other JSON types (and out-of-range integers) to put in place of each value.
fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(4_294_967_296_u64),
        json!(u64::MAX),
        json!("x"),
        json!("observe"),
        json!([]),
        json!([1]),
        json!(["a", "b", {}, "observe"]),
        json!({}),
        json!({"observe": null}),
        json!({"tool": null}),
    ]
}

/// Every variation of `value`: each object key removed, an unknown key added to each object,
/// and each value (object members and array items, at any depth) replaced.
fn mutants(value: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let replacements = replacements();
    mutate(value, "", &replacements, &mut |path, new| {
        out.push((path, new));
    });
    out.into_iter()
        .map(|(path, edit)| (path.clone(), edit.apply(value, &path)))
        .collect()
}

#[derive(Clone)]
enum Edit {
    Remove,
    Add,
    Replace(Value),
}

impl Edit {
    fn apply(&self, root: &Value, path: &str) -> Value {
        let mut root = root.clone();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            &mut root
        } else {
            root.pointer_mut(parent).unwrap()
        };
        match (self, target) {
            (Self::Remove, Value::Object(map)) => {
                map.remove(last);
            }
            (Self::Add, Value::Object(map)) => {
                map.insert(last.to_owned(), json!(1));
            }
            (Self::Replace(new), Value::Object(map)) => {
                map.insert(last.to_owned(), new.clone());
            }
            (Self::Replace(new), Value::Array(items)) => {
                items[last.parse::<usize>().unwrap()] = new.clone();
            }
            _ => unreachable!(),
        }
        root
    }
}

fn mutate(value: &Value, path: &str, replacements: &[Value], out: &mut impl FnMut(String, Edit)) {
    match value {
        Value::Object(map) => {
            out(format!("{path}/zz_unknown"), Edit::Add);
            for (key, member) in map {
                let at = format!("{path}/{key}");
                out(at.clone(), Edit::Remove);
                for new in replacements {
                    if new != member {
                        out(at.clone(), Edit::Replace(new.clone()));
                    }
                }
                mutate(member, &at, replacements, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}/{i}");
                for new in replacements {
                    if new != item {
                        out(at.clone(), Edit::Replace(new.clone()));
                    }
                }
                mutate(item, &at, replacements, out);
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_and_decoder_agree_on_every_mutant() {
    let schemas = Schemas::load();
    let mut refused = 0;
    let mut accepted = 0;
    for message in samples() {
        let name = message.type_name();
        let original = wire(5, &message);
        for (path, mutant) in mutants(&original) {
            let by_schema = schemas.accepts(name, &mutant);
            let decoded = decode(&serde_json::to_vec(&mutant).unwrap());
            assert_eq!(
                by_schema,
                decoded.is_ok(),
                "disagreement at {path} of `{name}`: {mutant}\nschema: {}\ndecode: {:?}",
                schemas.explain(name, &mutant),
                decoded.map(|e| e.message)
            );
            if by_schema {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both outcomes are exercised in bulk.
    assert!(
        refused > 1000 && accepted > 100,
        "{refused} refused, {accepted} accepted"
    );
}

#[test]
fn invalid_messages_are_refused_by_both() {
    let schemas = Schemas::load();
    let cases: &[(&str, Value)] = &[
        (
            "ping",
            json!({"v": 1, "id": 1, "type": "ping", "extra": true}),
        ),
        ("ping", json!({"v": 1, "type": "ping"})),
        ("ping", json!({"id": 1, "type": "ping"})),
        ("ping", json!({"v": 0, "id": 1, "type": "ping"})),
        ("ping", json!({"v": 1, "id": -3, "type": "ping"})),
        ("ping", json!({"v": "1", "id": 1, "type": "ping"})),
        (
            "hello",
            json!({"v": 1, "id": 1, "type": "hello", "plugin": "a"}),
        ),
        (
            "hello",
            json!({"v": 1, "id": 1, "type": "hello", "plugin": "a", "versions": [-1]}),
        ),
        (
            "hello",
            json!({"v": 1, "id": 1, "type": "hello", "plugin": 7, "versions": [1]}),
        ),
        (
            "welcome",
            json!({"v": 1, "id": 1, "type": "welcome", "config": {}}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "daemon"}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "Tool"}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": {"tool": null}}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "tool",
                   "actions": [{"name": "count", "tier": "observe", "risk": "low"}]}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "tool",
                   "actions": [["count", "", {"type": "object"}, "observe"]]}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "tool",
                   "actions": [{"name": "count", "tier": "admin"}]}),
        ),
        (
            "registered",
            json!({"v": 1, "id": 1, "type": "registered", "masked": []}),
        ),
        (
            "invoke",
            json!({"v": 1, "id": 1, "type": "invoke", "agent": "a", "action": "b"}),
        ),
        (
            "invoke",
            json!({"v": 1, "id": 1, "type": "invoke", "agent": "a", "action": "b", "args": {},
                   "deadline_ms": -5}),
        ),
        ("result", json!({"v": 1, "id": 1, "type": "result"})),
        (
            "error",
            json!({"v": 1, "id": 1, "type": "error", "kind": "fatal"}),
        ),
        (
            "error",
            json!({"v": 1, "id": 1, "type": "error", "kind": "auth", "message": null}),
        ),
        (
            "error",
            json!({"v": 1, "id": 1, "type": "error", "kind": "rejected", "rule": "r1"}),
        ),
        (
            "inference_response",
            json!({"v": 1, "id": 1, "type": "inference_response", "stop": "end_turn",
                   "usage": [1, 2]}),
        ),
        (
            "inference_response",
            json!({"v": 1, "id": 1, "type": "inference_response", "stop": "end_turn",
                   "usage": {"input_tokens": 1, "cost": 2}}),
        ),
        (
            "inference_request",
            json!({"v": 1, "id": 1, "type": "inference_request",
                   "messages": [{"role": "system", "content": "x"}]}),
        ),
        (
            "inference_request",
            json!({"v": 1, "id": 1, "type": "inference_request",
                   "messages": [{"role": "assistant", "tool_calls": [{"id": "1", "name": "t"}]}]}),
        ),
    ];
    for (name, value) in cases {
        assert!(!schemas.accepts(name, value), "schema accepts {value}");
        assert!(
            decode(&serde_json::to_vec(value).unwrap()).is_err(),
            "decode accepts {value}"
        );
    }
    // An unknown type is refused by the envelope itself.
    let teleport = json!({"v": 1, "id": 1, "type": "teleport"});
    assert!(!schemas.envelope.is_valid(&teleport));
    assert!(decode(&serde_json::to_vec(&teleport).unwrap()).is_err());
}

#[test]
fn optional_fields_may_be_null_or_absent() {
    // `Option` fields accept `null` like absence; the schemas say so too.
    let schemas = Schemas::load();
    let cases: &[(&str, Value)] = &[
        (
            "hello",
            json!({"v": 1, "id": 1, "type": "hello", "plugin": "a", "versions": [1], "software": null}),
        ),
        (
            "invoke",
            json!({"v": 1, "id": 1, "type": "invoke", "agent": "a", "action": "b", "args": {}, "deadline_ms": null}),
        ),
        (
            "error",
            json!({"v": 1, "id": 1, "type": "error", "kind": "auth", "retry_after_ms": null}),
        ),
        (
            "welcome",
            json!({"v": 1, "id": 1, "type": "welcome", "version": 1}),
        ),
        (
            "register",
            json!({"v": 1, "id": 1, "type": "register", "kind": "tool"}),
        ),
        (
            "inference_response",
            json!({"v": 1, "id": 1, "type": "inference_response", "stop": "refusal", "usage": {}}),
        ),
    ];
    for (name, value) in cases {
        assert!(
            schemas.accepts(name, value),
            "schema refuses {value}: {}",
            schemas.explain(name, value)
        );
        decode(&serde_json::to_vec(value).unwrap()).unwrap();
    }
}

#[test]
fn the_example_session_in_protocol_md_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let schemas = Schemas::load();
    let mut lines = 0;
    for line in doc.lines() {
        let Some(payload) = line
            .strip_prefix("plugin: ")
            .or_else(|| line.strip_prefix("kernel: "))
        else {
            continue;
        };
        let envelope =
            decode(payload.as_bytes()).unwrap_or_else(|e| panic!("protocol.md: {e}: {payload}"));
        let value: Value = serde_json::from_str(payload).unwrap();
        let name = envelope.message.type_name();
        assert!(
            schemas.accepts(name, &value),
            "protocol.md: {payload}: {}",
            schemas.explain(name, &value)
        );
        lines += 1;
    }
    assert!(lines >= 10, "the example session is in protocol.md");
}

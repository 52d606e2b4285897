//! Message types. Each is one `type` on the wire; fields are exactly those listed (unknown
//! fields are refused), optional ones may be left out.

use serde::{Deserialize, Serialize};

use crate::strict;

/// One message with its version and correlation id.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Protocol version the sender speaks on this connection.
    pub v: u32,
    /// Correlation id: requests pick a fresh one, replies repeat the request's.
    pub id: u64,
    /// The message.
    pub message: Message,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Plugin → kernel, first message: who it is and which versions it speaks.
    Hello(Hello),
    /// Kernel → plugin: the version chosen and the plugin's configuration.
    Welcome(Welcome),
    /// Plugin → kernel: what the plugin is and what it offers.
    Register(Register),
    /// Kernel → plugin: the registration was accepted.
    Registered(Registered),
    /// Kernel → tool: run an action.
    Invoke(Invoke),
    /// Tool → kernel: the action's output.
    Result(ToolResult),
    /// Either way: part of a reply still being produced (the `id` of the request).
    StreamChunk(StreamChunk),
    /// Either way: the request failed.
    Error(ErrorMessage),
    /// Connector → kernel: a message from a person.
    Inbound(Inbound),
    /// Kernel → connector: post (or edit) a message.
    Outbound(Outbound),
    /// Kernel → connector: an approval to show its approvers, sealed by the approval daemon.
    Approval(Approval),
    /// Connector → kernel: an approver pressed an approval's button, sealed for the daemon.
    ApprovalPress(ApprovalPress),
    /// Kernel → provider: run the model over a conversation.
    InferenceRequest(InferenceRequest),
    /// Provider → kernel: what the model said and which tools it wants to call.
    InferenceResponse(InferenceResponse),
    /// Either way: are you there?
    Ping(Ping),
    /// The answer to a ping.
    Pong(Pong),
    /// Kernel → plugin: finish and exit.
    Shutdown(Shutdown),
}

impl Message {
    /// The `type` name on the wire.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Welcome(_) => "welcome",
            Self::Register(_) => "register",
            Self::Registered(_) => "registered",
            Self::Invoke(_) => "invoke",
            Self::Result(_) => "result",
            Self::StreamChunk(_) => "stream_chunk",
            Self::Error(_) => "error",
            Self::Inbound(_) => "inbound",
            Self::Outbound(_) => "outbound",
            Self::Approval(_) => "approval",
            Self::ApprovalPress(_) => "approval_press",
            Self::InferenceRequest(_) => "inference_request",
            Self::InferenceResponse(_) => "inference_response",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
            Self::Shutdown(_) => "shutdown",
        }
    }
}

/// `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The plugin's name as the operator configured it.
    pub plugin: String,
    /// Protocol versions the plugin speaks.
    pub versions: Vec<u32>,
    /// Free text: the plugin's software and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
}

/// `welcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u32,
    /// The plugin's settings from `config.toml` (never secrets: those go through the broker).
    #[serde(default)]
    pub config: serde_json::Value,
    /// A key the kernel hands this plugin for the data it serves (the `vault` plugin's key to
    /// the memory vault, hex), outside `config` so that it is never logged with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Credential>,
}

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Carries messages between people and the kernel.
    Connector,
    /// Offers actions.
    Tool,
    /// Runs a language model.
    Provider,
}

/// How consequential an action is, as its plugin recommends. The operator's policy decides;
/// a plugin can only ever lower the default, never raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Reads; changes nothing.
    Observe,
    /// Changes something that can be undone.
    Act,
    /// Changes something that cannot easily be undone.
    Commit,
}

/// One action a tool offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The action's name within the plugin (`read`); the policy sees `<plugin>.<name>`.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// A JSON Schema for its arguments (an object schema).
    #[serde(default = "object_schema")]
    pub parameters: serde_json::Value,
    /// The tier the plugin recommends.
    pub tier: Tier,
}

fn object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

/// `register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Connector, tool or provider.
    pub kind: PluginKind,
    /// The actions a tool offers (empty for others).
    #[serde(default, deserialize_with = "strict::objects")]
    pub actions: Vec<ActionSpec>,
}

/// `registered`. Deliberately says nothing about which actions the policy masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {}

/// `invoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoke {
    /// The agent on whose behalf the action runs (tools keep agents apart, e.g. workspaces).
    pub agent: String,
    /// The action's name within the plugin.
    pub action: String,
    /// Its arguments, credentials already injected.
    pub args: serde_json::Value,
    /// How long the kernel will wait, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolResult {
    /// The action's output.
    pub output: serde_json::Value,
}

/// `stream_chunk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamChunk {
    /// Text produced so far, in order.
    pub text: String,
}

/// The kinds of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Worth retrying.
    Transient,
    /// Will fail again.
    Permanent,
    /// Retry after `retry_after_ms`.
    RateLimited,
    /// Credentials missing or refused.
    Auth,
    /// The request was malformed.
    Invalid,
    /// A policy decision. Carries no reason.
    Rejected,
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line for a human.
    #[serde(default)]
    pub message: String,
    /// For `rate_limited`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `inbound`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// The conversation this belongs to (the connector's choice; stable across messages).
    pub conversation: String,
    /// Who wrote it, as the connector authenticated them (`telegram:7`).
    pub sender: String,
    /// The text.
    pub text: String,
    /// The agent addressed, if the connector knows; otherwise the channel's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The platform's id for this message: a redelivered message with the same id is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The sender's display name, as the platform gives it (shown to people, never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// A one-to-one conversation between the sender and the connector's account.
    #[serde(default, skip_serializing_if = "is_false")]
    pub direct: bool,
    /// Files that came with it.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict::objects"
    )]
    pub attachments: Vec<Attachment>,
}

impl Inbound {
    /// A plain text message, nothing else known about it.
    #[must_use]
    pub fn new(
        conversation: impl Into<String>,
        sender: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            conversation: conversation.into(),
            sender: sender.into(),
            text: text.into(),
            agent: None,
            message_id: None,
            sender_name: None,
            direct: false,
            attachments: Vec::new(),
        }
    }
}

/// A file that came with an inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Its file name, as the sender gave it.
    pub name: String,
    /// Its media type (`application/pdf`, `audio/ogg`).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content, base64; absent when it was larger than the connector's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// `outbound`: answered by `result` with `{"message_id": "…"}` (the platform's id, for a
/// later edit), or `error` (`rate_limited` with `retry_after_ms` when the platform said so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// The conversation to post in.
    pub conversation: String,
    /// The text, plain: the connector escapes it for its platform's markup.
    pub text: String,
    /// Replace this earlier message (a streamed reply growing) instead of posting a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<String>,
    /// An intermediate state of a streamed reply: the connector may skip it to stay within
    /// its platform's limits (it never skips one without this flag).
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
}

/// `approval`: what the approval daemon wants the connector's approvers to see, sealed with the
/// key it shares with this connector (the kernel relays it and can neither read nor forge it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The sealed announcement (base64url).
    pub sealed: String,
}

/// `approval_press`: an approver's press of an approval button, sealed by the connector for the
/// approval daemon; answered by `result` with the daemon's sealed answer `{"sealed": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPress {
    /// The sealed press (base64url).
    pub sealed: String,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_false(value: &bool) -> bool {
    !*value
}

/// Who said a message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person.
    User,
    /// The model.
    Assistant,
    /// The outcome of a tool call.
    Tool,
}

/// A tool call the model proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The model's id for the call (answered by a `tool` message with this `tool_call_id`).
    pub id: String,
    /// The tool's name as given in [`ToolDefinition::name`].
    pub name: String,
    /// The arguments: must be a JSON object.
    pub arguments: serde_json::Value,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// For assistant messages: the calls it proposed.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict::objects"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDefinition {
    /// Name (letters, digits, `_`, `-`; what the model calls).
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// `inference_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The model to use, if the agent names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The system prompt.
    #[serde(default)]
    pub system: String,
    /// The conversation so far.
    #[serde(deserialize_with = "strict::objects")]
    pub messages: Vec<ChatMessage>,
    /// The tools the model may call.
    #[serde(default, deserialize_with = "strict::objects")]
    pub tools: Vec<ToolDefinition>,
    /// Whether to send `stream_chunk`s while generating.
    #[serde(default)]
    pub stream: bool,
    /// The provider's API key, from the kernel's credential broker, when its
    /// `[plugins.NAME]` names one. Sent with every request (never in `welcome`), so a key
    /// set with `p3ak secret set` takes effect on the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

/// A secret on the wire: zeroized when dropped, `[redacted]` when debug-printed. It must
/// be `Clone` because messages are; each clone is zeroized on its own.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(zeroize::Zeroizing<String>);

impl Serialize for Credential {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl Credential {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(zeroize::Zeroizing::new(value))
    }

    /// The value, to put in a request header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its reply.
    EndTurn,
    /// It wants tools called.
    ToolUse,
    /// It ran out of tokens.
    MaxTokens,
    /// It refused.
    Refusal,
}

/// Tokens consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
}

/// `inference_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceResponse {
    /// What the model said.
    #[serde(default)]
    pub content: String,
    /// The calls it proposed.
    #[serde(default, deserialize_with = "strict::objects")]
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Tokens used.
    #[serde(default, deserialize_with = "strict::object")]
    pub usage: Usage,
}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {}

/// `pong`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pong {}

/// `shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {}

strict::names!(PluginKind {
    Connector = "connector",
    Tool = "tool",
    Provider = "provider",
});
strict::names!(Tier {
    Observe = "observe",
    Act = "act",
    Commit = "commit",
});
strict::names!(ErrorKind {
    Transient = "transient",
    Permanent = "permanent",
    RateLimited = "rate_limited",
    Auth = "auth",
    Invalid = "invalid",
    Rejected = "rejected",
});
strict::names!(Role {
    User = "user",
    Assistant = "assistant",
    Tool = "tool",
});
strict::names!(StopReason {
    EndTurn = "end_turn",
    ToolUse = "tool_use",
    MaxTokens = "max_tokens",
    Refusal = "refusal",
});

//! The test plays the kernel (`p3ak_testkit::plugin`): one end of a socket pair, the plugin's
//! serve loop on the other.

use p3ak_plugins::{Launch, RunError};
use p3ak_proto::{ErrorMessage, InferenceRequest};
use p3ak_testkit::plugin::FakeKernel;
use serde_json::Value;

pub type Kernel = FakeKernel<RunError>;

/// Starts plugin `builtin` under its own name and does the handshake with `config`.
pub fn start(builtin: &str, config: Value) -> Kernel {
    let name = builtin.to_owned();
    let launch = Launch::new(builtin);
    Kernel::start(builtin, config, None, move |stream| {
        p3ak_plugins::serve(&name, stream, launch)
    })
}

/// Starts plugin `builtin` with a credential in `welcome.key`.
pub fn start_with_key(builtin: &str, config: Value, key: &str) -> Kernel {
    let name = builtin.to_owned();
    let launch = Launch::new(builtin);
    let key = p3ak_proto::Credential::new(key.to_owned());
    Kernel::start(builtin, config, Some(key), move |stream| {
        p3ak_plugins::serve(&name, stream, launch)
    })
}

/// Starts a plugin whose config is refused: returns the error it sent and the one it returned.
pub fn start_failing(builtin: &str, config: Value, launch: Launch) -> (ErrorMessage, RunError) {
    let builtin = builtin.to_owned();
    Kernel::start_failing(config, None, move |stream| {
        p3ak_plugins::serve(&builtin, stream, launch)
    })
}

/// A user message.
pub fn user(text: &str) -> p3ak_proto::ChatMessage {
    p3ak_proto::ChatMessage {
        role: p3ak_proto::Role::User,
        content: text.to_owned(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

pub fn request(messages: Vec<p3ak_proto::ChatMessage>, stream: bool) -> InferenceRequest {
    InferenceRequest {
        model: None,
        system: "be brief".to_owned(),
        messages,
        tools: Vec::new(),
        stream,
        credential: None,
    }
}

//! What a conversation's model was shown, and who each text came from: the policy's `from:`
//! tests read the origins of a call's values from this.
//!
//! Built once per turn from the stored session, then extended as the turn goes on (the
//! owner's new message, each tool result), so a decision only looks its own values up.

use p3ak_policy::{Source, Transcript};
use p3ak_proto::{ChatMessage, Role};

use crate::proposal::ToolTable;

/// A conversation, as the road needs it: its id (the session of `session.*` conditions and
/// totals kept `by: session`) and its labelled texts.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    id: String,
    transcript: Transcript,
    /// Who sent the message the turn answers (the policy's `sender`).
    sender: Option<String>,
}

impl Conversation {
    /// A conversation whose model has been shown nothing yet.
    #[must_use]
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            transcript: Transcript::new(),
            sender: None,
        }
    }

    /// The same, answering a message from `sender`.
    #[must_use]
    pub fn answering(mut self, sender: &str) -> Self {
        self.sender = Some(sender.to_owned());
        self
    }

    /// Who sent the message the turn answers.
    #[must_use]
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// A conversation with its stored messages labelled: a user's message is the owner's
    /// (see [`inbound_source`]), a tool message is the output of the action whose call it
    /// answers; the model's own text is nobody's source. `table` names the actions of the
    /// tool names the model used.
    #[must_use]
    pub fn from_history(id: &str, messages: &[ChatMessage], table: &ToolTable) -> Self {
        let mut conversation = Self::new(id);
        for (index, message) in messages.iter().enumerate() {
            match message.role {
                Role::User => conversation.said(Source::Owner, &message.content),
                Role::Tool => {
                    let action = message
                        .tool_call_id
                        .as_deref()
                        .and_then(|id| answered(messages.get(..index).unwrap_or_default(), id))
                        .map(|name| table.action_of(name));
                    // A result whose call is no longer in the history (trimmed) still came
                    // from a tool; which one is unknown.
                    let action = action.unwrap_or_else(|| "unknown.unknown".to_owned());
                    conversation.said(Source::Tool(action), &message.content);
                }
                Role::Assistant => {}
            }
        }
        conversation
    }

    /// The conversation's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds a text the model is shown.
    pub fn said(&mut self, from: Source, text: &str) {
        self.transcript.push(from, text);
    }

    /// Its labelled texts.
    #[must_use]
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The actions whose output the model was shown, sorted, each once.
    #[must_use]
    pub fn tool_sources(&self) -> Vec<String> {
        let tools: std::collections::BTreeSet<&str> = self
            .transcript
            .sources()
            .filter_map(|source| match source {
                Source::Tool(action) => Some(action.as_str()),
                _ => None,
            })
            .collect();
        tools.into_iter().map(str::to_owned).collect()
    }
}

/// The action that writes to the memory vault. The kernel stamps its `origin` argument.
pub const MEMORY_WRITE: &str = "vault.write";

/// Sets `origin` of a memory write to the tools whose output `conversation` had shown the
/// model, whatever the model put there: a document written after reading a mail or a web page
/// is recalled later as that tool's output (see [`p3ak_memory::ORIGIN_TAG`]), so a rule that
/// refuses what the owner did not say still refuses it when it comes back through memory.
/// Without a conversation, `origin` is removed.
pub fn stamp_origin(args: &mut serde_json::Value, conversation: Option<&Conversation>) {
    let Some(args) = args.as_object_mut() else {
        return;
    };
    let tools = conversation
        .map(Conversation::tool_sources)
        .unwrap_or_default();
    if tools.is_empty() {
        args.remove("origin");
    } else {
        args.insert("origin".to_owned(), serde_json::json!(tools));
    }
}

/// The sources of one recalled memory passage: the tools named in its document's
/// [`p3ak_memory::ORIGIN_TAG`], else the memory itself.
#[must_use]
pub fn recalled_sources(origin_tag: Option<&str>) -> Vec<Source> {
    let tools: Vec<Source> = origin_tag
        .into_iter()
        .flat_map(|tag| tag.split(','))
        .map(str::trim)
        .filter(|action| !action.is_empty())
        .map(|action| Source::Tool(action.to_owned()))
        .collect();
    if tools.is_empty() {
        vec![Source::Memory]
    } else {
        tools
    }
}

/// Who an inbound message is from. Every inbound turn is the owner's: the local chat, which
/// only an operator can reach, or a chat identity the owner paired (`p3ak connectors pair`) —
/// an unpaired sender's message never reaches a turn. A connector that relays other people's
/// messages (a group's, an inbox's) must label those senders apart here, never as the owner.
#[must_use]
pub fn inbound_source(_inbound: &p3ak_proto::Inbound, _channel: &str) -> Source {
    Source::Owner
}

/// The tool name of call `id`, from the newest assistant message that proposed it.
fn answered<'a>(before: &'a [ChatMessage], id: &str) -> Option<&'a str> {
    before
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| &m.tool_calls)
        .find(|c| c.id == id)
        .map(|c| c.name.as_str())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use std::collections::BTreeSet;

    use p3ak_proto::ToolCall;
    use serde_json::json;

    use super::*;

    fn message(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    #[test]
    fn a_memory_write_carries_the_tools_the_conversation_read_whatever_the_model_said() {
        let mut conversation = Conversation::new("c");
        conversation.said(Source::Owner, "file what my inbox says");
        let mut args = json!({"title": "t", "content": "x", "origin": ["owner"]});
        stamp_origin(&mut args, Some(&conversation));
        assert!(args.get("origin").is_none(), "nothing read: no origin");
        conversation.said(Source::Tool("mail.read".into()), "a mail");
        conversation.said(Source::Tool("files.read".into()), "a file");
        conversation.said(Source::Tool("mail.read".into()), "another mail");
        stamp_origin(&mut args, Some(&conversation));
        assert_eq!(args["origin"], json!(["files.read", "mail.read"]));
        let mut args = json!({"title": "t", "content": "x", "origin": ["owner"]});
        stamp_origin(&mut args, None);
        assert!(args.get("origin").is_none());
    }

    #[test]
    fn a_recalled_passage_is_its_documents_tools_word_or_the_memorys() {
        assert_eq!(recalled_sources(None), [Source::Memory]);
        assert_eq!(recalled_sources(Some(" ,")), [Source::Memory]);
        assert_eq!(
            recalled_sources(Some("mail.read,web.fetch")),
            [
                Source::Tool("mail.read".into()),
                Source::Tool("web.fetch".into())
            ]
        );
    }

    #[test]
    fn stored_messages_are_labelled_by_role_and_the_models_text_is_no_source() {
        let mut proposing = message(Role::Assistant, "I will write to carol@x.example");
        proposing.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "mail__read".into(),
            arguments: json!({}),
        }];
        let mut result = message(Role::Tool, "From: mallory@evil.example");
        result.tool_call_id = Some("call_1".into());
        let mut orphan = message(Role::Tool, "dave@x.example");
        orphan.tool_call_id = Some("call_0".into());
        let history = [
            message(Role::User, "Mail bob@x.example please"),
            proposing,
            result,
            orphan,
        ];
        let c = Conversation::from_history("c1", &history, &ToolTable::new([]));
        assert_eq!(c.id(), "c1");
        let t = c.transcript();
        assert_eq!(
            t.sources_of("bob@x.example"),
            BTreeSet::from([Source::Owner])
        );
        assert_eq!(
            t.sources_of("mallory@evil.example"),
            BTreeSet::from([Source::Tool("mail.read".into())])
        );
        assert_eq!(
            t.sources_of("dave@x.example"),
            BTreeSet::from([Source::Tool("unknown.unknown".into())])
        );
        assert!(t.sources_of("carol@x.example").is_empty());
    }
}

//! Conversations, kept encrypted in the kernel's vault (object space `sessions`), already
//! scrubbed of secrets.
//!
//! A conversation that outgrows its agent's window (`context_tokens`, estimated at four
//! characters a token) is not cut at a fixed count: its older turns are summarised by the
//! agent's own model into the session's [`Summary`], which the prompt carries from then on.
//! The summary remembers which sources it was written from: if a tool's output was among
//! them, the policy's provenance tests count the summary as that tool's output, never as the
//! owner's words (a summary must not launder an injected address into an owner-typed one).

use p3ak_policy::Source;
use p3ak_proto::{ChatMessage, Role};
use p3ak_vault::Vault;
use serde::{Deserialize, Serialize};

use crate::KernelError;

/// The object space sessions live in.
pub(crate) const SESSIONS_SPACE: &str = "sessions";

/// Messages kept per conversation at most, summary or not; older ones are dropped from the
/// front (a last resort: summarising keeps sessions far below it).
const MAX_MESSAGES: usize = 400;

/// What older turns of a conversation said, in the agent model's words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// The summary.
    pub(crate) text: String,
    /// Where what it summarises came from: `owner`, or the actions whose output it read.
    pub(crate) sources: Vec<String>,
    /// How many messages it stands for, in all.
    pub(crate) messages: usize,
}

impl Summary {
    /// The sources the policy's provenance tests count the summary as: the tools it read, if
    /// any (conservatively: not the owner then), else the owner.
    pub(crate) fn provenance(&self) -> Vec<Source> {
        let tools: Vec<Source> = self
            .sources
            .iter()
            .filter(|s| *s != OWNER)
            .map(|s| Source::Tool(s.clone()))
            .collect();
        if tools.is_empty() {
            vec![Source::Owner]
        } else {
            tools
        }
    }
}

/// The source name of the owner's own messages in [`Summary::sources`].
pub(crate) const OWNER: &str = "owner";

/// A stored conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The older turns, summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) summary: Option<Summary>,
    /// The newer turns, as they were.
    pub(crate) messages: Vec<ChatMessage>,
}

/// Sessions as stored before summaries: the messages alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    // First: a struct would also read a JSON array, element by element.
    Messages(Vec<ChatMessage>),
    Session(Session),
}

fn object_name(agent: &str, conversation: &str) -> String {
    format!("{agent}/{conversation}")
}

/// A conversation so far (empty when new).
pub(crate) fn load(vault: &Vault, agent: &str, conversation: &str) -> Result<Session, KernelError> {
    let Some(bytes) = vault.read_object(SESSIONS_SPACE, &object_name(agent, conversation))? else {
        return Ok(Session::default());
    };
    let stored: Stored = serde_json::from_slice(bytes.expose()).map_err(|source| {
        KernelError::SessionUnreadable {
            agent: agent.to_owned(),
            conversation: conversation.to_owned(),
            source,
        }
    })?;
    Ok(match stored {
        Stored::Session(session) => session,
        Stored::Messages(messages) => Session {
            summary: None,
            messages,
        },
    })
}

/// Replaces a conversation, keeping at most the newest [`MAX_MESSAGES`] messages. A cut never
/// separates a tool result from the call it answers: it starts at a user message.
pub(crate) fn store(
    vault: &Vault,
    agent: &str,
    conversation: &str,
    session: &Session,
) -> Result<(), KernelError> {
    let messages = &session.messages;
    let start = user_boundary(messages, messages.len().saturating_sub(MAX_MESSAGES));
    let kept = Session {
        summary: session.summary.clone(),
        messages: messages.get(start..).unwrap_or_default().to_vec(),
    };
    let bytes =
        zeroize::Zeroizing::new(serde_json::to_vec(&kept).map_err(KernelError::SessionEncode)?);
    vault
        .transact(|tx| tx.put_object(SESSIONS_SPACE, &object_name(agent, conversation), &bytes))?;
    Ok(())
}

/// The first user message at or after `from` (or the end): where a history may be cut.
pub(crate) fn user_boundary(messages: &[ChatMessage], from: usize) -> usize {
    let mut at = from;
    while messages.get(at).is_some_and(|m| m.role != Role::User) {
        at += 1;
    }
    at.min(messages.len())
}

/// Estimated tokens of messages: four characters a token, tool calls included.
pub(crate) fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    let chars: usize = messages
        .iter()
        .map(|m| {
            m.content.chars().count()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.to_string().len())
                    .sum::<usize>()
        })
        .sum();
    chars.div_ceil(4)
}

/// Where to cut `messages` so that what stays, with an incoming message of `incoming` tokens
/// after it, fits in `keep` tokens: the index of the first message kept (a user message, or
/// the end: everything before the incoming one), or `None` when nothing would be cut.
pub(crate) fn cut_for(messages: &[ChatMessage], keep: usize, incoming: usize) -> Option<usize> {
    let mut tail = incoming;
    let mut cut = messages.len();
    for (index, message) in messages.iter().enumerate().rev() {
        tail += estimate_tokens(std::slice::from_ref(message));
        if message.role == Role::User {
            if tail > keep {
                break;
            }
            cut = index;
        }
    }
    (cut > 0).then_some(cut)
}

/// The text a model summarises: each message on its own lines, labelled by role.
pub(crate) fn transcript(previous: Option<&Summary>, messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    if let Some(summary) = previous {
        text.push_str("[summary of what came before]\n");
        text.push_str(&summary.text);
        text.push_str("\n\n");
    }
    for message in messages {
        let who = match message.role {
            Role::User => "owner",
            Role::Assistant => "assistant",
            Role::Tool => "tool result",
        };
        if !message.content.is_empty() {
            text.push_str(&format!("[{who}]\n{}\n\n", message.content));
        }
        for call in &message.tool_calls {
            text.push_str(&format!(
                "[assistant called {}] {}\n\n",
                call.name, call.arguments
            ));
        }
    }
    text
}

/// Conversation ids: what a connector may name a conversation (`telegram:42`,
/// `slack:C01:1700000000.000100`): letters, digits, `_ . : -`, at most 128, no `..`.
#[must_use]
pub(crate) fn valid_conversation(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Forgets a conversation (`/new` in a chat): the next turn starts afresh.
pub(crate) fn clear(vault: &Vault, agent: &str, conversation: &str) -> Result<(), KernelError> {
    store(vault, agent, conversation, &Session::default())
}

#[cfg(test)]
mod tests {
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
    fn a_cut_keeps_whole_turns_within_the_budget_and_starts_at_the_owners_message() {
        let words = "x".repeat(400); // 100 tokens
        let messages = vec![
            message(Role::User, &words),
            message(Role::Assistant, &words),
            message(Role::User, &words),
            message(Role::Tool, &words),
            message(Role::Assistant, &words),
            message(Role::User, &words),
            message(Role::Assistant, &words),
        ];
        // 250 tokens kept: the last turn (200) fits, the one before (300) would not.
        assert_eq!(cut_for(&messages, 250, 0), Some(5));
        assert_eq!(cut_for(&messages, 500, 0), Some(2));
        // The incoming message counts too.
        assert_eq!(cut_for(&messages, 500, 100), Some(5));
        // Everything fits: nothing is cut.
        assert_eq!(cut_for(&messages, 10_000, 0), None);
        // Not even the last turn fits: all of it goes, the incoming message stays.
        assert_eq!(cut_for(&messages, 10, 0), Some(7));
        assert_eq!(estimate_tokens(&messages), 700);
    }

    #[test]
    fn a_summary_of_tool_output_never_counts_as_the_owners_words() {
        let owner_only = Summary {
            text: "t".to_owned(),
            sources: vec![OWNER.to_owned()],
            messages: 2,
        };
        assert_eq!(owner_only.provenance(), vec![Source::Owner]);
        let with_mail = Summary {
            sources: vec![OWNER.to_owned(), "mail.read".to_owned()],
            ..owner_only
        };
        assert_eq!(
            with_mail.provenance(),
            vec![Source::Tool("mail.read".to_owned())]
        );
    }

    #[test]
    fn a_session_stored_before_summaries_still_loads() {
        let old = serde_json::to_vec(&vec![message(Role::User, "hi")]).unwrap();
        let Stored::Messages(messages) = serde_json::from_slice(&old).unwrap() else {
            panic!("read as a session");
        };
        assert_eq!(messages.len(), 1);
        let new = serde_json::to_vec(&Session {
            summary: Some(Summary::default()),
            messages,
        })
        .unwrap();
        assert!(matches!(
            serde_json::from_slice(&new).unwrap(),
            Stored::Session(Session {
                summary: Some(_),
                ..
            })
        ));
    }
}

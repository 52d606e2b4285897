//! Conversations, kept encrypted in the kernel's vault (object space `sessions`), already
//! scrubbed of secrets.

use p3ak_proto::ChatMessage;
use p3ak_vault::Vault;

use crate::KernelError;

/// The object space sessions live in.
pub(crate) const SESSIONS_SPACE: &str = "sessions";

/// Messages kept per conversation; older ones are dropped from the front.
const MAX_MESSAGES: usize = 200;

fn object_name(agent: &str, conversation: &str) -> String {
    format!("{agent}/{conversation}")
}

/// A conversation's messages so far (empty when new).
pub(crate) fn load(
    vault: &Vault,
    agent: &str,
    conversation: &str,
) -> Result<Vec<ChatMessage>, KernelError> {
    let Some(bytes) = vault.read_object(SESSIONS_SPACE, &object_name(agent, conversation))? else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(bytes.expose()).map_err(|source| KernelError::SessionUnreadable {
        agent: agent.to_owned(),
        conversation: conversation.to_owned(),
        source,
    })
}

/// Replaces a conversation's messages, keeping the newest [`MAX_MESSAGES`]. A cut never
/// separates a tool result from the call it answers: it starts at a user message.
pub(crate) fn store(
    vault: &Vault,
    agent: &str,
    conversation: &str,
    messages: &[ChatMessage],
) -> Result<(), KernelError> {
    let mut start = messages.len().saturating_sub(MAX_MESSAGES);
    while messages
        .get(start)
        .is_some_and(|m| m.role != p3ak_proto::Role::User)
    {
        start += 1;
    }
    let kept = messages.get(start..).unwrap_or_default();
    let bytes =
        zeroize::Zeroizing::new(serde_json::to_vec(kept).map_err(KernelError::SessionEncode)?);
    vault
        .transact(|tx| tx.put_object(SESSIONS_SPACE, &object_name(agent, conversation), &bytes))?;
    Ok(())
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

/// Forgets a conversation's messages (`/new` in a chat): the next turn starts afresh.
pub(crate) fn clear(vault: &Vault, agent: &str, conversation: &str) -> Result<(), KernelError> {
    store(vault, agent, conversation, &[])
}

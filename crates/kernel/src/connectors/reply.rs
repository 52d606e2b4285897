//! Messages into a chat: a plain post, and a reply streamed by editing one message as the model
//! writes (at most one edit per `edit_interval`; the final text always lands).

use std::sync::Arc;
use std::time::{Duration, Instant};

use p3ak_proto::{ErrorKind, Message, Outbound};

use crate::control::ControlEvent;
use crate::host::{Connection, HostError};

/// How long a connector may take to post.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of a post the platform rate-limited.
const POST_TRIES: u32 = 3;
/// The longest wait for a rate-limited post before giving up.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Posts (or edits) and returns the platform's message id; a failure is logged, not fatal: the
/// reply is in the session and the audit log either way.
async fn send(connection: &Arc<Connection>, outbound: Outbound) -> Option<String> {
    let partial = outbound.partial;
    for _ in 0..POST_TRIES {
        match connection
            .request(Message::Outbound(outbound.clone()), POST_TIMEOUT, None)
            .await
        {
            Ok(Message::Result(result)) => {
                return result
                    .output
                    .get("message_id")
                    .and_then(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .or_else(|| v.as_u64().map(|n| n.to_string()))
                    })
                    .or_else(|| outbound.edit.clone());
            }
            Ok(other) => {
                tracing::warn!(
                    plugin = connection.name(),
                    "post answered with `{}`",
                    other.type_name()
                );
                return None;
            }
            Err(HostError::Plugin(e)) if e.kind == ErrorKind::RateLimited && !partial => {
                let wait = Duration::from_millis(e.retry_after_ms.unwrap_or(1000));
                if wait > MAX_RETRY_WAIT {
                    tracing::warn!(
                        plugin = connection.name(),
                        "post rate-limited for {wait:?}: dropped"
                    );
                    return None;
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                if !partial {
                    tracing::warn!(plugin = connection.name(), "post failed: {e}");
                }
                return None;
            }
        }
    }
    None
}

/// Posts `text` as a new message.
pub(super) async fn post(
    connection: &Arc<Connection>,
    conversation: &str,
    text: &str,
) -> Option<String> {
    send(
        connection,
        Outbound {
            conversation: conversation.to_owned(),
            text: text.to_owned(),
            edit: None,
            partial: false,
        },
    )
    .await
}

/// A reply being streamed into one conversation.
pub(super) struct Stream {
    connection: Arc<Connection>,
    conversation: String,
    interval: Duration,
    message: Option<String>,
    text: String,
    shown: usize,
    last_edit: Instant,
}

impl Stream {
    pub(super) fn new(
        connection: Arc<Connection>,
        conversation: String,
        interval: Duration,
    ) -> Self {
        Self {
            connection,
            conversation,
            interval,
            message: None,
            text: String::new(),
            shown: 0,
            last_edit: Instant::now(),
        }
    }

    /// One event of the turn: text grows the reply; a notice (an approval is needed) is a
    /// message of its own, and the reply goes on below it.
    pub(super) async fn event(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Chunk { text } => {
                self.text.push_str(&text);
                let due = self.last_edit.elapsed() >= self.interval;
                if self.text.trim().is_empty() || (self.message.is_some() && !due) {
                    return;
                }
                self.show(true).await;
            }
            ControlEvent::Notice { .. } | ControlEvent::Approval { .. } => {
                // The approval itself (what, why, the buttons) comes from the approval daemon
                // to the approvers; the conversation hears that it waits.
                let text = match event {
                    ControlEvent::Approval { level, .. } => format!(
                        "Waiting for an approval (level {level}): the approvers were asked."
                    ),
                    ControlEvent::Notice { text } => text,
                    _ => String::new(),
                };
                post(&self.connection, &self.conversation, &text).await;
                // What follows the notice starts a new message under it.
                if self.message.is_some() {
                    self.show(false).await;
                }
                self.message = None;
                self.text.clear();
                self.shown = 0;
            }
            _ => {}
        }
    }

    async fn show(&mut self, partial: bool) {
        if self.text.len() == self.shown && self.message.is_some() {
            return;
        }
        let outbound = Outbound {
            conversation: self.conversation.clone(),
            text: self.text.clone(),
            edit: self.message.clone(),
            partial: partial && self.message.is_some(),
        };
        if let Some(id) = send(&self.connection, outbound).await {
            self.message = Some(id);
            self.shown = self.text.len();
        }
        self.last_edit = Instant::now();
    }

    /// The turn's whole reply (scrubbed), replacing what was streamed.
    pub(super) async fn finish(mut self, reply: &str) {
        if reply.trim().is_empty() && self.message.is_none() {
            return;
        }
        if self.text != reply {
            self.text = reply.to_owned();
            self.shown = usize::MAX;
        }
        self.show(false).await;
    }
}

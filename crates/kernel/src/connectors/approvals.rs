//! Approvals in a chat, relayed: the approval daemon's sealed announcements go to the
//! connector they were sealed for, and a connector's sealed presses go back to the daemon. The
//! kernel reads neither (`p3ak_approval::chat`): it can drop or delay them, not forge them.

use std::sync::Arc;
use std::time::Duration;

use p3ak_proto::{Approval, ApprovalPress, ErrorKind, ErrorMessage, Message, ToolResult};
use tokio::sync::broadcast::error::RecvError;

use crate::kernel::Kernel;

/// How long a connector may take to post an announcement.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

impl Kernel {
    /// Hands a sealed press to the approval daemon: the connector hears its sealed answer.
    pub(super) async fn relay_press(&self, connector: &str, press: ApprovalPress) -> Message {
        match self.press_approval(connector, press.sealed).await {
            Ok(sealed) => Message::Result(ToolResult {
                output: serde_json::json!({ "sealed": sealed }),
            }),
            Err(e) => Message::Error(ErrorMessage {
                kind: ErrorKind::Transient,
                message: e.to_string(),
                retry_after_ms: None,
            }),
        }
    }

    /// Asks the approval daemon to announce again what waits, for a connector that came up.
    pub(super) async fn resend_chat_approvals(&self, connector: &str) {
        self.resend_announcements(connector).await;
    }

    /// Forwards the daemon's announcements to their connectors until the kernel stops. One
    /// that cannot be delivered (the connector is down) is sent again when it comes up.
    pub(crate) async fn forward_chat_announcements(self: Arc<Self>) {
        let mut announcements = self.chat_announcements();
        loop {
            let announcement = match announcements.recv().await {
                Ok(a) => a,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!("{missed} chat announcements dropped: the connectors were slow");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Some(connection) = self.host.connection(&announcement.connector) else {
                continue;
            };
            let message = Message::Approval(Approval {
                sealed: announcement.sealed,
            });
            tokio::spawn(async move {
                if let Err(e) = connection.request(message, ANNOUNCE_TIMEOUT, None).await {
                    tracing::warn!(plugin = connection.name(), "approval not shown: {e}");
                }
            });
        }
    }
}

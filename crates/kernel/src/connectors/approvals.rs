//! Approvals in a chat, relayed: the approval daemon's sealed announcements go to the
//! connector they were sealed for, and a connector's sealed presses go back to the daemon. The
//! kernel reads neither (`p3ak_approval::chat`).

use p3ak_proto::{ApprovalPress, ErrorKind, ErrorMessage, Message};

use crate::kernel::Kernel;

impl Kernel {
    /// Hands a sealed press to the approval daemon: the connector hears its sealed answer.
    pub(super) async fn relay_press(&self, connector: &str, press: ApprovalPress) -> Message {
        let _ = (connector, press);
        Message::Error(ErrorMessage {
            kind: ErrorKind::Permanent,
            message: "approvals in the chat are not available".to_owned(),
            retry_after_ms: None,
        })
    }

    /// Asks the approval daemon to announce again what waits, for a connector that came up.
    pub(super) async fn resend_chat_approvals(&self, connector: &str) {
        let _ = connector;
    }
}

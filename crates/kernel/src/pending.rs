//! Escalations waiting for the operator: `p3ak pending`, `p3ak approve`, `p3ak deny`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::authorize::Approval;

/// What the operator sees of one pending escalation: everything (this is not for models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingInfo {
    /// Its id (`p3ak approve ID`).
    pub id: String,
    /// The proposing agent.
    pub agent: String,
    /// The action.
    pub action: String,
    /// Its arguments (credential references by name, never values).
    pub args: serde_json::Value,
    /// The approval level the policy asks for.
    pub level: u8,
    /// The rules that escalated it.
    pub rules: Vec<String>,
    /// When it was asked, ms since the epoch.
    pub asked_ms: i64,
    /// When it turns into a denial, ms since the epoch.
    pub expires_ms: i64,
}

/// The operator's answer.
#[derive(Debug)]
pub enum Resolution {
    /// Yes.
    Approved(Approval),
    /// No.
    Denied,
}

/// Why an answer could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// No such id (never asked, already answered, or timed out).
    #[error("no pending approval `{0}`")]
    Unknown(String),
}

struct Waiting {
    info: PendingInfo,
    answer: oneshot::Sender<Resolution>,
}

/// The queue. Waiting turns hold the receiving ends.
#[derive(Default)]
pub struct PendingQueue {
    items: Mutex<BTreeMap<String, Waiting>>,
}

/// A turn's place in the queue: await the answer, or drop it to withdraw.
pub struct Ticket {
    /// The id.
    pub id: String,
    receiver: oneshot::Receiver<Resolution>,
}

impl PendingQueue {
    /// Adds an escalation; returns the ticket to wait on.
    pub fn add(
        &self,
        agent: &str,
        action: &str,
        args: serde_json::Value,
        level: u8,
        rules: Vec<String>,
        timeout: Duration,
    ) -> Ticket {
        let id = new_id();
        let asked_ms = now_ms();
        let expires_ms =
            asked_ms.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let (answer, receiver) = oneshot::channel();
        let info = PendingInfo {
            id: id.clone(),
            agent: agent.to_owned(),
            action: action.to_owned(),
            args,
            level,
            rules,
            asked_ms,
            expires_ms,
        };
        if let Ok(mut items) = self.items.lock() {
            items.insert(id.clone(), Waiting { info, answer });
        }
        Ticket { id, receiver }
    }

    /// Everything waiting, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<PendingInfo> {
        let mut items: Vec<PendingInfo> = self
            .items
            .lock()
            .map(|items| items.values().map(|w| w.info.clone()).collect())
            .unwrap_or_default();
        items.sort_by_key(|i| i.asked_ms);
        items
    }

    /// Answers one. Returns what was answered.
    pub fn resolve(&self, id: &str, approve: bool) -> Result<PendingInfo, PendingError> {
        let waiting = self
            .items
            .lock()
            .ok()
            .and_then(|mut items| items.remove(id))
            .ok_or_else(|| PendingError::Unknown(id.to_owned()))?;
        let resolution = if approve {
            Resolution::Approved(Approval::new(id.to_owned()))
        } else {
            Resolution::Denied
        };
        // The turn may have timed out in the same instant; then the answer is simply late.
        let _ = waiting.answer.send(resolution);
        Ok(waiting.info)
    }

    /// Removes an item whose turn stopped waiting.
    pub fn withdraw(&self, id: &str) {
        if let Ok(mut items) = self.items.lock() {
            items.remove(id);
        }
    }
}

impl Ticket {
    /// Waits for the answer; `None` on timeout (which means no).
    pub async fn wait(self, queue: &PendingQueue, timeout: Duration) -> Option<Resolution> {
        let answer = tokio::time::timeout(timeout, self.receiver).await;
        queue.withdraw(&self.id);
        match answer {
            Ok(Ok(resolution)) => Some(resolution),
            _ => None,
        }
    }
}

fn new_id() -> String {
    let bytes: [u8; 4] = p3ak_crypto::random_array().unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        nanos.to_be_bytes()
    });
    hex::encode(bytes)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

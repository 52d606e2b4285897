//! Escalations the kernel waits on. The HITL daemon decides them; this is the kernel's side:
//! one ticket per staged request, answered once by the daemon's release (checked against the
//! binding the kernel staged) or refusal.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p3ak_approval::binding::{Binding, Request};
use p3ak_approval::wire::Refusal;
use tokio::sync::oneshot;

use crate::authorize::Approval;

/// The daemon's answer.
#[derive(Debug)]
pub enum Resolution {
    /// Approved, and out of its undo window.
    Approved(Approval),
    /// Not approved; which way is for the audit log only.
    Refused(Refused),
}

/// How an escalation ended without an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The daemon's ending: denied, expired, pulled back, withdrawn, unusable.
    Daemon(Refusal),
    /// The daemon released an action other than the one staged under that id.
    Mismatch,
    /// The daemon went away.
    DaemonStopped,
}

impl Refused {
    /// The word for the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daemon(refusal) => refusal.as_str(),
            Self::Mismatch => "mismatch",
            Self::DaemonStopped => "daemon stopped",
        }
    }

    /// Whether nobody answered in time.
    #[must_use]
    pub fn timed_out(self) -> bool {
        self == Self::Daemon(Refusal::Expired)
    }
}

/// Why a release was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// No turn waits for that id (answered before, withdrawn, or never staged): a replay.
    #[error("no escalation `{0}` is waiting (answered already, or never staged)")]
    NotWaiting(String),
    /// The released action is not the one the kernel staged.
    #[error("the released action `{0}` is not the one that was staged")]
    Mismatch(String),
}

struct Waiting {
    binding: Binding,
    /// The level the kernel staged it at (the released copy's level is not bound).
    level: u8,
    answer: oneshot::Sender<Resolution>,
    /// What it is, for lists (`GET /v1/approvals`).
    shown: PendingInfo,
}

/// What a list of waiting approvals shows (never the arguments: those are for approvers).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingInfo {
    /// The approval's id.
    pub id: String,
    /// The agent whose call waits.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The level asked for.
    pub level: u8,
    /// When it was asked (Unix milliseconds).
    pub asked_ms: i64,
    /// When it times out (Unix milliseconds).
    pub expires_ms: i64,
}

/// A release the queue checked and took, not yet handed to its turn: whatever follows from
/// the approval (a remembered grant) happens before the action runs.
pub(crate) struct Release {
    level: u8,
    approval: Approval,
    answer: oneshot::Sender<Resolution>,
}

impl Release {
    /// The level the request was staged at.
    pub(crate) fn level(&self) -> u8 {
        self.level
    }

    /// Hands the approval to the waiting turn.
    pub(crate) fn deliver(self) {
        let _ = self.answer.send(Resolution::Approved(self.approval));
    }
}

/// The tickets.
#[derive(Default)]
pub struct PendingQueue {
    items: Mutex<BTreeMap<String, Waiting>>,
}

/// A turn's place in the queue.
pub struct Ticket {
    /// The id.
    pub id: String,
    receiver: oneshot::Receiver<Resolution>,
}

impl PendingQueue {
    /// Waits on a request about to be staged.
    pub(crate) fn add(&self, request: &Request) -> Ticket {
        let (answer, receiver) = oneshot::channel();
        if let Ok(mut items) = self.items.lock() {
            items.insert(
                request.id.clone(),
                Waiting {
                    binding: request.binding(),
                    level: request.level,
                    answer,
                    shown: PendingInfo {
                        id: request.id.clone(),
                        agent: request.agent.clone(),
                        action: request.action.clone(),
                        level: request.level,
                        asked_ms: request.asked_ms,
                        expires_ms: request.expires_ms,
                    },
                },
            );
        }
        Ticket {
            id: request.id.clone(),
            receiver,
        }
    }

    /// The daemon released `request`: the turn waiting for it gets its approval, if the
    /// request is exactly the one staged. Used once: a second release of the id is refused.
    #[cfg(test)]
    pub(crate) fn released(
        &self,
        request: &Request,
        binding: &Binding,
        factors: Vec<String>,
    ) -> Result<(), ReleaseError> {
        self.take_release(request, binding, factors)
            .map(Release::deliver)
    }

    /// [`PendingQueue::released`] without handing the approval over yet.
    pub(crate) fn take_release(
        &self,
        request: &Request,
        binding: &Binding,
        factors: Vec<String>,
    ) -> Result<Release, ReleaseError> {
        let mut items = self
            .items
            .lock()
            .map_err(|_| ReleaseError::NotWaiting(request.id.clone()))?;
        let Some(waiting) = items.get(&request.id) else {
            return Err(ReleaseError::NotWaiting(request.id.clone()));
        };
        if !(waiting.binding.matches(binding) && waiting.binding.matches(&request.binding())) {
            let waiting = items.remove(&request.id);
            drop(items);
            if let Some(waiting) = waiting {
                let _ = waiting.answer.send(Resolution::Refused(Refused::Mismatch));
            }
            return Err(ReleaseError::Mismatch(request.id.clone()));
        }
        let waiting = items
            .remove(&request.id)
            .ok_or_else(|| ReleaseError::NotWaiting(request.id.clone()))?;
        drop(items);
        let approval = Approval::new(request.id.clone(), waiting.binding.to_hex(), factors);
        Ok(Release {
            level: waiting.level,
            approval,
            answer: waiting.answer,
        })
    }

    /// The daemon refused `id`.
    pub(crate) fn refused(&self, id: &str, ending: Refusal) {
        let waiting = self
            .items
            .lock()
            .ok()
            .and_then(|mut items| items.remove(id));
        if let Some(waiting) = waiting {
            let _ = waiting
                .answer
                .send(Resolution::Refused(Refused::Daemon(ending)));
        }
    }

    /// What waits, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<PendingInfo> {
        let mut shown: Vec<PendingInfo> = self
            .items
            .lock()
            .map(|i| i.values().map(|w| w.shown.clone()).collect())
            .unwrap_or_default();
        shown.sort_by_key(|p| p.asked_ms);
        shown
    }

    /// How many turns wait.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.lock().map(|i| i.len()).unwrap_or_default()
    }

    /// Whether none waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a ticket whose turn stopped waiting.
    pub(crate) fn withdraw(&self, id: &str) {
        if let Ok(mut items) = self.items.lock() {
            items.remove(id);
        }
    }

    /// Refuses everything still waiting (the daemon is gone).
    pub(crate) fn refuse_all(&self) {
        let all = self
            .items
            .lock()
            .map(|mut items| std::mem::take(&mut *items))
            .unwrap_or_default();
        for (_, waiting) in all {
            let _ = waiting
                .answer
                .send(Resolution::Refused(Refused::DaemonStopped));
        }
    }
}

impl Ticket {
    /// Waits for the answer; `None` when `timeout` passes first (which means no).
    pub async fn wait(self, queue: &PendingQueue, timeout: Duration) -> Option<Resolution> {
        let answer = tokio::time::timeout(timeout, self.receiver).await;
        queue.withdraw(&self.id);
        match answer {
            Ok(Ok(resolution)) => Some(resolution),
            _ => None,
        }
    }
}

/// A fresh escalation id: 8 hex digits.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 4] = p3ak_crypto::random_array().unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        nanos.to_be_bytes()
    });
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> Request {
        Request {
            id: id.to_owned(),
            agent: "assistant".to_owned(),
            action: "files.write".to_owned(),
            args: serde_json::json!({"path": "a"}),
            level: 1,
            rules: vec![],
            category: "write".to_owned(),
            asked_ms: 1,
            expires_ms: 2,
            crawfish_secs: 0,
            confirm_twice: false,
            reasons: Vec::new(),
        }
    }

    #[tokio::test]
    async fn invariant_i8_a_release_is_taken_once_and_only_for_the_staged_action() {
        let queue = PendingQueue::default();
        let staged = request("a1");
        let ticket = queue.add(&staged);
        let mut altered = staged.clone();
        altered.args = serde_json::json!({"path": "b"});
        // A release of something else under the same id is refused, and so is the turn.
        assert_eq!(
            queue.released(&altered, &altered.binding(), vec![]),
            Err(ReleaseError::Mismatch("a1".to_owned()))
        );
        assert!(matches!(
            ticket.wait(&queue, Duration::from_secs(1)).await,
            Some(Resolution::Refused(_))
        ));

        let staged = request("a2");
        let ticket = queue.add(&staged);
        queue
            .released(&staged, &staged.binding(), vec!["PIN".to_owned()])
            .unwrap();
        assert!(matches!(
            ticket.wait(&queue, Duration::from_secs(1)).await,
            Some(Resolution::Approved(_))
        ));
        // Replayed: nobody waits any more.
        assert_eq!(
            queue.released(&staged, &staged.binding(), vec![]),
            Err(ReleaseError::NotWaiting("a2".to_owned()))
        );
    }
}

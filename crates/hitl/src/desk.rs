//! The daemon's desk: what waits, what is approved and sitting out its undo window, and what
//! was decided. Sans-IO: times are passed in, moves on disk are the caller's (the daemon
//! moves spool files as the desk's answers say).
//!
//! Invariant I8 lives here: [`Desk::approve`] refuses a proof weaker than the item's level,
//! a binding other than the item's, an item past its timeout, and a second approval; a level 5
//! item (or one marked `confirm_twice`) needs two separate approvals; an approved item waits
//! its undo window before [`Desk::tick`] releases it, and [`Desk::pull_back`] can cancel it
//! until then.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::HitlError;
use crate::binding::{Binding, Request};
use crate::level::{Factor, Proof};
use crate::remember::Remember;

/// How many decided items the desk remembers for `p3ak hitl history`.
pub const HISTORY_LEN: usize = 500;

/// Where an item stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the operator; `confirmed` approvals of `needed` given so far.
    Waiting {
        /// Approvals given.
        confirmed: u8,
        /// Approvals needed.
        needed: u8,
    },
    /// Approved, in `outbox/` until `release_ms` (its undo window).
    Approved {
        /// When it was approved.
        approved_ms: i64,
        /// When it leaves the machine.
        release_ms: i64,
    },
}

/// One approval given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The factor.
    pub factor: Factor,
    /// Where.
    pub channel: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// One item on the desk, as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    /// The request.
    pub request: Request,
    /// Its binding (what an approval names).
    pub binding: Binding,
    /// Where it stands.
    pub stage: Stage,
    /// Approvals given.
    pub confirmations: Vec<Confirmation>,
    /// The owner's "remember this", once given with an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember: Option<Remember>,
}

/// How an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Approved and released after its window.
    Released,
    /// Denied by the operator.
    Denied,
    /// Approved, then pulled back in its window.
    PulledBack,
    /// Its timeout ran out.
    Expired,
    /// The kernel withdrew it (the turn ended).
    Withdrawn,
}

/// A decided item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    /// The request.
    pub request: Request,
    /// Its binding.
    pub binding: Binding,
    /// How it ended.
    pub ending: Ending,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The approvals given before the end.
    pub confirmations: Vec<Confirmation>,
    /// The owner's "remember this", when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember: Option<Remember>,
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// One of two approvals given; the other is still needed.
    NeedsAnother,
    /// Approved: it leaves at `release_ms` (now, when there is no undo window).
    Approved {
        /// When it leaves the machine.
        release_ms: i64,
    },
}

struct Item {
    request: Request,
    binding: Binding,
    stage: Stage,
    confirmations: Vec<Confirmation>,
    remember: Option<Remember>,
}

impl Item {
    fn view(&self) -> View {
        View {
            request: self.request.clone(),
            binding: self.binding,
            stage: self.stage.clone(),
            confirmations: self.confirmations.clone(),
            remember: self.remember.clone(),
        }
    }
}

/// The desk.
#[derive(Default)]
pub struct Desk {
    items: BTreeMap<String, Item>,
    /// Every binding ever admitted: a restaged (replayed) request is refused.
    seen: HashSet<Binding>,
    history: VecDeque<Decided>,
}

impl Desk {
    /// An empty desk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a staged request. Refuses an invalid one, a known id or binding, and one that
    /// has already expired.
    pub fn admit(&mut self, request: Request, now_ms: i64) -> Result<View, HitlError> {
        request.validate()?;
        let binding = request.binding();
        if self.items.contains_key(&request.id) || self.seen.contains(&binding) {
            return Err(HitlError::InvalidRequest {
                id: request.id,
                reason: "it was staged before (a request is answered once)".to_owned(),
            });
        }
        if request.expires_ms <= now_ms {
            return Err(HitlError::Expired(request.id));
        }
        self.seen.insert(binding);
        let needed = request.confirmations_needed();
        let item = Item {
            request,
            binding,
            stage: Stage::Waiting {
                confirmed: 0,
                needed,
            },
            confirmations: Vec::new(),
            remember: None,
        };
        let view = item.view();
        self.items.insert(view.request.id.clone(), item);
        Ok(view)
    }

    /// Applies one approval to the item `id`, which must be the action `binding` names.
    pub fn approve(
        &mut self,
        id: &str,
        binding: &Binding,
        proof: Proof,
        now_ms: i64,
    ) -> Result<Approved, HitlError> {
        self.approve_with(id, binding, proof, None, now_ms)
    }

    /// [`Desk::approve`], with the owner's "remember this" (checked against the item first:
    /// never at level 5, only paths the call has, at most 90 days).
    pub fn approve_with(
        &mut self,
        id: &str,
        binding: &Binding,
        proof: Proof,
        remember: Option<Remember>,
        now_ms: i64,
    ) -> Result<Approved, HitlError> {
        let item = self
            .items
            .get_mut(id)
            .ok_or_else(|| HitlError::Unknown(id.to_owned()))?;
        if !item.binding.matches(binding) {
            return Err(HitlError::Mismatch { id: id.to_owned() });
        }
        let Stage::Waiting { confirmed, needed } = item.stage else {
            return Err(HitlError::AlreadyApproved(id.to_owned()));
        };
        if item.request.expires_ms <= now_ms {
            self.end(id, Ending::Expired, now_ms);
            return Err(HitlError::Expired(id.to_owned()));
        }
        if let Some(remember) = &remember {
            remember
                .check(&item.request)
                .map_err(|source| HitlError::Remember {
                    id: id.to_owned(),
                    source,
                })?;
        }
        let level = item.request.level;
        if proof.strength() < level {
            return Err(HitlError::TooWeak {
                id: id.to_owned(),
                level,
                needed: Factor::needed_for(level),
                given: proof.factor(),
                strength: proof.strength(),
            });
        }
        item.confirmations.push(Confirmation {
            factor: proof.factor(),
            channel: proof.channel().to_owned(),
            at_ms: now_ms,
        });
        if remember.is_some() {
            item.remember = remember;
        }
        let confirmed = confirmed.saturating_add(1);
        if confirmed < needed {
            item.stage = Stage::Waiting { confirmed, needed };
            return Ok(Approved::NeedsAnother);
        }
        let release_ms = now_ms.saturating_add(item.request.undo_window_ms());
        item.stage = Stage::Approved {
            approved_ms: now_ms,
            release_ms,
        };
        Ok(Approved::Approved { release_ms })
    }

    /// The operator's no. Only a waiting item can be denied (an approved one is pulled back).
    pub fn deny(&mut self, id: &str, now_ms: i64) -> Result<Decided, HitlError> {
        match self.items.get(id).map(|i| &i.stage) {
            None => Err(HitlError::Unknown(id.to_owned())),
            Some(Stage::Approved { .. }) => Err(HitlError::AlreadyApproved(id.to_owned())),
            Some(Stage::Waiting { .. }) => self
                .end(id, Ending::Denied, now_ms)
                .ok_or_else(|| HitlError::Unknown(id.to_owned())),
        }
    }

    /// Cancels an approved item in its undo window.
    pub fn pull_back(&mut self, id: &str, now_ms: i64) -> Result<Decided, HitlError> {
        let stage = self
            .items
            .get(id)
            .map(|i| i.stage.clone())
            .ok_or_else(|| HitlError::Unknown(id.to_owned()))?;
        match stage {
            Stage::Waiting { .. } => Err(HitlError::NoPullback {
                id: id.to_owned(),
                reason: "it is not approved yet (deny it instead)".to_owned(),
            }),
            Stage::Approved { release_ms, .. } if release_ms <= now_ms => {
                Err(HitlError::NoPullback {
                    id: id.to_owned(),
                    reason: "its undo window is over".to_owned(),
                })
            }
            Stage::Approved { .. } => self
                .end(id, Ending::PulledBack, now_ms)
                .ok_or_else(|| HitlError::Unknown(id.to_owned())),
        }
    }

    /// The kernel stopped waiting (its turn ended).
    pub fn withdraw(&mut self, id: &str, now_ms: i64) -> Option<Decided> {
        self.end(id, Ending::Withdrawn, now_ms)
    }

    /// Ends what is due at `now_ms`: waiting items past their timeout expire; approved items
    /// past their window are released. Oldest first.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Decided> {
        let due: Vec<(String, Ending)> = self
            .items
            .values()
            .filter_map(|item| match item.stage {
                Stage::Waiting { .. } if item.request.expires_ms <= now_ms => {
                    Some((item.request.id.clone(), Ending::Expired))
                }
                Stage::Approved { release_ms, .. } if release_ms <= now_ms => {
                    Some((item.request.id.clone(), Ending::Released))
                }
                _ => None,
            })
            .collect();
        let mut ended: Vec<Decided> = due
            .into_iter()
            .filter_map(|(id, ending)| self.end(&id, ending, now_ms))
            .collect();
        ended.sort_by_key(|d| d.request.asked_ms);
        ended
    }

    /// When [`Desk::tick`] next has something to do.
    #[must_use]
    pub fn next_due_ms(&self) -> Option<i64> {
        self.items
            .values()
            .map(|item| match item.stage {
                Stage::Waiting { .. } => item.request.expires_ms,
                Stage::Approved { release_ms, .. } => release_ms,
            })
            .min()
    }

    /// One item.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<View> {
        self.items.get(id).map(Item::view)
    }

    /// Everything on the desk, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<View> {
        let mut views: Vec<View> = self.items.values().map(Item::view).collect();
        views.sort_by_key(|v| v.request.asked_ms);
        views
    }

    /// Decided items, newest first.
    #[must_use]
    pub fn history(&self) -> Vec<Decided> {
        self.history.iter().rev().cloned().collect()
    }

    fn end(&mut self, id: &str, ending: Ending, now_ms: i64) -> Option<Decided> {
        let item = self.items.remove(id)?;
        let decided = Decided {
            request: item.request,
            binding: item.binding,
            ending,
            at_ms: now_ms,
            confirmations: item.confirmations,
            remember: item.remember,
        };
        if self.history.len() >= HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(decided.clone());
        Some(decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, level: u8) -> Request {
        Request {
            id: id.to_owned(),
            agent: "assistant".to_owned(),
            action: "files.write".to_owned(),
            args: serde_json::json!({"path": "notes.txt", "text": "hello"}),
            level,
            rules: vec!["write.files.write".to_owned()],
            category: "write".to_owned(),
            asked_ms: 1_000,
            expires_ms: 61_000,
            crawfish_secs: 10,
            confirm_twice: false,
            reasons: Vec::new(),
        }
    }

    fn proof(factor: Factor) -> Proof {
        Proof::verified(factor, "test")
    }

    const ALL: [Factor; 6] = [
        Factor::OperatorYes,
        Factor::ConsoleTap,
        Factor::Pin,
        Factor::Totp,
        Factor::WebAuthn,
        Factor::WebAuthnAndPin,
    ];

    #[test]
    fn a_remembered_approval_is_kept_to_the_release_and_never_at_level_five() {
        let remember = Remember {
            args: vec!["path".to_owned()],
            for_secs: 86_400,
        };
        let mut desk = Desk::new();
        let r = request("r1", 2);
        let b = r.binding();
        desk.admit(r, 2_000).unwrap();
        desk.approve_with(
            "r1",
            &b,
            proof(Factor::ConsoleTap),
            Some(remember.clone()),
            2_000,
        )
        .unwrap();
        let released = desk.tick(20_000);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].ending, Ending::Released);
        assert_eq!(released[0].remember, Some(remember.clone()));

        let r = request("r5", 5);
        let b = r.binding();
        desk.admit(r, 2_000).unwrap();
        let refused = desk.approve_with(
            "r5",
            &b,
            proof(Factor::WebAuthnAndPin),
            Some(remember),
            2_000,
        );
        assert!(
            matches!(refused, Err(HitlError::Remember { .. })),
            "{refused:?}"
        );
        // Refused before it counted: still no confirmation.
        assert!(desk.get("r5").unwrap().confirmations.is_empty());
    }

    #[test]
    fn invariant_i8_each_level_refuses_every_weaker_factor() {
        for level in 1..=5u8 {
            for factor in ALL {
                let mut desk = Desk::new();
                let r = request(&format!("l{level}"), level);
                let b = r.binding();
                desk.admit(r, 2_000).unwrap();
                let result = desk.approve(&format!("l{level}"), &b, proof(factor), 2_000);
                if factor.strength() < level {
                    assert!(
                        matches!(result, Err(HitlError::TooWeak { .. })),
                        "level {level} took {factor}"
                    );
                    // Still waiting: a weak try changes nothing.
                    assert!(matches!(
                        desk.get(&format!("l{level}")).unwrap().stage,
                        Stage::Waiting { confirmed: 0, .. }
                    ));
                } else {
                    assert!(result.is_ok(), "level {level} refused {factor}");
                }
            }
        }
    }

    #[test]
    fn invariant_i8_level_five_asks_twice_and_has_no_undo_window() {
        let mut desk = Desk::new();
        let r = request("five", 5);
        let b = r.binding();
        desk.admit(r, 2_000).unwrap();
        assert_eq!(
            desk.approve("five", &b, proof(Factor::WebAuthnAndPin), 3_000)
                .unwrap(),
            Approved::NeedsAnother
        );
        assert_eq!(
            desk.approve("five", &b, proof(Factor::WebAuthnAndPin), 4_000)
                .unwrap(),
            Approved::Approved { release_ms: 4_000 }
        );
        let err = desk.pull_back("five", 4_000).unwrap_err();
        assert!(err.to_string().contains("undo window is over"), "{err}");
        let released = desk.tick(4_000);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].ending, Ending::Released);
        assert_eq!(released[0].confirmations.len(), 2);
    }

    #[test]
    fn invariant_i8_an_approval_is_bound_to_its_action_and_used_once() {
        let mut desk = Desk::new();
        let r = request("a", 1);
        let other = request("b", 1);
        let (b, wrong) = (r.binding(), other.binding());
        desk.admit(r.clone(), 2_000).unwrap();
        desk.admit(other, 2_000).unwrap();
        assert!(matches!(
            desk.approve("a", &wrong, proof(Factor::Pin), 2_500),
            Err(HitlError::Mismatch { .. })
        ));
        desk.approve("a", &b, proof(Factor::Pin), 2_500).unwrap();
        assert!(matches!(
            desk.approve("a", &b, proof(Factor::Pin), 2_600),
            Err(HitlError::AlreadyApproved(_))
        ));
        // Released: the id is gone, and staging the same request again is refused.
        desk.tick(100_000);
        assert!(matches!(
            desk.approve("a", &b, proof(Factor::Pin), 100_001),
            Err(HitlError::Unknown(_))
        ));
        assert!(matches!(
            desk.admit(r, 100_002),
            Err(HitlError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn invariant_i8_an_expired_item_is_denied_and_cannot_be_approved() {
        let mut desk = Desk::new();
        let r = request("late", 1);
        let b = r.binding();
        let expires = r.expires_ms;
        desk.admit(r, 2_000).unwrap();
        assert!(matches!(
            desk.approve("late", &b, proof(Factor::Pin), expires),
            Err(HitlError::Expired(_))
        ));
        assert!(desk.get("late").is_none());
        assert_eq!(desk.history()[0].ending, Ending::Expired);

        let r = request("late2", 1);
        let expires = r.expires_ms;
        desk.admit(r, 2_000).unwrap();
        assert_eq!(desk.next_due_ms(), Some(expires));
        assert!(desk.tick(expires - 1).is_empty());
        let ended = desk.tick(expires);
        assert_eq!(ended[0].ending, Ending::Expired);
    }

    #[test]
    fn invariant_i8_the_undo_window_delays_release_and_pull_back_cancels() {
        let mut desk = Desk::new();
        let r = request("undo", 1);
        let b = r.binding();
        desk.admit(r, 2_000).unwrap();
        assert_eq!(
            desk.approve("undo", &b, proof(Factor::OperatorYes), 3_000)
                .unwrap(),
            Approved::Approved { release_ms: 13_000 }
        );
        assert!(desk.tick(12_999).is_empty(), "released inside its window");
        let pulled = desk.pull_back("undo", 12_999).unwrap();
        assert_eq!(pulled.ending, Ending::PulledBack);
        assert!(desk.tick(20_000).is_empty());
        assert!(matches!(
            desk.deny("undo", 20_000),
            Err(HitlError::Unknown(_))
        ));
    }

    #[test]
    fn deny_and_pull_back_refuse_the_wrong_stage() {
        let mut desk = Desk::new();
        let r = request("d", 1);
        let b = r.binding();
        desk.admit(r, 2_000).unwrap();
        assert!(matches!(
            desk.pull_back("d", 2_000),
            Err(HitlError::NoPullback { .. })
        ));
        desk.approve("d", &b, proof(Factor::Pin), 2_000).unwrap();
        assert!(matches!(
            desk.deny("d", 2_001),
            Err(HitlError::AlreadyApproved(_))
        ));
    }
}

//! The cap on calls waiting for a human, per caller (`api.max_waiting_approvals`).
//!
//! An API call the policy escalates is answered at once (202, or an MCP result saying it
//! waits) while its task waits for the human on the road, however long that takes. Without a
//! cap one client could pile up thousands of such tasks. So each caller's waiting calls are
//! counted — from the moment the road says the call is staged until its task ends (approved
//! and run, refused, timed out) — and a caller already at the cap gets a 429 *before the road*:
//! its call is neither proposed nor staged.
//!
//! The server cannot know before the road which call the policy will escalate, so at the cap
//! every vault call of that caller is refused, not only the ones that would wait. Calls that
//! are on the road at the same moment are not counted until they are staged, so a burst of
//! simultaneous calls can take a caller a few past the cap (at most its calls in flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a 429 for a caller at the cap says to wait: a person answers in minutes, not seconds.
pub const WAITING_RETRY_SECS: u64 = 60;

/// A refused caller is audited at most once in this time (as rate-limit hits are).
const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// The waiting calls of every caller.
#[derive(Debug)]
pub struct WaitingApprovals {
    cap: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting calls by principal; a principal with none has no entry.
    counts: HashMap<String, usize>,
    /// When each principal's refusal was last audited.
    audited: HashMap<String, Instant>,
}

/// Why a caller's call may not go on the road.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtCap {
    /// The caller's calls waiting now.
    pub waiting: usize,
    /// `api.max_waiting_approvals`.
    pub cap: usize,
    /// Whether this refusal should be audited (the first in a minute for this caller).
    pub audit: bool,
}

impl AtCap {
    /// The one line a client gets.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "{} of your calls wait for a person's approval, the most allowed \
             (`api.max_waiting_approvals` = {}): a person must approve or refuse them first \
             (`p3ak pending`); retry in {WAITING_RETRY_SECS} s",
            self.waiting, self.cap
        )
    }
}

impl WaitingApprovals {
    /// No caller may have more than `cap` calls waiting (at least one).
    #[must_use]
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is counters only: one poisoned by a panic elsewhere is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err` when `principal` already has the most calls waiting that it may.
    pub fn admit(&self, principal: &str) -> Result<(), AtCap> {
        let mut state = self.state();
        let waiting = state.counts.get(principal).copied().unwrap_or(0);
        if waiting < self.cap {
            return Ok(());
        }
        let now = Instant::now();
        state
            .audited
            .retain(|_, last| now.duration_since(*last) < AUDIT_EVERY);
        let audit = !state.audited.contains_key(principal);
        if audit {
            state.audited.insert(principal.to_owned(), now);
        }
        Err(AtCap {
            waiting,
            cap: self.cap,
            audit,
        })
    }

    /// How many calls of `principal` wait now.
    #[must_use]
    pub fn waiting(&self, principal: &str) -> usize {
        self.state().counts.get(principal).copied().unwrap_or(0)
    }

    /// A slot for one call of `principal`: counted once [`Slot::staged`], until dropped.
    #[must_use]
    pub fn slot(self: &Arc<Self>, principal: &str) -> Slot {
        Slot {
            book: Arc::clone(self),
            principal: principal.to_owned(),
            counted: false,
        }
    }
}

/// One call's place in the count; it leaves the count when dropped (its task ended).
#[derive(Debug)]
pub struct Slot {
    book: Arc<WaitingApprovals>,
    principal: String,
    counted: bool,
}

impl Slot {
    /// The road staged the call: it waits for a person from now on.
    pub fn staged(&mut self) {
        if self.counted {
            return;
        }
        self.counted = true;
        let mut state = self.book.state();
        let count = state.counts.entry(self.principal.clone()).or_insert(0);
        *count = count.saturating_add(1);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut state = self.book.state();
        if let Some(count) = state.counts.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.counts.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_at_the_cap_is_refused_until_a_waiting_call_ends_and_others_are_not() {
        let book = WaitingApprovals::new(2);
        let mut one = book.slot("token:a");
        let mut two = book.slot("token:a");
        assert!(book.admit("token:a").is_ok());
        one.staged();
        two.staged();
        two.staged();
        assert_eq!(book.waiting("token:a"), 2);
        let refused = book.admit("token:a").unwrap_err();
        assert_eq!((refused.waiting, refused.cap, refused.audit), (2, 2, true));
        assert!(refused.message().starts_with("2 of your calls wait"));
        assert!(
            !book.admit("token:a").unwrap_err().audit,
            "audited once a minute"
        );
        assert!(book.admit("token:b").is_ok());
        drop(one);
        assert_eq!(book.waiting("token:a"), 1);
        assert!(book.admit("token:a").is_ok());
        // A call that never waited leaves no trace.
        drop(book.slot("token:a"));
        drop(two);
        assert_eq!(book.waiting("token:a"), 0);
        assert!(book.state().counts.is_empty());
    }
}

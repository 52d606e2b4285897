//! The HITL daemon: `p3ak hitl run`, its own process (under its own Unix user as root),
//! speaking [`wire`](crate::wire) frames with the kernel over a socket pair on its stdin.
//!
//! [`Service`] is its state: the [`Desk`], the factor store, the spool and the channel to the
//! kernel. Every operator request — from the CLI on the operator socket
//! ([`crate::operator`], peer uid checked) or from the web console — goes through it, and it
//! alone moves spool files forward and tells the kernel what was released. Every attempt,
//! success, failure, lockout and refused peer is sent to the kernel as an audit event (the
//! kernel owns the audit log).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p3ak_proto::ProtoError;
use p3ak_proto::tokio_io::{FrameReader, write_json};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::HitlError;
use crate::binding::{Binding, Request};
use crate::chat::{Accepted, ButtonAction, ChatDesk, Outgoing, PressAnswer, PressOutcome, Refused};
use crate::desk::{Approved, Decided, Desk, Ending, Stage, View};
use crate::factors::{CurrentFactor, Factors};
use crate::level::{Factor, Proof};
use crate::operator::Peer;
use crate::pin::Pin;
use crate::remember::Remember;
use crate::spool::{self, Spool, SpoolKey};
use crate::wire::{
    self, OperatorAnswer, OperatorRequest, Refusal, Start, Started, ToDaemon, ToKernel,
};

/// An operator's answer other than an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No, for a waiting item.
    Deny,
    /// Cancel an approved item in its undo window.
    PullBack,
}

/// What a [`Service`] is made of.
pub struct ServiceOptions {
    /// The spool (prepared).
    pub spool: Spool,
    /// This run's spool key.
    pub spool_key: SpoolKey,
    /// The factor store.
    pub factors: Factors,
}

struct Inner {
    desk: Desk,
    factors: Factors,
    chat: ChatDesk,
}

/// The daemon's state, shared by the kernel channel, the timer and the console.
pub struct Service {
    inner: Mutex<Inner>,
    spool: Spool,
    key: SpoolKey,
    to_kernel: mpsc::UnboundedSender<ToKernel>,
    wake: Notify,
    login: Mutex<Option<crate::console::LoginTokens>>,
}

impl Service {
    /// A service, and the receiving end of what it tells the kernel.
    pub fn new(
        options: ServiceOptions,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<ToKernel>), HitlError> {
        let (to_kernel, receiver) = mpsc::unbounded_channel();
        let service = Arc::new(Self {
            inner: Mutex::new(Inner {
                desk: Desk::new(),
                factors: options.factors,
                chat: ChatDesk::default(),
            }),
            spool: options.spool,
            key: options.spool_key,
            to_kernel,
            wake: Notify::new(),
            login: Mutex::new(None),
        });
        Ok((service, receiver))
    }

    fn inner(&self) -> Result<MutexGuard<'_, Inner>, HitlError> {
        self.inner.lock().map_err(|_| HitlError::Poisoned {
            what: "the daemon's state",
        })
    }

    /// Now, ms since the epoch.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        now_ms()
    }

    /// Records an event in the kernel's audit log.
    pub fn audit(&self, event: &str, data: serde_json::Value) {
        let _ = self.to_kernel.send(ToKernel::Audit {
            event: event.to_owned(),
            data,
        });
    }

    /// Reads `staging/<category>/<id>` and puts it on the desk. A file that does not open,
    /// or that was staged before, is moved to `rejected/` and refused.
    pub fn admit_staged(&self, id: &str, category: &str) -> Result<View, HitlError> {
        let admitted = self.read_staged(id, category).and_then(|request| {
            let mut inner = self.inner()?;
            inner.desk.admit(request, now_ms())
        });
        match admitted {
            Ok(view) => {
                self.audit(
                    "hitl.staged",
                    json!({
                        "id": view.request.id, "agent": view.request.agent,
                        "action": view.request.action, "level": view.request.level,
                        "category": view.request.category, "binding": view.binding,
                        "expires_ms": view.request.expires_ms,
                    }),
                );
                self.wake.notify_one();
                self.chat_announce_waiting(&view, None);
                Ok(view)
            }
            Err(e) => {
                if crate::binding::is_token(id, 64) && crate::binding::is_token(category, 64) {
                    let _ = spool::move_file(
                        &self.spool.category(category).join(id),
                        &self.spool.rejected(),
                    );
                }
                self.audit(
                    "hitl.staged.refused",
                    json!({"id": id, "category": category, "error": e.to_string()}),
                );
                let _ = self.to_kernel.send(ToKernel::Refused {
                    id: id.to_owned(),
                    ending: Refusal::Invalid,
                });
                Err(e)
            }
        }
    }

    fn read_staged(&self, id: &str, category: &str) -> Result<Request, HitlError> {
        for value in [id, category] {
            if !crate::binding::is_token(value, 64) {
                return Err(HitlError::InvalidRequest {
                    id: id.to_owned(),
                    reason: format!("`{value}` is not a spool name"),
                });
            }
        }
        let path = self.spool.category(category).join(id);
        let bytes = spool::read_file(&path)?;
        Ok(self.key.open(&bytes, category, id, &path)?)
    }

    /// Everything on the desk.
    #[must_use]
    pub fn list(&self) -> Vec<View> {
        self.inner().map(|i| i.desk.list()).unwrap_or_default()
    }

    /// One item.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<View> {
        self.inner().ok().and_then(|i| i.desk.get(id))
    }

    /// Decided items, newest first.
    #[must_use]
    pub fn history(&self) -> Vec<Decided> {
        self.inner().map(|i| i.desk.history()).unwrap_or_default()
    }

    /// One approval of `id` (which must be the action `binding` names) with a verified proof.
    pub fn approve(
        &self,
        id: &str,
        binding: &Binding,
        proof: Proof,
    ) -> Result<Approved, HitlError> {
        self.approve_with(id, binding, proof, None)
    }

    /// [`Service::approve`] with the owner's "remember this", which the kernel turns into a
    /// grant when the action is released.
    pub fn approve_with(
        &self,
        id: &str,
        binding: &Binding,
        proof: Proof,
        remember: Option<Remember>,
    ) -> Result<Approved, HitlError> {
        self.tick();
        let (factor, channel) = (proof.factor(), proof.channel().to_owned());
        let now = now_ms();
        let result = {
            let mut inner = self.inner()?;
            let result = inner.desk.approve_with(id, binding, proof, remember, now);
            let view = inner.desk.get(id);
            result.map(|approved| (approved, view))
        };
        let (approved, view) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let e = match e {
                    HitlError::Unknown(_) if self.ended_as(id, Ending::Expired) => {
                        HitlError::Expired(id.to_owned())
                    }
                    e => e,
                };
                self.audit(
                    "hitl.approval.refused",
                    json!({"id": id, "factor": factor, "channel": channel, "error": e.to_string()}),
                );
                return Err(e);
            }
        };
        match &approved {
            Approved::NeedsAnother => {
                self.audit(
                    "hitl.confirmation",
                    json!({"id": id, "factor": factor, "channel": channel, "confirmed": 1, "needed": 2}),
                );
            }
            Approved::Approved { release_ms } => {
                let category = view
                    .as_ref()
                    .map(|v| v.request.category.clone())
                    .unwrap_or_default();
                let from = self.spool.category(&category).join(id);
                if let Err(e) = spool::move_file(&from, &self.spool.outbox()) {
                    // The staged file is gone or moved: nothing may run.
                    let ended = self.inner().ok().and_then(|mut i| i.desk.withdraw(id, now));
                    self.audit(
                        "hitl.approval.failed",
                        json!({"id": id, "error": e.to_string()}),
                    );
                    let _ = self.to_kernel.send(ToKernel::Refused {
                        id: id.to_owned(),
                        ending: Refusal::Spool,
                    });
                    if let Some(ended) = ended {
                        self.chat_settled(
                            &ended.request,
                            "failed: its file could not be moved, so it will not run",
                            true,
                        );
                    }
                    return Err(e.into());
                }
                self.audit(
                    "hitl.approval",
                    json!({
                        "id": id, "factor": factor, "channel": channel,
                        "factors": view.as_ref().map(|v| v.confirmations.iter().map(|c| c.factor).collect::<Vec<_>>()),
                        "release_ms": release_ms, "undo_window_ms": release_ms.saturating_sub(now),
                        "remember": view.as_ref().and_then(|v| v.remember.as_ref()),
                    }),
                );
                self.wake.notify_one();
                if *release_ms <= now {
                    self.tick();
                } else if let Some(view) = &view {
                    self.chat_announce_undo(view, *release_ms, &channel);
                }
            }
        }
        Ok(approved)
    }

    fn ended_as(&self, id: &str, ending: Ending) -> bool {
        self.history()
            .iter()
            .any(|d| d.request.id == id && d.ending == ending)
    }

    /// The operator's no.
    pub fn deny(&self, id: &str, channel: &str) -> Result<Decided, HitlError> {
        self.tick();
        let decided = self.inner()?.desk.deny(id, now_ms());
        self.conclude_answer(decided, channel, "hitl.deny.refused")
    }

    /// Cancels an approved action in its undo window.
    pub fn pull_back(&self, id: &str, channel: &str) -> Result<Decided, HitlError> {
        self.tick();
        let decided = self.inner()?.desk.pull_back(id, now_ms());
        self.conclude_answer(decided, channel, "hitl.pullback.refused")
    }

    fn conclude_answer(
        &self,
        decided: Result<Decided, HitlError>,
        channel: &str,
        refused_event: &str,
    ) -> Result<Decided, HitlError> {
        match decided {
            Ok(decided) => {
                self.conclude(&decided, channel);
                Ok(decided)
            }
            Err(e) => {
                self.audit(
                    refused_event,
                    json!({"channel": channel, "error": e.to_string()}),
                );
                Err(e)
            }
        }
    }

    /// Denies a waiting item or pulls back an approved one; says what was done.
    pub fn answer(&self, answer: Answer, id: &str, channel: &str) -> Result<String, HitlError> {
        let (d, done) = match answer {
            Answer::Deny => (self.deny(id, channel)?, "denied"),
            Answer::PullBack => (self.pull_back(id, channel)?, "pulled back"),
        };
        let tail = if answer == Answer::PullBack {
            " will not run"
        } else {
            ""
        };
        Ok(format!(
            "{done} `{id}`: {} for agent {}{tail}",
            d.request.action, d.request.agent
        ))
    }

    /// The kernel stopped waiting.
    pub fn withdraw(&self, id: &str) {
        let decided = self
            .inner()
            .ok()
            .and_then(|mut i| i.desk.withdraw(id, now_ms()));
        if let Some(decided) = decided {
            self.conclude(&decided, "kernel");
        }
    }

    /// Ends what is due: expiries and releases.
    pub fn tick(&self) {
        let ended = self
            .inner()
            .map(|mut i| i.desk.tick(now_ms()))
            .unwrap_or_default();
        for decided in ended {
            self.conclude(&decided, "timer");
        }
    }

    /// When the timer should look again.
    fn next_due_ms(&self) -> Option<i64> {
        self.inner().ok().and_then(|i| i.desk.next_due_ms())
    }

    /// Moves the ended item's file, tells the kernel, and tells the chats that announced it.
    fn conclude(&self, decided: &Decided, channel: &str) {
        let outcome = self.conclude_spool(decided, channel);
        self.chat_settled(&decided.request, &outcome, true);
    }

    /// Moves the ended item's file and tells the kernel; says how it ended, for the chats.
    fn conclude_spool(&self, decided: &Decided, channel: &str) -> String {
        let id = decided.request.id.as_str();
        let staged = self.spool.category(&decided.request.category).join(id);
        let outbox = self.spool.outbox().join(id);
        let factors: Vec<String> = decided
            .confirmations
            .iter()
            .map(|c| c.factor.to_string())
            .collect();
        let (event, refused) = match decided.ending {
            Ending::Released => match self.release(decided, &outbox) {
                Ok(request) => {
                    self.audit(
                        "hitl.released",
                        json!({"id": id, "binding": decided.binding, "factors": factors}),
                    );
                    let _ = self.to_kernel.send(ToKernel::Released {
                        request: Box::new(request),
                        binding: decided.binding,
                        factors,
                        remember: decided.remember.clone(),
                    });
                    return "approved: its undo window is over and it was released to run"
                        .to_owned();
                }
                Err(e) => {
                    let _ = spool::move_file(&outbox, &self.spool.rejected());
                    self.audit(
                        "hitl.release.failed",
                        json!({"id": id, "error": e.to_string()}),
                    );
                    ("hitl.release.failed", Refusal::Unreadable)
                }
            },
            Ending::PulledBack => {
                let moved = spool::move_file(&outbox, &self.spool.rejected());
                self.audit(
                    "hitl.pulled_back",
                    json!({"id": id, "channel": channel, "moved": moved.is_ok()}),
                );
                ("hitl.pulled_back", Refusal::PulledBack)
            }
            ending @ (Ending::Denied | Ending::Expired | Ending::Withdrawn) => {
                let moved = spool::move_file(&staged, &self.spool.rejected());
                let (event, word) = match ending {
                    Ending::Denied => ("hitl.denied", Refusal::Denied),
                    Ending::Expired => ("hitl.expired", Refusal::Expired),
                    _ => ("hitl.withdrawn", Refusal::Withdrawn),
                };
                self.audit(
                    event,
                    json!({"id": id, "channel": channel, "moved": moved.is_ok()}),
                );
                (event, word)
            }
        };
        let _ = event;
        let _ = self.to_kernel.send(ToKernel::Refused {
            id: id.to_owned(),
            ending: refused,
        });
        match refused {
            Refusal::Denied => format!("denied ({channel}): it will not run"),
            Refusal::Expired => "expired: nobody answered in time, so it was denied".to_owned(),
            Refusal::PulledBack => format!("pulled back ({channel}): it will not run"),
            Refusal::Withdrawn => "withdrawn: the agent stopped waiting for it".to_owned(),
            Refusal::Invalid | Refusal::Spool | Refusal::Unreadable => {
                "failed: its file could not be read back, so it will not run".to_owned()
            }
        }
    }

    /// Reads the approved action back from `outbox/` (what the executor runs is what was
    /// approved), checks its binding, and moves it to `sent/`.
    fn release(&self, decided: &Decided, outbox: &std::path::Path) -> Result<Request, HitlError> {
        let bytes = spool::read_file(outbox)?;
        let request = self.key.open(
            &bytes,
            &decided.request.category,
            &decided.request.id,
            outbox,
        )?;
        if !request.binding().matches(&decided.binding) {
            return Err(HitlError::Mismatch {
                id: decided.request.id.clone(),
            });
        }
        spool::move_file(outbox, &self.spool.sent())?;
        Ok(request)
    }

    // ---- approvals in a chat ----

    /// Turns chat approvals on for `connectors`, each with its key derived from `master`.
    pub fn enable_chat(
        &self,
        master: &p3ak_crypto::Key,
        connectors: &[String],
    ) -> Result<(), HitlError> {
        let chat = ChatDesk::new(master, connectors)?;
        self.inner()?.chat = chat;
        Ok(())
    }

    /// Who may answer approvals from a chat.
    #[must_use]
    pub fn approvers(&self) -> Vec<String> {
        self.inner()
            .map(|i| i.factors.approvers().to_vec())
            .unwrap_or_default()
    }

    /// Adds an approver (`telegram:7`); audited. Says what was done.
    pub fn add_approver(&self, id: &str, channel: &str) -> Result<String, HitlError> {
        let (added, known) = {
            let mut inner = self.inner()?;
            let added = inner.factors.add_approver(id)?;
            let name = id.split_once(':').map_or(id, |(name, _)| name);
            (added, inner.chat.has_connector(name))
        };
        if !added {
            return Ok(format!("`{id}` is an approver already"));
        }
        self.audit(
            "hitl.approver.added",
            json!({"approver": id, "channel": channel}),
        );
        let name = id.split_once(':').map_or(id, |(name, _)| name);
        if known {
            // What waits already is not announced again (the other approvers' buttons would
            // change under them): the new approver hears of what comes from now on.
            Ok(format!(
                "`{id}` hears of approvals from now on: it approves level 1 by button, and can deny or pull back any"
            ))
        } else {
            Ok(format!(
                "`{id}` is an approver; no running connector is called `{name}` yet (a plugin with `builtin = \"telegram\"`, `\"slack\"`, `\"discord\"` or `approvals = true`)"
            ))
        }
    }

    /// Removes an approver; audited. Says what was done.
    pub fn remove_approver(&self, id: &str, channel: &str) -> Result<String, HitlError> {
        if !self.inner()?.factors.remove_approver(id)? {
            return Err(HitlError::BadApprover {
                id: id.to_owned(),
                reason: "it is not an approver",
            });
        }
        self.audit(
            "hitl.approver.removed",
            json!({"approver": id, "channel": channel}),
        );
        Ok(format!("`{id}` is no longer an approver"))
    }

    /// The console's page for item `id`, if the console runs (a pointer only: no login token).
    fn console_link(&self, id: &str) -> Option<String> {
        let origin = self
            .login
            .lock()
            .ok()?
            .as_ref()
            .and_then(|l| l.origin().ok())?;
        Some(format!("{origin}/#item-{id}"))
    }

    fn chat_announce_waiting(&self, view: &View, only: Option<&str>) {
        let link = self.console_link(&view.request.id);
        let out = self.inner().map(|mut guard| {
            let inner = &mut *guard;
            inner.chat.announce_waiting(
                view,
                inner.factors.approvers(),
                link.as_deref(),
                now_ms(),
                only,
            )
        });
        self.send_announcements(&view.request.id, "pending", out);
    }

    fn chat_announce_undo(&self, view: &View, release_ms: i64, channel: &str) {
        let out = self.inner().map(|mut guard| {
            let inner = &mut *guard;
            let approvers = inner.factors.approvers().to_vec();
            let mut out = inner.chat.announce_settled(
                &view.request,
                &format!("approved ({channel})"),
                &approvers,
                now_ms(),
                false,
            );
            out.extend(
                inner
                    .chat
                    .announce_undo(view, release_ms, &approvers, now_ms(), None),
            );
            out
        });
        self.send_announcements(&view.request.id, "undo", out);
    }

    fn chat_settled(&self, request: &Request, outcome: &str, last: bool) {
        let out = self.inner().map(|mut guard| {
            let inner = &mut *guard;
            inner
                .chat
                .announce_settled(request, outcome, inner.factors.approvers(), now_ms(), last)
        });
        self.send_announcements(&request.id, "settled", out);
    }

    fn send_announcements(
        &self,
        approval: &str,
        kind: &str,
        out: Result<Vec<Result<Outgoing, HitlError>>, HitlError>,
    ) {
        let out = match out {
            Ok(out) => out,
            Err(e) => vec![Err(e)],
        };
        for outgoing in out {
            match outgoing {
                Ok(Outgoing {
                    connector,
                    sealed,
                    recipients,
                }) => {
                    self.audit(
                        "hitl.chat.announced",
                        json!({"id": approval, "connector": connector, "kind": kind, "recipients": recipients}),
                    );
                    let _ = self
                        .to_kernel
                        .send(ToKernel::ChatAnnounce { connector, sealed });
                }
                Err(e) => self.audit(
                    "hitl.chat.announce.failed",
                    json!({"id": approval, "kind": kind, "error": e.to_string()}),
                ),
            }
        }
    }

    /// Announces again to `connector` what waits and what sits in its undo window (it has
    /// just (re)registered and remembers nothing). Old buttons of that connector are void.
    pub fn chat_resend(&self, connector: &str) {
        self.tick();
        for view in self.list() {
            match view.stage {
                Stage::Waiting { .. } => self.chat_announce_waiting(&view, Some(connector)),
                Stage::Approved { release_ms, .. } => {
                    let out = self.inner().map(|mut guard| {
                        let inner = &mut *guard;
                        inner.chat.announce_undo(
                            &view,
                            release_ms,
                            inner.factors.approvers(),
                            now_ms(),
                            Some(connector),
                        )
                    });
                    self.send_announcements(&view.request.id, "undo", out);
                }
            }
        }
    }

    /// A press relayed for `connector`: opened, checked and acted on. Returns the sealed
    /// answer, or `None` when the daemon has no key for `connector`. Every refusal is audited.
    pub fn chat_press(&self, connector: &str, sealed: &str) -> Option<String> {
        self.tick();
        let checked = match self.inner() {
            Ok(mut guard) => {
                let inner = &mut *guard;
                if !inner.chat.has_connector(connector) {
                    drop(guard);
                    self.audit(
                        "hitl.chat.refused",
                        json!({"connector": connector, "reason": "unknown_connector"}),
                    );
                    return None;
                }
                inner.chat.check_press(
                    connector,
                    sealed,
                    inner.factors.approvers(),
                    &inner.desk,
                    now_ms(),
                )
            }
            Err(e) => Err((Refused::Desk(e.to_string()), None)),
        };
        let answer = match checked {
            Ok(accepted) => self.act_on_press(connector, accepted),
            Err((why, press)) => {
                self.audit(
                    "hitl.chat.refused",
                    json!({
                        "connector": connector, "reason": why.reason(),
                        "presser": press.as_ref().map(|p| &p.presser),
                    }),
                );
                PressAnswer {
                    approval: None,
                    outcome: PressOutcome::Refused,
                    message: why.message(),
                }
            }
        };
        let sealed = self
            .inner()
            .ok()
            .and_then(|i| i.chat.seal_answer(connector, &answer));
        match sealed {
            Some(Ok(sealed)) => Some(sealed),
            Some(Err(e)) => {
                self.audit(
                    "hitl.chat.answer.failed",
                    json!({"connector": connector, "error": e.to_string()}),
                );
                None
            }
            None => None,
        }
    }

    fn act_on_press(&self, connector: &str, accepted: Accepted) -> PressAnswer {
        let Accepted {
            approval,
            binding,
            action,
            approver,
        } = accepted;
        let channel = format!("chat:{connector}");
        self.audit(
            "hitl.chat.press",
            json!({"id": approval, "connector": connector, "approver": approver, "action": action.as_str()}),
        );
        let done = match action {
            ButtonAction::Approve => self
                .approve_with(
                    &approval,
                    &binding,
                    Proof::verified(Factor::OperatorYes, channel.clone()),
                    None,
                )
                .map(|approved| match approved {
                    Approved::Approved { release_ms } => {
                        let wait = release_ms.saturating_sub(now_ms());
                        let message = if wait > 0 {
                            format!(
                                "approved: it runs in {} s unless you pull it back",
                                (wait + 999) / 1000
                            )
                        } else {
                            "approved: it runs now".to_owned()
                        };
                        (PressOutcome::Approved, message)
                    }
                    Approved::NeedsAnother => (
                        PressOutcome::Approved,
                        "confirmation 1 of 2 given; confirm once more with `p3ak approve` or in the console".to_owned(),
                    ),
                }),
            ButtonAction::Deny => self
                .deny(&approval, &channel)
                .map(|_| (PressOutcome::Denied, "denied: it will not run".to_owned())),
            ButtonAction::PullBack => self.pull_back(&approval, &channel).map(|_| {
                (
                    PressOutcome::PulledBack,
                    "pulled back: it will not run".to_owned(),
                )
            }),
        };
        match done {
            Ok((outcome, message)) => PressAnswer {
                approval: Some(approval),
                outcome,
                message,
            },
            Err(e) => {
                // The desk audited its refusal; the chat's is audited too.
                let why = Refused::Desk(e.to_string());
                self.audit(
                    "hitl.chat.refused",
                    json!({"connector": connector, "reason": why.reason(), "id": approval, "error": e.to_string()}),
                );
                PressAnswer {
                    approval: Some(approval),
                    outcome: PressOutcome::Refused,
                    message: why.message(),
                }
            }
        }
    }

    /// Checks a PIN: the L3 proof. Audited; wrong tries count towards the lockout.
    pub fn verify_pin(&self, pin: &Pin, channel: &str) -> Result<Proof, HitlError> {
        let result = self
            .inner()
            .and_then(|mut i| i.factors.verify_pin(pin, channel, now_ms()));
        self.audit_factor(Factor::Pin, channel, result.as_ref().err());
        result
    }

    /// Checks a TOTP code: the headless L3 proof.
    pub fn verify_totp(&self, code: &str, channel: &str) -> Result<Proof, HitlError> {
        let result = self
            .inner()
            .and_then(|mut i| i.factors.verify_totp(code, channel, now_ms()));
        self.audit_factor(Factor::Totp, channel, result.as_ref().err());
        result
    }

    /// Checks the PIN half of a level 5 approval.
    pub fn check_pin_for_webauthn(&self, pin: &Pin, channel: &str) -> Result<(), HitlError> {
        let result = self
            .inner()
            .and_then(|mut i| i.factors.verify_pin_for_webauthn(pin, now_ms()));
        self.audit_factor(Factor::WebAuthnAndPin, channel, result.as_ref().err());
        result
    }

    fn audit_factor(&self, factor: Factor, channel: &str, error: Option<&HitlError>) {
        match error {
            None => self.audit(
                "hitl.factor.ok",
                json!({"factor": factor, "channel": channel}),
            ),
            Some(HitlError::LockedOut { seconds }) => self.audit(
                "hitl.factor.locked",
                json!({"factor": factor, "channel": channel, "locked_secs": seconds}),
            ),
            Some(e) => self.audit(
                "hitl.factor.failed",
                json!({"factor": factor, "channel": channel, "error": e.to_string()}),
            ),
        }
    }

    /// Works on the factor store (the console's passkeys).
    pub fn with_factors<T>(
        &self,
        f: impl FnOnce(&mut Factors) -> Result<T, HitlError>,
    ) -> Result<T, HitlError> {
        let mut inner = self.inner()?;
        f(&mut inner.factors)
    }

    /// Sets where fresh console login links come from.
    pub fn set_login(&self, login: crate::console::LoginTokens) {
        if let Ok(mut slot) = self.login.lock() {
            *slot = Some(login);
        }
    }

    /// Answers an operator's request relayed by the kernel.
    pub fn operator(&self, request: &OperatorRequest, channel: &str) -> OperatorAnswer {
        match self.operator_inner(request, channel) {
            Ok(answer) => answer,
            Err(e) => OperatorAnswer::Error {
                message: e.to_string(),
            },
        }
    }

    fn operator_inner(
        &self,
        request: &OperatorRequest,
        channel: &str,
    ) -> Result<OperatorAnswer, HitlError> {
        let done = |message: String| Ok(OperatorAnswer::Done { message });
        match request {
            OperatorRequest::Pending => {
                self.tick();
                Ok(OperatorAnswer::Pending { items: self.list() })
            }
            OperatorRequest::History => Ok(OperatorAnswer::History {
                items: self.history(),
            }),
            OperatorRequest::Approve {
                id,
                pin,
                totp,
                remember,
            } => {
                self.tick();
                let view = self.get(id).ok_or_else(|| {
                    if self.ended_as(id, Ending::Expired) {
                        HitlError::Expired(id.clone())
                    } else {
                        HitlError::Unknown(id.clone())
                    }
                })?;
                // Before any factor is tried: a refused "remember" costs no PIN attempt.
                if let Some(remember) = remember {
                    remember
                        .check(&view.request)
                        .map_err(|source| HitlError::Remember {
                            id: id.clone(),
                            source,
                        })?;
                }
                let remembered = remember
                    .as_ref()
                    .map(|r| format!("; {r} once it runs"))
                    .unwrap_or_default();
                let proof = match (pin, totp) {
                    (Some(pin), _) => self.verify_pin(&Pin::new(pin.clone())?, channel)?,
                    (None, Some(code)) => self.verify_totp(code, channel)?,
                    (None, None) => Proof::operator_yes(channel),
                };
                match self.approve_with(id, &view.binding, proof, remember.clone())? {
                    Approved::NeedsAnother => done(format!(
                        "confirmation 1 of 2 given for `{id}` ({}); approve once more to confirm",
                        view.request.action
                    )),
                    Approved::Approved { release_ms } => {
                        let wait = release_ms.saturating_sub(now_ms());
                        if wait > 0 {
                            done(format!(
                                "approved `{id}`: {} for agent {}; it runs in {} s unless you pull it back (`p3ak hitl pullback {id}`){remembered}",
                                view.request.action,
                                view.request.agent,
                                (wait + 999) / 1000
                            ))
                        } else {
                            done(format!(
                                "approved `{id}`: {} for agent {}{remembered}",
                                view.request.action, view.request.agent
                            ))
                        }
                    }
                }
            }
            OperatorRequest::Deny { id } => done(self.answer(Answer::Deny, id, channel)?),
            OperatorRequest::PullBack { id } => done(self.answer(Answer::PullBack, id, channel)?),
            OperatorRequest::PinSet {
                pin,
                current,
                current_totp,
            } => {
                let new = Pin::new(pin.clone())?;
                let current_pin = current.clone().map(Pin::new).transpose()?;
                let proof = current_factor(current_pin.as_ref(), current_totp.as_deref());
                let result = self
                    .inner()
                    .and_then(|mut i| i.factors.set_pin_with(&new, proof, now_ms()));
                match &result {
                    Ok(()) => self.audit("hitl.pin.set", json!({"channel": channel})),
                    Err(e) => self.audit(
                        "hitl.pin.set.refused",
                        json!({"channel": channel, "error": e.to_string()}),
                    ),
                }
                result?;
                done("PIN set".to_owned())
            }
            OperatorRequest::TotpEnroll { pin, totp } => {
                let pin = pin.clone().map(Pin::new).transpose()?;
                let proof = current_factor(pin.as_ref(), totp.as_deref());
                let result = self.inner().and_then(|mut i| {
                    i.factors
                        .totp_begin_enrollment_with("operator", proof, now_ms())
                });
                match &result {
                    Ok(_) => self.audit("hitl.totp.enroll", json!({"channel": channel})),
                    Err(e) => self.audit(
                        "hitl.totp.enroll.refused",
                        json!({"channel": channel, "error": e.to_string()}),
                    ),
                }
                let enrollment = result?;
                Ok(OperatorAnswer::Enrollment {
                    uri: enrollment.uri.clone(),
                    secret: enrollment.secret_base32.clone(),
                })
            }
            OperatorRequest::TotpConfirm { code } => {
                let result = self
                    .inner()
                    .and_then(|mut i| i.factors.totp_confirm(code, now_ms()));
                match &result {
                    Ok(()) => self.audit("hitl.totp.active", json!({"channel": channel})),
                    Err(e) => self.audit(
                        "hitl.totp.confirm.refused",
                        json!({"channel": channel, "error": e.to_string()}),
                    ),
                }
                result?;
                done("TOTP is active: `p3ak approve ID --totp` takes a code for level 3".to_owned())
            }
            OperatorRequest::Login => {
                let link = self
                    .login
                    .lock()
                    .ok()
                    .and_then(|l| l.as_ref().map(crate::console::LoginTokens::link))
                    .transpose()?
                    .ok_or(HitlError::ConsoleNotRunning)?;
                self.audit("hitl.console.link", json!({"channel": channel}));
                done(link)
            }
            OperatorRequest::Approvers => Ok(OperatorAnswer::Approvers {
                approvers: self.approvers(),
            }),
            OperatorRequest::ApproversAdd { id } => done(self.add_approver(id, channel)?),
            OperatorRequest::ApproversRemove { id } => done(self.remove_approver(id, channel)?),
            OperatorRequest::Factors => {
                let inner = self.inner()?;
                let f = &inner.factors;
                done(format!(
                    "PIN: {}; TOTP: {}; security keys: {}",
                    if f.pin_is_set() {
                        "set"
                    } else {
                        "not set (`p3ak hitl pin set`)"
                    },
                    if f.totp_is_active() {
                        "active"
                    } else {
                        "not set up"
                    },
                    f.passkeys().len()
                ))
            }
        }
    }

    /// Runs the timer until the service is dropped elsewhere: expiries and releases happen on
    /// time even when nobody asks.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            self.tick();
            let wait = self.next_due_ms().map_or(Duration::from_secs(3600), |due| {
                Duration::from_millis(u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0))
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Moves what a previous run left in `staging/` and `outbox/` to `rejected/`: its turns
    /// are gone, and its key with them.
    pub fn sweep_previous_run(&self) -> usize {
        let mut moved = 0;
        let mut dirs = vec![self.spool.outbox()];
        if let Ok(entries) = std::fs::read_dir(self.spool.staging()) {
            dirs.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if spool::move_file(&entry.path(), &self.spool.rejected()).is_ok() {
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            self.audit("hitl.swept", json!({"moved_to_rejected": moved}));
        }
        moved
    }
}

/// `p3ak hitl run`: reads the [`Start`] frame from `channel` (its standard input, one end of a
/// socket pair whose other end the kernel holds), opens its factor store, binds the operator
/// socket and the console, reports on `report` (its standard output, read by whoever started
/// it) and serves until the kernel says stop or closes the channel.
pub async fn run<W: std::io::Write>(
    channel: tokio::net::UnixStream,
    report: W,
) -> Result<(), HitlError> {
    let (input, mut output) = channel.into_split();
    let mut reader = FrameReader::new(input, wire::MAX_FRAME);
    let start: Start = reader
        .read_json()
        .await
        .map_err(HitlError::frame("bad frame"))?
        .ok_or(HitlError::NoStartFrame)?;
    let home = std::path::PathBuf::from(&start.home);
    let spool = Spool::new(home.join("spool"));
    spool.prepare(&start.categories, None)?;
    let hitl_dir = home.join("hitl");
    let (factors, resealed) = open_factors(&hitl_dir, &start)?;
    let (service, mut to_kernel) = Service::new(ServiceOptions {
        spool,
        spool_key: SpoolKey::from_hex(&start.spool_key)?,
        factors,
    })?;
    service.sweep_previous_run();
    if let Some(chat_key) = &start.chat_key {
        service.enable_chat(&hex_key(chat_key, "chat key")?, &start.connectors)?;
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let operators = serve_operators(
        &service,
        &hitl_dir,
        start.operators.clone(),
        stopped.clone(),
    )?;
    let mut started = Started {
        console: None,
        login_link: None,
        console_error: None,
        resealed,
    };
    if let Some(listen) = &start.console {
        match start_console(&service, listen, &start, stopped.clone()).await {
            Ok((address, link)) => {
                started.console = Some(address);
                started.login_link = Some(link);
            }
            Err(e) => {
                // Not fatal: the CLI still approves levels 1 and 3; `p3ak up` says what failed.
                tracing::error!("the web console does not run: {e}");
                service.audit("hitl.console.failed", json!({"error": e.to_string()}));
                started.console_error = Some(format!(
                    "the web console could not listen on {listen}: {e}; approvals that need it (levels 2, 4, 5) cannot be given"
                ));
            }
        }
    }
    let console_address = started.console.clone();
    drop(start);
    report_started(report, &started)?;
    drop(started);

    let writer = tokio::spawn(async move {
        while let Some(message) = to_kernel.recv().await {
            // The channel is gone; any other error spoils this message only, the next may go.
            if let Err(ProtoError::Io(_)) = write_json(&mut output, &message, wire::MAX_FRAME).await
            {
                break;
            }
        }
    });
    let _ = service.to_kernel.send(ToKernel::Ready {
        console: console_address,
    });
    let timer = tokio::spawn(Arc::clone(&service).run_timer());

    let result = loop {
        let message: ToDaemon = match reader.read_json().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(e) => break Err(HitlError::frame("bad frame")(e)),
        };
        match message {
            ToDaemon::Staged { id, category } => {
                let _ = service.admit_staged(&id, &category);
            }
            ToDaemon::Withdraw { id } => service.withdraw(&id),
            ToDaemon::ChatPress {
                id,
                connector,
                sealed,
            } => {
                // A PIN-free check, but the approval it may make moves spool files: off the
                // reader's task, in order.
                let pressing = Arc::clone(&service);
                let sealed =
                    tokio::task::spawn_blocking(move || pressing.chat_press(&connector, &sealed))
                        .await
                        .ok()
                        .flatten();
                let _ = service.to_kernel.send(ToKernel::ChatAnswer { id, sealed });
            }
            ToDaemon::ChatResend { connector } => service.chat_resend(&connector),
            ToDaemon::Shutdown => break Ok(()),
        }
    };
    timer.abort();
    stop.send_replace(true);
    operators.abort();
    let _ = std::fs::remove_file(crate::operator::socket_path(&hitl_dir));
    // Whatever still waits is withdrawn: the kernel is going away.
    for view in service.list() {
        if matches!(view.stage, Stage::Waiting { .. } | Stage::Approved { .. }) {
            service.withdraw(&view.request.id);
        }
    }
    drop(service);
    let _ = writer.await;
    result
}

/// Opens the factor store under the start frame's key; one an older release sealed under
/// another key is resealed under the new one (and says so).
fn open_factors(dir: &std::path::Path, start: &Start) -> Result<(Factors, bool), HitlError> {
    let key = hex_key(&start.state_key, "state key")?;
    match Factors::open(dir, &key) {
        Ok(factors) => Ok((factors, false)),
        Err(e @ HitlError::Corrupt { .. }) => {
            let Some(previous) = &start.previous_state_key else {
                return Err(e);
            };
            let previous = hex_key(previous, "previous state key")?;
            let mut factors = Factors::open(dir, &previous).map_err(|_| e)?;
            factors.reseal(&key)?;
            Ok((factors, true))
        }
        Err(e) => Err(e),
    }
}

fn hex_key(text: &str, what: &'static str) -> Result<p3ak_crypto::Key, HitlError> {
    let bytes =
        zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| HitlError::NotHex { what })?);
    Ok(p3ak_crypto::Key::from_slice(&bytes)?)
}

fn report_started<W: std::io::Write>(mut report: W, started: &Started) -> Result<(), HitlError> {
    let mut line = zeroize::Zeroizing::new(serde_json::to_vec(started).map_err(HitlError::Encode)?);
    line.push(b'\n');
    report
        .write_all(&line)
        .and_then(|()| report.flush())
        .map_err(HitlError::io("cannot report the start"))
}

/// Binds `<hitl_dir>/operator.sock` and serves each operator request on it; peers whose uid
/// is not in `operators` are refused and audited.
fn serve_operators(
    service: &Arc<Service>,
    hitl_dir: &std::path::Path,
    operators: Vec<u32>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, HitlError> {
    use std::os::unix::fs::PermissionsExt;
    let path = crate::operator::socket_path(hitl_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(HitlError::Io {
                context: format!("cannot remove `{}`", path.display()),
                source: e,
            });
        }
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(HitlError::io(format!("cannot bind `{}`", path.display())))?;
    // Anyone may connect; the peer's uid decides (a operator need not own this directory).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(
        HitlError::io(format!("cannot open `{}` to operators", path.display())),
    )?;
    let service = Arc::clone(service);
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let service = Arc::clone(&service);
            let operators = operators.clone();
            tokio::spawn(async move { serve_operator(service, stream, &operators).await });
        }
    }))
}

async fn serve_operator(
    service: Arc<Service>,
    mut stream: tokio::net::UnixStream,
    operators: &[u32],
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            pid: cred.pid(),
        },
        Err(_) => return,
    };
    let request = crate::operator::read_request(&mut stream).await;
    if !operators.contains(&peer.uid) {
        let what = request.as_ref().map_or("unreadable", OperatorRequest::name);
        service.audit(
            "hitl.operator.refused",
            json!({"peer_uid": peer.uid, "peer_pid": peer.pid, "request": what}),
        );
        let refusal = HitlError::NotOperator { uid: peer.uid };
        let _ = crate::operator::write_answer(
            &mut stream,
            &OperatorAnswer::Error {
                message: refusal.to_string(),
            },
        )
        .await;
        return;
    }
    let answer = match request {
        Ok(request) => {
            let channel = peer.channel();
            let service = Arc::clone(&service);
            tokio::task::spawn_blocking(move || service.operator(&request, &channel))
                .await
                .unwrap_or_else(|e| OperatorAnswer::Error {
                    message: format!("the daemon's task failed: {e}"),
                })
        }
        Err(e) => OperatorAnswer::Error {
            message: e.to_string(),
        },
    };
    let _ = crate::operator::write_answer(&mut stream, &answer).await;
}

/// Binds the console and returns its address and a first one-time login link.
async fn start_console(
    service: &Arc<Service>,
    listen: &str,
    start: &Start,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(String, String), HitlError> {
    let mut settings =
        crate::console::ConsoleSettings::from_start(listen, start.console_origin.as_deref())?;
    settings.allow_public = start.console_public;
    let console = crate::console::bind(settings).await?;
    let login = crate::console::LoginTokens::new(console.origin().clone());
    let link = login.link()?;
    service.set_login(login.clone());
    let address = console.local_addr().to_string();
    let service = Arc::clone(service);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = console.serve(service, login, shutdown).await {
            tracing::error!("console stopped: {e}");
        }
    });
    Ok((address, link))
}

fn current_factor<'a>(pin: Option<&'a Pin>, totp: Option<&'a str>) -> Option<CurrentFactor<'a>> {
    match (pin, totp) {
        (Some(pin), _) => Some(CurrentFactor::Pin(pin)),
        (None, Some(code)) => Some(CurrentFactor::Totp(code)),
        (None, None) => None,
    }
}

/// Now, ms since the epoch.
pub use p3ak_crypto::clock::now_ms;

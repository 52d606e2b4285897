//! Approvals in a chat: the daemon's side of [`p3ak_approval::chat`].
//!
//! When an item starts waiting, the daemon writes an [`Announcement`] for each connector that
//! has approvers, with buttons whose data is a one-time token it minted here, bound to the
//! item's id, its binding and one action (approve, deny, pull back), and expiring with the
//! item. It seals the announcement with that connector's [`ChatKey`] and hands it to the kernel
//! to relay. A press comes back sealed by the connector; [`ChatDesk::check_press`] opens it
//! with the same connector's key and checks the token, the presser, the level and the press's
//! age before the daemon acts. The kernel sees only sealed texts: it can drop or delay them,
//! not read a token, forge a press or replay one (each token works once).
//!
//! A button approves level 1 only (the operator's yes on an authenticated channel, I8); levels
//! 2–5 get a deny button and a pointer to the console, where their factor is given.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use data_encoding::BASE64URL_NOPAD;
use p3ak_approval::binding::{Binding, Request};
use p3ak_approval::level::Factor;
use p3ak_crypto::Key;

pub use p3ak_approval::chat::{
    Announcement, AnnouncementKind, BUTTON_PREFIX, Button, ChatKey, Press, PressAnswer,
    PressOutcome, Purpose,
};

use crate::HitlError;
use crate::desk::{Desk, Stage, View};

/// How old (or how far ahead of the daemon's clock) a press may be.
pub const MAX_PRESS_AGE_MS: i64 = 5 * 60 * 1000;
/// How much of an action's arguments an announcement shows.
pub const ARGS_SHOWN: usize = 600;
/// The longest platform user id in an approver's identity.
pub const MAX_USER_ID: usize = 128;

/// Checks an approver's identity: `NAME:<platform user id>` (`telegram:7`, `slack:U024BE7LH`).
pub fn check_approver(id: &str) -> Result<(), HitlError> {
    let bad = |reason| HitlError::BadApprover {
        id: id.to_owned(),
        reason,
    };
    let (name, user) = id.split_once(':').ok_or_else(|| bad("no `:`"))?;
    if !crate::binding::is_token(name, 64) {
        return Err(bad("the connector's name is not a plugin name"));
    }
    if user.is_empty() || user.len() > MAX_USER_ID {
        return Err(bad("the user id is empty or too long"));
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(bad("the user id has characters other than `A-Za-z0-9-_.@`"));
    }
    Ok(())
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    /// Approve a waiting level 1 item.
    Approve,
    /// Deny a waiting item.
    Deny,
    /// Pull an approved item back in its undo window.
    PullBack,
}

impl ButtonAction {
    fn label(self) -> &'static str {
        match self {
            Self::Approve => "Approve",
            Self::Deny => "Deny",
            Self::PullBack => "Pull back",
        }
    }

    /// The word in the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::PullBack => "pull_back",
        }
    }

    /// Whether it answers a waiting item (else an approved one).
    fn for_waiting(self) -> bool {
        !matches!(self, Self::PullBack)
    }
}

struct Token {
    approval: String,
    binding: Binding,
    action: ButtonAction,
    connector: String,
    expires_ms: i64,
}

/// Why a press did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The seal does not open with the connector's key (forged, altered, another connector's
    /// or purpose's), or holds no press.
    Seal,
    /// No such token: never minted, used already, or voided when its item was settled.
    Token,
    /// The token's time is over.
    Expired,
    /// The press is older (or newer) than [`MAX_PRESS_AGE_MS`].
    Stale,
    /// The presser is not an approver on this connector.
    NotApprover,
    /// A button cannot approve this level (it needs a stronger factor), or an item that needs
    /// two confirmations.
    NeedsFactor {
        /// The item's level.
        level: u8,
        /// Whether it needs two confirmations.
        twice: bool,
    },
    /// The item is no longer in the stage the button was for.
    Settled,
    /// The desk refused the answer (its text).
    Desk(String),
}

impl Refused {
    /// The reason in the audit log (`hitl.chat.refused`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Seal => "seal",
            Self::Token => "unknown_token",
            Self::Expired => "expired",
            Self::Stale => "stale",
            Self::NotApprover => "not_approver",
            Self::NeedsFactor { .. } => "needs_factor",
            Self::Settled => "settled",
            Self::Desk(_) => "desk",
        }
    }

    /// One line for the person who pressed.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::Seal => "this button could not be verified; nothing was done".to_owned(),
            Self::Token => "this button is unknown or was already used".to_owned(),
            Self::Expired => "this approval has expired".to_owned(),
            Self::Stale => "this press arrived too late; press again".to_owned(),
            Self::NotApprover => "you are not an approver here; nothing was done".to_owned(),
            Self::NeedsFactor { level, twice: false } => format!(
                "level {level} needs {}; a chat button cannot approve it",
                Factor::needed_for(*level)
            ),
            Self::NeedsFactor { twice: true, .. } => {
                "this action needs two confirmations: approve it with `p3ak approve` or in the console"
                    .to_owned()
            }
            Self::Settled => "this approval is already settled".to_owned(),
            Self::Desk(message) => message.clone(),
        }
    }
}

/// A press that passed every check; its token is used, its siblings void.
#[derive(Debug)]
pub struct Accepted {
    /// The item's id.
    pub approval: String,
    /// The binding the token was minted for.
    pub binding: Binding,
    /// What to do.
    pub action: ButtonAction,
    /// Who pressed, as `NAME:<user id>`.
    pub approver: String,
}

/// One sealed announcement for one connector.
pub struct Outgoing {
    /// The connector.
    pub connector: String,
    /// The sealed [`Announcement`].
    pub sealed: String,
    /// How many approvers it goes to.
    pub recipients: usize,
}

/// The daemon's chat state: the connectors' keys, the live tokens, who was told what.
#[derive(Default)]
pub struct ChatDesk {
    keys: BTreeMap<String, ChatKey>,
    tokens: HashMap<String, Token>,
    /// For each item, the connectors that announced it (they hear how it was settled).
    told: HashMap<String, BTreeSet<String>>,
}

impl ChatDesk {
    /// Chat approvals for `connectors`, each with its key derived from `master`.
    pub fn new(master: &Key, connectors: &[String]) -> Result<Self, HitlError> {
        let mut keys = BTreeMap::new();
        for name in connectors {
            keys.insert(name.clone(), ChatKey::derive(master, name)?);
        }
        Ok(Self {
            keys,
            ..Self::default()
        })
    }

    /// Whether connector `name` is known.
    #[must_use]
    pub fn has_connector(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// How many tokens are live (for tests and the audit log).
    #[must_use]
    pub fn live_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Announces `view` as waiting to each connector with approvers (or to `only`): new
    /// tokens, the old ones of those connectors void.
    pub fn announce_waiting(
        &mut self,
        view: &View,
        approvers: &[String],
        link: Option<&str>,
        now_ms: i64,
        only: Option<&str>,
    ) -> Vec<Result<Outgoing, HitlError>> {
        let request = &view.request;
        let buttons_approve = request.level <= 1 && request.confirmations_needed() == 1;
        let link = (!buttons_approve).then_some(link).flatten();
        let text = waiting_text(view, link.is_some(), now_ms);
        let actions: &[ButtonAction] = if buttons_approve {
            &[ButtonAction::Approve, ButtonAction::Deny]
        } else {
            &[ButtonAction::Deny]
        };
        self.announce(
            view,
            AnnouncementKind::Pending,
            &text,
            actions,
            link,
            request.expires_ms,
            approvers,
            only,
        )
    }

    /// Announces `view`, approved and in its undo window until `release_ms`, with a pull back
    /// button.
    pub fn announce_undo(
        &mut self,
        view: &View,
        release_ms: i64,
        approvers: &[String],
        now_ms: i64,
        only: Option<&str>,
    ) -> Vec<Result<Outgoing, HitlError>> {
        let text = format!(
            "{}\napproved: it runs in {} unless you pull it back",
            headline(&view.request),
            duration(release_ms.saturating_sub(now_ms))
        );
        self.announce(
            view,
            AnnouncementKind::Undo,
            &text,
            &[ButtonAction::PullBack],
            None,
            release_ms,
            approvers,
            only,
        )
    }

    /// Tells each connector that announced `request` how it was settled (`outcome`): their
    /// messages lose their buttons. Every token of the item is void. When `last`, the item is
    /// forgotten (nothing more will be said about it).
    pub fn announce_settled(
        &mut self,
        request: &Request,
        outcome: &str,
        approvers: &[String],
        now_ms: i64,
        last: bool,
    ) -> Vec<Result<Outgoing, HitlError>> {
        self.tokens.retain(|_, t| t.approval != request.id);
        let told = if last {
            self.told.remove(&request.id).unwrap_or_default()
        } else {
            self.told.get(&request.id).cloned().unwrap_or_default()
        };
        let text = format!("{}\n{outcome}", headline(request));
        let mut out = Vec::new();
        for connector in told {
            let recipients = recipients(approvers, &connector);
            let announcement = Announcement {
                approval: request.id.clone(),
                kind: AnnouncementKind::Settled,
                text: text.clone(),
                recipients,
                buttons: Vec::new(),
                link: None,
                expires_at_ms: now_ms,
            };
            out.push(self.seal_announcement(&connector, &announcement));
        }
        out
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one private helper for the three kinds of announcement"
    )]
    fn announce(
        &mut self,
        view: &View,
        kind: AnnouncementKind,
        text: &str,
        actions: &[ButtonAction],
        link: Option<&str>,
        expires_ms: i64,
        approvers: &[String],
        only: Option<&str>,
    ) -> Vec<Result<Outgoing, HitlError>> {
        let id = &view.request.id;
        let connectors: Vec<String> = self
            .keys
            .keys()
            .filter(|name| only.is_none_or(|o| o == name.as_str()))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for connector in connectors {
            let recipients = recipients(approvers, &connector);
            if recipients.is_empty() {
                continue;
            }
            // One live set of buttons per item, phase and connector.
            let phase_waiting = actions.iter().any(|a| a.for_waiting());
            self.tokens.retain(|_, t| {
                !(t.approval == *id
                    && t.connector == connector
                    && t.action.for_waiting() == phase_waiting)
            });
            let mut buttons = Vec::new();
            for action in actions {
                match self.mint(view, *action, &connector, expires_ms) {
                    Ok(data) => buttons.push(Button {
                        label: action.label().to_owned(),
                        data,
                    }),
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                }
            }
            let announcement = Announcement {
                approval: id.clone(),
                kind,
                text: text.to_owned(),
                recipients,
                buttons,
                link: link.map(str::to_owned),
                expires_at_ms: expires_ms,
            };
            self.told
                .entry(id.clone())
                .or_default()
                .insert(connector.clone());
            out.push(self.seal_announcement(&connector, &announcement));
        }
        out
    }

    fn mint(
        &mut self,
        view: &View,
        action: ButtonAction,
        connector: &str,
        expires_ms: i64,
    ) -> Result<String, HitlError> {
        let token = BASE64URL_NOPAD.encode(&p3ak_crypto::random_array::<16>()?);
        self.tokens.insert(
            token.clone(),
            Token {
                approval: view.request.id.clone(),
                binding: view.binding,
                action,
                connector: connector.to_owned(),
                expires_ms,
            },
        );
        Ok(format!("{BUTTON_PREFIX}{token}"))
    }

    fn seal_announcement(
        &self,
        connector: &str,
        announcement: &Announcement,
    ) -> Result<Outgoing, HitlError> {
        let key = self.keys.get(connector).ok_or(HitlError::Approval(
            p3ak_approval::ApprovalError::Sealed("no key for that connector"),
        ))?;
        Ok(Outgoing {
            connector: connector.to_owned(),
            sealed: key.seal(Purpose::Announce, announcement)?,
            recipients: announcement.recipients.len(),
        })
    }

    /// Seals `answer` for `connector`; `None` when the connector has no key.
    pub fn seal_answer(
        &self,
        connector: &str,
        answer: &PressAnswer,
    ) -> Option<Result<String, HitlError>> {
        let key = self.keys.get(connector)?;
        Some(key.seal(Purpose::Answer, answer).map_err(HitlError::from))
    }

    /// Opens and checks a press relayed for `connector`. On success its token is used and the
    /// item's other tokens for the same stage are void, so a press acts once.
    pub fn check_press(
        &mut self,
        connector: &str,
        sealed: &str,
        approvers: &[String],
        desk: &Desk,
        now_ms: i64,
    ) -> Result<Accepted, (Refused, Option<Press>)> {
        let key = self.keys.get(connector).ok_or((Refused::Seal, None))?;
        let press: Press = key
            .open(Purpose::Press, sealed)
            .map_err(|_| (Refused::Seal, None))?;
        let refuse = |why: Refused| (why, Some(press.clone()));
        let token = press
            .data
            .strip_prefix(BUTTON_PREFIX)
            .ok_or_else(|| refuse(Refused::Token))?;
        let entry = self
            .tokens
            .get(token)
            .filter(|t| t.connector == connector)
            .ok_or_else(|| refuse(Refused::Token))?;
        if entry.expires_ms <= now_ms {
            self.tokens.remove(token);
            return Err(refuse(Refused::Expired));
        }
        if now_ms.abs_diff(press.at_ms) > MAX_PRESS_AGE_MS.unsigned_abs() {
            return Err(refuse(Refused::Stale));
        }
        let approver = format!("{connector}:{}", press.presser);
        if !approvers.contains(&approver) {
            return Err(refuse(Refused::NotApprover));
        }
        let (approval, binding, action) = (entry.approval.clone(), entry.binding, entry.action);
        let Some(view) = desk.get(&approval).filter(|v| v.binding.matches(&binding)) else {
            self.tokens.remove(token);
            return Err(refuse(Refused::Settled));
        };
        match (&view.stage, action) {
            (Stage::Waiting { .. }, ButtonAction::Approve | ButtonAction::Deny) => {}
            (Stage::Approved { release_ms, .. }, ButtonAction::PullBack)
                if *release_ms > now_ms => {}
            _ => {
                self.tokens.remove(token);
                return Err(refuse(Refused::Settled));
            }
        }
        if action == ButtonAction::Approve
            && (view.request.level > 1 || view.request.confirmations_needed() > 1)
        {
            return Err(refuse(Refused::NeedsFactor {
                level: view.request.level,
                twice: view.request.confirmations_needed() > 1,
            }));
        }
        let waiting = action.for_waiting();
        self.tokens
            .retain(|_, t| !(t.approval == approval && t.action.for_waiting() == waiting));
        Ok(Accepted {
            approval,
            binding,
            action,
            approver,
        })
    }
}

/// The platform user ids of `connector`'s approvers.
fn recipients(approvers: &[String], connector: &str) -> Vec<String> {
    approvers
        .iter()
        .filter_map(|a| a.strip_prefix(connector)?.strip_prefix(':'))
        .map(str::to_owned)
        .collect()
}

/// `assistant wants files.write (level 1)`.
fn headline(request: &Request) -> String {
    format!(
        "{} wants {} (approval {}, level {})",
        request.agent, request.action, request.id, request.level
    )
}

/// The text of a waiting item: who wants what, with which arguments, what it needs, why the
/// policy asks, the undo window and the expiry.
fn waiting_text(view: &View, has_link: bool, now_ms: i64) -> String {
    let request = &view.request;
    let mut lines = vec![format!("Approval needed: {}", headline(request))];
    lines.push(format!("arguments: {}", shown_args(&request.args)));
    let needs = if request.level <= 1 && request.confirmations_needed() == 1 {
        "your yes: press Approve or Deny".to_owned()
    } else {
        let mut needs = Factor::needed_for(request.level).to_owned();
        if request.confirmations_needed() > 1 {
            needs.push_str(", confirmed twice");
        }
        if has_link {
            needs.push_str(" (open the console below; Deny works here)");
        } else {
            needs.push_str(&format!(
                " (`p3ak approve {}` or the console; Deny works here)",
                request.id
            ));
        }
        needs
    };
    lines.push(format!("needs: {needs}"));
    for reason in &request.reasons {
        lines.push(format!("why: {reason}"));
    }
    let undo = request.undo_window_ms();
    if undo > 0 {
        lines.push(format!("undo window: {} after approval", duration(undo)));
    } else {
        lines.push("undo window: none (it runs once approved)".to_owned());
    }
    lines.push(format!(
        "expires: in {} ({} UTC), then it is denied",
        duration(request.expires_ms.saturating_sub(now_ms)),
        clock_time(request.expires_ms)
    ));
    lines.join("\n")
}

/// The arguments as JSON, cut at [`ARGS_SHOWN`] characters.
fn shown_args(args: &serde_json::Value) -> String {
    let text = args.to_string();
    match text.char_indices().nth(ARGS_SHOWN) {
        Some((at, _)) => format!(
            "{}… ({} characters in all)",
            &text[..at],
            text.chars().count()
        ),
        None => text,
    }
}

/// `4 min 59 s`.
fn duration(ms: i64) -> String {
    let secs = (ms.max(0) + 999) / 1000;
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// `14:05:09`, UTC.
fn clock_time(ms: i64) -> String {
    let day = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn approver_identities_are_name_and_user_id() {
        for good in ["telegram:7", "slack:U024BE7LH", "my-chat:a.b@c_d"] {
            check_approver(good).unwrap();
        }
        for bad in [
            "telegram",
            ":7",
            "telegram:",
            "tele gram:7",
            "telegram:7 8",
            "telegram:<@here>",
        ] {
            assert!(check_approver(bad).is_err(), "{bad}");
        }
        assert!(check_approver(&format!("t:{}", "9".repeat(MAX_USER_ID + 1))).is_err());
    }

    #[test]
    fn texts_cut_long_arguments_and_say_times_plainly() {
        let long = serde_json::json!({"text": "é".repeat(2 * ARGS_SHOWN)});
        let shown = shown_args(&long);
        assert!(shown.chars().count() < ARGS_SHOWN + 40, "{shown}");
        assert!(shown.contains("characters in all"));
        assert_eq!(duration(299_001), "5 min");
        assert_eq!(duration(61_000), "1 min 1 s");
        assert_eq!(duration(10), "1 s");
        assert_eq!(clock_time(3_723_000), "01:02:03");
    }

    #[test]
    fn invariant_i8_an_approve_token_never_approves_above_level_one() {
        let master = Key::generate().unwrap();
        let mut chat = ChatDesk::new(&master, &["telegram".to_owned()]).unwrap();
        let mut desk = Desk::new();
        let now = crate::daemon::now_ms();
        let request = Request {
            id: "l3".to_owned(),
            agent: "assistant".to_owned(),
            action: "files.delete".to_owned(),
            args: serde_json::json!({"path": "a.txt"}),
            level: 3,
            rules: vec!["r".to_owned()],
            category: "write".to_owned(),
            asked_ms: now,
            expires_ms: now + 60_000,
            crawfish_secs: 0,
            confirm_twice: false,
            reasons: Vec::new(),
        };
        let view = desk.admit(request, now).unwrap();
        // Even a token minted for approval (the daemon mints none at level 3) is refused.
        let data = chat
            .mint(&view, ButtonAction::Approve, "telegram", now + 60_000)
            .unwrap();
        let key = ChatKey::derive(&master, "telegram").unwrap();
        let press = Press {
            data,
            presser: "7".to_owned(),
            at_ms: now,
        };
        let sealed = key.seal(Purpose::Press, &press).unwrap();
        let approvers = ["telegram:7".to_owned()];
        let refused = chat
            .check_press("telegram", &sealed, &approvers, &desk, now)
            .unwrap_err();
        assert_eq!(
            refused.0,
            Refused::NeedsFactor {
                level: 3,
                twice: false
            }
        );
        assert!(
            refused.0.message().contains("PIN"),
            "{}",
            refused.0.message()
        );
        assert_eq!(chat.live_tokens(), 1, "a refused press uses nothing");
    }

    #[test]
    fn a_token_fits_telegrams_callback_data() {
        let token = BASE64URL_NOPAD.encode(&[0u8; 16]);
        assert!(BUTTON_PREFIX.len() + token.len() <= 64);
    }
}

//! What the kernel stages, and the hash that binds an approval to it.
//!
//! An approval names an item by id *and* by the SHA-256 of its agent, action, arguments and
//! time ([`Binding`]). The console and the CLI show the first bytes of it; the desk refuses an
//! approval whose binding is not the waiting item's, and the kernel refuses a release whose
//! binding is not the one of the escalation it holds. An approval therefore cannot be moved
//! to another action, and (being used once) cannot be replayed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ApprovalError;
use crate::level::MAX_LEVEL;

/// One escalated action, as the kernel stages it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The id the operator answers (`p3ak approve ID`).
    pub id: String,
    /// The proposing agent (`kernel` for the kernel's own actions, such as a scheduled rekey).
    pub agent: String,
    /// `<plugin>.<action>`.
    pub action: String,
    /// The arguments (credential references by name, never values).
    pub args: serde_json::Value,
    /// The level the policy asks for (1–5).
    pub level: u8,
    /// The rules that escalated it.
    pub rules: Vec<String>,
    /// The spool category (the policy's action group).
    pub category: String,
    /// When it was asked, ms since the epoch.
    pub asked_ms: i64,
    /// When it turns into a denial, ms since the epoch.
    pub expires_ms: i64,
    /// The undo window after approval, in seconds (ignored at level 5: no undo).
    pub crawfish_secs: u64,
    /// Whether the approval must be given twice (always at level 5).
    pub confirm_twice: bool,
    /// Every rule that asked for more than an allowance, with the operator's `why:`: for the
    /// approver, never for a model. Not bound: it explains the request, it is not the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// A rule that contributed to an escalation, as the approver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// The rule's id.
    pub rule: String,
    /// What it asked for, in words (`level 3`, `reject`).
    pub effect: String,
    /// The operator's explanation, if they wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.rule, self.effect)?;
        if let Some(why) = &self.why {
            write!(f, ": {why}")?;
        }
        Ok(())
    }
}

impl Request {
    /// Checks what the daemon relies on: a sane id and category, a level it can ask for.
    pub fn validate(&self) -> Result<(), ApprovalError> {
        let bad = |reason: String| {
            Err(ApprovalError::InvalidRequest {
                id: self.id.clone(),
                reason,
            })
        };
        if !is_token(&self.id, 64) {
            return bad("the id must be 1–64 letters, digits, `-` or `_`".to_owned());
        }
        if !is_token(&self.category, 64) {
            return bad(format!(
                "the category `{}` must be 1–64 letters, digits, `-` or `_`",
                self.category
            ));
        }
        if !(1..=MAX_LEVEL).contains(&self.level) {
            return bad(format!("level {} is not 1–{MAX_LEVEL}", self.level));
        }
        if self.expires_ms < self.asked_ms {
            return bad("it expires before it was asked".to_owned());
        }
        Ok(())
    }

    /// The hash an approval must name.
    #[must_use]
    pub fn binding(&self) -> Binding {
        // serde_json writes object keys in sorted order (no `preserve_order`), so equal
        // values give equal bytes.
        let args = serde_json::to_vec(&self.args).unwrap_or_default();
        let asked = self.asked_ms.to_be_bytes();
        let parts: [&[u8]; 9] = [
            b"p3ak-hitl-binding-v1",
            self.id.as_bytes(),
            b"\0",
            self.agent.as_bytes(),
            b"\0",
            self.action.as_bytes(),
            b"\0",
            &asked,
            &args,
        ];
        Binding(p3ak_crypto::sha256(&parts))
    }

    /// Whether the action keeps an undo window after approval.
    #[must_use]
    pub fn undo_window_ms(&self) -> i64 {
        if self.level >= MAX_LEVEL {
            return 0;
        }
        i64::try_from(self.crawfish_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// How many separate approvals it needs.
    #[must_use]
    pub fn confirmations_needed(&self) -> u8 {
        if self.confirm_twice || self.level >= MAX_LEVEL {
            2
        } else {
            1
        }
    }
}

/// Whether `s` is 1–`max` ASCII letters, digits, `-` or `_` (an id or a spool category).
#[must_use]
pub fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 over an action's agent, name, arguments and time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding([u8; 32]);

impl Binding {
    /// Parses the hex form (64 digits).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The hex form.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for people to compare.
    #[must_use]
    pub fn short(&self) -> String {
        hex::encode(self.0.get(..4).unwrap_or_default())
    }

    /// Constant-time equality.
    #[must_use]
    pub fn matches(&self, other: &Self) -> bool {
        p3ak_crypto::constant_time_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({})", self.to_hex())
    }
}

impl Serialize for Binding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Binding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("a binding is 64 hex digits"))
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

    #[test]
    fn the_binding_changes_with_every_bound_field() {
        let base = request("a1", 1);
        let b = base.binding();
        let mut other = base.clone();
        other.args = serde_json::json!({"path": "notes.txt", "text": "hellO"});
        assert!(!b.matches(&other.binding()));
        let mut other = base.clone();
        other.agent = "intruder".to_owned();
        assert!(!b.matches(&other.binding()));
        let mut other = base.clone();
        other.asked_ms += 1;
        assert!(!b.matches(&other.binding()));
        let mut other = base.clone();
        other.action = "files.delete".to_owned();
        assert!(!b.matches(&other.binding()));
        let mut other = base.clone();
        other.id = "a2".to_owned();
        assert!(!b.matches(&other.binding()));
        assert!(b.matches(&base.clone().binding()));
        assert_eq!(Binding::from_hex(&b.to_hex()), Some(b));
    }

    #[test]
    fn reasons_are_optional_on_the_wire_and_not_bound() {
        let base = request("a1", 3);
        let mut old = serde_json::to_value(&base).unwrap();
        assert!(old.get("reasons").is_none(), "an empty list is not written");
        old.as_object_mut().unwrap().remove("reasons");
        let read: Request = serde_json::from_value(old).unwrap();
        assert!(read.reasons.is_empty());
        let mut explained = base.clone();
        explained.reasons = vec![Reason {
            rule: "new-payee".to_owned(),
            effect: "level 3".to_owned(),
            why: Some("first payment to this account".to_owned()),
        }];
        let back: Request =
            serde_json::from_str(&serde_json::to_string(&explained).unwrap()).unwrap();
        assert_eq!(back, explained);
        assert!(explained.binding().matches(&base.binding()));
        assert_eq!(
            explained.reasons[0].to_string(),
            "new-payee (level 3): first payment to this account"
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let mut r = request("../../etc", 1);
        assert!(r.validate().is_err());
        r.id = "ok".to_owned();
        r.level = 0;
        assert!(r.validate().is_err());
        r.level = 6;
        assert!(r.validate().is_err());
        r.level = 3;
        r.category = "a/b".to_owned();
        assert!(r.validate().is_err());
        r.category = "write".to_owned();
        assert!(r.validate().is_ok());
    }

    #[test]
    fn level_five_has_no_undo_window_and_asks_twice() {
        let r = request("x", 5);
        assert_eq!(r.undo_window_ms(), 0);
        assert_eq!(r.confirmations_needed(), 2);
        let r = request("x", 2);
        assert_eq!(r.undo_window_ms(), 10_000);
        assert_eq!(r.confirmations_needed(), 1);
    }
}

//! Remembered approvals: when approving, the owner may ask that calls like this one be
//! allowed for a while without asking again. The operator's choice ([`Remember`]) travels
//! with the approval to the daemon and, on release, to the kernel, which mints the grant from
//! the *released* request: the pinned values are the approved call's own, its level is the
//! approved level, and it never stands in for level 5.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::binding::Request;
use crate::level::MAX_LEVEL;

/// The longest a remembered approval lasts: 90 days.
pub const MAX_REMEMBER_SECS: u64 = 90 * 24 * 3600;

/// Most argument paths one grant pins.
const MAX_PATHS: usize = 16;

/// The owner's "remember this": which argument paths to pin and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remember {
    /// Argument paths (`to`, `payee.iban`) whose approved values the grant pins.
    pub args: Vec<String>,
    /// How long it lasts, in seconds (at most [`MAX_REMEMBER_SECS`]).
    pub for_secs: u64,
}

/// Why a "remember" cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RememberError {
    /// Level 5 is asked for every time.
    #[error("a level {MAX_LEVEL} approval cannot be remembered: it is asked for every time")]
    TopLevel,
    /// No time, or more than the most.
    #[error("a remembered approval lasts from 1 second to {} days, not {secs} seconds", MAX_REMEMBER_SECS / 86_400)]
    Duration {
        /// What was asked for.
        secs: u64,
    },
    /// Nothing pinned while the call has arguments: that would allow any arguments.
    #[error(
        "name the arguments to remember (`--remember ARG`): a grant for any arguments would be wider than what you approved"
    )]
    NothingPinned,
    /// Too many paths.
    #[error("at most {MAX_PATHS} arguments can be remembered")]
    TooMany,
    /// A path the approved call does not have.
    #[error("the approved call has no argument `{0}`")]
    NoSuchArgument(String),
}

impl Remember {
    /// Checks the choice against the approved request: a level below 5, a sane duration, and
    /// paths that exist in its arguments (at least one, unless it has none).
    pub fn check(&self, request: &Request) -> Result<(), RememberError> {
        if request.level >= MAX_LEVEL {
            return Err(RememberError::TopLevel);
        }
        if self.for_secs == 0 || self.for_secs > MAX_REMEMBER_SECS {
            return Err(RememberError::Duration {
                secs: self.for_secs,
            });
        }
        if self.args.len() > MAX_PATHS {
            return Err(RememberError::TooMany);
        }
        let has_args = request.args.as_object().is_some_and(|m| !m.is_empty());
        if self.args.is_empty() && has_args {
            return Err(RememberError::NothingPinned);
        }
        for path in &self.args {
            if lookup(&request.args, path).is_none() {
                return Err(RememberError::NoSuchArgument(path.clone()));
            }
        }
        Ok(())
    }

    /// The approved values of the pinned paths, after [`Remember::check`] passed.
    pub fn pinned(
        &self,
        request: &Request,
    ) -> Result<BTreeMap<String, serde_json::Value>, RememberError> {
        self.check(request)?;
        self.args
            .iter()
            .map(|path| {
                lookup(&request.args, path)
                    .map(|v| (path.clone(), v.clone()))
                    .ok_or_else(|| RememberError::NoSuchArgument(path.clone()))
            })
            .collect()
    }
}

impl fmt::Display for Remember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.for_secs / 86_400;
        let span = if days > 0 && self.for_secs.is_multiple_of(86_400) {
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        } else {
            format!("{} s", self.for_secs)
        };
        if self.args.is_empty() {
            write!(f, "remembered for {span}")
        } else {
            write!(
                f,
                "remembered for {span}, for the same {}",
                self.args.join(", ")
            )
        }
    }
}

/// The value at a dotted path (`payee.iban`) of a JSON object; `None` when a step is missing
/// or not an object. Array items are not addressed: a grant pins named values only.
#[must_use]
pub fn lookup<'a>(args: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.is_empty() {
        return None;
    }
    path.split('.')
        .try_fold(args, |value, step| value.as_object()?.get(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(level: u8) -> Request {
        Request {
            id: "a1".to_owned(),
            agent: "assistant".to_owned(),
            action: "mail.send".to_owned(),
            args: serde_json::json!({"to": "bob@example.com", "body": "hi", "meta": {"cc": "eve@example.com"}}),
            level,
            rules: vec!["send.mail.send".to_owned()],
            category: "send".to_owned(),
            asked_ms: 1_000,
            expires_ms: 61_000,
            crawfish_secs: 0,
            confirm_twice: false,
            reasons: Vec::new(),
        }
    }

    fn remember(args: &[&str], for_secs: u64) -> Remember {
        Remember {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            for_secs,
        }
    }

    #[test]
    fn a_grant_pins_the_approved_values_of_the_chosen_paths() {
        let pinned = remember(&["to", "meta.cc"], 86_400)
            .pinned(&request(2))
            .unwrap();
        assert_eq!(
            pinned,
            BTreeMap::from([
                ("to".to_owned(), serde_json::json!("bob@example.com")),
                ("meta.cc".to_owned(), serde_json::json!("eve@example.com")),
            ])
        );
    }

    #[test]
    fn level_five_is_never_remembered() {
        assert_eq!(
            remember(&["to"], 60).check(&request(5)),
            Err(RememberError::TopLevel)
        );
        assert!(RememberError::TopLevel.to_string().contains("level 5"));
    }

    #[test]
    fn a_remember_wider_or_longer_than_allowed_is_refused() {
        let r = request(3);
        assert_eq!(
            remember(&[], 60).check(&r),
            Err(RememberError::NothingPinned)
        );
        assert_eq!(
            remember(&["bcc"], 60).check(&r),
            Err(RememberError::NoSuchArgument("bcc".to_owned()))
        );
        assert_eq!(
            remember(&["to"], MAX_REMEMBER_SECS + 1).check(&r),
            Err(RememberError::Duration {
                secs: MAX_REMEMBER_SECS + 1
            })
        );
        assert!(remember(&["to"], 0).check(&r).is_err());
        assert!(remember(&["to"], MAX_REMEMBER_SECS).check(&r).is_ok());
        let mut bare = request(1);
        bare.args = serde_json::json!({});
        assert!(remember(&[], 60).check(&bare).is_ok());
    }

    #[test]
    fn paths_walk_objects_only() {
        let v = serde_json::json!({"a": {"b": 1}, "l": [1, 2]});
        assert_eq!(lookup(&v, "a.b"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "a.c"), None);
        assert_eq!(lookup(&v, "l.0"), None);
        assert_eq!(lookup(&v, ""), None);
    }
}

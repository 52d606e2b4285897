//! Action names and the patterns that match them.

use std::fmt;

/// `*` (every action), `plugin.*` (every action whose name starts with `plugin.`), or an exact
/// name such as `stripe.refund` or `vault_search`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Every action.
    Any,
    /// Every action under a prefix; the stored prefix ends with the dot.
    Prefix(String),
    /// One action.
    Exact(String),
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` is a well-formed action name: dot-separated segments of letters, digits,
/// `_` and `-`.
#[must_use]
pub fn valid_action_name(name: &str) -> bool {
    name.split('.').all(valid_segment)
}

impl Pattern {
    /// Parses a pattern, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(prefix) = text.strip_suffix(".*") {
            if valid_action_name(prefix) {
                return Ok(Self::Prefix(format!("{prefix}.")));
            }
        } else if valid_action_name(text) {
            return Ok(Self::Exact(text.to_owned()));
        }
        Err(format!(
            "invalid action pattern `{text}`: expected `plugin.action`, `plugin.*` or `*` (letters, digits, `_`, `-`)"
        ))
    }

    /// Whether the action `name` matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => name.len() > prefix.len() && name.starts_with(prefix.as_str()),
            Self::Exact(exact) => exact == name,
        }
    }

    /// Whether every action `other` matches is also matched by `self`.
    #[must_use]
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Prefix(a), Self::Prefix(b)) => b.starts_with(a.as_str()),
            (_, Self::Exact(name)) => self.matches(name),
            (Self::Exact(_), Self::Prefix(_)) => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(exact) => f.write_str(exact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_and_cover() {
        let stripe = Pattern::parse("stripe.*").unwrap();
        assert!(stripe.matches("stripe.refund"));
        assert!(stripe.matches("stripe.a.b"));
        assert!(!stripe.matches("stripe."));
        assert!(!stripe.matches("stripex.refund"));
        assert!(Pattern::Any.covers(&stripe));
        assert!(stripe.covers(&Pattern::parse("stripe.refund").unwrap()));
        assert!(stripe.covers(&Pattern::parse("stripe.a.*").unwrap()));
        assert!(!Pattern::parse("stripe.refund").unwrap().covers(&stripe));
        for bad in ["", "a..b", "a.*.b", "**", "a b", ".a", "a.", "stripe*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}

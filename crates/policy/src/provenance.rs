//! Where a value came from: the texts a session showed the model, each labelled with its
//! source, and for each value a proposal holds, the sources whose texts contain it.
//!
//! A model can only repeat what it read or make something up. If the address a payment goes to
//! appears in the owner's own message, the owner may well have asked for it; if it appears only
//! in a web page or an e-mail the model read, an injection may have put it there. The kernel
//! pushes every text it shows the model into a [`Transcript`] with its [`Source`]; before each
//! decision, [`Transcript::origins_of`] finds, for every string (and number) the call's
//! arguments hold, the sources whose texts contain it, and the policy's `from:` test reads them.
//!
//! Matching is on normalised text (Unicode NFKC, lowercase, runs of white space as one space)
//! and on whole tokens: `bob@x.com` is found in "send it to Bob@X.com." but not in
//! "alice.bob@x.com" or "bob@x.company". What this cannot see: a value the model built from
//! pieces ("bob" + "@" + "x.com" from three places), a paraphrase ("my landlord" for an IBAN), a
//! value encoded differently (percent-encoding, HTML entities, another script's look-alikes).
//! Such values have no origin, which the `from:` test treats as "not from the sources named":
//! the safe side for a rule that rejects what the owner did not say.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;

/// Who a text came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The owner, in their own message on a channel.
    Owner,
    /// The operator: configuration, the agent's prompt, the policy's named sets.
    Operator,
    /// The vault's memory (search results shown to the model).
    Memory,
    /// The output of a tool call, by action (`mail.read`).
    Tool(String),
}

impl Source {
    /// Whether this source is named by a `from:` item: `owner`, `operator`, `memory`, `tool`
    /// (any tool), `tool:ACTION` or `tool:PLUGIN.*`.
    #[must_use]
    pub fn is(&self, item: &SourcePattern) -> bool {
        match (item, self) {
            (SourcePattern::Owner, Self::Owner)
            | (SourcePattern::Operator, Self::Operator)
            | (SourcePattern::Memory, Self::Memory)
            | (SourcePattern::AnyTool, Self::Tool(_)) => true,
            (SourcePattern::Tool(pattern), Self::Tool(action)) => pattern.matches(action),
            _ => false,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner => f.write_str("owner"),
            Self::Operator => f.write_str("operator"),
            Self::Memory => f.write_str("memory"),
            Self::Tool(action) => write!(f, "tool:{action}"),
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "owner" => Ok(Self::Owner),
            "operator" => Ok(Self::Operator),
            "memory" => Ok(Self::Memory),
            _ => match text.strip_prefix("tool:") {
                Some(action) if crate::valid_action_name(action) => {
                    Ok(Self::Tool(action.to_owned()))
                }
                _ => Err(format!(
                    "unknown source `{text}`: expected `owner`, `operator`, `memory` or `tool:ACTION`"
                )),
            },
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An item of a `from:` test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePattern {
    /// `owner`.
    Owner,
    /// `operator`.
    Operator,
    /// `memory`.
    Memory,
    /// `tool`: any tool's output.
    AnyTool,
    /// `tool:ACTION` or `tool:PLUGIN.*`.
    Tool(crate::Pattern),
}

impl FromStr for SourcePattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "owner" => Ok(Self::Owner),
            "operator" => Ok(Self::Operator),
            "memory" => Ok(Self::Memory),
            "tool" | "tool:*" => Ok(Self::AnyTool),
            _ => match text.strip_prefix("tool:") {
                Some(pattern) => crate::Pattern::parse(pattern)
                    .map(Self::Tool)
                    .map_err(|e| format!("in source `{text}`: {e}")),
                None => Err(format!(
                    "unknown source `{text}`: expected `owner`, `operator`, `memory`, `tool` or `tool:ACTION`"
                )),
            },
        }
    }
}

/// One text the session showed the model, and who it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Said {
    /// Its source.
    pub from: Source,
    /// The text.
    pub text: String,
}

/// The labelled texts of a session, kept normalised so that each proposal only normalises
/// its own values.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    texts: Vec<(Source, String)>,
}

impl Transcript {
    /// An empty transcript.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text the model was shown.
    pub fn push(&mut self, from: Source, text: &str) {
        let normal = normalise(text);
        if !normal.is_empty() {
            self.texts.push((from, normal));
        }
    }

    /// The source of each text, in the order they were said.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.texts.iter().map(|(source, _)| source)
    }

    /// How many texts it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The sources whose texts contain `value` as a whole token (normalised).
    #[must_use]
    pub fn sources_of(&self, value: &str) -> BTreeSet<Source> {
        let needle = normalise(value);
        let mut found = BTreeSet::new();
        if needle.is_empty() {
            return found;
        }
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        for (source, text) in &self.texts {
            if found.contains(source) {
                continue;
            }
            if contains_token(text, &needle, &finder) {
                found.insert(source.clone());
            }
        }
        found
    }

    /// The origins of every string and number a call's arguments hold (at any depth).
    #[must_use]
    pub fn origins_of(&self, args: &serde_json::Value) -> Origins {
        let mut origins = Origins::default();
        let mut leaves = Vec::new();
        collect_leaves(args, &mut leaves);
        for leaf in leaves {
            let key = normalise(&leaf);
            if key.is_empty() || origins.0.contains_key(&key) {
                continue;
            }
            let sources = self.sources_of(&leaf);
            origins.0.insert(key, sources);
        }
        origins
    }
}

impl FromIterator<Said> for Transcript {
    fn from_iter<I: IntoIterator<Item = Said>>(iter: I) -> Self {
        let mut transcript = Self::new();
        for said in iter {
            transcript.push(said.from, &said.text);
        }
        transcript
    }
}

/// For each value of a call (normalised), the sources whose texts contain it. A value the
/// map does not hold has no known origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Origins(BTreeMap<String, BTreeSet<Source>>);

impl Origins {
    /// The sources of a value (empty when none is known).
    #[must_use]
    pub fn of(&self, value: &str) -> BTreeSet<Source> {
        self.0.get(&normalise(value)).cloned().unwrap_or_default()
    }

    /// Records that `value` came from `source` (for tests and hand-written cases).
    pub fn insert(&mut self, value: &str, source: Source) {
        self.0.entry(normalise(value)).or_default().insert(source);
    }
}

/// The text of a value as provenance sees it: a string as it is, a number in its JSON form.
pub(crate) fn leaf_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn collect_leaves(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_leaves(v, out)),
        other => out.extend(leaf_text(other)),
    }
}

/// NFKC, lowercase, white space collapsed to single spaces, trimmed.
pub(crate) fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Characters that continue a token: a match next to one is part of a longer value.
fn joins(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '@' | '_' | '-' | '+' | '/' | '%' | '=' | '&' | '#' | '~')
}

/// Whether `needle` occurs in `text` with a token boundary on both sides. A `.` or `:` next
/// to a match continues the token only when a token character follows it (`x.com` inside
/// `x.company`), not at the end of a sentence (`... to bob@x.com.`).
fn contains_token(text: &str, needle: &str, finder: &memchr::memmem::Finder<'_>) -> bool {
    for start in finder.find_iter(text.as_bytes()) {
        let end = start + needle.len();
        let before = text.get(..start).and_then(|t| t.chars().next_back());
        let mut after = text.get(end..).map(str::chars);
        let next = after.as_mut().and_then(Iterator::next);
        let next2 = after.as_mut().and_then(Iterator::next);
        let before_ok = before.is_none_or(|c| !joins(c) && c != '.');
        let after_ok = match next {
            None => true,
            Some('.' | ':' | ',') => next2.is_none_or(|c| !joins(c)),
            Some(c) => !joins(c),
        };
        if before_ok && after_ok {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(texts: &[(Source, &str)]) -> Transcript {
        let mut t = Transcript::new();
        for (s, text) in texts {
            t.push(s.clone(), text);
        }
        t
    }

    #[test]
    fn values_are_found_as_whole_tokens_after_normalising() {
        let t = transcript(&[
            (Source::Owner, "Please  send the invoices to Bob@X.com."),
            (
                Source::Tool("mail.read".into()),
                "Forward to alice.bob@x.com or carol@x.company",
            ),
        ]);
        assert_eq!(t.sources_of("bob@x.com"), BTreeSet::from([Source::Owner]));
        assert_eq!(t.sources_of("BOB@x.com"), BTreeSet::from([Source::Owner]));
        assert!(t.sources_of("carol@x.com").is_empty());
        assert!(t.sources_of("x.com").is_empty(), "inside a longer address");
        assert_eq!(
            t.sources_of("send the  invoices"),
            BTreeSet::from([Source::Owner])
        );
        assert!(t.sources_of("").is_empty());
    }

    #[test]
    fn numbers_are_looked_up_by_their_text() {
        let t = transcript(&[(
            Source::Tool("files.read".into()),
            "Total due: 1500, ref 71500",
        )]);
        let origins = t.origins_of(&serde_json::json!({"amount": 1500, "to": ["z"]}));
        assert_eq!(
            origins.of("1500"),
            BTreeSet::from([Source::Tool("files.read".into())])
        );
        assert!(origins.of("z").is_empty());
        assert!(t.sources_of("500").is_empty());
    }

    #[test]
    fn sources_parse_and_match_patterns() {
        let tool: Source = "tool:mail.read".parse().unwrap();
        assert!(tool.is(&"tool".parse().unwrap()));
        assert!(tool.is(&"tool:mail.*".parse().unwrap()));
        assert!(!tool.is(&"tool:web.*".parse().unwrap()));
        assert!(!tool.is(&"owner".parse().unwrap()));
        assert!("someone".parse::<Source>().is_err());
        assert!("tool:".parse::<SourcePattern>().is_err());
    }
}

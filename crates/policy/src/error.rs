//! Errors and warnings about a policy file, each with the place it points at.

use std::fmt;

use serde::Serialize;

/// A line and column in the policy file, both starting at 1 (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    pub(crate) fn of(location: &serde_saphyr::Location) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem (or warning) found in a policy or cases file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Where it is.
    #[serde(flatten)]
    pub position: Position,
    /// What is wrong, on one line.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(position: Position, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn at(location: &serde_saphyr::Location, message: impl Into<String>) -> Self {
        Self::new(Position::of(location), message)
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Turns a YAML or serde error into a one-line diagnostic.
    pub(crate) fn from_yaml(error: &serde_saphyr::Error) -> Self {
        let position = error
            .location()
            .map(|l| Position::of(&l))
            .unwrap_or_default();
        let rendered = error.without_snippet().to_string();
        let first = rendered
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("invalid yaml");
        let mut message = strip_location_suffix(first).to_owned();
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
        }
        if message == "invalid i64" || message == "invalid u64" {
            message = "expected a whole number".to_owned();
        }
        if message == "expected mapping start" {
            message = "expected a mapping (`key: value` pairs) here".to_owned();
        }
        let mut diagnostic = Self::new(position, message.as_str());
        if message.contains("whole number") || message.contains("floating point") {
            diagnostic = diagnostic
                .with_hint("numbers are whole unless the argument has declared `decimals:` (then `10.50` is exact)");
        } else if message.contains("unknown field") {
            diagnostic = diagnostic.with_hint("check the spelling; docs/policy.md lists every key");
        } else if message.contains("invalid duration") {
            diagnostic =
                diagnostic.with_hint("durations are seconds (`600`) or `10m`, `1h30m`, `2d`");
        } else if message.contains("out of range") {
            diagnostic = diagnostic.with_hint("approval levels go from 0 (none) to 5 (strongest)");
        }
        diagnostic
    }
}

/// Removes a trailing `at line N column M` that some renderers append.
fn strip_location_suffix(message: &str) -> &str {
    let trimmed = message.trim_end_matches('.');
    match trimmed.rfind(" at line ") {
        Some(i) => trimmed.get(..i).unwrap_or(trimmed),
        None => trimmed,
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A policy (or cases) file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct PolicyError {
    /// Every problem found, in file order. Never empty.
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    match diagnostics {
        [] => "invalid policy".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

impl PolicyError {
    pub(crate) fn one(diagnostic: Diagnostic) -> Self {
        Self {
            diagnostics: vec![diagnostic],
        }
    }
}

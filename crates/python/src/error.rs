//! What can go wrong, as the CLI says it, and which Python exception says it.

use std::path::PathBuf;

/// Every failure of the SDK. Messages are the CLI's (`p3ak` prints them after `error: `).
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error(transparent)]
    Vault(#[from] p3ak_vault::VaultError),
    #[error(transparent)]
    Memory(#[from] p3ak_memory::MemoryError),
    #[error(transparent)]
    Install(#[from] p3ak_embed::InstallError),
    #[error("cannot load the embedding model: {0}")]
    Model(#[from] p3ak_embed::EmbedError),
    /// A policy file that does not parse or validate: every diagnostic, on one line.
    #[error("{0}")]
    Policy(String),
    /// An argument the caller got wrong (a mode, `k`, a tag, JSON).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Files an ingest could not take; the others were ingested. The report is the JSON of
    /// the whole ingest.
    #[error("{first}{}; {failed} of {total} files failed", if *failed > 1 { " (and more)" } else { "" })]
    Ingest {
        first: String,
        failed: usize,
        total: usize,
        report: String,
    },
    /// `verify` found damage; the report is its JSON.
    #[error("{message}")]
    Damaged { message: String, report: String },
    #[error("the vault `{}` is closed", path.display())]
    Closed { path: PathBuf },
    #[error("no home directory: set P3AK_HOME or HOME")]
    NoHome,
    #[error("cannot encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Which Python exception class carries an error (the classes are in `lib.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `P3akError` itself.
    Other,
    WrongPassphrase,
    NotFound,
    InvalidInput,
    Locked,
    Damaged,
    Policy,
    Ingest,
    Closed,
}

impl SdkError {
    pub fn kind(&self) -> Kind {
        use p3ak_vault::VaultError as V;
        let vault_kind = |error: &V| match error.root() {
            V::WrongPassphrase => Kind::WrongPassphrase,
            V::NotFound(_) => Kind::NotFound,
            V::InvalidId(_) | V::AmbiguousId(_) | V::InvalidTag(_) | V::TooLarge { .. } => {
                Kind::InvalidInput
            }
            V::Locked { .. } => Kind::Locked,
            V::Damaged(_) | V::DocumentDamaged { .. } | V::HeaderDamaged(_) => Kind::Damaged,
            V::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Kind::NotFound,
            _ => Kind::Other,
        };
        match self {
            Self::Vault(error) => vault_kind(error),
            Self::Memory(p3ak_memory::MemoryError::Vault(error)) => vault_kind(error),
            Self::Memory(p3ak_memory::MemoryError::Corrupt(_)) => Kind::Damaged,
            Self::Memory(p3ak_memory::MemoryError::Invalid(_)) => Kind::InvalidInput,
            Self::Install(p3ak_embed::InstallError::SourceNotFound { .. }) => Kind::NotFound,
            Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Kind::NotFound
            }
            Self::Policy(_) => Kind::Policy,
            Self::Invalid(_) => Kind::InvalidInput,
            Self::Ingest { .. } => Kind::Ingest,
            Self::Damaged { .. } => Kind::Damaged,
            Self::Closed { .. } => Kind::Closed,
            _ => Kind::Other,
        }
    }

    /// The JSON report an error carries (an ingest's, a verification's), if any.
    pub fn report(&self) -> Option<&str> {
        match self {
            Self::Ingest { report, .. } | Self::Damaged { report, .. } => Some(report),
            _ => None,
        }
    }

    /// One line, as the CLI prints it: the error and its causes joined by `: `, skipping a
    /// cause whose text the line already ends with.
    pub fn line(&self) -> String {
        let mut line = String::new();
        let mut cause: Option<&dyn std::error::Error> = Some(self);
        while let Some(error) = cause {
            let text = error.to_string();
            if line.is_empty() {
                line = text;
            } else if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        line
    }
}

pub type Result<T, E = SdkError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passphrase_is_its_own_kind_with_the_cli_message() {
        let error = SdkError::from(p3ak_vault::VaultError::WrongPassphrase);
        assert_eq!(error.kind(), Kind::WrongPassphrase);
        assert_eq!(error.line(), "wrong passphrase or damaged header");
    }

    #[test]
    fn a_cause_already_in_the_line_is_not_repeated() {
        let error = SdkError::from(
            p3ak_vault::VaultError::NotFound("abcd".into()).context("while reading"),
        );
        assert_eq!(error.kind(), Kind::NotFound);
        assert_eq!(error.line(), "while reading: no document `abcd`");
    }

    #[test]
    fn an_ingest_failure_names_the_first_file_and_counts() {
        let error = SdkError::Ingest {
            first: "`a.txt`: no such file".into(),
            failed: 2,
            total: 3,
            report: "{}".into(),
        };
        assert_eq!(
            error.line(),
            "`a.txt`: no such file (and more); 2 of 3 files failed"
        );
        assert_eq!(error.report(), Some("{}"));
    }
}

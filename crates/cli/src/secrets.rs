//! Where passphrases come from: a file, the environment, or the terminal. Never argv.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use p3ak_crypto::Passphrase;

pub const ENV_PASSPHRASE: &str = "P3AK_PASSPHRASE";
pub const ENV_NEW_PASSPHRASE: &str = "P3AK_NEW_PASSPHRASE";
/// Shortest passphrase accepted for a new vault or a rekey.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from this file (its first line). Otherwise P3AK_PASSPHRASE, then a
    /// terminal prompt.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Where to look, in order.
pub struct Source<'a> {
    pub file: Option<&'a PathBuf>,
    pub env: &'static str,
    pub prompt: &'static str,
    /// Ask twice at the terminal and check strength (new passphrases).
    pub new: bool,
}

pub fn read(source: Source<'_>) -> anyhow::Result<Passphrase> {
    let passphrase = if let Some(path) = source.file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file `{}`", path.display()))?;
        let first_line = text.lines().next().unwrap_or_default().to_owned();
        drop(zeroize::Zeroizing::new(text));
        Passphrase::new(first_line)
    } else if let Some(value) = std::env::var_os(source.env) {
        let Ok(text) = value.into_string() else {
            bail!("{} is not valid UTF-8", source.env);
        };
        Passphrase::new(text)
    } else if std::io::stdin().is_terminal() {
        let first = Passphrase::new(rpassword::prompt_password(source.prompt)?);
        if source.new {
            let second = Passphrase::new(rpassword::prompt_password("Repeat it: ")?);
            if first != second {
                bail!("the two passphrases differ");
            }
        }
        first
    } else {
        bail!(
            "no passphrase: set {}, pass a passphrase file, or run in a terminal",
            source.env
        );
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty");
    }
    if source.new && passphrase.char_count() < MIN_PASSPHRASE_CHARS {
        bail!("passphrase too short: use at least {MIN_PASSPHRASE_CHARS} characters");
    }
    Ok(passphrase)
}

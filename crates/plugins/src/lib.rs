//! `p3ak-plugins`: the first-party plugins, each run by the kernel as its own process with
//! `p3ak plugin run <name>`.
//!
//! | name | kind | actions |
//! |---|---|---|
//! | `files` | tool | `read`, `write`, `list` inside the agent's workspace |
//! | `shell` | tool | `run` a command in the agent's workspace |
//! | `http` | tool | `request` one URL, never following redirects |
//! | `vault` | tool | `search`, `read`, `write` the memory vault |
//! | `scripted` | provider | replies from a JSON script, for tests and the offline demo |
//! | `anthropic` | provider | Anthropic's Messages API |
//! | `openai` | provider | Chat Completions: OpenAI, llama.cpp, vLLM, LM Studio, … |
//! | `ollama` | provider | Ollama's `/api/chat` |
//!
//! [`run`] is the entry point: it takes the connection the kernel hands over as standard input
//! (a socket), reads the environment the kernel sets (`P3AK_PLUGIN_NAME`, optional
//! `P3AK_MAX_FRAME`), and serves until `shutdown` or the end of the connection. [`serve`] does
//! the same over any connected stream, and [`runtime`] holds the protocol loop any blocking
//! plugin can reuse.
//!
//! The crate never prints and never exits; every failure is a [`PluginError`].
#![forbid(unsafe_code)]

mod args;
pub mod files;
pub mod http;
pub mod providers;
pub mod runtime;
pub mod scripted;
pub mod shell;
pub mod vault;
mod workspace;

use std::os::unix::net::UnixStream;

use p3ak_proto::{ErrorKind, ProtoError, Welcome};
use p3ak_vault::{SecretBytes, VaultKey};

pub use runtime::{Handler, Provider, StreamSink, Tool, ToolFailure};

/// The names [`run`] accepts.
pub const BUILTINS: &[&str] = &[
    "files",
    "shell",
    "http",
    "vault",
    "scripted",
    "anthropic",
    "openai",
    "ollama",
];

/// The `software` string sent in `hello`.
pub const SOFTWARE: &str = concat!("p3ak-plugins ", env!("CARGO_PKG_VERSION"));

/// Environment variable: the plugin's configured name (what it says in `hello`).
pub const ENV_NAME: &str = "P3AK_PLUGIN_NAME";
/// Environment variable: the largest frame payload in bytes (optional).
pub const ENV_MAX_FRAME: &str = "P3AK_MAX_FRAME";

/// Smallest frame limit accepted from `P3AK_MAX_FRAME`.
pub const MIN_MAX_FRAME: usize = 4096;

/// Everything that stops a plugin. One line each, lowercase.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// [`run`] was asked for a plugin this crate does not have.
    #[error(
        "unknown plugin `{0}`: the first-party plugins are files, shell, http, vault, scripted, \
         anthropic, openai and ollama"
    )]
    UnknownPlugin(String),
    /// A required environment variable is not set.
    #[error("environment variable `{0}` is not set: plugins are started by the kernel")]
    MissingEnv(&'static str),
    /// An environment variable has a value that cannot be used.
    #[error("environment variable `{name}`: {reason}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Standard input is not the connection the kernel hands over.
    #[error("no connection to the kernel: {0}")]
    NoConnection(String),
    /// The vault key handed over in `welcome` is missing or malformed.
    #[error("vault key: {0}")]
    Key(String),
    /// The plugin's settings from `welcome` are unusable.
    #[error("invalid config: {0}")]
    Config(String),
    /// The kernel did not follow the handshake.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The kernel answered the handshake with an error.
    #[error("the kernel refused the plugin ({kind:?}): {message}")]
    Refused {
        /// The error's kind.
        kind: ErrorKind,
        /// The kernel's message.
        message: String,
    },
    /// The connection failed.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// Some other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// How a plugin was started: what [`run`] reads from the environment.
pub struct Launch {
    /// The configured name, sent in `hello` (`P3AK_PLUGIN_NAME`).
    pub plugin: String,
    /// The largest frame payload, both ways.
    pub max_frame: usize,
}

impl Launch {
    /// A launch under `plugin` with the default frame limit.
    #[must_use]
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            max_frame: p3ak_proto::DEFAULT_MAX_FRAME,
        }
    }
}

/// Runs the first-party plugin `name` as the kernel started it: takes the connection on
/// standard input (putting `/dev/null` in its place, so that programs it runs do not inherit
/// it), reads the environment and serves until `shutdown` or the end of the connection.
///
/// # Errors
///
/// An unknown `name`, a standard input that is not a socket, a missing or malformed
/// environment variable, a refused handshake, an invalid config or key, or a broken connection.
pub fn run(name: &str) -> Result<(), PluginError> {
    if !BUILTINS.contains(&name) {
        return Err(PluginError::UnknownPlugin(name.to_owned()));
    }
    let plugin = match std::env::var(ENV_NAME) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            return Err(PluginError::MissingEnv(ENV_NAME));
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(PluginError::BadEnv {
                name: ENV_NAME,
                reason: "not UTF-8".to_owned(),
            });
        }
    };
    let max_frame = match std::env::var(ENV_MAX_FRAME) {
        Err(std::env::VarError::NotPresent) => p3ak_proto::DEFAULT_MAX_FRAME,
        Ok(text) => parse_max_frame(&text)?,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(PluginError::BadEnv {
                name: ENV_MAX_FRAME,
                reason: "not UTF-8".to_owned(),
            });
        }
    };
    let stream = UnixStream::from(
        p3ak_proto::io::take_stdin_socket()
            .map_err(|e| PluginError::NoConnection(e.to_string()))?,
    );
    serve(name, stream, Launch { plugin, max_frame })
}

fn parse_max_frame(text: &str) -> Result<usize, PluginError> {
    let bad = |reason: String| PluginError::BadEnv {
        name: ENV_MAX_FRAME,
        reason,
    };
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| bad(format!("`{text}` is not a number of bytes")))?;
    let limit = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
    if n < MIN_MAX_FRAME || n > limit {
        return Err(bad(format!(
            "`{n}` is out of range: {MIN_MAX_FRAME} to {limit} bytes"
        )));
    }
    Ok(n)
}

/// The key the kernel hands the `vault` plugin in `welcome` ([`VaultKey::to_handoff_bytes`],
/// hex). The memory vault is always encrypted: no key is an error.
///
/// # Errors
///
/// [`PluginError::Key`] when there is none or it is malformed.
pub fn vault_key(welcome: &Welcome) -> Result<VaultKey, PluginError> {
    let key = welcome.key.as_ref().ok_or_else(|| {
        PluginError::Key("none was handed over: the memory vault is always encrypted".to_owned())
    })?;
    let bytes = SecretBytes::new(
        hex::decode(key.expose()).map_err(|_| PluginError::Key("not hex".to_owned()))?,
    );
    VaultKey::from_handoff_bytes(bytes.expose()).map_err(|e| PluginError::Key(e.to_string()))
}

/// Serves the first-party plugin `name` over an already-connected stream: the handshake as
/// `launch.plugin`, then requests until `shutdown` or the end of the connection.
///
/// # Errors
///
/// As [`run`], less what concerns the environment.
pub fn serve(name: &str, stream: UnixStream, launch: Launch) -> Result<(), PluginError> {
    let Launch { plugin, max_frame } = launch;
    match name {
        "files" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Tool(Box::new(files::Files::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "shell" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Tool(Box::new(shell::Shell::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "http" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Tool(Box::new(http::Http::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "vault" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Tool(Box::new(vault::VaultTool::from_config(
                &w.config,
                vault_key(w)?,
                max_frame,
            )?)))
        }),
        "scripted" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Provider(Box::new(
                scripted::Scripted::from_config(&w.config)?,
            )))
        }),
        "anthropic" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Provider(Box::new(
                providers::anthropic::Anthropic::from_config(&w.config)?,
            )))
        }),
        "openai" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Provider(Box::new(
                providers::openai::OpenAi::from_config(&w.config)?,
            )))
        }),
        "ollama" => runtime::serve(stream, &plugin, max_frame, |w| {
            Ok(Handler::Provider(Box::new(
                providers::ollama::Ollama::from_config(&w.config)?,
            )))
        }),
        other => Err(PluginError::UnknownPlugin(other.to_owned())),
    }
}

/// Parses a plugin's `welcome` config into its settings type; `null` counts as `{}`.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, PluginError> {
    let value = if config.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        config.clone()
    };
    serde_json::from_value(value).map_err(|e| PluginError::Config(e.to_string()))
}

/// Checks that a numeric setting lies in `1..=max`; `unit` (`" bytes"` or `""`) follows the
/// bound in the message.
pub(crate) fn check_setting<T>(name: &str, value: T, max: T, unit: &str) -> Result<(), PluginError>
where
    T: PartialOrd + From<u8> + std::fmt::Display,
{
    if value < T::from(1) || value > max {
        return Err(PluginError::Config(format!(
            "`{name}` must be from 1 to {max}{unit}, not {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn max_frame_is_checked() {
        assert_eq!(parse_max_frame("65536").unwrap(), 65536);
        assert!(parse_max_frame("12").is_err());
        assert!(parse_max_frame("lots").is_err());
    }

    #[test]
    fn invariant_i6_the_vault_plugin_needs_a_key() {
        let welcome = |key: Option<&str>| Welcome {
            version: 1,
            config: serde_json::Value::Null,
            key: key.map(|k| p3ak_proto::Credential::new(k.to_owned())),
        };
        let err = vault_key(&welcome(None)).err().unwrap();
        assert!(err.to_string().contains("always encrypted"), "{err}");
        assert!(vault_key(&welcome(Some("zz"))).is_err());
        assert!(vault_key(&welcome(Some("00ff"))).is_err());
    }
}

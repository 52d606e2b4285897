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
//! [`run`] is the entry point: it reads the environment the kernel sets
//! (`P3AK_PLUGIN_SOCKET`, `P3AK_PLUGIN_NAME`, optional `P3AK_MAX_FRAME`), connects, and serves
//! until `shutdown` or the end of the connection. [`serve`] does the same over a stream that is
//! already connected, and [`runtime`] holds the protocol loop any blocking plugin can reuse.
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

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use p3ak_proto::{ErrorKind, ProtoError};
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

/// Environment variable: the Unix socket the kernel listens on for this plugin.
pub const ENV_SOCKET: &str = "P3AK_PLUGIN_SOCKET";
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
    /// The kernel's socket could not be reached.
    #[error("cannot connect to `{}`: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The vault key handed over on standard input could not be read or is malformed.
    #[error("vault key on standard input: {0}")]
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

/// How a plugin was started: what [`run`] reads from the environment and standard input.
pub struct Launch {
    /// The configured name, sent in `hello` (`P3AK_PLUGIN_NAME`).
    pub plugin: String,
    /// The largest frame payload, both ways.
    pub max_frame: usize,
    /// The `vault` plugin's key (`None`: the vault is unencrypted). Others ignore it.
    pub vault_key: Option<VaultKey>,
}

impl Launch {
    /// A launch under `plugin` with the default frame limit and no key.
    #[must_use]
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            max_frame: p3ak_proto::DEFAULT_MAX_FRAME,
            vault_key: None,
        }
    }
}

/// Runs the first-party plugin `name` as the kernel started it: reads the environment (and,
/// for `vault`, the key on standard input, to its end), connects to the kernel's socket and
/// serves until `shutdown` or the end of the connection.
///
/// # Errors
///
/// An unknown `name`, a missing or malformed environment variable, an unreadable key, an
/// unreachable socket, a refused handshake, an invalid config or a broken connection.
pub fn run(name: &str) -> Result<(), PluginError> {
    if !BUILTINS.contains(&name) {
        return Err(PluginError::UnknownPlugin(name.to_owned()));
    }
    let socket = std::env::var_os(ENV_SOCKET)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .ok_or(PluginError::MissingEnv(ENV_SOCKET))?;
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
    let vault_key = if name == "vault" {
        read_key(&mut std::io::stdin().lock())?
    } else {
        None
    };
    let stream = UnixStream::connect(&socket).map_err(|source| PluginError::Connect {
        path: socket.clone(),
        source,
    })?;
    serve(
        name,
        stream,
        Launch {
            plugin,
            max_frame,
            vault_key,
        },
    )
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

/// Reads a key handed over as [`VaultKey::to_handoff_bytes`], to the end of `input`. Nothing
/// at all means the vault is unencrypted. The buffer is zeroized when dropped.
///
/// # Errors
///
/// [`PluginError::Key`] when `input` cannot be read or does not hold a key.
pub fn read_key<R: Read>(input: &mut R) -> Result<Option<VaultKey>, PluginError> {
    let mut bytes = SecretBytes::with_capacity(64);
    input
        .read_to_end(bytes.expose_mut())
        .map_err(|e| PluginError::Key(e.to_string()))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    VaultKey::from_handoff_bytes(bytes.expose())
        .map(Some)
        .map_err(|e| PluginError::Key(e.to_string()))
}

/// Serves the first-party plugin `name` over an already-connected stream: the handshake as
/// `launch.plugin`, then requests until `shutdown` or the end of the connection.
///
/// # Errors
///
/// As [`run`], less what concerns the environment.
pub fn serve(name: &str, stream: UnixStream, launch: Launch) -> Result<(), PluginError> {
    let Launch {
        plugin,
        max_frame,
        vault_key,
    } = launch;
    match name {
        "files" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Tool(Box::new(files::Files::from_config(
                config, max_frame,
            )?)))
        }),
        "shell" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Tool(Box::new(shell::Shell::from_config(
                config, max_frame,
            )?)))
        }),
        "http" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Tool(Box::new(http::Http::from_config(
                config, max_frame,
            )?)))
        }),
        "vault" => runtime::serve(stream, &plugin, max_frame, move |config| {
            Ok(Handler::Tool(Box::new(vault::VaultTool::from_config(
                config, vault_key, max_frame,
            )?)))
        }),
        "scripted" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Provider(Box::new(
                scripted::Scripted::from_config(config)?,
            )))
        }),
        "anthropic" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Provider(Box::new(
                providers::anthropic::Anthropic::from_config(config)?,
            )))
        }),
        "openai" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Provider(Box::new(
                providers::openai::OpenAi::from_config(config)?,
            )))
        }),
        "ollama" => runtime::serve(stream, &plugin, max_frame, |config| {
            Ok(Handler::Provider(Box::new(
                providers::ollama::Ollama::from_config(config)?,
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
    fn empty_key_input_means_unencrypted() {
        assert!(read_key(&mut std::io::empty()).unwrap().is_none());
        let err = read_key(&mut &b"short"[..]).err().unwrap();
        assert!(err.to_string().starts_with("vault key on standard input"));
    }
}

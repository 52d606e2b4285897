//! `p3ak-sdk`: what a Rust plugin for the P3AK kernel is written against — the first-party
//! plugins (`p3ak-plugins`, `p3ak-vaulttool`) use exactly this, nothing more.
//!
//! A plugin is its own process. The kernel starts it with its connection as standard input and
//! its name in `P3AK_PLUGIN_NAME`; [`Launch::from_env`] and [`connect`] pick both up, and
//! [`runtime::serve`] speaks the protocol (`p3ak-proto`) around a [`Tool`] or a [`Provider`]:
//!
//! ```no_run
//! use p3ak_sdk::{ActionSpec, Handler, Launch, PluginError, Tier, Tool, ToolFailure, runtime};
//!
//! struct Echo;
//!
//! impl Tool for Echo {
//!     fn actions(&self) -> Vec<ActionSpec> {
//!         vec![ActionSpec {
//!             name: "echo".to_owned(),
//!             description: "says it back".to_owned(),
//!             parameters: serde_json::json!({"type": "object"}),
//!             tier: Tier::Observe,
//!         }]
//!     }
//!
//!     fn invoke(
//!         &mut self,
//!         _agent: &str,
//!         _action: &str,
//!         args: serde_json::Value,
//!     ) -> Result<serde_json::Value, ToolFailure> {
//!         Ok(args)
//!     }
//! }
//!
//! fn main() -> Result<(), PluginError> {
//!     let launch = Launch::from_env()?;
//!     let stream = p3ak_sdk::connect()?;
//!     runtime::serve(stream, &launch.plugin, "echo 1.0", launch.max_frame, |_welcome| {
//!         Ok(Handler::Tool(Box::new(Echo)))
//!     })
//! }
//! ```
//!
//! The crate never prints and never exits; every failure is a [`PluginError`].
#![forbid(unsafe_code)]

pub mod args;
pub mod connector;
pub mod runtime;

use std::os::unix::net::UnixStream;

use p3ak_proto::{ErrorKind, ProtoError};

pub use p3ak_proto::{ActionSpec, InferenceRequest, InferenceResponse, Tier, Welcome};
pub use runtime::{Handler, Provider, StreamSink, Tool, ToolFailure};

/// Environment variable: the plugin's configured name (what it says in `hello`).
pub const ENV_NAME: &str = "P3AK_PLUGIN_NAME";
/// Environment variable: the largest frame payload in bytes (optional).
pub const ENV_MAX_FRAME: &str = "P3AK_MAX_FRAME";

/// Smallest frame limit accepted from `P3AK_MAX_FRAME`.
pub const MIN_MAX_FRAME: usize = 4096;

/// Everything that stops a plugin. One line each, lowercase.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
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
    NoConnection(#[source] ProtoError),
    /// The key handed over in `welcome` is missing or malformed.
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
    /// A connector's platform refused it (a wrong token, a revoked bot).
    #[error("the platform refused the connector: {0}")]
    Platform(String),
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

/// How a plugin was started: what [`Launch::from_env`] reads from the environment.
#[derive(Debug)]
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

    /// Reads `P3AK_PLUGIN_NAME` and the optional `P3AK_MAX_FRAME` as the kernel sets them.
    ///
    /// # Errors
    ///
    /// A missing, empty or non-UTF-8 name, or a frame limit that is not a number of bytes
    /// from [`MIN_MAX_FRAME`] to 4 GiB.
    pub fn from_env() -> Result<Self, PluginError> {
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
        Ok(Self { plugin, max_frame })
    }
}

/// Takes the connection the kernel handed over as standard input, putting `/dev/null` in its
/// place so that programs the plugin runs do not inherit it.
///
/// # Errors
///
/// [`PluginError::NoConnection`] when standard input is not a socket.
pub fn connect() -> Result<UnixStream, PluginError> {
    p3ak_proto::io::take_stdin_socket()
        .map(UnixStream::from)
        .map_err(PluginError::NoConnection)
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

/// Parses a plugin's `welcome` config into its settings type; `null` counts as `{}`.
///
/// # Errors
///
/// [`PluginError::Config`] naming what does not fit.
pub fn parse_config<T: serde::de::DeserializeOwned>(
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
///
/// # Errors
///
/// [`PluginError::Config`] naming the setting and its bounds.
pub fn check_setting<T>(name: &str, value: T, max: T, unit: &str) -> Result<(), PluginError>
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
    fn settings_are_bounded() {
        assert!(check_setting("n", 5u32, 10, "").is_ok());
        let e = check_setting("n", 0u32, 10, " bytes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config: `n` must be from 1 to 10 bytes, not 0"
        );
        assert!(
            parse_config::<std::collections::BTreeMap<String, u8>>(&serde_json::Value::Null)
                .unwrap()
                .is_empty()
        );
    }
}

//! `p3ak-vaulttool`: the first-party `vault` plugin — the agents' memory (search, read, write)
//! as a tool, run by the kernel as its own process with `p3ak plugin run vault`.
//!
//! It is its own crate because it needs `p3ak-vault` and `p3ak-memory`, which the other
//! first-party plugins (`p3ak-plugins`) must not pull in; like them it is written against
//! `p3ak-sdk` alone.
#![forbid(unsafe_code)]

pub mod semantic;
pub mod snapshot;
pub mod vault;

use std::os::unix::net::UnixStream;

use p3ak_proto::Welcome;
use p3ak_sdk::{Handler, Launch, PluginError, runtime};
use p3ak_vault::{SecretBytes, VaultKey};

pub use vault::VaultTool;

/// The plugin's name, as `p3ak plugin run` and `builtin = "vault"` know it.
pub const NAME: &str = "vault";

/// The `software` string sent in `hello`: the first-party plugins' own.
pub const SOFTWARE: &str = concat!("p3ak-plugins ", env!("CARGO_PKG_VERSION"));

/// Calls served at the same time: reads share the open vault and run in parallel; a write
/// waits for the one before it, so a few more than the cores keep reads going meanwhile.
pub const WORKERS: usize = 4;

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

/// Runs the plugin as the kernel started it: the connection on standard input, the name and
/// frame limit from the environment; serves until `shutdown` or the end of the connection.
///
/// # Errors
///
/// A standard input that is not a socket, a missing or malformed environment variable, a
/// refused handshake, an invalid config or key, or a broken connection.
pub fn run() -> Result<(), PluginError> {
    let launch = Launch::from_env()?;
    let stream = p3ak_sdk::connect()?;
    serve(stream, launch)
}

/// Serves the plugin over an already-connected stream.
///
/// # Errors
///
/// As [`run`], less what concerns the environment.
pub fn serve(stream: UnixStream, launch: Launch) -> Result<(), PluginError> {
    let Launch { plugin, max_frame } = launch;
    runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
        Ok(Handler::Shared {
            tool: Box::new(VaultTool::from_config(&w.config, vault_key(w)?, max_frame)?),
            workers: WORKERS,
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

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

//! The test plays the kernel (`p3ak_testkit::plugin`): one end of a socket pair, this crate's
//! plugin's serve loop on the other.

use p3ak_proto::{Credential, ErrorMessage};
use p3ak_sdk::{Launch, PluginError};
use p3ak_testkit::plugin::FakeKernel;
use serde_json::Value;

pub type Kernel = FakeKernel<PluginError>;

/// Starts the plugin as `launch.plugin` and does the handshake with `config`, handing `key`
/// over in `welcome`.
pub fn start_keyed(config: Value, launch: Launch, key: Option<Credential>) -> Kernel {
    let name = launch.plugin.clone();
    Kernel::start(&name, config, key, move |stream| {
        p3ak_vaulttool::serve(stream, launch)
    })
}

/// Starts a plugin whose config or key is refused: returns the error it sent and the one it
/// returned.
pub fn start_failing_keyed(
    config: Value,
    launch: Launch,
    key: Option<Credential>,
) -> (ErrorMessage, PluginError) {
    Kernel::start_failing(config, key, move |stream| {
        p3ak_vaulttool::serve(stream, launch)
    })
}

//! `discord`: placeholder.
use crate::PluginError;
use p3ak_sdk::connector::{Connector, Setup};

/// Builds the connector.
///
/// # Errors
///
/// Always, for now.
pub fn connector(_setup: Setup<'_>) -> Result<Connector, PluginError> {
    Err(PluginError::Config("discord: not yet".to_owned()))
}

//! What a plugin registers, checked: its kind, and for tools each action's name, description
//! and JSON Schema (compiled once, here).

use std::collections::HashSet;
use std::sync::Arc;

use p3ak_proto::{ActionSpec, PluginKind};

use crate::proposal::compile_schema;

/// Most actions one plugin may register.
pub const MAX_ACTIONS: usize = 256;

/// Longest action description, bytes.
pub const MAX_DESCRIPTION: usize = 4096;

/// One action as registered, its schema compiled.
#[derive(Clone)]
pub struct RegisteredAction {
    /// The spec the plugin sent.
    pub spec: ActionSpec,
    pub(crate) validator: Arc<jsonschema::Validator>,
}

/// What a plugin registered.
#[derive(Clone)]
pub struct Registration {
    /// Connector, tool or provider.
    pub kind: PluginKind,
    /// Its actions (tools).
    pub actions: Vec<RegisteredAction>,
}

/// Why a registration is refused (the plugin hears the reason: it concerns its own message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// Only tools have actions.
    #[error("only tools register actions")]
    ActionsOnNonTool,
    /// Too many actions.
    #[error("more than {MAX_ACTIONS} actions")]
    TooManyActions,
    /// An action name the policy cannot address.
    #[error("`{0}` is not a valid action name")]
    BadName(String),
    /// The same action twice.
    #[error("action `{0}` registered twice")]
    Duplicate(String),
    /// A description over [`MAX_DESCRIPTION`].
    #[error("action `{0}`: description over {MAX_DESCRIPTION} bytes")]
    LongDescription(String),
    /// A schema that does not compile.
    #[error("action `{action}`: {reason}")]
    Schema {
        /// The action.
        action: String,
        /// What is wrong with its schema.
        reason: String,
    },
}

/// Checks what `plugin` registered.
pub fn validate(
    plugin: &str,
    register: p3ak_proto::Register,
) -> Result<Registration, RegistrationError> {
    if register.kind != PluginKind::Tool && !register.actions.is_empty() {
        return Err(RegistrationError::ActionsOnNonTool);
    }
    if register.actions.len() > MAX_ACTIONS {
        return Err(RegistrationError::TooManyActions);
    }
    let mut seen = HashSet::new();
    let mut actions = Vec::with_capacity(register.actions.len());
    for spec in register.actions {
        let full = format!("{plugin}.{}", spec.name);
        // `.` separates plugin and action; `__` stands for it in tool names, so neither may
        // appear inside a name.
        if spec.name.contains('.')
            || spec.name.contains("__")
            || !p3ak_policy::valid_action_name(&full)
        {
            return Err(RegistrationError::BadName(spec.name));
        }
        if !seen.insert(spec.name.clone()) {
            return Err(RegistrationError::Duplicate(spec.name));
        }
        if spec.description.len() > MAX_DESCRIPTION {
            return Err(RegistrationError::LongDescription(spec.name));
        }
        let validator =
            compile_schema(&spec.parameters).map_err(|e| RegistrationError::Schema {
                action: spec.name.clone(),
                // Text: the error is `Clone + Eq` and goes back to the plugin as a message.
                reason: e.to_string(),
            })?;
        actions.push(RegisteredAction {
            spec,
            validator: Arc::new(validator),
        });
    }
    Ok(Registration {
        kind: register.kind,
        actions,
    })
}

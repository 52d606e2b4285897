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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use p3ak_proto::{Register, Tier};
    use serde_json::json;

    use super::*;

    fn spec(name: &str) -> ActionSpec {
        ActionSpec {
            name: name.to_owned(),
            description: "does a thing".to_owned(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            tier: Tier::Observe,
        }
    }

    fn tool(actions: Vec<ActionSpec>) -> Register {
        Register {
            kind: PluginKind::Tool,
            actions,
        }
    }

    #[test]
    fn a_tool_registers_its_actions_with_compiled_schemas() {
        let registration = validate("files", tool(vec![spec("read"), spec("write")])).unwrap();
        assert_eq!(registration.actions.len(), 2);
        let read = &registration.actions[0];
        assert!(read.validator.is_valid(&json!({"path": "a"})));
        assert!(!read.validator.is_valid(&json!({"path": 3})));
    }

    #[test]
    fn invariant_i9_a_bad_registration_is_refused_with_its_reason() {
        let mut long = spec("long");
        long.description = "x".repeat(MAX_DESCRIPTION + 1);
        let mut not_object = spec("list");
        not_object.parameters = json!({"type": "array"});
        let mut uncompilable = spec("odd");
        uncompilable.parameters = json!({"type": "object", "properties": {"a": {"type": 7}}});
        let cases = [
            (
                Register {
                    kind: PluginKind::Provider,
                    actions: vec![spec("read")],
                },
                RegistrationError::ActionsOnNonTool,
            ),
            (
                tool((0..=MAX_ACTIONS).map(|i| spec(&format!("a{i}"))).collect()),
                RegistrationError::TooManyActions,
            ),
            // `.` and `__` would let a plugin name another plugin's action.
            (
                tool(vec![spec("vault.search")]),
                RegistrationError::BadName("vault.search".into()),
            ),
            (
                tool(vec![spec("vault__search")]),
                RegistrationError::BadName("vault__search".into()),
            ),
            (
                tool(vec![spec("")]),
                RegistrationError::BadName(String::new()),
            ),
            (
                tool(vec![spec("read"), spec("read")]),
                RegistrationError::Duplicate("read".into()),
            ),
            (
                tool(vec![long]),
                RegistrationError::LongDescription("long".into()),
            ),
        ];
        for (register, expected) in cases {
            assert_eq!(validate("files", register).err(), Some(expected));
        }
        for register in [tool(vec![not_object]), tool(vec![uncompilable])] {
            let error = validate("files", register).err().unwrap();
            assert!(matches!(error, RegistrationError::Schema { .. }), "{error}");
            assert!(!error.to_string().contains('\n'), "one line: {error}");
        }
    }
}

//! Model output → [`Proposal`]: strict parsing, never guessing.
//!
//! A tool call names a tool the agent was offered (in the [`ToolTable`]) and gives a JSON
//! object of arguments that satisfies the action's registered JSON Schema. Anything else is a
//! [`ProposalError`], which the model may be told about: it concerns syntax, not policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use p3ak_policy::{Declared, Tier};
use p3ak_proto::{ToolCall, ToolDefinition};

use crate::broker;

/// An action offered to one agent, under the name the model uses.
#[derive(Clone)]
pub struct OfferedAction {
    /// `<plugin>.<action>`, as the policy names it.
    pub action: String,
    /// The plugin that runs it.
    pub plugin: String,
    /// The action's name within the plugin.
    pub plugin_action: String,
    /// The name the model calls it by (`files__read`).
    pub tool_name: String,
    /// For the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    /// The tier the plugin recommended, and whether the plugin is one of ours (a third
    /// party's declared tier counts only where the policy trusts it).
    pub declared: Declared,
    pub(crate) validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for OfferedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedAction")
            .field("action", &self.action)
            .field("tool_name", &self.tool_name)
            .finish_non_exhaustive()
    }
}

/// The tools one agent is offered for one turn.
#[derive(Debug, Clone, Default)]
pub struct ToolTable {
    by_name: BTreeMap<String, OfferedAction>,
}

impl ToolTable {
    /// Builds a table; the first action to claim a tool name keeps it.
    #[must_use]
    pub fn new(actions: impl IntoIterator<Item = OfferedAction>) -> Self {
        let mut by_name = BTreeMap::new();
        for action in actions {
            by_name.entry(action.tool_name.clone()).or_insert(action);
        }
        Self { by_name }
    }

    /// What the provider is told.
    #[must_use]
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.by_name
            .values()
            .map(|a| ToolDefinition {
                name: a.tool_name.clone(),
                description: a.description.clone(),
                parameters: a.parameters.clone(),
            })
            .collect()
    }

    /// Keeps only the actions `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&OfferedAction) -> bool) {
        self.by_name.retain(|_, action| keep(action));
    }

    /// Number of tools.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The action a tool name stands for: the offered one, else the name read back
    /// (`files__read` is `files.read`) for a tool no longer offered.
    #[must_use]
    pub fn action_of(&self, tool_name: &str) -> String {
        self.get(tool_name)
            .map_or_else(|| tool_name.replace("__", "."), |a| a.action.clone())
    }

    fn get(&self, tool_name: &str) -> Option<&OfferedAction> {
        self.by_name.get(tool_name)
    }
}

/// The name a model calls an action by: providers allow letters, digits, `_` and `-`.
#[must_use]
pub fn tool_name(action: &str) -> String {
    action.replace('.', "__")
}

/// A proposed call, parsed from a model's output. Plain data: it authorises nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The proposing agent.
    pub agent: String,
    /// The model's id for the call.
    pub call_id: String,
    /// `<plugin>.<action>`.
    pub action: String,
    /// The plugin, if the action was offered; `None` for a name the agent was never offered.
    pub plugin: Option<String>,
    /// The action's name within the plugin.
    pub plugin_action: String,
    /// The arguments, credential references in place.
    pub args: serde_json::Value,
    /// The credentials the arguments refer to.
    pub credentials: Vec<String>,
    /// The tier the plugin recommended, and who the plugin is.
    pub declared: Option<Declared>,
}

/// Why a tool call could not be parsed. Safe to tell the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// The name is not a tool name at all.
    #[error("`{0}` is not a valid tool name")]
    BadName(String),
    /// The arguments are not a JSON object.
    #[error("the arguments of `{0}` must be a JSON object")]
    NotAnObject(String),
    /// The model wrote arguments that are not JSON at all (providers pass such text on as a
    /// string so that the model can be told what was wrong).
    #[error("the arguments of `{tool}` are not valid JSON: {message}")]
    NotJson {
        /// The tool.
        tool: String,
        /// The parser's message.
        message: String,
    },
    /// The arguments break the tool's schema.
    #[error("invalid arguments for `{tool}`: {message}")]
    Schema {
        /// The tool.
        tool: String,
        /// The first violation.
        message: String,
    },
    /// A credential reference is malformed.
    #[error("invalid credential reference in `{tool}`: {source}")]
    Reference {
        /// The tool.
        tool: String,
        /// What is wrong.
        source: broker::ReferenceError,
    },
}

/// Parses one tool call. A name the agent was not offered is still a proposal (with no
/// plugin), so that the enforcer denies it and the denial is audited like any other.
pub fn parse(agent: &str, call: &ToolCall, table: &ToolTable) -> Result<Proposal, ProposalError> {
    let name = call.name.as_str();
    let serde_json::Value::Object(_) = &call.arguments else {
        if let serde_json::Value::String(text) = &call.arguments
            && let Err(e) = serde_json::from_str::<serde_json::Value>(text)
        {
            return Err(ProposalError::NotJson {
                tool: name.to_owned(),
                message: e.to_string(),
            });
        }
        return Err(ProposalError::NotAnObject(name.to_owned()));
    };
    let credentials =
        broker::references(&call.arguments).map_err(|source| ProposalError::Reference {
            tool: name.to_owned(),
            source,
        })?;
    let Some(offered) = table.get(name) else {
        let action = name.replace("__", ".");
        if !p3ak_policy::valid_action_name(&action) {
            return Err(ProposalError::BadName(name.to_owned()));
        }
        let plugin_action = action.rsplit('.').next().unwrap_or_default().to_owned();
        return Ok(Proposal {
            agent: agent.to_owned(),
            call_id: call.id.clone(),
            action,
            plugin: None,
            plugin_action,
            args: call.arguments.clone(),
            credentials,
            declared: None,
        });
    };
    // References stand for strings: validate with a placeholder in their place.
    let mut shaped = call.arguments.clone();
    replace_references(&mut shaped);
    if let Some(error) = offered.validator.iter_errors(&shaped).next() {
        let path = error.instance_path().to_string();
        let message = if path.is_empty() {
            error.to_string()
        } else {
            format!("{path}: {error}")
        };
        return Err(ProposalError::Schema {
            tool: name.to_owned(),
            message,
        });
    }
    Ok(Proposal {
        agent: agent.to_owned(),
        call_id: call.id.clone(),
        action: offered.action.clone(),
        plugin: Some(offered.plugin.clone()),
        plugin_action: offered.plugin_action.clone(),
        args: call.arguments.clone(),
        credentials,
        declared: Some(offered.declared),
    })
}

fn replace_references(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) if map.contains_key(broker::REFERENCE_KEY) => {
            *value = serde_json::Value::String("[credential]".to_owned());
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(replace_references),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_references),
        _ => {}
    }
}

/// Why an action's schema is refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Parameters must be an object.
    #[error("parameters must be a JSON Schema with \"type\": \"object\"")]
    NotAnObject,
    /// It does not compile.
    #[error(transparent)]
    Invalid(#[from] Box<jsonschema::ValidationError<'static>>),
}

/// Compiles an action's schema; an invalid one is refused at registration.
pub(crate) fn compile_schema(
    schema: &serde_json::Value,
) -> Result<jsonschema::Validator, SchemaError> {
    if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err(SchemaError::NotAnObject);
    }
    jsonschema::validator_for(schema).map_err(|e| SchemaError::Invalid(Box::new(e)))
}

/// Converts a protocol tier to the policy's.
#[must_use]
pub fn policy_tier(tier: p3ak_proto::Tier) -> Tier {
    match tier {
        p3ak_proto::Tier::Observe => Tier::Observe,
        p3ak_proto::Tier::Act => Tier::Act,
        p3ak_proto::Tier::Commit => Tier::Commit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ToolTable {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": false
        });
        ToolTable::new([OfferedAction {
            action: "files.read".to_owned(),
            plugin: "files".to_owned(),
            plugin_action: "read".to_owned(),
            tool_name: "files__read".to_owned(),
            description: String::new(),
            validator: Arc::new(compile_schema(&schema).unwrap()),
            parameters: schema,
            declared: Declared::first_party(Tier::Observe),
        }])
    }

    fn call(name: &str, arguments: serde_json::Value) -> ToolCall {
        ToolCall {
            id: "c1".to_owned(),
            name: name.to_owned(),
            arguments,
        }
    }

    #[test]
    fn offered_tools_parse_with_their_plugin() {
        let p = parse(
            "a",
            &call("files__read", serde_json::json!({"path": "x"})),
            &table(),
        )
        .unwrap();
        assert_eq!(p.action, "files.read");
        assert_eq!(p.plugin.as_deref(), Some("files"));
    }

    #[test]
    fn invariant_i9_malformed_calls_are_errors() {
        let t = table();
        let bad = [
            call("files__read", serde_json::json!("path")),
            call("files__read", serde_json::json!({})),
            call("files__read", serde_json::json!({"path": 3})),
            call("files__read", serde_json::json!({"path": "x", "more": 1})),
            call(
                "files__read",
                serde_json::json!({"path": {"$secret": "a", "b": 1}}),
            ),
            call("not a name", serde_json::json!({})),
        ];
        for c in bad {
            assert!(parse("a", &c, &t).is_err(), "{c:?}");
        }
    }

    #[test]
    fn arguments_that_are_not_json_say_what_is_wrong() {
        let t = table();
        let err = parse(
            "a",
            &call("files__read", serde_json::json!(r#"{"path": "#)),
            &t,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("the arguments of `files__read` are not valid JSON: EOF"),
            "{err}"
        );
        let err = parse("a", &call("files__read", serde_json::json!("[1]")), &t)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the arguments of `files__read` must be a JSON object");
    }

    #[test]
    fn invariant_i2_unknown_names_become_proposals_without_a_plugin() {
        let p = parse(
            "a",
            &call("bank__wire", serde_json::json!({"to": "x"})),
            &table(),
        )
        .unwrap();
        assert_eq!(p.action, "bank.wire");
        assert_eq!(p.plugin, None);
    }

    #[test]
    fn credential_references_satisfy_string_schemas() {
        let c = call(
            "files__read",
            serde_json::json!({"path": {"$secret": "token"}}),
        );
        let p = parse("a", &c, &table()).unwrap();
        assert_eq!(p.credentials, vec!["token"]);
    }
}

//! Checking an action's arguments by hand: the kernel validates them against the schema too,
//! but a plugin trusts nothing it is sent. Every problem is an `invalid` failure.

use serde_json::{Map, Value};

use crate::runtime::ToolFailure;

/// An action's arguments: a JSON object with only known fields.
pub struct Args {
    action: &'static str,
    fields: Map<String, Value>,
}

impl Args {
    /// Checks that `value` is an object whose fields are all in `allowed`.
    pub fn new(action: &'static str, value: Value, allowed: &[&str]) -> Result<Self, ToolFailure> {
        let Value::Object(fields) = value else {
            return Err(ToolFailure::invalid(format!(
                "`{action}`: the arguments must be a JSON object"
            )));
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ToolFailure::invalid(format!(
                "`{action}`: unknown argument `{}`",
                shorten(unknown)
            )));
        }
        Ok(Self { action, fields })
    }

    fn wrong(&self, name: &str, expected: &str) -> ToolFailure {
        ToolFailure::invalid(format!(
            "`{}`: argument `{name}` must be {expected}",
            self.action
        ))
    }

    fn present(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn string(&self, name: &str) -> Result<&str, ToolFailure> {
        match self.present(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.wrong(name, "a string")),
            None => Err(ToolFailure::invalid(format!(
                "`{}`: missing argument `{name}`",
                self.action
            ))),
        }
    }

    /// An optional string.
    pub fn opt_string(&self, name: &str) -> Result<Option<&str>, ToolFailure> {
        match self.present(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(name, "a string")),
            None => Ok(None),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ToolFailure> {
        match self.present(name) {
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(name, "true or false")),
            None => Ok(None),
        }
    }

    /// An optional integer in `min..=max`.
    pub fn opt_int(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ToolFailure> {
        match self.present(name) {
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.wrong(name, &format!("an integer from {min} to {max}"))),
            },
            None => Ok(None),
        }
    }

    /// An optional object whose values are all strings.
    pub fn opt_string_map(&self, name: &str) -> Result<Option<Vec<(&str, &str)>>, ToolFailure> {
        match self.present(name) {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.as_str(), s.as_str())),
                    _ => Err(self.wrong(name, "an object of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.wrong(name, "an object of strings")),
            None => Ok(None),
        }
    }

    /// Any JSON value, if present and not null.
    pub fn opt_value(&self, name: &str) -> Option<&Value> {
        self.present(name)
    }
}

/// At most 100 characters of user input, for messages.
pub fn shorten(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 100 {
        out.push('…');
    }
    out
}

/// An object schema with `additionalProperties: false`.
/// (`required` is left out when empty: draft 4 wants at least one name in it.)
pub fn schema(properties: Value, required: &[&str]) -> Value {
    let mut schema = serde_json::json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty()
        && let Some(object) = schema.as_object_mut()
    {
        object.insert("required".to_owned(), serde_json::json!(required));
    }
    schema
}

/// Longest agent name the kernel gives.
pub const MAX_AGENT_LEN: usize = 64;

/// Agent names: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_agent(agent: &str) -> Result<(), ToolFailure> {
    let valid = !agent.is_empty()
        && agent.len() <= MAX_AGENT_LEN
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ToolFailure::invalid(format!(
            "agent name `{}` is not valid: 1 to {MAX_AGENT_LEN} letters, digits, `_` or `-`",
            shorten(agent)
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_types_and_fields() {
        assert!(Args::new("x", json!([1]), &[]).is_err());
        assert!(Args::new("x", json!({"a": 1}), &["b"]).is_err());
        let args = Args::new(
            "x",
            json!({"s": "t", "n": 3, "b": true, "m": {"k": "v"}, "bad": {"k": 1}}),
            &["s", "n", "b", "m", "bad", "none"],
        )
        .unwrap();
        assert_eq!(args.string("s").unwrap(), "t");
        assert!(args.string("n").is_err());
        assert!(args.string("none").is_err());
        assert_eq!(args.opt_string("none").unwrap(), None);
        assert_eq!(args.opt_int("n", 1, 5).unwrap(), Some(3));
        assert!(args.opt_int("n", 4, 5).is_err());
        assert!(args.opt_int("s", 1, 5).is_err());
        assert_eq!(args.opt_bool("b").unwrap(), Some(true));
        assert_eq!(args.opt_string_map("m").unwrap().unwrap(), vec![("k", "v")]);
        assert!(args.opt_string_map("bad").is_err());
        assert_eq!(shorten(&"é".repeat(200)).chars().count(), 101);
    }
}

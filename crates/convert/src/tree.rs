//! Structured data (JSON, YAML, TOML): flattened to `path: value` lines, one section per
//! top-level key.

use serde_json::Value;

use crate::doc::{Ctx, Doc, decode_strict};
use crate::{ConvertError, Converted, Format};

/// Deepest nesting accepted in TOML (checked before parsing; JSON and YAML parsers have
/// their own depth limits).
const MAX_NESTING: usize = 256;

/// JSON (strict UTF-8). Several concatenated values (JSON Lines) are read as an array.
/// Object keys come out sorted (serde_json's map), not in file order.
pub(crate) fn json(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Json;
    let text = decode_strict(format, bytes)?;
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(first) => {
            let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
                .into_iter::<Value>()
                .collect();
            match values {
                Ok(v) if v.len() > 1 => Value::Array(v),
                _ => return Err(ConvertError::malformed(format, first)),
            }
        }
    };
    flatten(format, &value, ctx)
}

/// YAML (strict UTF-8), via serde-saphyr with its default budgets (depth, aliases, size).
/// Several documents are read as an array. Keys come out sorted.
pub(crate) fn yaml(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Yaml;
    let text = decode_strict(format, bytes)?;
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ConvertError::malformed(format, e))?;
    let value = if docs.len() == 1 {
        docs.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(docs)
    };
    flatten(format, &value, ctx)
}

/// TOML (strict UTF-8). Keys come out sorted; datetimes as written.
pub(crate) fn toml(bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let format = Format::Toml;
    let text = decode_strict(format, bytes)?;
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ConvertError::malformed(
                        format,
                        format!("nesting deeper than {MAX_NESTING}"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => depth = depth.min(2),
            _ => {}
        }
    }
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConvertError::malformed(format, e.message().to_lowercase())
    })?;
    let value = toml_to_json(toml::Value::Table(table));
    flatten(format, &value, ctx)
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map_or_else(|| Value::String(f.to_string()), Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// One section per top-level key (heading path `[key]`), lines `a.b[0].c: value`.
fn flatten(format: Format, value: &Value, ctx: &mut Ctx<'_>) -> Result<Converted, ConvertError> {
    let mut doc = Doc::new(format);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                doc.set_heading_path(vec![key.clone()]);
                lines(&mut doc, ctx, key.clone(), v)?;
                doc.flush();
            }
        }
        other => lines(&mut doc, ctx, String::new(), other)?,
    }
    Ok(doc.finish())
}

/// Writes `path: value` lines depth first, in order, without recursion.
fn lines(
    doc: &mut Doc,
    ctx: &mut Ctx<'_>,
    root: String,
    value: &Value,
) -> Result<(), ConvertError> {
    let mut stack: Vec<(String, &Value)> = vec![(root, value)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter().rev() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((p, child));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), child));
                }
            }
            Value::Null => {}
            Value::String(s) => scalar(doc, ctx, &path, s)?,
            other => scalar(doc, ctx, &path, &other.to_string())?,
        }
    }
    Ok(())
}

fn scalar(doc: &mut Doc, ctx: &mut Ctx<'_>, path: &str, value: &str) -> Result<(), ConvertError> {
    if value.trim().is_empty() {
        return Ok(());
    }
    if !path.is_empty() {
        doc.push(ctx, path)?;
        doc.push(ctx, ": ")?;
    }
    doc.push(ctx, value)?;
    doc.line_break();
    Ok(())
}

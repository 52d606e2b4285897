//! Raw `cedar:` expressions: what they read, the arguments they compare as a whole, and the
//! named sets they use (`$contacts`, replaced by a Cedar set literal).

use serde_json::Value;
use serde_saphyr::Spanned;

use super::{Read, Sink};
use crate::error::Diagnostic;

/// What a raw `cedar:` expression reads, and the arguments it compares as a whole. Cedar's
/// own JSON form of the expression is walked, so no string in it can pass for a path. If the
/// expression cannot be analysed, it is taken to read the whole context.
pub(super) fn raw_analysis(raw: &Spanned<String>, sink: &mut Sink<'_>) {
    let wrapped = format!(
        "permit(principal, action, resource) when {{\n{}\n}};",
        raw.value
    );
    let est = cedar_policy::Policy::parse(None, wrapped)
        .ok()
        .and_then(|p| p.to_json().ok());
    let Some(conditions) = est.as_ref().and_then(|e| e.get("conditions")) else {
        sink.reads.push(Read {
            path: Vec::new(),
            presence: false,
        });
        return;
    };
    let mut compared = Vec::new();
    walk_est(conditions, &mut sink.reads, &mut compared);
    compared.dedup();
    for path in compared {
        let name = format!("context.{}", path.join("."));
        let arg = path.get(1..).map(|p| p.join(".")).unwrap_or_default();
        sink.warnings.push(
            Diagnostic::at(
                &raw.referenced,
                format!(
                    "raw cedar compares `{name}` as a whole: if that argument is a list, no element is looked at, and a blocklist can fail open"
                ),
            )
            .with_hint(format!(
                "use `args.{arg}: {{ in: [...] }}`, `eq` or `ne`, which test each element of a list"
            )),
        );
    }
}

/// `context.a.b` (or `context["a"]["b"]`) in Cedar's JSON form, as `["a", "b"]`.
fn chain(node: &Value) -> Option<Vec<String>> {
    if node.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let access = node.get(".")?;
    let mut path = chain(access.get("left")?)?;
    path.push(access.get("attr")?.as_str()?.to_owned());
    Some(path)
}

fn args_chain(node: Option<&Value>) -> Option<Vec<String>> {
    chain(node?).filter(|p| p.len() > 1 && p.first().is_some_and(|f| f == "args"))
}

pub(super) fn walk_est(node: &Value, reads: &mut Vec<Read>, compared: &mut Vec<Vec<String>>) {
    if let Some(path) = chain(node) {
        reads.push(Read {
            path,
            presence: false,
        });
        return;
    }
    match node {
        Value::Array(items) => items.iter().for_each(|i| walk_est(i, reads, compared)),
        Value::Object(map) => {
            if let Some(has) = map.get("has")
                && let Some(mut path) = has.get("left").and_then(chain)
            {
                match has.get("attr") {
                    Some(Value::String(attr)) => path.push(attr.clone()),
                    Some(Value::Array(attrs)) => {
                        path.extend(attrs.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                    _ => {}
                }
                reads.push(Read {
                    path,
                    presence: true,
                });
                return;
            }
            // `==` and `!=` on a list compare it whole; `L.contains(x)` asks whether the whole
            // of `x` is an element of `L`.
            for op in ["==", "!="] {
                if let Some(node) = map.get(op) {
                    compared.extend(args_chain(node.get("left")));
                    compared.extend(args_chain(node.get("right")));
                }
            }
            if let Some(node) = map.get("contains") {
                compared.extend(args_chain(node.get("right")));
            }
            for (key, child) in map {
                // Literal values hold no expressions.
                if key != "Value" {
                    walk_est(child, reads, compared);
                }
            }
        }
        _ => {}
    }
}

/// Replaces each `$name` outside string literals with the named set as a Cedar set literal.
/// `lookup` gives the literal for a name, or `None` for an unknown set.
pub(super) fn expand_sets(
    text: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '$' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == '-' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() {
                    return Err("`$` must be followed by a set's name".to_owned());
                }
                let literal = lookup(&name).ok_or_else(|| format!("unknown set `${name}`"))?;
                out.push_str(&literal);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Read;

    #[test]
    fn raw_cedar_reads_are_found_in_cedar_own_syntax_tree() {
        let mut reads = Vec::new();
        let mut compared = Vec::new();
        let analyse = |text: &str, reads: &mut Vec<Read>, compared: &mut Vec<Vec<String>>| {
            let policy = cedar_policy::Policy::parse(
                None,
                format!("permit(principal, action, resource) when {{\n{text}\n}};"),
            )
            .unwrap();
            walk_est(&policy.to_json().unwrap()["conditions"], reads, compared);
        };
        analyse(
            r#"context["args"]["a"].b > 1 && context.args has c && "context.args.z" == context.args.d"#,
            &mut reads,
            &mut compared,
        );
        let names: Vec<(String, bool)> = reads.iter().map(|r| (r.name(), r.presence)).collect();
        assert_eq!(
            names,
            [
                ("args.a.b".to_owned(), false),
                ("args.c".to_owned(), true),
                ("args.d".to_owned(), false),
            ]
        );
        assert_eq!(compared, [vec!["args".to_owned(), "d".to_owned()]]);
    }

    #[test]
    fn sets_are_expanded_outside_string_literals_only() {
        let lookup = |name: &str| (name == "vip").then(|| "[\"a\", \"b\"]".to_owned());
        assert_eq!(
            expand_sets(
                r#"$vip.contains(context.args.to) && context.args.memo != "$vip \"$x""#,
                lookup
            )
            .unwrap(),
            r#"["a", "b"].contains(context.args.to) && context.args.memo != "$vip \"$x""#
        );
        assert_eq!(
            expand_sets("$nope.contains(1)", lookup).unwrap_err(),
            "unknown set `$nope`"
        );
        assert!(expand_sets("$ ", lookup).is_err());
    }
}

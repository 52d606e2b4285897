//! `p3ak policy check` and `p3ak policy explain`, on a policy file.

use std::path::Path;

use p3ak_policy::{Context, Declared, Origin, Policy, PolicyError, Request, Tier};
use serde_json::json;

use crate::error::{Result, SdkError};

/// Every diagnostic on one line, each prefixed with the file, as the CLI prints them.
fn located(path: &Path, error: &PolicyError) -> SdkError {
    let all: Vec<String> = error
        .diagnostics
        .iter()
        .map(|d| format!("{}:{d}", path.display()))
        .collect();
    SdkError::Policy(all.join("; "))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SdkError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a policy file; files it includes are read beside it. Returns its warnings too.
fn load(path: &Path) -> Result<(Policy, Vec<String>)> {
    let beside = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let policy = Policy::from_yaml_with_files(&read(path)?, |name| {
        std::fs::read_to_string(beside.join(name))
    })
    .map_err(|e| located(path, &e))?;
    let warnings = policy
        .warnings()
        .iter()
        .map(|w| format!("{}:{w}", path.display()))
        .collect();
    Ok((policy, warnings))
}

/// `p3ak policy check --json`.
pub fn check(path: &Path) -> Result<String> {
    let (policy, warnings) = load(path)?;
    Ok(json!({
        "file": path.display().to_string(),
        "ok": true,
        "rules": policy.rule_count(),
        "totals": policy.totals(),
        "warnings": warnings,
    })
    .to_string())
}

fn parse_tier(text: &str) -> Result<Tier> {
    match text {
        "observe" => Ok(Tier::Observe),
        "act" => Ok(Tier::Act),
        "commit" => Ok(Tier::Commit),
        _ => Err(SdkError::Invalid(format!(
            "unknown tier `{text}` (observe, act, commit)"
        ))),
    }
}

/// One call to explain, as `p3ak policy explain` takes it (JSON as text).
pub struct ExplainArgs<'a> {
    pub agent: &'a str,
    pub action: &'a str,
    pub args_json: &'a str,
    pub context_json: Option<&'a str>,
    pub declared: Option<&'a str>,
    pub first_party: bool,
    pub credentials: Vec<String>,
}

/// `p3ak policy explain --json`: the verdict, every rule consulted, what the request left out
/// (`warnings`) and the policy file's own warnings (`policy_warnings`).
pub fn explain(path: &Path, args: ExplainArgs<'_>) -> Result<String> {
    let (policy, warnings) = load(path)?;
    let call_args: serde_json::Value = serde_json::from_str(args.args_json)
        .map_err(|_| SdkError::Invalid("invalid `args`: expected a JSON object".into()))?;
    if !call_args.is_object() {
        return Err(SdkError::Invalid(
            "invalid `args`: expected a JSON object".into(),
        ));
    }
    let context: Context = match args.context_json {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| SdkError::Invalid(format!("invalid `context`: {e}")))?,
        None => Context::default(),
    };
    if args.first_party && args.declared.is_none() {
        return Err(SdkError::Invalid(
            "`first_party` needs `declared` (the tier the plugin declared)".into(),
        ));
    }
    let declared = match args.declared {
        Some(tier) => {
            let origin = if args.first_party {
                Origin::FirstParty
            } else {
                Origin::ThirdParty
            };
            Some(Declared::new(parse_tier(tier)?, origin))
        }
        None => None,
    };
    let request = Request {
        agent: args.agent.to_owned(),
        action: args.action.to_owned(),
        args: call_args,
        credentials: args.credentials,
        declared,
        context,
    };
    let explanation = policy.explain(&request);
    let mut answer = serde_json::to_value(&explanation)?;
    if let Some(object) = answer.as_object_mut() {
        object.insert("policy_warnings".into(), json!(warnings));
        object.insert("lines".into(), json!(explanation.lines()));
    }
    Ok(answer.to_string())
}

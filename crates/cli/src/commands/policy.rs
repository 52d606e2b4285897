//! `p3ak policy`: check a policy file, explain a decision, run an operator's test cases.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args as ClapArgs, Subcommand};
use p3ak_policy::cases::Suite;
use p3ak_policy::{Context, Diagnostic, Policy, PolicyError, Request, Tier};
use serde_json::json;

use p3ak_kernel::control::{ControlEvent, ControlRequest};

use crate::output::{Output, sanitize};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a policy file: errors with line:column (exit 1), warnings for shadowed rules.
    Check {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Decide one request and show every rule that took part.
    Explain(ExplainArgs),
    /// Run operator-written cases against a policy and report each failure.
    Test {
        /// The policy file (YAML).
        file: PathBuf,
        /// The cases file (YAML).
        cases: PathBuf,
    },
    /// Check a policy file and make it the running kernel's policy (and `policy.yaml`); on
    /// any error the old policy stays (exit 1). SIGHUP to the kernel re-reads `policy.yaml`.
    Apply {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Remembered approvals (grants): list them, or revoke one.
    Grants {
        #[command(subcommand)]
        command: Option<GrantsCommand>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Revoke a grant: calls it covered are escalated again.
    Revoke {
        /// Its id (`p3ak policy grants` lists them).
        id: String,
    },
}

#[derive(Debug, ClapArgs)]
pub struct ExplainArgs {
    /// The policy file (YAML).
    file: PathBuf,
    /// The agent proposing the call.
    #[arg(long)]
    agent: String,
    /// The action, `<plugin>.<action>` (or a built-in tool name).
    #[arg(long)]
    action: String,
    /// The call's arguments, a JSON object (amounts in integer minor units).
    #[arg(long, default_value = "{}")]
    args: String,
    /// Runtime context as JSON: `{"totals": {...}, "time": "HH:MM", "channel": "...",
    /// "grants": [{"id": "g-1", "action": "mail.send", "args": {"to": "bob@example.com"},
    /// "level": 2}], "delegation": {"depth": 1, "chain": ["amber"], "by": "amber"}}`
    /// (grants as `p3ak policy grants --json` lists them, unexpired).
    #[arg(long)]
    context: Option<String>,
    /// The tier the plugin declared for the action, if any.
    #[arg(long, value_parser = parse_tier)]
    declared: Option<Tier>,
    /// The declaring plugin is first-party (`builtin`); without this flag it is a third
    /// party's, whose tier counts only where `defaults.trust_declared_tiers` says.
    #[arg(long, requires = "declared")]
    first_party: bool,
    /// A credential the call references (repeatable).
    #[arg(long = "credential")]
    credentials: Vec<String>,
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    match text {
        "observe" => Ok(Tier::Observe),
        "act" => Ok(Tier::Act),
        "commit" => Ok(Tier::Commit),
        _ => Err(format!("unknown tier `{text}` (observe, act, commit)")),
    }
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Check { file } => check(&file, out),
        Command::Explain(args) => explain(args, out),
        Command::Test { file, cases } => test(&file, &cases, out),
        Command::Apply { file } => apply(&file, out),
        Command::Grants { command: None } => grants(out),
        Command::Grants {
            command: Some(GrantsCommand::Revoke { id }),
        } => revoke(&id, out),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// Every diagnostic on one line, each prefixed with the file.
fn located(path: &Path, error: &PolicyError) -> anyhow::Error {
    let all: Vec<String> = error
        .diagnostics
        .iter()
        .map(|d| format!("{}:{d}", path.display()))
        .collect();
    anyhow::anyhow!("{}", all.join("; "))
}

fn load(path: &Path, out: &Output) -> anyhow::Result<Policy> {
    let beside = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let policy = Policy::from_yaml_with_files(&read(path)?, |name| {
        std::fs::read_to_string(beside.join(name))
    })
    .map_err(|e| located(path, &e))?;
    for warning in policy.warnings() {
        out.warn(format!("{}:{warning}", path.display()));
    }
    Ok(policy)
}

fn diagnostics_json(path: &Path, diagnostics: &[Diagnostic]) -> serde_json::Value {
    diagnostics
        .iter()
        .map(|d| {
            json!({
                "file": path.display().to_string(),
                "line": d.position.line,
                "column": d.position.column,
                "message": d.message,
                "hint": d.hint,
            })
        })
        .collect()
}

fn check(path: &Path, out: &Output) -> anyhow::Result<()> {
    let policy = load(path, out)?;
    out.json(&json!({
        "file": path.display().to_string(),
        "ok": true,
        "rules": policy.rule_count(),
        "totals": policy.totals(),
        "vault_rekey": policy.vault_rekey(),
        "warnings": diagnostics_json(path, policy.warnings()),
    }));
    let warnings = policy.warnings().len();
    out.line(sanitize(&format!(
        "{}: ok ({} rules, {} totals, {} warning{})",
        path.display(),
        policy.rule_count(),
        policy.totals().len(),
        warnings,
        if warnings == 1 { "" } else { "s" }
    )));
    for total in policy.totals() {
        let by = total
            .by
            .as_ref()
            .map(|key| format!(", kept per {key}"))
            .unwrap_or_default();
        out.line(sanitize(&format!(
            "  the kernel must supply total `{}` over {}s for [{}]{by}",
            total.name,
            total.window.as_secs(),
            total.actions.join(", ")
        )));
    }
    if let Some(rekey) = policy.vault_rekey() {
        out.line(format_args!(
            "  the memory vault is rekeyed every {} once approved at level {}",
            humantime::format_duration(rekey.every),
            rekey.level.get()
        ));
    }
    Ok(())
}

fn explain(args: ExplainArgs, out: &Output) -> anyhow::Result<()> {
    let policy = load(&args.file, out)?;
    let call_args: serde_json::Value =
        serde_json::from_str(&args.args).context("invalid `--args`: expected a JSON object")?;
    if !call_args.is_object() {
        bail!("invalid `--args`: expected a JSON object");
    }
    let context: Context = match &args.context {
        Some(text) => serde_json::from_str(text).context(
            "invalid `--context`: expected {\"totals\": {NAME: INT}, \"time\": \"HH:MM\", \"channel\": NAME, \"session\": {\"id\": ID, \"actions\": [...]}, \"transcript\": [{\"from\": SOURCE, \"text\": TEXT}], \"grants\": [GRANT], \"delegation\": {\"depth\": N, \"chain\": [AGENT], \"by\": AGENT}}",
        )?,
        None => Context::default(),
    };
    let request = Request {
        agent: args.agent,
        action: args.action,
        args: call_args,
        credentials: args.credentials,
        declared: args.declared.map(|tier| {
            let origin = if args.first_party {
                p3ak_policy::Origin::FirstParty
            } else {
                p3ak_policy::Origin::ThirdParty
            };
            p3ak_policy::Declared::new(tier, origin)
        }),
        context,
    };
    let explanation = policy.explain(&request);
    out.json(&explanation);

    for warning in &explanation.warnings {
        out.warn(warning);
    }
    for line in explanation.lines() {
        out.line(sanitize(&line));
    }
    Ok(())
}

fn test(path: &Path, cases_path: &Path, out: &Output) -> anyhow::Result<()> {
    let policy = load(path, out)?;
    let suite = Suite::from_yaml(&read(cases_path)?).map_err(|e| located(cases_path, &e))?;
    let outcomes = suite.run(&policy);
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let passed = outcomes.len() - failed;
    out.json(&json!({
        "passed": passed,
        "failed": failed,
        "cases": outcomes,
    }));
    for outcome in &outcomes {
        let fired: Vec<&str> = outcome
            .verdict
            .rules
            .iter()
            .map(String::as_str)
            .chain(
                outcome
                    .verdict
                    .reasons
                    .iter()
                    .map(|r| r.rule.as_str())
                    .filter(|r| !outcome.verdict.rules.iter().any(|d| d == r)),
            )
            .collect();
        match &outcome.failure {
            None => out.line(sanitize(&format!(
                "ok    {} -> {} [{}]",
                outcome.name,
                outcome.verdict.decision,
                fired.join(", ")
            ))),
            Some(why) => out.line(sanitize(&format!(
                "FAIL  {} ({}:{}): {why}",
                outcome.name,
                cases_path.display(),
                outcome.position
            ))),
        }
    }
    out.line(format!("{passed} passed, {failed} failed"));
    if failed > 0 {
        bail!("{failed} of {} cases failed", outcomes.len());
    }
    Ok(())
}

fn apply(path: &Path, out: &Output) -> anyhow::Result<()> {
    let text = read(path)?;
    // Checked here first: a policy that does not compile is never written.
    let policy = Policy::from_yaml(&text).map_err(|e| located(path, &e))?;
    for warning in policy.warnings() {
        out.warn(format!("{}:{warning}", path.display()));
    }
    let home = super::kernel::home()?;
    let target = home.policy();
    let previous =
        std::fs::read(&target).with_context(|| format!("cannot read `{}`", target.display()))?;
    // Written by the operator, who owns it, before the kernel swaps: the kernel never writes
    // its own policy (under the warden it may only read it).
    write_like(&target, text.as_bytes())?;
    let event = match super::kernel::call(&ControlRequest::PolicyApply { text }, out) {
        Ok(event @ ControlEvent::PolicyApplied { .. }) => event,
        refused => {
            write_like(&target, &previous).context("cannot restore the previous policy file")?;
            refused?;
            bail!("unexpected answer from the kernel");
        }
    };
    let ControlEvent::PolicyApplied { sha256, rules, .. } = event else {
        bail!("unexpected answer from the kernel");
    };
    out.json(
        &json!({"ok": true, "file": path.display().to_string(), "sha256": sha256, "rules": rules}),
    );
    out.line(sanitize(&format!(
        "{}: applied ({rules} rules, sha256 {sha256}); it decides the next call",
        path.display()
    )));
    Ok(())
}

/// Replaces `target` atomically, keeping its mode and group (the kernel reads it through its
/// group under the warden).
fn write_like(target: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let before = std::fs::metadata(target).ok();
    p3ak_crypto::write_private(target, bytes)
        .with_context(|| format!("cannot write `{}`", target.display()))?;
    if let Some(before) = before {
        std::os::unix::fs::chown(target, None, Some(before.gid()))
            .with_context(|| format!("cannot keep the group of `{}`", target.display()))?;
        std::fs::set_permissions(
            target,
            std::fs::Permissions::from_mode(before.mode() & 0o7777),
        )
        .with_context(|| format!("cannot keep the mode of `{}`", target.display()))?;
    }
    Ok(())
}

fn grants(out: &Output) -> anyhow::Result<()> {
    let ControlEvent::Grants { items, now } = super::kernel::call(&ControlRequest::GrantList, out)?
    else {
        bail!("unexpected answer from the kernel");
    };
    out.json(&json!({"grants": items, "now": now}));
    if items.is_empty() {
        out.line("no remembered approvals (`p3ak approve ID --remember ARG --for 30d` makes one)");
    }
    for grant in &items {
        let pinned: Vec<String> = grant
            .args
            .iter()
            .map(|(path, value)| format!("{path}={value}"))
            .collect();
        let state = if grant.live_at(now) {
            "until"
        } else {
            "expired"
        };
        out.line(sanitize(&format!(
            "{}  {}  level {}  {} {}  ({} approval `{}`)",
            grant.id,
            grant.action,
            grant.level,
            state,
            crate::output::timestamp_ms(grant.expires_at.saturating_mul(1000)),
            grant.agent,
            grant.approval,
        )));
        if !pinned.is_empty() {
            out.line(sanitize(&format!("    for {}", pinned.join(", "))));
        }
    }
    Ok(())
}

fn revoke(id: &str, out: &Output) -> anyhow::Result<()> {
    let event = super::kernel::call(&ControlRequest::GrantRevoke { id: id.to_owned() }, out)?;
    let ControlEvent::Done { message } = event else {
        bail!("unexpected answer from the kernel");
    };
    out.json(&json!({"ok": true, "message": message}));
    out.line(sanitize(&message));
    Ok(())
}

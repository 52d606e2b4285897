//! `p3ak doctor`: the host's and the home's checks (`p3ak_kernel::doctor`), plus the
//! embedding model's, as a table or JSON; exit 1 when any check fails.

use p3ak_embed::InstallError;
use p3ak_kernel::doctor::{Check, Status};
use p3ak_kernel::home::Home;
use serde_json::json;

use crate::output::{Output, Reported, sanitize};

pub fn run(out: &Output) -> anyhow::Result<()> {
    let home = super::kernel::home()?;
    let mut checks = p3ak_kernel::doctor::run(&home);
    // Beside the other home checks, before the audit log's.
    let at = checks
        .iter()
        .position(|c| c.name == "audit")
        .unwrap_or(checks.len());
    checks.insert(at, model(&home));
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    out.json(&json!({
        "home": home.root().display().to_string(),
        "ok": failed.is_empty(),
        "checks": checks,
    }));
    if !out.is_json() {
        print_table(&checks, out);
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Reported(format!(
        "{} check{} failed: {}",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        failed.join(", ")
    ))
    .into())
}

fn print_table(checks: &[Check], out: &Output) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        let status = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        out.line(format!(
            "{status}  {:<width$}  {}",
            check.name,
            sanitize(&check.detail)
        ));
        if let Some(fix) = &check.fix {
            out.line(format!("      {:<width$}  fix: {}", "", sanitize(fix)));
        }
    }
}

/// Whether the embedding model is installed in the home (what `p3ak models status` says,
/// without re-hashing: that is `p3ak models status --verify`).
fn model(home: &Home) -> Check {
    let models = home.models();
    match p3ak_embed::installed(&models) {
        Ok(Some(model)) => Check::ok(
            "model",
            format!(
                "all-MiniLM-L6-v2 installed in `{}` ({} files)",
                model.dir.display(),
                model.manifest.files.len()
            ),
        ),
        Ok(None) => Check::warn(
            "model",
            format!(
                "the embedding model is not installed (in `{}`): semantic and hybrid search need it",
                models.join(p3ak_embed::INSTALL_DIR).display()
            ),
            "`p3ak models install`",
        ),
        Err(e @ InstallError::Damaged { .. }) => {
            Check::fail("model", e.to_string(), "`p3ak models install` replaces it")
        }
        Err(e) => Check::fail(
            "model",
            e.to_string(),
            "`p3ak models remove`, then `p3ak models install`",
        ),
    }
}

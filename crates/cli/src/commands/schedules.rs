//! `p3ak schedules`: the running kernel's schedules, their next and last runs.

use anyhow::bail;
use serde_json::json;

use p3ak_kernel::control::{ControlEvent, ControlRequest};

use crate::output::{Output, sanitize, timestamp_ms};

pub fn run(out: &Output) -> anyhow::Result<()> {
    let ControlEvent::Schedules { items } = super::kernel::call(&ControlRequest::Schedules, out)?
    else {
        bail!("unexpected answer from the kernel");
    };
    out.json(&json!({ "schedules": items }));
    if items.is_empty() {
        out.line("no schedules configured (see docs/operations.md, \"Schedules\")");
    }
    for s in &items {
        let next = match (s.enabled, s.next_ms) {
            (false, _) => "disabled".to_owned(),
            (true, Some(ms)) => format!("next {}", timestamp_ms(ms)),
            (true, None) => "no next run".to_owned(),
        };
        let last = s.last.as_ref().map_or_else(
            || "never run".to_owned(),
            |l| {
                format!(
                    "last {}{}: {}",
                    timestamp_ms(l.started_ms),
                    if l.catch_up { " (catch-up)" } else { "" },
                    l.outcome
                )
            },
        );
        out.line(sanitize(&format!(
            "{}  {}  agent {}  {next}  {last}{}",
            s.name,
            s.timing,
            s.agent,
            s.deliver
                .as_deref()
                .map_or_else(String::new, |d| format!("  deliver {d}")),
        )));
    }
    Ok(())
}

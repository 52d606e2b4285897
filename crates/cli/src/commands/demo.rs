//! `p3ak demo`: the kernel's story, offline, on a temporary home that is removed afterwards
//! (`p3ak_kernel::demo` runs it; this prints it).

use std::sync::Arc;

use p3ak_kernel::demo::{self, DemoEvent};

use crate::output::{Output, sanitize};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which story: `injection` (the default: an injected mail in memory, a loopback API) or
    /// `mail` (an injected mail in a real Dovecot inbox, replies through a real SMTP server,
    /// an undo window; needs `dovecot-imapd` and Python's `aiosmtpd`).
    #[arg(value_enum, default_value_t = Story::Injection)]
    story: Story,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Story {
    Injection,
    Mail,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    // The operator's answers go to the approval daemon directly, never through the kernel.
    let operator: Arc<demo::Operator> = Arc::new(|hitl, call| {
        use p3ak_hitl::operator::{OperatorAnswer, OperatorRequest};
        let request = match call {
            demo::OperatorCall::Pending => OperatorRequest::Pending,
            demo::OperatorCall::Deny { id } => OperatorRequest::Deny { id },
            demo::OperatorCall::Approve { id } => OperatorRequest::Approve {
                id,
                pin: None,
                totp: None,
                remember: None,
            },
            demo::OperatorCall::PullBack { id } => OperatorRequest::PullBack { id },
        };
        match p3ak_hitl::operator::call(&p3ak_hitl::operator::socket_path(hitl), &request).ok()? {
            OperatorAnswer::Pending { items } => Some(demo::OperatorReply::Pending(
                items
                    .into_iter()
                    .map(|item| demo::DeskItem {
                        approved: matches!(item.stage, p3ak_hitl::desk::Stage::Approved { .. }),
                        request: item.request,
                    })
                    .collect(),
            )),
            OperatorAnswer::Done { .. } => Some(demo::OperatorReply::Done),
            _ => None,
        }
    });
    let story = match args.story {
        Story::Injection => demo::run,
        Story::Mail => demo::run_mail,
    };
    let steps = story(
        std::env::current_exe()?,
        operator,
        &mut |event| match event {
            DemoEvent::Degraded(missing) => out.warn(format_args!(
                "sandbox degraded for the demo: {} (run as root for the full sandbox)",
                missing.join("; ")
            )),
            DemoEvent::Step(step) => out.line(format_args!(
                "[{:>9}] {}",
                step.step,
                sanitize(&step.detail)
            )),
            DemoEvent::AuditTrail(entries) if !out.is_json() => {
                out.line("audit trail:");
                for e in entries {
                    out.line(format_args!(
                        "  {:>4} {:<20} {}",
                        e.seq,
                        e.kind,
                        sanitize(&summary(&e.payload))
                    ));
                }
            }
            DemoEvent::AuditTrail(_) => {}
        },
    )?;
    out.json(&serde_json::json!({"ok": true, "steps": steps}));
    Ok(())
}

/// An audit entry's payload in one line: the fields that tell the story.
fn summary(payload: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for key in [
        "plugin", "agent", "action", "call", "decision", "id", "reason", "text", "content",
    ] {
        if let Some(v) = payload.get(key) {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            parts.push(format!(
                "{key}={}",
                text.chars().take(70).collect::<String>()
            ));
        }
    }
    if let Some(v) = payload.get("verdict") {
        parts.push(format!(
            "verdict={} rules={}",
            v["decision"].as_str().unwrap_or("?"),
            v["rules"]
        ));
    }
    parts.join(" ")
}

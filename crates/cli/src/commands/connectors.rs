//! `p3ak connectors`: the chat connectors of the running kernel, and who may talk through them.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use p3ak_kernel::control::{ControlEvent, ControlRequest};

use crate::output::{Output, sanitize};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Each connector: connected, its agent, messages, errors, pairings; and the codes waiting.
    Status,
    /// Pair the chat identity that was shown CODE (without CODE: the codes waiting). The
    /// paired identity may then talk to the agents, and (unless --no-approve) approve level-1
    /// actions with the chat's buttons.
    Pair {
        /// The code the assistant showed them (`7G4K-Q2MD`).
        code: Option<String>,
        /// Let them talk, not approve.
        #[arg(long)]
        no_approve: bool,
    },
    /// End a pairing (`telegram:7`).
    Unpair {
        /// The identity.
        identity: String,
    },
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Status => status(out, true),
        Command::Pair { code: None, .. } => status(out, false),
        Command::Pair {
            code: Some(code),
            no_approve,
        } => pair(&code, no_approve, out),
        Command::Unpair { identity } => unpair(&identity, out),
    }
}

fn status(out: &Output, everything: bool) -> anyhow::Result<()> {
    let ControlEvent::Connectors {
        items,
        paired,
        waiting,
    } = super::kernel::call(&ControlRequest::Connectors, out)?
    else {
        bail!("unexpected answer from the kernel");
    };
    out.json(&json!({"connectors": items, "paired": paired, "waiting": waiting}));
    if everything {
        if items.is_empty() {
            out.line("no connectors configured (see README: talk to it from Telegram)");
        }
        for c in &items {
            let last = c
                .last_event_ms
                .map_or_else(|| "never".to_owned(), crate::output::timestamp_ms);
            out.line(sanitize(&format!(
                "{}  {}  {}  agent {}  {} messages (last {last})  {} errors  {} paired  {} restarts",
                c.name,
                c.platform.as_deref().unwrap_or("third-party"),
                if c.connected { "connected" } else { &c.state },
                c.agent,
                c.messages,
                c.errors,
                c.paired,
                c.restarts,
            )));
            if let Some(error) = &c.last_error {
                out.line(sanitize(&format!("    last error: {error}")));
            }
        }
        for p in &paired {
            out.line(sanitize(&format!(
                "paired {}  {}  since {}",
                p.identity,
                p.name.as_deref().unwrap_or(""),
                crate::output::timestamp_ms(p.paired_at_ms)
            )));
        }
    }
    if waiting.is_empty() && !everything {
        out.line("no pairing codes waiting: ask them to write to the assistant first");
    }
    for w in &waiting {
        out.line(sanitize(&format!(
            "code {}  {}  {}  expires in {}s",
            w.code,
            w.identity,
            w.name.as_deref().unwrap_or(""),
            w.expires_in_secs
        )));
    }
    Ok(())
}

fn pair(code: &str, no_approve: bool, out: &Output) -> anyhow::Result<()> {
    let ControlEvent::Paired(paired) = super::kernel::call(
        &ControlRequest::Pair {
            code: code.to_owned(),
        },
        out,
    )?
    else {
        bail!("unexpected answer from the kernel");
    };
    let approver = if no_approve {
        false
    } else {
        let socket = p3ak_hitl::operator::socket_path(&super::kernel::home()?.hitl());
        p3ak_hitl::operator::add_approver(&socket, &paired.identity)?;
        true
    };
    out.json(&json!({"paired": paired, "approver": approver}));
    out.line(sanitize(&format!(
        "paired {}{}{}",
        paired.identity,
        paired
            .name
            .as_deref()
            .map_or_else(String::new, |n| format!(" ({n})")),
        if approver {
            "; they can approve level-1 actions with the chat's buttons"
        } else {
            ""
        }
    )));
    Ok(())
}

fn unpair(identity: &str, out: &Output) -> anyhow::Result<()> {
    let event = super::kernel::call(
        &ControlRequest::Unpair {
            identity: identity.to_owned(),
        },
        out,
    )?;
    let ControlEvent::Done { message } = event else {
        bail!("unexpected answer from the kernel");
    };
    let socket = p3ak_hitl::operator::socket_path(&super::kernel::home()?.hitl());
    let removed = matches!(
        p3ak_hitl::operator::call(
            &socket,
            &p3ak_hitl::operator::OperatorRequest::ApproversRemove {
                id: identity.to_owned()
            },
        )?,
        p3ak_hitl::operator::OperatorAnswer::Done { .. }
    );
    out.json(&json!({"ok": true, "message": message, "approver_removed": removed}));
    out.line(sanitize(&message));
    Ok(())
}

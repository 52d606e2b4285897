//! `p3ak board`: a board meeting of the running kernel's agents.

use anyhow::bail;
use p3ak_kernel::control::{self, ControlEvent, ControlRequest};

use crate::output::{Output, sanitize, sanitize_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question for the board.
    question: String,
    /// A member to ask (repeatable); none: `members` in agents/board.toml, else every agent
    /// with a provider but the board and the router.
    #[arg(long = "member", value_name = "AGENT")]
    members: Vec<String>,
    /// The conversation the meeting belongs to.
    #[arg(long, default_value = "board")]
    conversation: String,
}

pub fn run(args: Args, out: &Output) -> anyhow::Result<()> {
    let home = super::kernel::home()?;
    let request = ControlRequest::Board {
        question: args.question,
        members: args.members,
        conversation: args.conversation,
    };
    let event = control::call(&home.control_socket(), &request, |event| match event {
        // The synthesis is printed whole at the end, with the members' lines.
        ControlEvent::Chunk { .. } => {}
        ControlEvent::Notice { text } | ControlEvent::Approval { text, .. } if !out.is_json() => {
            out.warn(sanitize(text));
        }
        _ => {}
    })?;
    match event {
        ControlEvent::Board(report) if out.is_json() => out.json(&report),
        ControlEvent::Board(report) => out.line(sanitize_text(&report.text())),
        ControlEvent::Error { message } => bail!("{message}"),
        _ => bail!("unexpected answer from the kernel"),
    }
    Ok(())
}

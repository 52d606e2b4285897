//! `p3ak bus`: the running kernel's state bus, read by the owner.

use anyhow::bail;
use p3ak_kernel::control::{self, ControlEvent, ControlRequest};

use crate::output::{Output, sanitize};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The newest events, oldest first (`--json`: as a JSON array).
    Tail {
        /// How many.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// A topic, a prefix ending in `.*`, or `*`.
        #[arg(long, default_value = "*")]
        topic: String,
    },
    /// Every event (after `--after SEQ`) as JSON lines on stdout.
    Export {
        /// A topic, a prefix ending in `.*`, or `*`.
        #[arg(long, default_value = "*")]
        topic: String,
        /// Only events after this sequence number.
        #[arg(long)]
        after: Option<u64>,
    },
}

/// Events fetched per control request while exporting.
const PAGE: usize = 500;

fn fetch(request: &ControlRequest) -> anyhow::Result<Vec<p3ak_kernel::bus::Event>> {
    let home = super::kernel::home()?;
    match control::call(&home.control_socket(), request, |_| {})? {
        ControlEvent::Bus { events } => Ok(events),
        ControlEvent::Error { message } => bail!("{message}"),
        _ => bail!("unexpected answer from the kernel"),
    }
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Tail { n, topic } => {
            let events = fetch(&ControlRequest::Bus {
                topic,
                after: None,
                limit: n.max(1),
                newest: true,
            })?;
            out.json(&events);
            for e in &events {
                out.line(format!(
                    "{:>6}  {}  {}  {}",
                    e.seq,
                    sanitize(&e.topic),
                    sanitize(&e.agent),
                    sanitize(&e.data.to_string())
                ));
            }
        }
        Command::Export { topic, mut after } => loop {
            let events = fetch(&ControlRequest::Bus {
                topic: topic.clone(),
                after,
                limit: PAGE,
                newest: false,
            })?;
            for e in &events {
                let mut line = serde_json::to_vec(e)?;
                line.push(b'\n');
                out.bytes(&line)?;
            }
            match events.last() {
                Some(last) if events.len() == PAGE => after = Some(last.seq),
                _ => break,
            }
        },
    }
    Ok(())
}

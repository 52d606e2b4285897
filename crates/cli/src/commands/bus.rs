//! `p3ak bus`: the state bus, read by the owner — from the running kernel, or from its vault
//! (with the passphrase) while it is stopped.

use anyhow::bail;
use p3ak_kernel::bus::{self, Event, TopicPattern};
use p3ak_kernel::control::{self, ControlEvent, ControlRequest};

use super::kernel::{Answer, ask_or_open};
use crate::output::{Output, sanitize};
use crate::secrets::PassphraseArgs;

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
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Every event (after `--after SEQ`) as JSON lines on stdout.
    Export {
        /// A topic, a prefix ending in `.*`, or `*`.
        #[arg(long, default_value = "*")]
        topic: String,
        /// Only events after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

/// Events fetched per control request while exporting from the running kernel.
const PAGE: usize = 500;

fn events(event: ControlEvent) -> anyhow::Result<Vec<Event>> {
    match event {
        ControlEvent::Bus { events } => Ok(events),
        ControlEvent::Error { message } => bail!("{message}"),
        _ => bail!("unexpected answer from the kernel"),
    }
}

fn write_lines(events: &[Event], out: &Output) -> anyhow::Result<()> {
    for e in events {
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        out.bytes(&line)?;
    }
    Ok(())
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Tail {
            n,
            topic,
            passphrase,
        } => {
            let pattern = TopicPattern::parse(&topic)?;
            let limit = n.max(1);
            let request = ControlRequest::Bus {
                topic,
                after: None,
                limit,
                newest: true,
            };
            let events = match ask_or_open(&request, &passphrase)? {
                Answer::Kernel(event) => events(event)?,
                Answer::Stopped(vault) => bus::read(&vault, &pattern, None, limit, true)?,
            };
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
        Command::Export {
            topic,
            mut after,
            passphrase,
        } => {
            let pattern = TopicPattern::parse(&topic)?;
            let page = |after| ControlRequest::Bus {
                topic: topic.clone(),
                after,
                limit: PAGE,
                newest: false,
            };
            let mut batch = match ask_or_open(&page(after), &passphrase)? {
                Answer::Kernel(event) => events(event)?,
                Answer::Stopped(vault) => {
                    let all = bus::read(&vault, &pattern, after, usize::MAX, false)?;
                    return write_lines(&all, out);
                }
            };
            let socket = super::kernel::home()?.control_socket();
            loop {
                write_lines(&batch, out)?;
                match batch.last() {
                    Some(last) if batch.len() == PAGE => after = Some(last.seq),
                    _ => break,
                }
                batch = events(control::call(&socket, &page(after), |_| {})?)?;
            }
        }
    }
    Ok(())
}

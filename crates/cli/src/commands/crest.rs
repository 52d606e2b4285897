//! `p3ak crest`: goals worked through CREST's five phases (docs/crest.md).

use anyhow::bail;
use p3ak_kernel::control::{ControlEvent, ControlRequest};
use p3ak_kernel::crest::{self, Goal, Phase, PhaseReport};

use super::kernel::{Answer, ask_or_open, call_streaming};
use crate::output::{Output, sanitize, sanitize_text, timestamp_ms};
use crate::secrets::PassphraseArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start a goal and run its Focus phase (the agent states it with a measure).
    Start {
        /// The goal, in your words ("cut the shop's monthly costs by 10% by June").
        goal: String,
        /// Its id (default: from its first words); its bus topics are `crest.ID.*`.
        #[arg(long)]
        id: Option<String>,
        /// The agent that works on it (default: the default agent).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Run a goal's next phase, or the one `--phase` names.
    Next {
        /// The goal's id.
        goal: String,
        /// A note for this phase (this month's figure, what changed).
        note: Option<String>,
        /// Run this phase instead of the next: focus, obstacle, routines, gradient, evolve.
        #[arg(long, value_parser = parse_phase)]
        phase: Option<Phase>,
    },
    /// Where the goals stand; with GOAL, that one with each phase's latest output. Works
    /// while the kernel is stopped too (with the passphrase).
    Status {
        /// A goal's id.
        goal: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    text.parse().map_err(|e: crest::CrestError| e.to_string())
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Start { goal, id, agent } => {
            let request = ControlRequest::CrestStart { goal, id, agent };
            phase(&request, out)
        }
        Command::Next { goal, note, phase } => {
            let request = ControlRequest::CrestNext {
                id: goal,
                phase,
                note,
            };
            self::phase(&request, out)
        }
        Command::Status { goal, passphrase } => {
            let request = ControlRequest::CrestStatus { id: goal.clone() };
            let goals = match ask_or_open(&request, &passphrase)? {
                Answer::Kernel(ControlEvent::Crest { goals }) => goals,
                Answer::Kernel(_) => bail!("unexpected answer from the kernel"),
                Answer::Stopped(vault) => match &goal {
                    None => crest::list(&vault)?,
                    Some(id) => vec![
                        crest::load(&vault, id)?
                            .ok_or_else(|| crest::CrestError::Unknown(id.clone()))?,
                    ],
                },
            };
            if out.is_json() {
                match &goal {
                    Some(_) => out.json(&goals.first()),
                    None => out.json(&goals),
                }
            } else if goal.is_some() {
                for g in &goals {
                    detail(g, out);
                }
            } else if goals.is_empty() {
                out.line("no goals: start one with `p3ak crest start \"your goal\"`");
            } else {
                for g in &goals {
                    out.line(summary_line(g));
                }
            }
            Ok(())
        }
    }
}

/// Runs a phase: the agent's reply as it comes, then where the goal stands.
fn phase(request: &ControlRequest, out: &Output) -> anyhow::Result<()> {
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin()) && !out.is_json();
    let (event, streamed) = call_streaming(request, out, interactive)?;
    let ControlEvent::CrestPhase(report) = event else {
        bail!("unexpected answer from the kernel");
    };
    if out.is_json() {
        out.json(&report);
        return Ok(());
    }
    if !streamed {
        out.line(sanitize_text(&report.reply));
    }
    out.line("");
    out.line(outcome(&report));
    Ok(())
}

/// One line on what a phase run did to its goal.
fn outcome(report: &PhaseReport) -> String {
    let g = &report.goal;
    let id = sanitize(&g.id);
    if !report.missing.is_empty() {
        return format!(
            "crest {id}: {} is not complete (the reply had no {} line); `p3ak crest next {id}` \
             runs it again",
            report.phase,
            report
                .missing
                .iter()
                .map(|m| format!("`{m}:`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    match g.next {
        Some(next) => format!(
            "crest {id}: {} done; next: {next} (cycle {}), with `p3ak crest next {id}`",
            report.phase, g.cycle
        ),
        None => format!("crest {id}: {} done; the goal is closed", report.phase),
    }
}

fn next_label(g: &Goal) -> String {
    g.next
        .map_or_else(|| "done".to_owned(), |p| p.as_str().to_owned())
}

fn progress_label(g: &Goal) -> String {
    let Some(m) = &g.measure else {
        return "no measure yet".to_owned();
    };
    let latest = g.readings.last().map(|r| r.value);
    let mut text = match latest {
        Some(v) => format!("{v} → {} {}", m.target, sanitize(&m.name)),
        None => format!("target {} {}", m.target, sanitize(&m.name)),
    };
    if let Some(p) = g.progress() {
        text.push_str(&format!(" ({:.0}%)", p * 100.0));
    }
    text
}

fn summary_line(g: &Goal) -> String {
    format!(
        "{}  [{}]  cycle {}, next: {}  {}\n    {}",
        sanitize(&g.id),
        sanitize(&g.agent),
        g.cycle,
        next_label(g),
        progress_label(g),
        sanitize(&g.goal)
    )
}

fn detail(g: &Goal, out: &Output) {
    out.line(format_args!(
        "goal {} — worked by {}, started {}",
        sanitize(&g.id),
        sanitize(&g.agent),
        timestamp_ms(g.created_ms)
    ));
    out.line(format_args!("  {}", sanitize(&g.goal)));
    out.line(format_args!("cycle {}; next: {}", g.cycle, next_label(g)));
    if let Some(m) = &g.measure {
        let baseline = m
            .baseline
            .map_or_else(|| "unknown".to_owned(), |b| b.to_string());
        let by =
            m.by.as_deref()
                .map_or_else(String::new, |b| format!(" by {}", sanitize(b)));
        out.line(format_args!(
            "measure: {}: baseline {baseline}, target {}{by}",
            sanitize(&m.name),
            m.target
        ));
    }
    if let Some(o) = &g.obstacle {
        out.line(format_args!("obstacle: {}", sanitize(o)));
    }
    if !g.routines.is_empty() {
        out.line("routines:");
        for r in &g.routines {
            out.line(format_args!("  - {}", sanitize(r)));
        }
    }
    if !g.readings.is_empty() {
        let readings = g
            .readings
            .iter()
            .map(|r| format!("cycle {}: {}", r.cycle, r.value))
            .collect::<Vec<_>>()
            .join(", ");
        out.line(format_args!("readings: {readings}  {}", progress_label(g)));
    }
    for e in g.latest() {
        let first = e.reply.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let mut first = sanitize(first);
        if first.chars().count() > 100 {
            first = first.chars().take(100).collect::<String>() + "…";
        }
        let missing = if e.missing.is_empty() {
            String::new()
        } else {
            format!(" (incomplete: no {})", e.missing.join(", "))
        };
        out.line(format_args!(
            "  {} (cycle {}, {}){missing}: {first}",
            e.phase,
            e.cycle,
            timestamp_ms(e.time_ms)
        ));
    }
}

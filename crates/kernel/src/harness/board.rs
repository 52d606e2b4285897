//! Board meetings: one question to several agents at once, each on its own road, then the
//! board agent's synthesis.
//!
//! The kernel, not the board's model, convenes the meeting: it proposes one `agents.ask` per
//! member as the board agent (the policy decides each, like any call), runs them all at once,
//! and hands the answers to the board's model as the results of those calls. A member that
//! times out, fails or is refused is a result saying so, so the synthesis can say so too; the
//! report keeps every member's answer, status and token cost beside the synthesis.

use std::time::{Duration, Instant};

use p3ak_proto::{Inbound, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{AGENTS, Chain, Scope, TurnPlan, within};
use crate::KernelError;
use crate::audit::AuditEvent;
use crate::control::ControlEvent;
use crate::kernel::Kernel;
use crate::proposal::tool_name;
use crate::road::Outcome;

/// The agent that chairs board meetings (`agents/board.toml`).
pub const BOARD: &str = "board";

/// The agent that routes messages, which a board meeting does not ask by default.
pub const ROUTER: &str = "amber";

/// How one member's part ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// It answered.
    Answered,
    /// It did not answer within `agents.board_timeout`.
    TimedOut,
    /// The policy (or a person) did not let the board ask it.
    NotPermitted,
    /// Its turn failed (its model, its provider, a limit).
    Failed,
}

impl MemberStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::TimedOut => "timed out",
            Self::NotPermitted => "not permitted",
            Self::Failed => "failed",
        }
    }
}

/// One member's part of a meeting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberReport {
    /// The agent.
    pub agent: String,
    /// How its part ended.
    pub status: MemberStatus,
    /// Its answer, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why it gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The tokens its turn used.
    pub usage: Usage,
    /// How long it took, in milliseconds (until it was given up on, when it timed out).
    pub elapsed_ms: u64,
}

/// A meeting's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardReport {
    /// The question.
    pub question: String,
    /// Every member's part, in the order they were asked.
    pub members: Vec<MemberReport>,
    /// The board's synthesis.
    pub synthesis: String,
    /// The tokens the synthesis used.
    pub board_usage: Usage,
    /// From the question to the synthesis, in milliseconds.
    pub wall_ms: u64,
}

impl BoardReport {
    /// The synthesis with a line per member: what the person reads.
    #[must_use]
    pub fn text(&self) -> String {
        let mut text = self.synthesis.trim_end().to_owned();
        text.push_str("\n\n— the board:");
        for m in &self.members {
            let tokens = m.usage.input_tokens + m.usage.output_tokens;
            text.push_str(&format!("\n  {}: {}", m.agent, m.status.as_str()));
            if tokens > 0 {
                text.push_str(&format!(" ({tokens} tokens)"));
            }
        }
        let board = self.board_usage.input_tokens + self.board_usage.output_tokens;
        text.push_str(&format!(
            "\n  synthesis: {board} tokens; {:.1} s in all",
            Duration::from_millis(self.wall_ms).as_secs_f64()
        ));
        text
    }
}

/// A request for a board meeting.
pub struct Meeting<'a> {
    /// The question.
    pub question: &'a str,
    /// The members to ask; empty: the board agent's `members`, else every agent with a
    /// provider but the board and the router.
    pub members: &'a [String],
    /// Who asked (the policy's `sender`).
    pub sender: &'a str,
    /// Where they asked (`console`, `telegram`, ...).
    pub channel: &'a str,
    /// The conversation the meeting belongs to.
    pub conversation: &'a str,
}

impl Kernel {
    /// Holds a board meeting: `meeting.question` to every member at once, then the board's
    /// synthesis. `events` gets the synthesis as it streams, and approvals any member needs.
    pub async fn board(
        &self,
        meeting: Meeting<'_>,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<BoardReport, KernelError> {
        let started = Instant::now();
        let Some(board) = self.agents.get(BOARD).cloned() else {
            return Err(KernelError::UnknownAgent(BOARD.to_owned()));
        };
        if meeting.question.trim().is_empty() {
            return Err(KernelError::Board("the question is empty".to_owned()));
        }
        let members = self.members_of(&board, meeting.members)?;
        let ask = format!("{AGENTS}.ask");
        if !board.offers(&ask) {
            return Err(KernelError::Board(format!(
                "the board is not offered `{ask}`: add it to `tools` in agents/{BOARD}.toml"
            )));
        }
        let mut inbound = Inbound::new(
            meeting.conversation.to_owned(),
            meeting.sender.to_owned(),
            meeting.question.to_owned(),
        );
        inbound.agent = Some(BOARD.to_owned());
        let board = self.admit(&inbound, meeting.channel).await?;
        let timeout = self.config.agents.board_timeout;
        let preset: Vec<ToolCall> = members
            .iter()
            .enumerate()
            .map(|(i, member)| ToolCall {
                id: format!("board_{}", i + 1),
                name: tool_name(&ask),
                arguments: serde_json::json!({
                    "agent": member,
                    "task": meeting.question,
                    "timeout_secs": timeout.as_secs().max(1),
                }),
            })
            .collect();
        let limit = self.config.kernel.turn_timeout;
        let held = self
            .relaying(&events, |inner| {
                let scope = Scope::meeting(
                    Chain::top(),
                    &board.name,
                    (inbound.clone(), meeting.channel),
                    inner,
                );
                let mut plan = TurnPlan::answering(&board, &inbound, meeting.channel);
                plan.preset = preset;
                tokio::time::timeout(limit, within(scope, self.run_turn(plan)))
            })
            .await;
        let output = match held {
            Ok(output) => output?,
            Err(_) => {
                self.audit
                    .record(AuditEvent::TurnTimeout {
                        agent: board.name.clone(),
                        conversation: inbound.conversation.clone(),
                    })
                    .await?;
                return Err(KernelError::TurnTimeout(limit));
            }
        };
        let reports: Vec<MemberReport> = members
            .iter()
            .zip(
                output
                    .preset
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(member, outcome)| member_report(member, outcome, timeout))
            .collect();
        let report = BoardReport {
            question: meeting.question.to_owned(),
            members: reports,
            synthesis: output.reply,
            board_usage: output.usage,
            wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.audit
            .record(AuditEvent::BoardMeeting {
                conversation: inbound.conversation.clone(),
                members: report
                    .members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "agent": m.agent,
                            "status": m.status,
                            "input_tokens": m.usage.input_tokens,
                            "output_tokens": m.usage.output_tokens,
                            "elapsed_ms": m.elapsed_ms,
                        })
                    })
                    .collect(),
                board_usage: report.board_usage,
                wall_ms: report.wall_ms,
            })
            .await?;
        Ok(report)
    }

    /// The members a meeting asks: those named, else the board's own list, else every agent
    /// with a provider but the board and the router. At most `agents.max_fanout`.
    fn members_of(
        &self,
        board: &crate::agent::Agent,
        named: &[String],
    ) -> Result<Vec<String>, KernelError> {
        let members: Vec<String> = if !named.is_empty() {
            named.to_vec()
        } else if !board.members.is_empty() {
            board.members.clone()
        } else {
            self.agents
                .values()
                .filter(|a| a.name != BOARD && a.name != ROUTER && a.provider.is_some())
                .map(|a| a.name.clone())
                .collect()
        };
        if let Some(unknown) = members.iter().find(|m| !self.agents.contains_key(*m)) {
            return Err(KernelError::UnknownAgent(unknown.clone()));
        }
        if members.iter().any(|m| m == BOARD) {
            return Err(KernelError::Board(
                "the board cannot be its own member".to_owned(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = members.iter().find(|m| !seen.insert(m.as_str())) {
            return Err(KernelError::Board(format!("`{twice}` is named twice")));
        }
        if members.is_empty() {
            return Err(KernelError::Board(
                "a board meeting needs members: name them, or set `members` in agents/board.toml"
                    .to_owned(),
            ));
        }
        let most = usize::try_from(self.config.agents.max_fanout).unwrap_or(usize::MAX);
        if members.len() > most {
            return Err(KernelError::Board(format!(
                "{} members, over agents.max_fanout ({most})",
                members.len()
            )));
        }
        Ok(members)
    }
}

/// One member's report from how its `agents.ask` ended.
fn member_report(member: &str, outcome: Option<&Outcome>, timeout: Duration) -> MemberReport {
    let gave_up = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let report = |status, detail: Option<String>, elapsed_ms| MemberReport {
        agent: member.to_owned(),
        status,
        answer: None,
        detail,
        usage: Usage::default(),
        elapsed_ms,
    };
    match outcome {
        Some(Outcome::Done(value)) => MemberReport {
            agent: member.to_owned(),
            status: MemberStatus::Answered,
            answer: value
                .get("answer")
                .and_then(|a| a.as_str())
                .map(str::to_owned),
            detail: None,
            usage: value
                .get("usage")
                .cloned()
                .and_then(|u| serde_json::from_value(u).ok())
                .unwrap_or_default(),
            elapsed_ms: value
                .get("elapsed_ms")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default(),
        },
        Some(Outcome::NotPermitted) => report(MemberStatus::NotPermitted, None, 0),
        Some(Outcome::Failed { message, .. }) if message.contains(super::DID_NOT_ANSWER) => {
            report(MemberStatus::TimedOut, Some(message.clone()), gave_up)
        }
        Some(other) => report(MemberStatus::Failed, Some(other.model_text()), 0),
        None => report(
            MemberStatus::Failed,
            Some("the meeting ended before it was asked".to_owned()),
            0,
        ),
    }
}

//! The chat commands: answered by the kernel from its own state, never sent to a model, and
//! none of them can approve anything (approvals are the approval daemon's, through its sealed
//! buttons or its own channels).

use std::sync::Arc;

use p3ak_proto::{Inbound, Message, ToolResult};

use super::reply;
use crate::audit::AuditEvent;
use crate::host::Connection;
use crate::kernel::Kernel;

/// A command a paired person sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Help,
    Status,
    Pending,
    Agents,
    Agent(Option<String>),
    New,
    Stop,
    /// A board meeting on the question that follows.
    Board(String),
    Unknown(String),
}

impl Command {
    /// A message that is a command: it starts with `/` and a word (`/agent@MyBot scout` is
    /// `/agent scout`: the platform's bot suffix is dropped). Anything else is for the agent.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix('/')?;
        if rest.starts_with(char::is_whitespace) {
            return None;
        }
        let mut words = rest.split_whitespace();
        let word = words.next()?;
        let name = word.split('@').next().unwrap_or(word).to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let after_word = rest.get(word.len()..).unwrap_or_default().trim();
        let argument = words.next().map(str::to_owned);
        Some(match name.as_str() {
            "help" | "start" => Self::Help,
            "status" => Self::Status,
            "pending" => Self::Pending,
            "agents" => Self::Agents,
            "agent" => Self::Agent(argument),
            "new" | "reset" => Self::New,
            "stop" | "cancel" => Self::Stop,
            "board" => Self::Board(after_word.to_owned()),
            _ => Self::Unknown(name),
        })
    }

    fn name(&self) -> String {
        match self {
            Self::Help => "help".to_owned(),
            Self::Status => "status".to_owned(),
            Self::Pending => "pending".to_owned(),
            Self::Agents => "agents".to_owned(),
            Self::Agent(_) => "agent".to_owned(),
            Self::New => "new".to_owned(),
            Self::Stop => "stop".to_owned(),
            Self::Board(_) => "board".to_owned(),
            Self::Unknown(name) => name.clone(),
        }
    }
}

const HELP: &str = "Commands:\n\
/status — the assistant's state\n\
/pending — what waits for approval\n\
/agents — the agents here\n\
/agent NAME — talk to another agent in this chat\n\
/new — start a fresh conversation\n\
/stop — stop the reply being written\n\
/board QUESTION — ask the board: several agents at once, then a synthesis\n\
/help — this list\n\
Anything else goes to the agent. Approvals come as their own messages with buttons.";

impl Kernel {
    /// Runs a command and answers it in the conversation.
    pub(super) async fn command(
        self: &Arc<Self>,
        connection: &Arc<Connection>,
        inbound: &Inbound,
        command: Command,
    ) -> Message {
        let connector = connection.name().to_owned();
        self.audit
            .record(AuditEvent::ConnectorCommand {
                connector: connector.clone(),
                sender: inbound.sender.clone(),
                conversation: inbound.conversation.clone(),
                command: command.name(),
            })
            .await
            .ok();
        let agent = inbound
            .agent
            .clone()
            .unwrap_or_else(|| self.config.kernel.default_agent.clone());
        let text = match command {
            Command::Help => match self.skills.help_lines(&agent) {
                skills if skills.is_empty() => HELP.to_owned(),
                skills => format!("{HELP}\nThe skills' commands:{skills}"),
            },
            Command::Status => {
                let status = self.status();
                let running = self
                    .host
                    .status()
                    .iter()
                    .filter(|p| p.state == crate::host::PluginState::Running)
                    .count();
                format!(
                    "Agent here: {agent}\nPlugins running: {running} of {}\nWaiting for \
                     approval: {}\nTokens used since start: {} in, {} out",
                    status.plugins.len(),
                    status.pending,
                    status.usage.input_tokens,
                    status.usage.output_tokens
                )
            }
            Command::Pending => match self.pending.len() {
                0 => "Nothing waits for approval.".to_owned(),
                n => format!(
                    "{n} action(s) wait for approval. The approvers got each as a message \
                     with its buttons; `p3ak pending` on the machine lists them."
                ),
            },
            Command::Agents => {
                let names: Vec<String> = self
                    .agents
                    .keys()
                    .map(|name| {
                        if *name == agent {
                            format!("{name} (here)")
                        } else {
                            name.clone()
                        }
                    })
                    .collect();
                format!("Agents: {}", names.join(", "))
            }
            Command::Agent(None) => format!("Agent here: {agent}. /agent NAME switches."),
            Command::Agent(Some(name)) => {
                if self.agents.contains_key(&name) {
                    if let Ok(mut routes) = self.connectors.routes.lock() {
                        routes.insert(inbound.conversation.clone(), name.clone());
                    }
                    format!("Now talking to {name}.")
                } else {
                    format!("No agent `{name}`. /agents lists them.")
                }
            }
            Command::New => {
                let vault = Arc::clone(&self.vault);
                let conversation = inbound.conversation.clone();
                let agent_name = agent.clone();
                let cleared = tokio::task::spawn_blocking(move || {
                    crate::session::clear(&vault, &agent_name, &conversation)
                })
                .await;
                match cleared {
                    Ok(Ok(())) => {
                        "Started afresh: the earlier messages are forgotten here.".to_owned()
                    }
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(e) => format!("error: {e}"),
                }
            }
            Command::Stop => {
                let stopped = self.stop_turn(&inbound.conversation);
                if stopped {
                    self.audit
                        .record(AuditEvent::TurnStopped {
                            agent: agent.clone(),
                            conversation: inbound.conversation.clone(),
                            by: inbound.sender.clone(),
                        })
                        .await
                        .ok();
                    "Stopped.".to_owned()
                } else {
                    "Nothing is running.".to_owned()
                }
            }
            Command::Board(question) if question.is_empty() => {
                "Ask the board a question: /board QUESTION".to_owned()
            }
            Command::Board(question) => {
                // A meeting takes a while: its report comes as its own message.
                let kernel = Arc::clone(self);
                let connection = Arc::clone(connection);
                let (sender, conversation) = (inbound.sender.clone(), inbound.conversation.clone());
                tokio::spawn(async move {
                    let meeting = crate::harness::Meeting {
                        question: &question,
                        members: &[],
                        sender: &sender,
                        channel: connection.name(),
                        conversation: &conversation,
                    };
                    let (events, mut notices) = tokio::sync::mpsc::unbounded_channel();
                    // Approvals reach their approvers through the daemon; the meeting's
                    // streamed text is not posted piecemeal.
                    tokio::spawn(async move { while notices.recv().await.is_some() {} });
                    let text = match kernel.board(meeting, events).await {
                        Ok(report) => report.text(),
                        Err(e) => format!("The board could not meet: {e}"),
                    };
                    reply::post(&connection, &conversation, &text).await;
                });
                "The board is meeting; its answer follows.".to_owned()
            }
            Command::Unknown(name) => format!("Unknown command /{name}. /help lists them."),
        };
        reply::post(connection, &inbound.conversation, &text).await;
        Message::Result(ToolResult {
            output: serde_json::json!({"accepted": true, "command": true}),
        })
    }

    /// Aborts the conversation's running turn; whether one ran.
    fn stop_turn(&self, conversation: &str) -> bool {
        let Ok(lanes) = self.connectors.lanes.lock() else {
            return false;
        };
        let Some(lane) = lanes.get(conversation) else {
            return false;
        };
        let Ok(mut running) = lane.running.lock() else {
            return false;
        };
        running.take().is_some_and(|handle| {
            handle.abort();
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leading_slash_word_is_a_command() {
        assert_eq!(Command::parse("/help"), Some(Command::Help));
        assert_eq!(Command::parse("  /STOP "), Some(Command::Stop));
        assert_eq!(
            Command::parse("/agent@MyBot scout"),
            Some(Command::Agent(Some("scout".to_owned())))
        );
        assert_eq!(
            Command::parse("/approve 3f9a"),
            Some(Command::Unknown("approve".to_owned()))
        );
        for text in [
            "please /stop and approve everything",
            "hello",
            "/",
            "/ stop",
            "//stop",
            "/rm -rf",
        ] {
            let parsed = Command::parse(text);
            assert!(
                parsed.is_none() || matches!(parsed, Some(Command::Unknown(_))),
                "{text}: {parsed:?}"
            );
        }
        assert_eq!(Command::parse("please /stop"), None);
        assert_eq!(
            Command::parse("/board@MyBot  should we  move? "),
            Some(Command::Board("should we  move?".to_owned()))
        );
        assert_eq!(
            Command::parse("/board"),
            Some(Command::Board(String::new()))
        );
    }

    #[test]
    fn skills_may_claim_exactly_the_commands_the_kernel_does_not_answer() {
        for name in crate::skills::BUILTIN_COMMANDS {
            let parsed = Command::parse(&format!("/{name}"));
            assert!(
                !matches!(parsed, Some(Command::Unknown(_)) | None),
                "/{name} is no built-in command"
            );
        }
        for name in ["report", "approve", "board_meeting"] {
            assert_eq!(
                Command::parse(&format!("/{name} x")),
                Some(Command::Unknown(name.to_owned()))
            );
        }
    }
}

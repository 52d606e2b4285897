//! `p3ak-plugins`: the first-party plugins, each run by the kernel as its own process with
//! `p3ak plugin run <name>`. They are written against `p3ak-sdk` exactly as a third party's
//! would be.
//!
//! | name | kind | actions |
//! |---|---|---|
//! | `files` | tool | `read`, `write`, `list` inside the agent's workspace |
//! | `shell` | tool | `run` a command in the agent's workspace |
//! | `skills` | tool | `load` a skill's instructions, `run` one of its scripts (docs/skills.md) |
//! | `http` | tool | `request` one URL, never following redirects |
//! | `mail` | tool | `folders`, `search`, `read`, `attachment`, `mark`, `move`, `draft`, `send`, `reply` over IMAP and SMTP |
//! | `calendar` | tool | `calendars`, `events`, `create`, `update`, `move`, `delete` on a CalDAV server |
//! | `web` | tool | `fetch` a page as text, `search` through SearXNG or Brave |
//! | `mcp` | tool | one MCP server's tools (stdio or streamable HTTP), as `<server>.<tool>` |
//! | `scripted` | provider | replies from a JSON script, for tests and the offline demo |
//! | `anthropic` | provider | Anthropic's Messages API |
//! | `openai` | provider | Chat Completions: OpenAI, llama.cpp, vLLM, LM Studio, … |
//! | `ollama` | provider | Ollama's `/api/chat` |
//! | `telegram` | connector | Telegram's Bot API (long polling) |
//! | `discord` | connector | Discord's Gateway and REST API |
//! | `slack` | connector | Slack: Socket Mode and the Web API |
//! | `webhook` | connector | a push target (ntfy): posts notices, shows nothing back |
//!
//! The `vault` tool needs the vault and memory crates, so it lives in `p3ak-vaulttool`; the
//! CLI runs it under the same `p3ak plugin run vault`.
//!
//! [`run`] is the entry point: it takes the connection the kernel hands over as standard input
//! (a socket), reads the environment the kernel sets (`P3AK_PLUGIN_NAME`, optional
//! `P3AK_MAX_FRAME`), and serves until `shutdown` or the end of the connection. [`serve`] does
//! the same over any connected stream.
//!
//! The crate never prints and never exits; every failure is a [`RunError`].
#![forbid(unsafe_code)]

pub mod calendar;
pub mod connectors;
pub mod files;
pub mod http;
pub mod mail;
pub mod mcp;
pub mod providers;
mod runner;
pub mod scripted;
pub mod shell;
pub mod skills;
pub mod web;
mod workspace;

use std::os::unix::net::UnixStream;

pub use p3ak_sdk::runtime;
pub use p3ak_sdk::{Handler, Launch, PluginError, Provider, StreamSink, Tool, ToolFailure};

/// The names [`run`] accepts.
pub const BUILTINS: &[&str] = &[
    "files",
    "shell",
    "skills",
    "http",
    "mail",
    "calendar",
    "web",
    "mcp",
    "scripted",
    "anthropic",
    "openai",
    "ollama",
    "telegram",
    "discord",
    "slack",
    "webhook",
];

/// The `software` string sent in `hello`.
pub const SOFTWARE: &str = concat!("p3ak-plugins ", env!("CARGO_PKG_VERSION"));

/// Why [`run`] or [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A plugin this crate does not have (`vault` is `p3ak-vaulttool`'s; the CLI routes it).
    #[error(
        "unknown plugin `{0}`: the first-party plugins are files, shell, skills, http, mail, calendar, web, mcp, \
         vault, scripted, anthropic, openai, ollama, telegram, discord, slack and webhook"
    )]
    UnknownPlugin(String),
    /// The plugin stopped with an error.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Runs the first-party plugin `name` as the kernel started it: takes the connection on
/// standard input (putting `/dev/null` in its place, so that programs it runs do not inherit
/// it), reads the environment and serves until `shutdown` or the end of the connection.
///
/// # Errors
///
/// An unknown `name`, a standard input that is not a socket, a missing or malformed
/// environment variable, a refused handshake, an invalid config, or a broken connection.
pub fn run(name: &str) -> Result<(), RunError> {
    if !BUILTINS.contains(&name) {
        return Err(RunError::UnknownPlugin(name.to_owned()));
    }
    let launch = Launch::from_env()?;
    let stream = p3ak_sdk::connect()?;
    serve(name, stream, launch)
}

/// Serves the first-party plugin `name` over an already-connected stream: the handshake as
/// `launch.plugin`, then requests until `shutdown` or the end of the connection.
///
/// # Errors
///
/// As [`run`], less what concerns the environment.
pub fn serve(name: &str, stream: UnixStream, launch: Launch) -> Result<(), RunError> {
    let Launch { plugin, max_frame } = launch;
    let result = match name {
        "files" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(files::Files::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "shell" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(shell::Shell::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "skills" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(skills::Skills::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "http" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(http::Http::from_config(
                &w.config, max_frame,
            )?)))
        }),
        "mail" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(mail::Mail::from_welcome(
                w, max_frame,
            )?)))
        }),
        "calendar" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(calendar::Calendar::from_welcome(
                w, max_frame,
            )?)))
        }),
        "web" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(web::Web::from_welcome(
                w, max_frame,
            )?)))
        }),
        "mcp" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Tool(Box::new(mcp::Mcp::from_welcome(
                &plugin,
                &w.config,
                w.key.as_ref(),
                max_frame,
            )?)))
        }),
        "scripted" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            Ok(Handler::Provider(Box::new(
                scripted::Scripted::from_config(&w.config)?,
            )))
        }),
        "anthropic" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            let provider = providers::anthropic::Anthropic::from_config(&w.config)?;
            Ok(Handler::SharedProvider {
                workers: provider.concurrency(),
                provider: Box::new(provider),
            })
        }),
        "openai" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            let provider = providers::openai::OpenAi::from_config(&w.config)?;
            Ok(Handler::SharedProvider {
                workers: provider.concurrency(),
                provider: Box::new(provider),
            })
        }),
        "ollama" => runtime::serve(stream, &plugin, SOFTWARE, max_frame, |w| {
            let provider = providers::ollama::Ollama::from_config(&w.config)?;
            Ok(Handler::SharedProvider {
                workers: provider.concurrency(),
                provider: Box::new(provider),
            })
        }),
        "webhook" => p3ak_sdk::connector::serve(
            stream,
            &plugin,
            SOFTWARE,
            max_frame,
            connectors::webhook::connector,
        ),
        "telegram" => p3ak_sdk::connector::serve(
            stream,
            &plugin,
            SOFTWARE,
            max_frame,
            connectors::telegram::connector,
        ),
        "discord" => p3ak_sdk::connector::serve(
            stream,
            &plugin,
            SOFTWARE,
            max_frame,
            connectors::discord::connector,
        ),
        "slack" => p3ak_sdk::connector::serve(
            stream,
            &plugin,
            SOFTWARE,
            max_frame,
            connectors::slack::build,
        ),
        other => return Err(RunError::UnknownPlugin(other.to_owned())),
    };
    Ok(result?)
}

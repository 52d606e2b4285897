//! `shell`: run a command in the agent's workspace.
//!
//! Config: `workspaces` (as for `files`), `timeout_secs` (default 30, at most 600: both the
//! default and the most a call may ask for), `max_output` (bytes kept of each of stdout and
//! stderr, default 64 KiB, at most 1 MiB).
//!
//! Action `run {command, timeout_secs?}` (tier commit) runs `/bin/sh -c COMMAND` with the
//! workspace as working directory, an environment of only `PATH=/usr/local/bin:/usr/bin:/bin`,
//! `HOME=<workspace>` and `LANG=C.UTF-8`, stdin from `/dev/null`, in a process group of its
//! own, confined by Landlock to the agent's own workspace (and the system's programs and
//! configuration, read-only): one agent's commands cannot reach another's files. At the
//! timeout the whole group is killed; when the command ends, whatever it left
//! running in its group is killed too, so nothing it started outlives it. Output:
//! `{exit_code, stdout, stderr, timed_out, truncated}` (`exit_code` is null when a signal
//! ended the command; `truncated` when either stream was cut at `max_output`).

use std::time::Duration;

use p3ak_proto::{ActionSpec, Tier};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use crate::workspace::Workspaces;
use p3ak_sdk::args::{Args, schema};
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Longest timeout an operator may configure, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Most output an operator may keep per stream, in bytes.
pub const MAX_OUTPUT_LIMIT: usize = 1 << 20;
/// Longest command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// The `PATH` commands get.
pub const PATH: &str = crate::runner::PATH;

fn default_timeout() -> u64 {
    30
}

fn default_max_output() -> usize {
    64 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    workspaces: std::path::PathBuf,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_output")]
    max_output: usize,
}

/// The `shell` tool.
pub struct Shell {
    workspaces: Workspaces,
    timeout_secs: u64,
    max_output: usize,
}

impl Shell {
    /// Builds the tool from its `welcome` config; `max_output` is also kept under a quarter
    /// of `max_frame`, so both streams fit in a reply.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for a missing `workspaces`, limits out of range, or a
    /// workspace directory that cannot be created.
    pub fn from_config(config: &Value, max_frame: usize) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting("max_output", config.max_output, MAX_OUTPUT_LIMIT, " bytes")?;
        Ok(Self {
            workspaces: Workspaces::open(&config.workspaces)?,
            timeout_secs: config.timeout_secs,
            max_output: config.max_output.min(max_frame / 4).max(1),
        })
    }

    fn run(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("run", args, &["command", "timeout_secs"])?;
        let command = args.string("command")?;
        let timeout = args
            .opt_int("timeout_secs", 1, self.timeout_secs)?
            .unwrap_or(self.timeout_secs);
        if command.trim().is_empty() {
            return Err(ToolFailure::invalid("`run`: the command is empty"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(ToolFailure::invalid(format!(
                "`run`: the command is over {MAX_COMMAND_BYTES} bytes"
            )));
        }
        if command.contains('\0') {
            return Err(ToolFailure::invalid(
                "`run`: the command contains a NUL byte",
            ));
        }
        let workspace = self.workspaces.agent(agent)?;
        crate::runner::Run {
            program: std::path::Path::new("/bin/sh"),
            args: &["-c", command],
            workspace: &workspace.path,
            stdin: None,
            timeout: Duration::from_secs(timeout),
            max_output: self.max_output,
        }
        .run()
    }
}

impl Tool for Shell {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![ActionSpec {
            name: "run".to_owned(),
            description: format!(
                "Run a shell command (/bin/sh -c) in your workspace, with a minimal \
                 environment and no input. It is killed after its timeout (default {} s).",
                self.timeout_secs
            ),
            parameters: schema(
                json!({
                    "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_BYTES},
                    "timeout_secs": {"type": "integer", "minimum": 1, "maximum": self.timeout_secs},
                }),
                &["command"],
            ),
            tier: Tier::Commit,
        }]
    }

    fn invoke(&mut self, agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "run" => self.run(agent, args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                p3ak_sdk::args::shorten(other)
            ))),
        }
    }
}

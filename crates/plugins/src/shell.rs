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

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use p3ak_proto::{ActionSpec, Tier};
use rustix::process::{Pid, Signal};
use serde::Deserialize;
use serde_json::{Value, json};

use p3ak_sandbox::ChildRules;

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
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long to wait for the output pipes to close once the command is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the command is polled.
const POLL: Duration = Duration::from_millis(10);

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
        let mut shell = Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(&workspace.path)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &workspace.path)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // One agent's commands reach its own workspace, not the others' (which this plugin,
        // serving every agent under one uid, can reach).
        p3ak_sandbox::confine_child(&mut shell, ChildRules::shell(&workspace.path))
            .map_err(|e| ToolFailure::permanent(format!("cannot confine the command: {e}")))?;
        let mut child = shell
            .spawn()
            .map_err(|e| ToolFailure::permanent(format!("cannot start `/bin/sh`: {e}")))?;
        let group = Pid::from_child(&child);
        let stdout = child
            .stdout
            .take()
            .map(|s| Capture::start(s, self.max_output));
        let stderr = child
            .stderr
            .take()
            .map(|s| Capture::start(s, self.max_output));
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(_) => {
                    let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    break child.wait().ok();
                }
            }
        };
        // Whatever the command left in its group goes with it (and lets the pipes close).
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
        let drain_until = Instant::now() + DRAIN_GRACE;
        let (stdout, out_cut) = stdout.map_or_else(Default::default, |c| c.finish(drain_until));
        let (stderr, err_cut) = stderr.map_or_else(Default::default, |c| c.finish(drain_until));
        let exit_code = status.and_then(|s| s.code());
        Ok(json!({
            "exit_code": exit_code,
            "stdout": stdout,
            "stderr": stderr,
            "timed_out": timed_out,
            "truncated": out_cut || err_cut,
        }))
    }
}

/// Output read so far, and whether some was dropped.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// One output pipe read on its own thread, keeping `max` bytes and draining the rest so the
/// command never blocks on a full pipe.
struct Capture {
    shared: Arc<Mutex<Captured>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start<R: Read + Send + 'static>(mut pipe: R, max: usize) -> Self {
        let shared = Arc::new(Mutex::new(Captured::default()));
        let sink = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("p3ak-shell-output".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            let mut captured = sink
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let room = max.saturating_sub(captured.bytes.len());
                            let data = buf.get(..n).unwrap_or_default();
                            let keep = data.get(..room.min(n)).unwrap_or_default();
                            captured.bytes.extend_from_slice(keep);
                            if keep.len() < data.len() {
                                captured.truncated = true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
            .ok();
        Self { shared, thread }
    }

    /// Waits (until `deadline`) for the pipe to close, then takes what was read, as text.
    fn finish(self, deadline: Instant) -> (String, bool) {
        if let Some(thread) = self.thread {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        let captured = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            String::from_utf8_lossy(&captured.bytes).into_owned(),
            captured.truncated,
        )
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

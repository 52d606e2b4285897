//! Running one program for a tool (`shell`'s command, a skill's script): in the agent's
//! workspace, with a minimal environment, a timeout and capped output.
//!
//! The program runs with the workspace as working directory and `HOME`, an environment of only
//! `PATH=/usr/local/bin:/usr/bin:/bin`, `HOME` and `LANG=C.UTF-8`, the given input or
//! `/dev/null` on stdin, in a process group of its own. At the timeout the whole group is
//! killed; when the program ends, whatever it left running in its group is killed too, so
//! nothing it started outlives it. The result: `{exit_code, stdout, stderr, timed_out,
//! truncated}` (`exit_code` is null when a signal ended it; `truncated` when either stream
//! was cut at `max_output`).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::{Value, json};

use p3ak_sdk::runtime::ToolFailure;

/// The `PATH` programs get.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long to wait for the output pipes to close once the program is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the program is polled.
const POLL: Duration = Duration::from_millis(10);

/// One run of a program.
pub(crate) struct Run<'a> {
    /// The program (a path: never looked up).
    pub(crate) program: &'a Path,
    /// Its arguments (argv, never a shell string).
    pub(crate) args: &'a [&'a str],
    /// Its working directory and `HOME`.
    pub(crate) workspace: &'a Path,
    /// What it reads on stdin; `None`: `/dev/null`.
    pub(crate) stdin: Option<&'a [u8]>,
    /// When its group is killed.
    pub(crate) timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub(crate) max_output: usize,
}

impl Run<'_> {
    /// Runs it to its end or its timeout.
    pub(crate) fn run(self) -> Result<Value, ToolFailure> {
        let max_output = self.max_output;
        let mut command = Command::new(self.program);
        // The agent's commands reach its own workspace only (and the program's own folder, for
        // a skill's script), not the other agents' (which this plugin, serving every agent
        // under one uid, can reach).
        let mut rules = p3ak_sandbox::ChildRules::shell(self.workspace);
        if let Some(folder) = self.program.parent() {
            rules.exec.push(folder.to_owned());
        }
        p3ak_sandbox::confine_child(&mut command, rules)
            .map_err(|e| ToolFailure::permanent(format!("cannot confine the command: {e}")))?;
        let mut child = command
            .args(self.args)
            .current_dir(self.workspace)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", self.workspace)
            .env("LANG", "C.UTF-8")
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ToolFailure::permanent(format!("cannot start `{}`: {e}", self.program.display()))
            })?;
        // The input goes in on a thread of its own: a program that does not read it cannot
        // block the call (its pipe breaks when the program's group is killed).
        if let (Some(input), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            let input = input.to_vec();
            let _ = std::thread::Builder::new()
                .name("p3ak-run-input".to_owned())
                .spawn(move || {
                    let _ = pipe.write_all(&input);
                });
        }
        let group = Pid::from_child(&child);
        let stdout = child.stdout.take().map(|s| Capture::start(s, max_output));
        let stderr = child.stderr.take().map(|s| Capture::start(s, max_output));
        let deadline = Instant::now() + self.timeout;
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

//! Records the system calls a plugin really makes: the plugin runs in its sandbox (uid,
//! Landlock, namespace, limits) but without its seccomp filter, under `ptrace`, and every
//! system-call entry of every thread and child is counted.
//!
//! The tracer is a thread of its own: ptrace requests must come from the thread that is the
//! tracer, which is the thread that forked the child.
//!
//! libc here: rustix has no `ptrace`, and its `waitpid` does not take `__WALL` (needed to
//! reap traced threads).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::Serialize;

use crate::{Plan, SandboxError, Support};

/// What a traced run used.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Each call by name, with how often it was entered.
    pub syscalls: BTreeMap<String, u64>,
    /// Whether it created a process (`fork`, `vfork`, `clone` without `CLONE_THREAD`).
    pub forked: bool,
    /// How the traced process ended.
    pub exit: String,
    /// The flags of each `clone`, in hex.
    pub clone_flags: BTreeSet<String>,
}

/// A traced child.
pub struct Tracer {
    /// Its pid.
    pub pid: u32,
    /// Its standard input, when piped.
    pub stdin: Option<std::process::ChildStdin>,
    handle: JoinHandle<Result<Report, SandboxError>>,
}

impl Tracer {
    /// Starts `command` sandboxed by `plan` (its seccomp filter left out) under the tracer.
    ///
    /// # Errors
    ///
    /// When the sandbox cannot be prepared or the child cannot be started.
    pub fn start(
        mut command: std::process::Command,
        plan: &Plan,
        support: &Support,
    ) -> Result<Self, SandboxError> {
        let mut plan = plan.clone();
        plan.trace = true;
        plan.seccomp = false;
        let prepared = plan.prepare(support)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("p3ak-tracer".to_owned())
            .spawn(move || {
                prepared.install(&mut command);
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Err(SandboxError::Trace(format!("cannot start: {e}")));
                    }
                };
                let pid = child.id();
                let _ = tx.send(Ok((pid, child.stdin.take())));
                // The child is reaped by the loop below, not by `Child`.
                drop(child);
                trace_loop(pid)
            })
            .map_err(SandboxError::io("cannot start the tracer thread"))?;
        match rx.recv() {
            Ok(Ok((pid, stdin))) => Ok(Self { pid, stdin, handle }),
            Ok(Err(e)) => Err(SandboxError::Trace(format!("cannot start: {e}"))),
            Err(_) => Err(SandboxError::Trace("the tracer thread ended".to_owned())),
        }
    }

    /// Waits until the child and all it started have exited.
    ///
    /// # Errors
    ///
    /// When tracing failed.
    pub fn wait(self) -> Result<Report, SandboxError> {
        self.handle
            .join()
            .map_err(|_| SandboxError::Trace("the tracer thread panicked".to_owned()))?
    }
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_SYSCALL_INFO_ENTRY: u8 = 1;
const CLONE_THREAD: u64 = 0x0001_0000;

/// `struct ptrace_syscall_info`, entry variant, with room for the largest variant.
#[repr(C)]
#[derive(Default)]
struct SyscallInfo {
    op: u8,
    pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    nr: u64,
    args: [u64; 6],
    spare: [u64; 2],
}

fn wait_any() -> Result<Option<(i32, i32)>, SandboxError> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::__WALL) };
        if pid >= 0 {
            return Ok(Some((pid, status)));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(SandboxError::Trace(format!("waitpid: {e}"))),
        }
    }
}

fn resume(pid: i32, signal: i32) {
    // SAFETY: PTRACE_SYSCALL on a stopped tracee takes the signal to deliver as data; an
    // error (the tracee died meanwhile) is reported by the next waitpid.
    unsafe {
        libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, signal);
    }
}

fn trace_loop(child: u32) -> Result<Report, SandboxError> {
    let main = i32::try_from(child).map_err(|_| SandboxError::Trace("bad pid".to_owned()))?;
    let mut report = Report::default();
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    // The first stop is the SIGTRAP after exec.
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    if unsafe { libc::waitpid(main, &raw mut status, libc::__WALL) } != main
        || !libc::WIFSTOPPED(status)
    {
        return Err(SandboxError::Trace(format!(
            "the child did not stop after exec (status {status:#x})"
        )));
    }
    let options = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: PTRACE_SETOPTIONS on our stopped tracee; the options word is passed as data.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, main, 0, options) } != 0 {
        return Err(SandboxError::Trace(format!(
            "PTRACE_SETOPTIONS: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut live: BTreeSet<i32> = [main].into();
    resume(main, 0);
    while let Some((pid, status)) = wait_any()? {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            live.remove(&pid);
            if pid == main {
                report.exit = if libc::WIFEXITED(status) {
                    format!("exit status {}", libc::WEXITSTATUS(status))
                } else {
                    format!("killed by signal {}", libc::WTERMSIG(status))
                };
            }
            if live.is_empty() {
                break;
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let mut inject = 0;
        if signal == (libc::SIGTRAP | 0x80) {
            let mut info = SyscallInfo::default();
            // SAFETY: the kernel writes at most `size_of::<SyscallInfo>()` bytes into `info`.
            let n = unsafe {
                libc::ptrace(
                    PTRACE_GET_SYSCALL_INFO,
                    pid,
                    std::mem::size_of::<SyscallInfo>(),
                    &raw mut info,
                )
            };
            if n > 0 && info.op == PTRACE_SYSCALL_INFO_ENTRY {
                let nr = i64::try_from(info.nr).unwrap_or(-1);
                *counts.entry(nr).or_default() += 1;
                let name = crate::syscall_name(nr);
                if name == "clone" {
                    report.clone_flags.insert(format!("{:#x}", info.args[0]));
                }
                if matches!(name.as_str(), "fork" | "vfork")
                    || (name == "clone" && info.args[0] & CLONE_THREAD == 0)
                {
                    report.forked = true;
                }
            }
        } else if signal == libc::SIGTRAP && event != 0 {
            if matches!(
                event,
                libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK
            ) {
                let mut new: libc::c_ulong = 0;
                // SAFETY: PTRACE_GETEVENTMSG writes one c_ulong into `new`.
                unsafe {
                    libc::ptrace(libc::PTRACE_GETEVENTMSG, pid, 0, &raw mut new);
                }
                if let Ok(new) = i32::try_from(new) {
                    live.insert(new);
                }
                if event != libc::PTRACE_EVENT_CLONE {
                    report.forked = true;
                }
            }
        } else if signal == libc::SIGSTOP && !live.contains(&pid) {
            // A new thread or child's first stop, seen before its parent's event.
            live.insert(pid);
        } else if signal == libc::SIGSTOP && live.contains(&pid) && pid != main {
            // The initial stop of an auto-attached task.
        } else {
            inject = signal;
        }
        live.insert(pid);
        resume(pid, inject);
    }
    report.syscalls = counts
        .into_iter()
        .map(|(nr, n)| (crate::syscall_name(nr), n))
        .collect();
    Ok(report)
}

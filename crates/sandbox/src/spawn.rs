//! The sandbox of one process: planned and prepared in the parent, applied in the child
//! between `fork` and `exec`, where only system calls are made (no allocation, no locks).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use rustix::process::{Gid, Resource, Rlimit, Uid, setrlimit};
use rustix::thread::{
    UnshareFlags, set_no_new_privs, set_thread_groups, set_thread_res_gid, set_thread_res_uid,
    unshare_unsafe,
};
use seccompiler::BpfProgram;
use serde::Serialize;

use crate::{Class, Profile, SandboxError, Support};

/// Resource limits (soft = hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Address space, bytes (`RLIMIT_AS`).
    pub address_space: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes and threads of its uid (`RLIMIT_NPROC`).
    pub processes: u64,
    /// CPU time, seconds (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
}

impl Limits {
    /// The defaults for a class.
    #[must_use]
    pub fn for_class(class: Class) -> Self {
        Self {
            address_space: 4 << 30,
            open_files: 256,
            processes: if class == Class::Shell { 256 } else { 64 },
            cpu_seconds: 3600,
        }
    }
}

/// What one plugin process gets.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Its uid and gid; `None` keeps the kernel's (a degraded host without root).
    pub ids: Option<(u32, u32)>,
    /// Its seccomp class.
    pub class: Class,
    /// Whether it keeps the host's network; without, it gets an empty network namespace.
    pub network: bool,
    /// Read-only files and trees.
    pub read: Vec<PathBuf>,
    /// Read-only files and trees it may also execute.
    pub exec: Vec<PathBuf>,
    /// Trees (and files) it may read and write.
    pub write: Vec<PathBuf>,
    /// Its limits.
    pub limits: Limits,
    /// Apply Landlock (false only on a degraded host).
    pub landlock: bool,
    /// Apply the seccomp filter (false on a degraded host and while tracing).
    pub seccomp: bool,
    /// Stop for a tracer (`PTRACE_TRACEME`) before anything else: `p3ak sandbox trace`.
    pub trace: bool,
}

/// A plan with its Landlock ruleset and seccomp programs built, ready for one child.
pub struct Prepared {
    ruleset: Option<RulesetCreated>,
    programs: Vec<BpfProgram>,
    ids: Option<(Uid, Gid)>,
    new_netns: bool,
    rlimits: [(Resource, u64); 5],
    trace: bool,
}

/// The Landlock ABI whose file-system rights are handled (newer kernels add nothing here the
/// rules below would grant; older ones get what they have, best effort).
const LANDLOCK_ABI: ABI = ABI::V5;

impl Plan {
    /// Builds the ruleset and the filter for `support`'s host.
    ///
    /// # Errors
    ///
    /// A Landlock or seccomp failure, or a malformed profile.
    pub fn prepare(&self, support: &Support) -> Result<Prepared, SandboxError> {
        let ruleset = if self.landlock && support.landlock_abi.is_some() {
            Some(self.ruleset(support)?)
        } else {
            None
        };
        let programs = if self.seccomp && support.seccomp {
            Profile::of(self.class)?.programs()?
        } else if self.trace && support.seccomp {
            // Traced runs answer `clone3` as the real filter does, so that the trace shows
            // the `clone` fallback the filtered plugin will make.
            Profile::of(self.class)?
                .programs()?
                .into_iter()
                .take(1)
                .collect()
        } else {
            Vec::new()
        };
        let ids = match self.ids {
            // -1 asks setresuid/setresgid to leave the id unchanged: it would keep the kernel's.
            Some((uid, gid)) if uid == u32::MAX || gid == u32::MAX => {
                return Err(SandboxError::Ids {
                    first: uid,
                    last: gid,
                    message: "4294967295 (-1) is not a usable uid or gid".to_owned(),
                });
            }
            Some((uid, gid)) => Some((Uid::from_raw(uid), Gid::from_raw(gid))),
            None => None,
        };
        let l = self.limits;
        Ok(Prepared {
            ruleset,
            programs,
            ids,
            new_netns: !self.network && support.root,
            rlimits: [
                (Resource::As, l.address_space),
                (Resource::Nofile, l.open_files),
                (Resource::Nproc, l.processes),
                (Resource::Cpu, l.cpu_seconds),
                (Resource::Core, 0),
            ],
            trace: self.trace,
        })
    }

    fn ruleset(&self, support: &Support) -> Result<RulesetCreated, SandboxError> {
        let ll = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
        let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
        let exec = read | AccessFs::Execute;
        let write = AccessFs::from_all(LANDLOCK_ABI) & !AccessFs::Execute;
        let mut ruleset = landlock::Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(LANDLOCK_ABI))
            .map_err(ll)?;
        if support.landlock_scopes() {
            ruleset = ruleset
                .scope(Scope::AbstractUnixSocket | Scope::Signal)
                .map_err(ll)?;
        }
        let created = ruleset
            .create()
            .map_err(ll)?
            .add_rules(path_beneath_rules(&self.read, read))
            .map_err(ll)?
            .add_rules(path_beneath_rules(&self.exec, exec))
            .map_err(ll)?
            .add_rules(path_beneath_rules(&self.write, write))
            .map_err(ll)?
            // Denials after exec reach the host's audit log, where the kernel reads them
            // (`denials`); best effort, as the rest: older kernels have no such logging.
            .log_new_exec(true)
            .map_err(ll)?;
        Ok(created)
    }
}

impl Prepared {
    /// Makes `command` apply this sandbox in its child just before `exec`.
    pub fn install(self, command: &mut std::process::Command) {
        let mut state = Some(self);
        let hook = move || -> std::io::Result<()> {
            match state.take() {
                Some(prepared) => prepared.apply(),
                None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
        };
        // SAFETY: the hook runs in the forked child before exec. `apply` makes only system
        // calls on memory prepared in the parent (the ruleset fd, the BPF programs, plain
        // integers); it does not allocate, lock or touch state shared with other threads.
        unsafe {
            command.pre_exec(hook);
        }
    }

    /// Runs in the child. Only async-signal-safe system calls from here on: rustix's calls
    /// below are single raw system calls that neither allocate nor lock, and their errors are
    /// plain errno values.
    fn apply(mut self) -> std::io::Result<()> {
        if self.trace {
            // rustix has no ptrace.
            // SAFETY: PTRACE_TRACEME takes no pointers; the parent becomes the tracer.
            if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if self.new_netns {
            // SAFETY: only a new network namespace (a loopback that is down, no routes); the
            // descriptor table is not unshared, so no descriptor changes meaning.
            unsafe { unshare_unsafe(UnshareFlags::NEWNET) }?;
        }
        for (resource, value) in self.rlimits {
            setrlimit(
                resource,
                Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                },
            )?;
        }
        if let Some((uid, gid)) = self.ids {
            // Groups and gid go first, while the process still has the privilege to change
            // them. These are the per-thread system calls (not glibc's all-threads broadcast):
            // the child of `fork` has one thread, so the whole process changes.
            set_thread_groups(&[])?;
            set_thread_res_gid(gid, gid, gid)?;
            set_thread_res_uid(uid, uid, uid)?;
        }
        set_no_new_privs(true)?;
        if let Some(ruleset) = self.ruleset.take() {
            // `restrict_self` makes two system calls (prctl, landlock_restrict_self) and builds
            // its status on the stack; its errors carry an errno, not an allocation.
            if ruleset.restrict_self().is_err() {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        close_inherited_fds()?;
        for program in &self.programs {
            if seccompiler::apply_filter(program).is_err() {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        Ok(())
    }
}

/// Marks every descriptor above stderr close-on-exec: the plugin starts with 0, 1 and 2 only.
/// libc here: rustix has no `close_range`, and its `fcntl` wants a borrowed descriptor that
/// a bare number in the fallback loop is not.
fn close_inherited_fds() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes integers; CLOEXEC only sets a flag on open descriptors (the
    // std library's exec-error pipe stays usable until exec).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk the descriptor table.
    for fd in 3..4096 {
        // SAFETY: F_GETFD/F_SETFD on any integer is harmless (EBADF for a closed one).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

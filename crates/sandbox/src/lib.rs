//! `p3ak-sandbox`: how the kernel makes a plugin a stranger (invariant I7).
//!
//! A plugin process is started with, in this order, between `fork` and `exec`:
//!
//! 1. a fresh network namespace when it is given no network (`unshare(CLONE_NEWNET)`);
//! 2. resource limits: address space, open files, processes, CPU time, no core dumps;
//! 3. its own uid and gid from a configured range, and no supplementary groups;
//! 4. `no_new_privs`;
//! 5. a Landlock ruleset: read-only access to what it needs to run, read-write access to its
//!    scratch directory and the data it serves, nothing else; no signals and no abstract Unix
//!    sockets outside its own domain;
//! 6. every inherited file descriptor above stderr marked close-on-exec;
//! 7. a seccomp allowlist for its class ([`Class`]), built from the traced profiles in
//!    `deploy/seccomp/`; anything else kills the process with `SIGSYS`.
//!
//! [`Plan::prepare`] does everything that allocates in the parent; the child only makes
//! system calls. [`probe`] says what the host offers, [`trace`] records the system calls a
//! plugin really makes (ptrace), so profiles can be made from them.
//!
//! This is the one crate of the workspace allowed `unsafe`: each block says why it is sound.

mod confine;
pub mod denials;
mod harden;
pub mod ids;
pub mod profile;
mod program;
mod spawn;
mod support;
pub mod trace;

pub use confine::{ChildRules, Confined, confine_child};
pub use harden::{harden_process, hardening};
pub use ids::allocate_ids;
pub use profile::{Class, Profile};
pub use program::Program;
pub use spawn::{Limits, Plan, Prepared};
pub use support::{Support, probe};

/// Whether the kernel insists on every layer of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse to start plugins when a layer is missing.
    #[default]
    Enforce,
    /// Start them with the layers the host has, saying which are missing.
    Degraded,
}

/// What can go wrong while preparing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The host lacks layers and the mode is [`Mode::Enforce`].
    #[error("the sandbox is incomplete on this host: {}; set `sandbox = \"degraded\"` in [kernel] to start plugins anyway", .0.join("; "))]
    Missing(Vec<String>),
    /// A profile is malformed or names an unknown system call.
    #[error("seccomp profile `{class}`: {message}")]
    Profile {
        /// The class.
        class: String,
        /// What is wrong.
        message: String,
    },
    /// The plugin's program cannot be started as its user.
    #[error("cannot start `{}`: {message}", path.display())]
    Program {
        /// The program.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The Landlock ruleset could not be built.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The host's audit subsystem could not be used.
    #[error("audit: {0}")]
    Audit(String),
    /// The seccomp filter could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The uid range is unusable.
    #[error("uid range {first}..={last}: {message}")]
    Ids {
        /// First id of the range.
        first: u32,
        /// Last id of the range.
        last: u32,
        /// What is wrong.
        message: String,
    },
    /// Tracing failed.
    #[error("trace: {0}")]
    Trace(String),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// The name of a system call number on this architecture (`syscall_N` when unknown).
#[must_use]
pub fn syscall_name(nr: i64) -> String {
    sysno(nr).map_or_else(|| format!("syscall_{nr}"), |name| name.to_owned())
}

/// The number of a system call by name on this architecture.
#[must_use]
pub fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        name.parse::<syscalls::x86_64::Sysno>()
            .ok()
            .map(|sysno| i64::from(sysno.id()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

/// The name of an x86_64 system call number (profiles exist for x86_64 only).
fn sysno(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        usize::try_from(nr)
            .ok()
            .and_then(syscalls::x86_64::Sysno::new)
            .map(|sysno| sysno.name())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = nr;
        None
    }
}

/// Whether this build has seccomp profiles for the machine's architecture.
#[must_use]
pub fn arch_supported() -> bool {
    cfg!(target_arch = "x86_64")
}

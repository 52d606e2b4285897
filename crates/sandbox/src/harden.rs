//! Hardening of the kernel's own processes (the kernel, the warden, the approval daemon): no
//! core dumps, and no debugger attaching from the same uid. A crash must not write the vault
//! key, the factor store's key or injected secrets to disk, and a process of the same user
//! (a plugin on a host without root, or a compromised kernel next to the daemon) must not read
//! them out of memory through `ptrace` or `/proc/<pid>/mem`.

use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};

use crate::SandboxError;

/// Makes this process non-dumpable (`PR_SET_DUMPABLE 0`: no core file, no `ptrace` or
/// `/proc/<pid>/mem` from the same uid without `CAP_SYS_PTRACE`) and sets `RLIMIT_CORE` to 0
/// for it and the processes it starts.
///
/// # Errors
///
/// When either call fails (neither can on Linux for a process's own settings).
pub fn harden_process() -> Result<(), SandboxError> {
    let io = |context: &'static str| {
        move |e: rustix::io::Errno| SandboxError::Io {
            context: context.to_owned(),
            source: e.into(),
        }
    };
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(io("cannot set RLIMIT_CORE to 0"))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(io("cannot make the process non-dumpable"))?;
    Ok(())
}

/// Whether this process is dumpable, and its core size limit (for tests and `p3ak status`).
#[must_use]
pub fn hardening() -> (bool, Option<u64>) {
    let dumpable = !matches!(
        rustix::process::dumpable_behavior(),
        Ok(DumpableBehavior::NotDumpable)
    );
    (dumpable, rustix::process::getrlimit(Resource::Core).maximum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariant_i4_a_hardened_process_dumps_no_core() {
        // Run in a child so that the test process itself keeps its settings.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "harden::tests::child_hardens_itself",
                "--include-ignored",
            ])
            .env("P3AK_HARDEN_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    #[ignore = "the child half of invariant_i4_a_hardened_process_dumps_no_core"]
    fn child_hardens_itself() {
        if std::env::var_os("P3AK_HARDEN_CHILD").is_none() {
            // Run directly (`--include-ignored`): hardening this test process would be harmless,
            // but the parent test is the one that checks.
            return;
        }
        harden_process().unwrap();
        assert_eq!(hardening(), (false, Some(0)));
    }
}

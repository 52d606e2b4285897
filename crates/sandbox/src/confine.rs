//! A plugin's own children, confined further: the `shell` plugin runs each agent's commands
//! with file access to that agent's workspace only, so one agent's commands cannot read or
//! change another agent's files although the plugin serves them all under one uid. Landlock
//! rules stack: the child keeps everything the plugin's sandbox forbids, and loses more.

use std::path::{Path, PathBuf};

use rustix::process::{Resource, getrlimit};

use crate::{Class, Limits, Plan, SandboxError};

/// What a confined child may touch.
#[derive(Debug, Clone, Default)]
pub struct ChildRules {
    /// Trees it may read and execute from (programs, libraries).
    pub exec: Vec<PathBuf>,
    /// Trees it may read.
    pub read: Vec<PathBuf>,
    /// Trees (and files, such as `/dev/null`) it may read and write.
    pub write: Vec<PathBuf>,
}

impl ChildRules {
    /// A shell command's: the system's programs, libraries and configuration, and `workspace`
    /// (read, write, execute what it built there). Paths that do not exist are left out.
    #[must_use]
    pub fn shell(workspace: &Path) -> Self {
        let existing = |paths: &[&str]| {
            paths
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect::<Vec<_>>()
        };
        let mut exec = existing(&[
            "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
        ]);
        exec.push(workspace.to_owned());
        Self {
            exec,
            read: existing(&["/etc", "/proc/self", "/dev/urandom", "/dev/zero"]),
            write: [
                vec![workspace.to_owned()],
                existing(&["/dev/null", "/dev/tty"]),
            ]
            .concat(),
        }
    }
}

/// Whether confinement took: hosts without Landlock run the child as the plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confined {
    /// The rules apply in the child.
    Yes,
    /// This kernel has no Landlock: the child runs with the plugin's own sandbox only.
    Unsupported,
}

/// Makes `command`'s child keep to `rules` (file access), with the plugin's own resource
/// limits, no new privileges and no inherited descriptors beyond stdio.
///
/// # Errors
///
/// The ruleset cannot be built.
pub fn confine_child(
    command: &mut std::process::Command,
    rules: ChildRules,
) -> Result<Confined, SandboxError> {
    let support = crate::probe();
    if support.landlock_abi.is_none() {
        return Ok(Confined::Unsupported);
    }
    let plan = Plan {
        ids: None,
        class: Class::Shell,
        // Kept as the plugin has it: a child gets no namespace of its own.
        network: true,
        read: rules.read,
        exec: rules.exec,
        write: rules.write,
        limits: current_limits(),
        landlock: true,
        // The plugin's seccomp filter is inherited already.
        seccomp: false,
        trace: false,
    };
    plan.prepare(&support)?.install(command);
    Ok(Confined::Yes)
}

/// The calling process's hard limits: a child is given the same (never more).
fn current_limits() -> Limits {
    let hard = |resource| getrlimit(resource).maximum.unwrap_or(u64::MAX);
    Limits {
        address_space: hard(Resource::As),
        open_files: hard(Resource::Nofile),
        processes: hard(Resource::Nproc),
        cpu_seconds: hard(Resource::Cpu),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_confined_child_reaches_its_workspace_and_not_a_neighbours() {
        assert!(
            crate::probe().landlock_abi.is_some(),
            "this test needs a kernel with Landlock"
        );
        let root = tempfile::tempdir().unwrap();
        let (mine, theirs) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("secret"), "s").unwrap();
        let run = |script: &str| {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(script).current_dir(&mine);
            assert_eq!(
                confine_child(&mut command, ChildRules::shell(&mine)).unwrap(),
                Confined::Yes
            );
            command.output().unwrap()
        };
        let own = run("echo hi > note && cat note && ls /usr/bin >/dev/null");
        assert!(own.status.success(), "{own:?}");
        assert_eq!(String::from_utf8_lossy(&own.stdout), "hi\n");
        let neighbour = run(&format!("cat {}", theirs.join("secret").display()));
        assert!(!neighbour.status.success(), "{neighbour:?}");
        let write = run(&format!("echo x > {}", theirs.join("planted").display()));
        assert!(!write.status.success());
        assert!(!theirs.join("planted").exists());
    }
}

//! Seccomp profiles per plugin class, as committed in `deploy/seccomp/<class>.json`.
//!
//! A class file lists the plugins whose traces (`deploy/seccomp/traced/<plugin>.json`, made by
//! `p3ak sandbox trace`) form its base, a margin (each call with the reason it is allowed
//! although no trace showed it), whether it may fork, and `syscalls`: the union of both, which
//! is what the filter allows. The crate's tests check that `syscalls` is exactly traced ∪
//! margin, and that the OCI copies in `deploy/seccomp/oci/` say the same.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// A plugin's class: which seccomp profile it runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Tools without network or processes (`files`, `vault`).
    Tool,
    /// Model providers without network (`scripted`).
    Provider,
    /// Tools and providers that talk to the network (`http`, `anthropic`, `openai`, `ollama`).
    Network,
    /// Tools that run programs (`shell`): may fork and exec.
    Shell,
    /// Third-party plugins run by an interpreter (Python and the like).
    Script,
}

impl Class {
    /// Every class.
    pub const ALL: [Self; 5] = [
        Self::Tool,
        Self::Provider,
        Self::Network,
        Self::Shell,
        Self::Script,
    ];

    /// Its name, as in config files and profile file names.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Provider => "provider",
            Self::Network => "network",
            Self::Shell => "shell",
            Self::Script => "script",
        }
    }

    /// The class of a name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The committed profile text.
    fn text(self) -> &'static str {
        match self {
            Self::Tool => include_str!("../../../deploy/seccomp/tool.json"),
            Self::Provider => include_str!("../../../deploy/seccomp/provider.json"),
            Self::Network => include_str!("../../../deploy/seccomp/network.json"),
            Self::Shell => include_str!("../../../deploy/seccomp/shell.json"),
            Self::Script => include_str!("../../../deploy/seccomp/script.json"),
        }
    }
}

/// One class's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The class.
    pub class: Class,
    /// What it is for.
    pub description: String,
    /// Plugins whose traces form the base (`deploy/seccomp/traced/<plugin>.json`).
    pub traced: Vec<String>,
    /// Calls allowed beyond the traces, each with its reason.
    pub margin: BTreeMap<String, String>,
    /// Whether it may create processes (`clone` without `CLONE_THREAD`, `fork`, `vfork`).
    pub forks: bool,
    /// Whether `socket` and `socketpair` are limited to `AF_UNIX` (its kernel connection).
    #[serde(default)]
    pub unix_sockets_only: bool,
    /// What the filter allows: the traces' union plus the margin.
    pub syscalls: BTreeSet<String>,
}

/// A traced profile: what one plugin was seen to call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traced {
    /// The plugin.
    pub plugin: String,
    /// Its class.
    pub class: Class,
    /// What it was made to do while traced.
    pub exercise: Vec<String>,
    /// Whether it created processes.
    pub forked: bool,
    /// Each call, with how often it was seen.
    pub syscalls: BTreeMap<String, u64>,
}

/// `AF_UNIX`: the only socket family of classes without network.
const AF_UNIX: u64 = 1;

/// `CLONE_THREAD`: a `clone` that makes a thread, not a process.
const CLONE_THREAD: u64 = 0x0001_0000;

impl Profile {
    /// The committed profile of `class`.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Profile`] when the committed file is malformed (a build defect).
    pub fn of(class: Class) -> Result<Self, SandboxError> {
        Self::parse(class.text()).map_err(|message| SandboxError::Profile {
            class: class.name().to_owned(),
            message,
        })
    }

    /// Parses a profile file.
    ///
    /// # Errors
    ///
    /// What is wrong, as a line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let profile: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for name in &profile.syscalls {
            if crate::arch_supported() && crate::syscall_number(name).is_none() {
                return Err(format!("unknown system call `{name}`"));
            }
        }
        Ok(profile)
    }

    /// The BPF programs enforcing it, in the order to install them: first one that answers
    /// `clone3` with `ENOSYS` (so libc falls back to `clone`, whose flags a filter can see),
    /// one that answers `socket(AF_UNIX, …)` with `EACCES` in every class (a plugin's one
    /// connection is the socket it inherits: it may not open another to anything on the host,
    /// abstract or named; libc's callers, such as the name service cache lookup, fall back on
    /// the error), then the allowlist, which kills the process on anything else. Where two
    /// filters disagree the kernel takes the stricter answer.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Seccomp`] when a call is unknown or the filter does not compile.
    pub fn programs(&self) -> Result<Vec<BpfProgram>, SandboxError> {
        let arch = target_arch()?;
        let seccomp = |e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string());
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in &self.syscalls {
            let nr = crate::syscall_number(name)
                .ok_or_else(|| SandboxError::Seccomp(format!("unknown system call `{name}`")))?;
            let conditions = match name.as_str() {
                "clone" if !self.forks => vec![
                    SeccompRule::new(vec![
                        SeccompCondition::new(
                            0,
                            SeccompCmpArgLen::Qword,
                            SeccompCmpOp::MaskedEq(CLONE_THREAD),
                            CLONE_THREAD,
                        )
                        .map_err(seccomp)?,
                    ])
                    .map_err(seccomp)?,
                ],
                "fork" | "vfork" if !self.forks => continue,
                "socket" | "socketpair" if self.unix_sockets_only => vec![
                    SeccompRule::new(vec![
                        SeccompCondition::new(
                            0,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            AF_UNIX,
                        )
                        .map_err(seccomp)?,
                    ])
                    .map_err(seccomp)?,
                ],
                _ => vec![],
            };
            rules.insert(nr, conditions);
        }
        let allowlist = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )
        .map_err(seccomp)?;
        let mut programs = Vec::new();
        if let Some(clone3) = crate::syscall_number("clone3") {
            let no_clone3 = SeccompFilter::new(
                [(clone3, vec![])].into(),
                SeccompAction::Allow,
                SeccompAction::Errno(u32::try_from(libc::ENOSYS).unwrap_or(38)),
                arch,
            )
            .map_err(seccomp)?;
            programs.push(BpfProgram::try_from(no_clone3).map_err(seccomp)?);
        }
        if let Some(socket) = crate::syscall_number("socket") {
            let unix_only = SeccompRule::new(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, AF_UNIX)
                    .map_err(seccomp)?,
            ])
            .map_err(seccomp)?;
            let no_unix_sockets = SeccompFilter::new(
                [(socket, vec![unix_only])].into(),
                SeccompAction::Allow,
                SeccompAction::Errno(u32::try_from(libc::EACCES).unwrap_or(13)),
                arch,
            )
            .map_err(seccomp)?;
            programs.push(BpfProgram::try_from(no_unix_sockets).map_err(seccomp)?);
        }
        programs.push(BpfProgram::try_from(allowlist).map_err(seccomp)?);
        Ok(programs)
    }

    /// The same profile in the OCI runtime (Docker, Podman) seccomp format.
    #[must_use]
    pub fn to_oci(&self) -> serde_json::Value {
        let mut allow: Vec<&str> = self
            .syscalls
            .iter()
            .map(String::as_str)
            .filter(|s| self.forks || !matches!(*s, "clone" | "fork" | "vfork"))
            .filter(|s| !self.unix_sockets_only || !matches!(*s, "socket" | "socketpair"))
            .filter(|s| *s != "socket")
            .collect();
        allow.retain(|s| *s != "clone3");
        let mut rules = vec![serde_json::json!({
            "names": allow,
            "action": "SCMP_ACT_ALLOW",
        })];
        if self.syscalls.contains("clone") {
            if self.forks {
                rules.push(serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}));
            } else {
                rules.push(serde_json::json!({
                    "names": ["clone"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": CLONE_THREAD, "valueTwo": CLONE_THREAD,
                              "op": "SCMP_CMP_MASKED_EQ"}],
                    "comment": "threads only: CLONE_THREAD must be set",
                }));
            }
        }
        if self.syscalls.contains("socket") {
            rules.push(serde_json::json!({
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EACCES,
                "args": [{"index": 0, "value": AF_UNIX, "op": "SCMP_CMP_EQ"}],
                "comment": "no new Unix socket: the connection to the kernel is inherited",
            }));
            if !self.unix_sockets_only {
                rules.push(serde_json::json!({
                    "names": ["socket"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": AF_UNIX, "op": "SCMP_CMP_NE"}],
                    "comment": "the network families",
                }));
            }
        }
        if self.unix_sockets_only && self.syscalls.contains("socketpair") {
            rules.push(serde_json::json!({
                "names": ["socketpair"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": AF_UNIX, "op": "SCMP_CMP_EQ"}],
                "comment": "an anonymous pair reaches nothing outside the process",
            }));
        }
        if self.syscalls.contains("clone3") {
            rules.push(serde_json::json!({
                "names": ["clone3"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::ENOSYS,
                "comment": "ENOSYS: libc falls back to clone, whose flags the filter can check",
            }));
        }
        serde_json::json!({
            "comment": format!("p3ak plugin class `{}`: {}; generated from deploy/seccomp/{}.json",
                self.class.name(), self.description, self.class.name()),
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": rules,
        })
    }

    /// Rebuilds `syscalls` from traces and the margin.
    pub fn rebuild(&mut self, traces: &[Traced]) {
        let mut all: BTreeSet<String> = self.margin.keys().cloned().collect();
        for trace in traces {
            all.extend(trace.syscalls.keys().cloned());
        }
        self.syscalls = all;
    }
}

#[cfg(target_arch = "x86_64")]
fn target_arch() -> Result<seccompiler::TargetArch, SandboxError> {
    Ok(seccompiler::TargetArch::x86_64)
}

#[cfg(not(target_arch = "x86_64"))]
fn target_arch() -> Result<seccompiler::TargetArch, SandboxError> {
    Err(SandboxError::Seccomp(format!(
        "no profiles for the `{}` architecture",
        std::env::consts::ARCH
    )))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn deploy() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seccomp")
    }

    fn traced(plugin: &str) -> Traced {
        let path = deploy().join("traced").join(format!("{plugin}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_profile_parses_and_compiles() {
        for class in Class::ALL {
            let profile = Profile::of(class).unwrap();
            assert_eq!(profile.class, class);
            assert!(!profile.programs().unwrap().is_empty());
        }
    }

    /// The filters in use are no wider than the traces plus the documented margin.
    #[test]
    fn invariant_i7_filters_are_the_traces_plus_the_margin() {
        for class in Class::ALL {
            let profile = Profile::of(class).unwrap();
            let traces: Vec<Traced> = profile.traced.iter().map(|p| traced(p)).collect();
            assert!(!traces.is_empty(), "{class:?} has no trace");
            let mut rebuilt = profile.clone();
            rebuilt.rebuild(&traces);
            assert_eq!(
                rebuilt.syscalls,
                profile.syscalls,
                "deploy/seccomp/{}.json: `syscalls` is not traced ∪ margin",
                class.name()
            );
            for (call, reason) in &profile.margin {
                assert!(!reason.trim().is_empty(), "{call}: margin without a reason");
            }
            if !profile.forks {
                assert!(traces.iter().all(|t| !t.forked), "{class:?} traced a fork");
            }
        }
    }

    #[test]
    fn oci_copies_are_in_sync() {
        for class in Class::ALL {
            let profile = Profile::of(class).unwrap();
            let path = deploy().join("oci").join(format!("{}.json", class.name()));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let committed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                committed,
                profile.to_oci(),
                "{} is stale: run `p3ak sandbox profiles --write`",
                path.display()
            );
        }
    }
}

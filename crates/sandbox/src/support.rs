//! What the host offers: Landlock (and which ABI), seccomp filters, the privileges to switch
//! users and create network namespaces.

use serde::Serialize;

/// The layers this host can provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Support {
    /// The Landlock ABI version, `None` when Landlock is absent or disabled.
    pub landlock_abi: Option<u32>,
    /// Seccomp filter mode is available.
    pub seccomp: bool,
    /// This build has seccomp profiles for the machine's architecture.
    pub seccomp_profiles: bool,
    /// The kernel runs as root: it can give plugins their own users and network namespaces.
    pub root: bool,
}

/// Lowest Landlock ABI the sandbox relies on: 1 for file rules; scoping of signals and
/// abstract sockets (ABI 6) is added where the kernel has it.
pub const MIN_LANDLOCK_ABI: u32 = 1;

impl Support {
    /// Every missing layer, one phrase each (empty: the full sandbox is available).
    #[must_use]
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        match self.landlock_abi {
            None => missing.push(
                "Landlock is not available (kernel older than 5.13, or `landlock` not in the \
                 `lsm=` boot parameter): plugins would see the whole file system"
                    .to_owned(),
            ),
            Some(abi) if abi < MIN_LANDLOCK_ABI => {
                missing.push(format!("Landlock ABI {abi} is too old"));
            }
            Some(_) => {}
        }
        if !self.seccomp {
            missing.push(
                "seccomp filters are not available (kernel without CONFIG_SECCOMP_FILTER): \
                 plugins could make any system call"
                    .to_owned(),
            );
        } else if !self.seccomp_profiles {
            missing.push(format!(
                "no seccomp profiles for the `{}` architecture (only x86_64)",
                std::env::consts::ARCH
            ));
        }
        if !self.root {
            missing.push(
                "the kernel does not run as root: plugins cannot get their own Unix users or \
                 network namespaces"
                    .to_owned(),
            );
        }
        missing
    }

    /// Landlock can scope signals and abstract Unix sockets (ABI 6).
    #[must_use]
    pub fn landlock_scopes(&self) -> bool {
        self.landlock_abi.is_some_and(|abi| abi >= 6)
    }
}

/// Looks at what the running kernel offers.
#[must_use]
pub fn probe() -> Support {
    Support {
        landlock_abi: landlock_abi(),
        seccomp: seccomp_filter_available(),
        seccomp_profiles: crate::arch_supported(),
        root: rustix::process::geteuid().is_root(),
    }
}

/// libc here: the `landlock` crate keeps its ABI probe private, and rustix has no Landlock.
fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call only returns the
    // ABI version (or fails); it reads and writes no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).ok().filter(|abi| *abi > 0)
}

fn seccomp_filter_available() -> bool {
    // `Seccomp_filters:` appears in /proc/self/status only with CONFIG_SECCOMP_FILTER.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        return status.lines().any(|l| l.starts_with("Seccomp_filters:"));
    }
    // PR_GET_SECCOMP fails with EINVAL when the kernel has no seccomp at all; any mode, even
    // one rustix does not name (ERANGE), means it has.
    match rustix::thread::secure_computing_mode() {
        Ok(_) => true,
        Err(e) => e == rustix::io::Errno::RANGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_each_layer() {
        let none = Support {
            landlock_abi: None,
            seccomp: false,
            seccomp_profiles: true,
            root: false,
        };
        let missing = none.missing();
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(missing[0].contains("Landlock"));
        assert!(missing[1].contains("seccomp"));
        assert!(missing[2].contains("root"));
        let full = Support {
            landlock_abi: Some(7),
            seccomp: true,
            seccomp_profiles: true,
            root: true,
        };
        assert!(full.missing().is_empty());
    }
}

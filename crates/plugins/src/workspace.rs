//! Agents' workspaces: `<workspaces>/<agent>`, created 0700 on first use, and paths inside
//! them resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, so neither `..`, an absolute path nor a symbolic link (planted by
//! the shell, say) can lead outside. Symbolic links are refused altogether, even ones that
//! would stay inside: simplest to reason about, and the same rule for reading and writing.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::PluginError;
use p3ak_sdk::args::{check_agent, shorten};
use p3ak_sdk::runtime::ToolFailure;

/// Longest agent name.
/// Longest path an action accepts, in bytes.
const MAX_PATH_LEN: usize = 4096;
/// How often a lookup that raced with a rename is retried.
const EAGAIN_RETRIES: usize = 8;

/// The resolution every lookup uses.
pub(crate) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// The directory holding every agent's workspace.
pub(crate) struct Workspaces {
    root: PathBuf,
    fd: OwnedFd,
}

/// One agent's workspace, open.
pub(crate) struct AgentDir {
    /// Its path, for a child process's working directory.
    pub(crate) path: PathBuf,
    pub(crate) fd: OwnedFd,
}

impl Workspaces {
    /// Opens (creating it 0700 if needed) the directory of workspaces.
    pub(crate) fn open(root: &Path) -> Result<Self, PluginError> {
        if !root.is_absolute() {
            return Err(PluginError::Config(format!(
                "`workspaces` must be an absolute path, not `{}`",
                root.display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| PluginError::Config(format!("cannot create `{}`: {e}", root.display())))?;
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PluginError::Config(format!("cannot open `{}`: {e}", root.display())))?;
        Ok(Self {
            root: root.to_owned(),
            fd,
        })
    }

    /// The agent's workspace, created 0700 on first use.
    pub(crate) fn agent(&self, agent: &str) -> Result<AgentDir, ToolFailure> {
        check_agent(agent)?;
        match rustix::fs::mkdirat(&self.fd, agent, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(ToolFailure::permanent(format!(
                    "cannot create the workspace of `{agent}`: {e}"
                )));
            }
        }
        let fd = open_beneath(
            &self.fd,
            agent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => ToolFailure::permanent(format!(
                "the workspace of `{agent}` is a symbolic link, which is refused"
            )),
            other => lookup_failure(other, agent),
        })?;
        Ok(AgentDir {
            path: self.root.join(agent),
            fd,
        })
    }
}

/// `openat2` beneath `dir` with [`RESOLVE`], retried when it raced with a rename.
pub(crate) fn open_beneath(
    dir: &OwnedFd,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, RESOLVE) {
            Err(Errno::AGAIN | Errno::INTR) if attempts < EAGAIN_RETRIES => attempts += 1,
            other => return other,
        }
    }
}

/// A path relative to a workspace, checked as text so the common mistakes get a clear message
/// (the kernel's resolution is what actually keeps it inside). Returns its components.
pub(crate) fn relative(path: &str) -> Result<Vec<&str>, ToolFailure> {
    let shown = shorten(path);
    if path.is_empty() {
        return Err(ToolFailure::invalid("the path is empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(ToolFailure::invalid(format!(
            "the path is over {MAX_PATH_LEN} bytes"
        )));
    }
    if path.contains('\0') {
        return Err(ToolFailure::invalid(format!(
            "path `{shown}` contains a NUL byte"
        )));
    }
    let mut parts = Vec::new();
    let mut escapes = false;
    let mut dotdot = false;
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(ToolFailure::invalid(format!(
                    "path `{shown}` is absolute: paths are relative to the workspace"
                )));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                dotdot = true;
                if parts.pop().is_none() {
                    escapes = true;
                }
            }
            Component::Normal(name) => {
                parts.push(name.to_str().unwrap_or_default());
            }
        }
    }
    if escapes {
        return Err(ToolFailure::invalid(format!(
            "path `{shown}` escapes the workspace"
        )));
    }
    if dotdot {
        return Err(ToolFailure::invalid(format!(
            "path `{shown}` contains `..`, which is not allowed"
        )));
    }
    Ok(parts)
}

/// What a failed lookup of `path` means for the agent.
pub(crate) fn lookup_failure(errno: Errno, path: &str) -> ToolFailure {
    let shown = shorten(path);
    match errno {
        Errno::XDEV => ToolFailure::invalid(format!("path `{shown}` escapes the workspace")),
        Errno::LOOP => ToolFailure::invalid(format!(
            "path `{shown}` goes through a symbolic link, and symbolic links are not followed"
        )),
        Errno::NOENT => ToolFailure::invalid(format!("no such file or directory `{shown}`")),
        Errno::NOTDIR => {
            ToolFailure::invalid(format!("path `{shown}`: a part of it is not a directory"))
        }
        Errno::ISDIR => ToolFailure::invalid(format!("`{shown}` is a directory")),
        Errno::NAMETOOLONG => ToolFailure::invalid(format!("path `{shown}` is too long")),
        Errno::NOSYS => {
            ToolFailure::permanent("openat2 is unavailable: this plugin needs Linux 5.6 or newer")
        }
        Errno::ACCESS | Errno::PERM => {
            ToolFailure::permanent(format!("`{shown}`: permission denied"))
        }
        Errno::AGAIN | Errno::INTR => {
            ToolFailure::transient(format!("`{shown}`: the lookup raced with a rename"))
        }
        other => ToolFailure::permanent(format!("`{shown}`: {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative("a/./b").unwrap(), vec!["a", "b"]);
        assert_eq!(relative(".").unwrap(), Vec::<&str>::new());
        for (bad, says) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "escapes"),
            ("a/../../x", "escapes"),
            ("a/../b", "`..`"),
            ("a\0b", "NUL"),
        ] {
            let e = relative(bad).err().unwrap();
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
            assert_eq!(e.kind, p3ak_proto::ErrorKind::Invalid);
        }
    }
}

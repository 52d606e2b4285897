//! The program a sandboxed child runs, opened by the parent.
//!
//! A plugin's uid is a stranger's: it may not be able to walk the path to its own binary
//! (`cargo install` as root puts `p3ak` under `/root`, mode 0700). The parent opens the
//! binary and the child executes it through `/proc/self/fd/N`, a link the kernel follows
//! without walking the directories again. What the child may execute is still decided by the
//! file's own mode and by Landlock, which checks the file's real path.
//!
//! Scripts are run by path: their interpreter opens the file again by the name it is given,
//! and a script's imports are found beside it, so a script must be reachable by the plugin's
//! user; [`Program::open`] says which directory is in the way when it is not.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::SandboxError;

/// A program ready to be started under a plugin's uid.
pub struct Program {
    path: PathBuf,
    /// Open (close-on-exec) while the parent builds and spawns the command.
    opened: Option<File>,
}

impl Program {
    /// Opens `path` for a child that will run as `ids` (`None`: as the caller).
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, is not a regular executable file, or is a script whose
    /// directory the plugin's user cannot reach.
    pub fn open(path: &Path, ids: Option<(u32, u32)>) -> Result<Self, SandboxError> {
        let io = |e: std::io::Error| SandboxError::Program {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SandboxError::Program {
                path: path.to_owned(),
                message: "not a regular file".to_owned(),
            });
        }
        if meta.mode() & 0o111 == 0 {
            return Err(SandboxError::Program {
                path: path.to_owned(),
                message: "not executable (chmod +x it)".to_owned(),
            });
        }
        let mut magic = [0u8; 2];
        let script = file.read_at(&mut magic, 0).map_err(io)? == 2 && magic == *b"#!";
        let by_fd = Path::new("/proc/self/fd").is_dir();
        if script || !by_fd {
            if let Some((uid, gid)) = ids {
                unreachable_dir(path, uid, gid)?;
            }
            return Ok(Self {
                path: path.to_owned(),
                opened: None,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            opened: Some(file),
        })
    }

    /// A command that runs this program; its `argv[0]` is the program's real path. The
    /// command holds the open file until it is dropped, so the child always inherits it.
    #[must_use]
    pub fn command(self) -> std::process::Command {
        match self.opened {
            Some(file) => {
                let mut command =
                    std::process::Command::new(format!("/proc/self/fd/{}", file.as_raw_fd()));
                command.arg0(&self.path);
                let hold = move || -> std::io::Result<()> {
                    let _ = &file;
                    Ok(())
                };
                // SAFETY: the hook only keeps `file` owned by the command (it runs in the
                // child and makes no call at all); the descriptor is close-on-exec, so the
                // plugin does not keep it after exec.
                unsafe {
                    command.pre_exec(hold);
                }
                command
            }
            None => std::process::Command::new(&self.path),
        }
    }

    /// The program's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Fails with the first directory on the way to `path` that `uid`/`gid` (with no supplementary
/// groups) may not search, or with the file itself when it may not read and execute it.
fn unreachable_dir(path: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    let allows = |meta: &std::fs::Metadata, bits: u32| {
        let mode = meta.mode();
        let granted = if meta.uid() == uid {
            mode >> 6
        } else if meta.gid() == gid {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
    };
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let meta = std::fs::metadata(dir).map_err(|e| SandboxError::Program {
            path: path.to_owned(),
            message: format!("`{}`: {e}", dir.display()),
        })?;
        if !allows(&meta, 0o1) {
            return Err(SandboxError::Program {
                path: path.to_owned(),
                message: format!(
                    "the plugin's user (uid {uid}) cannot reach it: `{}` is mode {:04o}; \
                     keep scripts where other users may read them (e.g. /usr/local/lib/p3ak)",
                    dir.display(),
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| SandboxError::Program {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if !allows(&meta, 0o5) {
        return Err(SandboxError::Program {
            path: path.to_owned(),
            message: format!(
                "the plugin's user (uid {uid}) may not read and execute it: mode {:04o}",
                meta.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_says_which() {
        let err = Program::open(Path::new("/nonexistent/p3ak-plugin"), None)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/p3ak-plugin")),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_executable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        std::fs::write(&path, b"\x7fELF").unwrap();
        let err = Program::open(&path, None).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("not executable")),
            "{err:?}"
        );
    }

    #[test]
    fn a_script_behind_a_closed_directory_names_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        let script = closed.join("plugin.py");
        std::fs::write(&script, b"#!/usr/bin/env python3\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // A uid that owns nothing here.
        let err = Program::open(&script, Some((61_999, 61_999)))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains(&format!("`{}` is mode 0700", closed.display()))),
            "{err:?}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = Program::open(&script, Some((61_999, 61_999))).unwrap();
        assert_eq!(program.path(), script);
        assert_eq!(program.command().get_program(), script.as_os_str());
    }
}

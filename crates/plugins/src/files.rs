//! `files`: read, write and list text files in the agent's workspace.
//!
//! Config: `workspaces` (absolute path; each agent works in `<workspaces>/<agent>`, created
//! 0700 on first use). Every path is relative to the workspace and resolved by the kernel
//! beneath it (see the workspace rules: no `..`, no absolute paths, no symbolic links at all).
//! New files are 0600 and new directories 0700.
//!
//! | action | arguments | output | tier |
//! |---|---|---|---|
//! | `read` | `path` | `{path, content}` (UTF-8 text, at most 1 MiB) | observe |
//! | `write` | `path`, `content`, `append?` | `{path, bytes}` | act |
//! | `list` | `path?` (default `.`) | `{path, entries: [{name, kind, size}]}` sorted by name | observe |

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use p3ak_proto::{ActionSpec, Tier};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use crate::workspace::{Workspaces, lookup_failure, open_beneath, relative};
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Largest file `read` returns and `write` accepts.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most entries `list` returns.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    workspaces: std::path::PathBuf,
}

/// The `files` tool.
pub struct Files {
    workspaces: Workspaces,
    max_file: usize,
}

impl Files {
    /// Builds the tool from its `welcome` config; the file size limit is also kept under half
    /// of `max_frame`, so a reply always fits in a frame.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] when `workspaces` is missing or cannot be created or opened.
    pub fn from_config(config: &Value, max_frame: usize) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        Ok(Self {
            workspaces: Workspaces::open(&config.workspaces)?,
            max_file: MAX_FILE_BYTES.min(max_frame / 2),
        })
    }

    fn read(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("read", args, &["path"])?;
        let path = args.string("path")?;
        relative(path)?;
        let dir = self.workspaces.agent(agent)?;
        let fd = open_beneath(
            &dir.fd,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| lookup_failure(e, path))?;
        regular_file(&fd, path)?;
        let mut content = Vec::new();
        std::fs::File::from(fd)
            .take(self.max_file as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| ToolFailure::permanent(format!("cannot read `{}`: {e}", shorten(path))))?;
        if content.len() > self.max_file {
            return Err(ToolFailure::invalid(format!(
                "`{}` is over the limit of {} bytes",
                shorten(path),
                self.max_file
            )));
        }
        let content = String::from_utf8(content)
            .map_err(|_| ToolFailure::invalid(format!("`{}` is not UTF-8 text", shorten(path))))?;
        Ok(json!({"path": path, "content": content}))
    }

    fn write(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("write", args, &["path", "content", "append"])?;
        let path = args.string("path")?;
        let content = args.string("content")?;
        let append = args.opt_bool("append")?.unwrap_or(false);
        if content.len() > self.max_file {
            return Err(ToolFailure::invalid(format!(
                "the content is {} bytes, over the limit of {}",
                content.len(),
                self.max_file
            )));
        }
        let parts = relative(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(ToolFailure::invalid(format!(
                "path `{}` names no file",
                shorten(path)
            )));
        };
        let workspace = self.workspaces.agent(agent)?;
        let mut dir = workspace.fd;
        for part in parents {
            match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(lookup_failure(e, path)),
            }
            dir = open_beneath(
                &dir,
                part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| lookup_failure(e, path))?;
        }
        let mode = if append {
            OFlags::APPEND
        } else {
            OFlags::TRUNC
        };
        let fd = open_beneath(
            &dir,
            name,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY
                | OFlags::NONBLOCK
                | mode,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match e {
            // A FIFO without a reader.
            Errno::NXIO => {
                ToolFailure::invalid(format!("`{}` is not a regular file", shorten(path)))
            }
            other => lookup_failure(other, path),
        })?;
        regular_file(&fd, path)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                ToolFailure::permanent(format!("cannot write `{}`: {e}", shorten(path)))
            })?;
        Ok(json!({"path": path, "bytes": content.len()}))
    }

    fn list(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("list", args, &["path"])?;
        let path = args.opt_string("path")?.unwrap_or(".");
        relative(path)?;
        let workspace = self.workspaces.agent(agent)?;
        let fd = open_beneath(
            &workspace.fd,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR => {
                ToolFailure::invalid(format!("`{}` is not a directory", shorten(path)))
            }
            other => lookup_failure(other, path),
        })?;
        let failed =
            |e: Errno| ToolFailure::permanent(format!("cannot list `{}`: {e}", shorten(path)));
        let listing = fd
            .try_clone()
            .map_err(|e| ToolFailure::permanent(format!("cannot list `{}`: {e}", shorten(path))))?;
        let mut dir = rustix::fs::Dir::new(listing).map_err(failed)?;
        let mut entries = Vec::new();
        let mut truncated = false;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            if entries.len() == MAX_ENTRIES {
                truncated = true;
                break;
            }
            let Ok(stat) = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue; // Removed while listing.
            };
            let kind = match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => "file",
                FileType::Directory => "dir",
                FileType::Symlink => "symlink",
                _ => "other",
            };
            entries.push((name, kind, stat.st_size));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let entries: Vec<Value> = entries
            .into_iter()
            .map(|(name, kind, size)| json!({"name": name, "kind": kind, "size": size}))
            .collect();
        let mut out = json!({"path": path, "entries": entries});
        if truncated && let Some(object) = out.as_object_mut() {
            object.insert("truncated".to_owned(), Value::Bool(true));
        }
        Ok(out)
    }
}

/// Refuses anything but a regular file (a FIFO would hang, a device is not a file).
fn regular_file(fd: &OwnedFd, path: &str) -> Result<(), ToolFailure> {
    let stat = rustix::fs::fstat(fd)
        .map_err(|e| ToolFailure::permanent(format!("`{}`: {e}", shorten(path))))?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
        Ok(())
    } else {
        Err(ToolFailure::invalid(format!(
            "`{}` is not a regular file",
            shorten(path)
        )))
    }
}

impl Tool for Files {
    fn actions(&self) -> Vec<ActionSpec> {
        let path = json!({"type": "string", "minLength": 1, "maxLength": 4096,
            "description": "relative to the workspace; no `..`, no symbolic links"});
        vec![
            ActionSpec {
                name: "read".to_owned(),
                description: "Read a UTF-8 text file from your workspace (at most 1 MiB)."
                    .to_owned(),
                parameters: schema(json!({"path": path}), &["path"]),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "write".to_owned(),
                description: "Write (or append to) a text file in your workspace, creating \
                    parent directories."
                    .to_owned(),
                parameters: schema(
                    json!({
                        "path": path,
                        "content": {"type": "string"},
                        "append": {"type": "boolean", "default": false},
                    }),
                    &["path", "content"],
                ),
                tier: Tier::Act,
            },
            ActionSpec {
                name: "list".to_owned(),
                description: "List a directory of your workspace.".to_owned(),
                parameters: schema(
                    json!({"path": {"type": "string", "minLength": 1, "maxLength": 4096,
                        "default": "."}}),
                    &[],
                ),
                tier: Tier::Observe,
            },
        ]
    }

    fn invoke(&mut self, agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "read" => self.read(agent, args),
            "write" => self.write(agent, args),
            "list" => self.list(agent, args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(other)
            ))),
        }
    }
}

//! `skills`: the owner's skills (docs/skills.md) for the agents — their instructions on
//! demand, and their scripts as actions the policy governs like any other.
//!
//! Config (the kernel fills it in): `skills` (the home's `skills/`, lent read-only with its
//! scripts executable), `workspaces` (as for `shell`), `catalog` (the valid skills the kernel
//! found: folder, description, agents, scripts with their files and timeouts), `max_output`
//! (bytes kept of each of stdout and stderr, default 64 KiB, at most 1 MiB).
//!
//! Actions:
//! - `load {name}` (tier observe): the skill's instructions (the body of its `SKILL.md`) and
//!   its scripts.
//! - `run {skill, script, args?, stdin?}` (tier act): runs the script as `shell` runs a
//!   command (see `runner`) — argv only (`args`, strings; never a shell string), the agent's
//!   workspace as working directory, `stdin` as its input, the script's timeout, output
//!   capped. Output: `{exit_code, stdout, stderr, timed_out, truncated}`.
//!
//! A skill the agent may not see (its `agents:`) is, for that agent, no skill at all.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use p3ak_proto::{ActionSpec, Tier};
use rustix::fs::{Mode, OFlags};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use crate::workspace::{Workspaces, lookup_failure, open_beneath};
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Largest `SKILL.md` read, in bytes (as the kernel's discovery).
pub const MAX_SKILL_BYTES: u64 = 256 * 1024;
/// Most arguments a script is given.
pub const MAX_ARGS: usize = 64;
/// Longest argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// Largest input, in bytes.
pub const MAX_STDIN_BYTES: usize = 256 * 1024;
/// Longest timeout a script may have, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Most output an operator may keep per stream, in bytes.
pub const MAX_OUTPUT_LIMIT: usize = 1 << 20;

fn default_max_output() -> usize {
    64 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    workspaces: PathBuf,
    skills: PathBuf,
    #[serde(default)]
    catalog: BTreeMap<String, Entry>,
    #[serde(default = "default_max_output")]
    max_output: usize,
}

/// One skill of the kernel's catalog.
#[derive(Deserialize)]
struct Entry {
    dir: String,
    description: String,
    #[serde(default)]
    agents: Option<Vec<String>>,
    #[serde(default)]
    scripts: BTreeMap<String, ScriptEntry>,
}

#[derive(Deserialize)]
struct ScriptEntry {
    file: String,
    #[serde(default)]
    description: String,
    timeout_secs: u64,
}

/// The `skills` tool.
pub struct Skills {
    workspaces: Workspaces,
    root: PathBuf,
    root_fd: OwnedFd,
    catalog: BTreeMap<String, Entry>,
    max_output: usize,
}

impl Skills {
    /// Builds the tool from its `welcome` config; `max_output` is also kept under a quarter
    /// of `max_frame`, so both streams fit in a reply.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for a missing setting, a limit out of range, or a folder that
    /// cannot be opened.
    pub fn from_config(config: &Value, max_frame: usize) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        p3ak_sdk::check_setting("max_output", config.max_output, MAX_OUTPUT_LIMIT, " bytes")?;
        if !config.skills.is_absolute() {
            return Err(PluginError::Config(format!(
                "`skills` must be an absolute path, not `{}`",
                config.skills.display()
            )));
        }
        let root_fd = rustix::fs::open(
            &config.skills,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            PluginError::Config(format!("cannot open `{}`: {e}", config.skills.display()))
        })?;
        Ok(Self {
            workspaces: Workspaces::open(&config.workspaces)?,
            root: config.skills,
            root_fd,
            catalog: config.catalog,
            max_output: config.max_output.min(max_frame / 4).max(1),
        })
    }

    /// The skill `name`, if `agent` may see it.
    fn skill(&self, agent: &str, name: &str) -> Result<&Entry, ToolFailure> {
        self.catalog
            .get(name)
            .filter(|e| {
                e.agents
                    .as_ref()
                    .is_none_or(|agents| agents.iter().any(|a| a == agent))
            })
            .ok_or_else(|| ToolFailure::invalid(format!("no skill `{}`", shorten(name))))
    }

    fn load(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("load", args, &["name"])?;
        let name = args.string("name")?;
        let entry = self.skill(agent, name)?;
        let path = format!("{}/SKILL.md", entry.dir);
        let fd = open_beneath(
            &self.root_fd,
            &path,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| lookup_failure(e, &path))?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_SKILL_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ToolFailure::permanent(format!("cannot read `{path}`: {e}")))?;
        if bytes.len() as u64 > MAX_SKILL_BYTES {
            return Err(ToolFailure::permanent(format!(
                "`{path}` is over {MAX_SKILL_BYTES} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&bytes);
        let body = body_of(&text).ok_or_else(|| {
            ToolFailure::permanent(format!("`{path}` has no front matter any more"))
        })?;
        let scripts: Vec<Value> = entry
            .scripts
            .iter()
            .map(|(name, s)| {
                json!({"name": name, "description": s.description, "timeout_secs": s.timeout_secs})
            })
            .collect();
        Ok(json!({
            "name": name,
            "description": entry.description,
            "instructions": body.trim_start_matches(['\n', '\r']),
            "scripts": scripts,
        }))
    }

    fn run(&self, agent: &str, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("run", args, &["skill", "script", "args", "stdin"])?;
        let skill = args.string("skill")?;
        let script = args.string("script")?;
        let entry = self.skill(agent, skill)?;
        let declared = entry.scripts.get(script).ok_or_else(|| {
            ToolFailure::invalid(format!(
                "skill `{}` has no script `{}`",
                shorten(skill),
                shorten(script)
            ))
        })?;
        let argv = string_list(args.opt_value("args"))?;
        let stdin = args.opt_string("stdin")?;
        if stdin.is_some_and(|s| s.len() > MAX_STDIN_BYTES) {
            return Err(ToolFailure::invalid(format!(
                "`run`: `stdin` is over {MAX_STDIN_BYTES} bytes"
            )));
        }
        // The script must still be a regular, executable file inside the skill's folder,
        // reached without a link.
        let relative = format!("{}/{}", entry.dir, declared.file);
        let fd = open_beneath(
            &self.root_fd,
            &relative,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| lookup_failure(e, &relative))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| {
            ToolFailure::permanent(format!("cannot look at `{}`: {e}", shorten(&relative)))
        })?;
        let file =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
        if !file || stat.st_mode & 0o111 == 0 {
            return Err(ToolFailure::permanent(format!(
                "`{}` is not an executable file",
                shorten(&relative)
            )));
        }
        let workspace = self.workspaces.agent(agent)?;
        let program = self.root.join(&relative);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        crate::runner::Run {
            program: &program,
            args: &argv,
            workspace: &workspace.path,
            stdin: stdin.map(str::as_bytes),
            timeout: Duration::from_secs(declared.timeout_secs.clamp(1, MAX_TIMEOUT_SECS)),
            max_output: self.max_output,
        }
        .run()
    }
}

/// `args`: absent, or a list of at most [`MAX_ARGS`] strings without NUL bytes.
fn string_list(value: Option<&Value>) -> Result<Vec<String>, ToolFailure> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let wrong = || ToolFailure::invalid("`run`: argument `args` must be a list of strings");
    let items = value.as_array().ok_or_else(wrong)?;
    if items.len() > MAX_ARGS {
        return Err(ToolFailure::invalid(format!(
            "`run`: over {MAX_ARGS} arguments"
        )));
    }
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(wrong)?;
            if text.len() > MAX_ARG_BYTES || text.contains('\0') {
                return Err(ToolFailure::invalid(format!(
                    "`run`: an argument is over {MAX_ARG_BYTES} bytes or contains a NUL byte"
                )));
            }
            Ok(text.to_owned())
        })
        .collect()
}

/// The body of a `SKILL.md`: what follows the `---` line that closes its front matter.
fn body_of(text: &str) -> Option<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end_matches(['\n', '\r']) == "---" {
            return rest.get(offset..);
        }
    }
    None
}

impl Tool for Skills {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            ActionSpec {
                name: "load".to_owned(),
                description: "Load a skill by name: its instructions, which you then follow, \
                              and the scripts it offers (run them with `skills.run`)."
                    .to_owned(),
                parameters: schema(
                    json!({"name": {"type": "string", "minLength": 1, "maxLength": 64}}),
                    &["name"],
                ),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "run".to_owned(),
                description: "Run one of a skill's scripts in your workspace, with the given \
                              arguments (a list of strings, not a shell command line) and, \
                              optionally, text on its standard input."
                    .to_owned(),
                parameters: schema(
                    json!({
                        "skill": {"type": "string", "minLength": 1, "maxLength": 64},
                        "script": {"type": "string", "minLength": 1, "maxLength": 64},
                        "args": {
                            "type": "array",
                            "maxItems": MAX_ARGS,
                            "items": {"type": "string", "maxLength": MAX_ARG_BYTES},
                        },
                        "stdin": {"type": "string", "maxLength": MAX_STDIN_BYTES},
                    }),
                    &["skill", "script"],
                ),
                tier: Tier::Act,
            },
        ]
    }

    fn invoke(&mut self, agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "load" => self.load(agent, args),
            "run" => self.run(agent, args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(other)
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_body_follows_the_closing_line() {
        assert_eq!(body_of("---\na: b\n---\nbody\n"), Some("body\n"));
        assert_eq!(body_of("---\r\na: b\r\n---\r\nbody"), Some("body"));
        assert_eq!(body_of("no front matter"), None);
        assert_eq!(body_of("---\nunclosed\n"), None);
    }

    #[test]
    fn script_arguments_are_a_list_of_plain_strings() {
        assert_eq!(string_list(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            string_list(Some(&json!(["a", "b c"]))).unwrap(),
            vec!["a".to_owned(), "b c".to_owned()]
        );
        for bad in [
            json!("a b"),
            json!([1]),
            json!(["a\0b"]),
            json!(vec!["x"; 65]),
        ] {
            assert!(string_list(Some(&bad)).is_err(), "{bad}");
        }
    }
}

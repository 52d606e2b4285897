//! Skills: folders `skills/<dir>/SKILL.md` in the home (docs/skills.md is the contract).
//!
//! A `SKILL.md` is YAML front matter between two `---` lines, then the Markdown body: the
//! instructions an agent loads when it needs them (`skills.load`). The front matter names the
//! skill, describes it in one line, and may claim a slash command, restrict it to some agents
//! and declare scripts, which the `skills` plugin runs as policed actions (`skills.run`).
//!
//! Discovery is bounded ([`MAX_SKILLS`], [`MAX_SKILL_BYTES`]) and never fails as a whole: a
//! broken skill is left out with its error, which the kernel audits (`skill.invalid`) and
//! `p3ak skills` shows. Everything here is operator-written text: the listing in the system
//! prompt and a command's body count as the operator's words for provenance.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most skills discovered; folders past it are listed as invalid.
pub const MAX_SKILLS: usize = 200;
/// Largest `SKILL.md`, in bytes.
pub const MAX_SKILL_BYTES: u64 = 256 * 1024;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 300;
/// Longest name (of a skill, a script, a command), in bytes.
pub const MAX_NAME: usize = 64;
/// Most scripts one skill declares.
pub const MAX_SCRIPTS: usize = 32;
/// A script's timeout when it names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest timeout a script may ask for (as `shell`'s).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The file each skill's folder holds.
pub const SKILL_FILE: &str = "SKILL.md";

/// The chat commands the kernel answers itself: a skill may not claim one.
pub const BUILTIN_COMMANDS: &[&str] = &[
    "help", "start", "status", "pending", "agents", "agent", "new", "reset", "stop", "cancel",
];

/// One valid skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skill {
    /// Its name (the folder's unless the front matter gives one).
    pub name: String,
    /// Its folder's name, inside `skills/`.
    pub dir: String,
    /// One line: what it is for.
    pub description: String,
    /// The slash command it answers, without `/`.
    pub command: Option<String>,
    /// The agents that see it; `None`: all.
    pub agents: Option<Vec<String>>,
    /// Its scripts, by name.
    pub scripts: BTreeMap<String, Script>,
    /// The instructions (the Markdown after the front matter).
    #[serde(skip)]
    pub body: String,
}

/// A script a skill declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Script {
    /// Its path, relative to the skill's folder.
    pub file: String,
    /// What it does.
    pub description: String,
    /// How long it may run, in seconds.
    pub timeout_secs: u64,
}

/// A folder that is not a valid skill, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    /// The folder's name, inside `skills/`.
    pub dir: String,
    /// Why, on one line (naming the file and the key).
    pub error: String,
}

/// The skills of a home.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skills {
    /// The valid ones, by folder name.
    pub skills: Vec<Skill>,
    /// The ones left out.
    pub invalid: Vec<Invalid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Front {
    name: Option<String>,
    description: Option<String>,
    command: Option<String>,
    agents: Option<Vec<String>>,
    #[serde(default)]
    scripts: BTreeMap<String, RawScript>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    file: String,
    #[serde(default)]
    description: String,
    timeout: Option<String>,
}

/// Splits a `SKILL.md` into its front matter and its body: the text must open with a `---`
/// line, and the front matter ends at the next `---` line.
#[must_use]
pub fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "---" {
            let front = rest.get(..offset)?;
            let body = rest.get(offset + line.len()..)?;
            return Some((front, body));
        }
        offset += line.len();
    }
    None
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the `SKILL.md` of the folder `dir` (its text `text`); `file` names it in errors.
///
/// # Errors
///
/// One line naming `file` and the key: invalid YAML, an unknown key, a missing or long
/// description, a bad name or command, a script outside the folder, missing or not
/// executable.
pub fn parse(dir: &Path, text: &str) -> Result<Skill, String> {
    let file = dir.join(SKILL_FILE);
    let shown = file.display();
    let dir_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let (front, body) = split_front_matter(text).ok_or_else(|| {
        format!("`{shown}`: no front matter: the file must open with a `---` line, and a second `---` line must close it")
    })?;
    let front: Front = if front.trim().is_empty() {
        return Err(format!("`{shown}`: `description` is required"));
    } else {
        serde_saphyr::from_str(front).map_err(|e| format!("`{shown}`: {}", yaml_error(&e)))?
    };
    let name = front.name.unwrap_or_else(|| dir_name.clone());
    if !valid_name(&name) {
        return Err(format!(
            "`{shown}`: `name` `{}` is not valid: 1 to {MAX_NAME} letters, digits, `-` or `_`",
            shorten(&name)
        ));
    }
    let description = front
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("`{shown}`: `description` is required"))?;
    if description.contains(['\n', '\r']) {
        return Err(format!("`{shown}`: `description` must be one line"));
    }
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(format!(
            "`{shown}`: `description` is over {MAX_DESCRIPTION} characters"
        ));
    }
    let command = match front.command {
        None => None,
        Some(command) => {
            let command = command.strip_prefix('/').unwrap_or(&command).to_owned();
            let ok = !command.is_empty()
                && command.len() <= MAX_NAME
                && command
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(format!(
                    "`{shown}`: `command` `{}` is not valid: 1 to {MAX_NAME} lowercase letters, digits or `_`",
                    shorten(&command)
                ));
            }
            if BUILTIN_COMMANDS.contains(&command.as_str()) {
                return Err(format!(
                    "`{shown}`: `command` `/{command}` is a built-in command"
                ));
            }
            Some(command)
        }
    };
    if let Some(agents) = &front.agents
        && let Some(bad) = agents.iter().find(|a| !valid_name(a))
    {
        return Err(format!(
            "`{shown}`: `agents` names `{}`, which is not an agent name",
            shorten(bad)
        ));
    }
    if front.scripts.len() > MAX_SCRIPTS {
        return Err(format!(
            "`{shown}`: `scripts` lists over {MAX_SCRIPTS} scripts"
        ));
    }
    let mut scripts = BTreeMap::new();
    for (script, raw) in front.scripts {
        let key = format!("scripts.{}", shorten(&script));
        if !valid_name(&script) {
            return Err(format!(
                "`{shown}`: `{key}`: the name is not valid: 1 to {MAX_NAME} letters, digits, `-` or `_`"
            ));
        }
        let timeout = match raw.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(t) => humantime::parse_duration(t.trim())
                .map_err(|e| format!("`{shown}`: `{key}.timeout`: `{}`: {e}", shorten(t)))?,
        };
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(format!(
                "`{shown}`: `{key}.timeout` must be between 1s and {}s",
                MAX_TIMEOUT.as_secs()
            ));
        }
        check_script_file(dir, &raw.file)
            .map_err(|why| format!("`{shown}`: `{key}.file`: {why}"))?;
        if raw.description.contains(['\n', '\r'])
            || raw.description.chars().count() > MAX_DESCRIPTION
        {
            return Err(format!(
                "`{shown}`: `{key}.description` must be one line of at most {MAX_DESCRIPTION} characters"
            ));
        }
        scripts.insert(
            script,
            Script {
                file: raw.file,
                description: raw.description.trim().to_owned(),
                timeout_secs: timeout.as_secs().max(1),
            },
        );
    }
    Ok(Skill {
        name,
        dir: dir_name,
        description,
        command,
        agents: front.agents,
        scripts,
        body: body.trim_start_matches(['\n', '\r']).to_owned(),
    })
}

/// A script's file: relative, without `..`, a regular file (not a link) inside the folder,
/// executable.
fn check_script_file(dir: &Path, file: &str) -> Result<(), String> {
    let shown = shorten(file);
    let path = Path::new(file);
    if file.is_empty() || file.contains('\0') {
        return Err("the path is empty or contains a NUL byte".to_owned());
    }
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{shown}` is absolute: scripts are files inside the skill's folder"
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "`{shown}` contains `..`: scripts are files inside the skill's folder"
                ));
            }
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    // No link anywhere on the way: each component must be what it says.
    let mut at = dir.to_owned();
    for component in path.components() {
        if let Component::Normal(part) = component {
            at.push(part);
            let meta = std::fs::symlink_metadata(&at)
                .map_err(|e| format!("`{shown}`: {}", io_words(&e)))?;
            if meta.file_type().is_symlink() {
                return Err(format!(
                    "`{shown}` goes through a symbolic link, which is refused"
                ));
            }
        }
    }
    let meta =
        std::fs::symlink_metadata(&at).map_err(|e| format!("`{shown}`: {}", io_words(&e)))?;
    if !meta.is_file() {
        return Err(format!("`{shown}` is not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("`{shown}` is not executable (chmod +x)"));
    }
    Ok(())
}

fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => e.to_string(),
    }
}

/// A serde-saphyr error on one line, without its snippet.
fn yaml_error(error: &serde_saphyr::Error) -> String {
    let rendered = error.without_snippet().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML")
        .trim_end_matches('.')
        .to_owned();
    match error.location() {
        Some(l) if !first.contains(" at line ") => {
            format!(
                "{first} (front matter line {}, column {})",
                l.line(),
                l.column()
            )
        }
        _ => first,
    }
}

/// At most 80 characters of hostile text, for a message.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.replace(['\n', '\r', '`'], " ")
}

/// Reads `SKILL.md` of `dir`, at most [`MAX_SKILL_BYTES`].
fn read_skill(dir: &Path) -> Result<String, String> {
    let file = dir.join(SKILL_FILE);
    let shown = file.display();
    let meta = std::fs::symlink_metadata(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("`{shown}`: no such file: a skill's folder holds a {SKILL_FILE}")
        }
        _ => format!("`{shown}`: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("`{shown}` is not a regular file"));
    }
    if meta.len() > MAX_SKILL_BYTES {
        return Err(format!("`{shown}` is over {MAX_SKILL_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&file)
        .and_then(|f| f.take(MAX_SKILL_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("`{shown}`: {e}"))?;
    if bytes.len() as u64 > MAX_SKILL_BYTES {
        return Err(format!("`{shown}` is over {MAX_SKILL_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| format!("`{shown}` is not UTF-8 text"))
}

impl Skills {
    /// Reads `root/*/SKILL.md` (folders whose name starts with `.` are skipped), in folder
    /// order. A missing `root` has no skills.
    #[must_use]
    pub fn discover(root: &Path) -> Self {
        let mut out = Self::default();
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
            Err(e) => {
                out.invalid.push(Invalid {
                    dir: String::new(),
                    error: format!("cannot list `{}`: {e}", root.display()),
                });
                return out;
            }
        };
        let mut dirs: Vec<String> = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(name);
            }
        }
        dirs.sort();
        let mut names = BTreeSet::new();
        let mut commands = BTreeSet::new();
        for (i, dir) in dirs.into_iter().enumerate() {
            if i >= MAX_SKILLS {
                out.invalid.push(Invalid {
                    error: format!(
                        "`{}`: over the limit of {MAX_SKILLS} skills",
                        root.join(&dir).display()
                    ),
                    dir,
                });
                continue;
            }
            let path = root.join(&dir);
            let parsed = read_skill(&path).and_then(|text| parse(&path, &text));
            let file = path.join(SKILL_FILE);
            let checked = parsed.and_then(|skill| {
                if names.contains(&skill.name) {
                    return Err(format!(
                        "`{}`: `name` `{}` is taken by another skill",
                        file.display(),
                        skill.name
                    ));
                }
                if let Some(c) = &skill.command
                    && commands.contains(c)
                {
                    return Err(format!(
                        "`{}`: `command` `/{c}` is taken by another skill",
                        file.display()
                    ));
                }
                Ok(skill)
            });
            match checked {
                Ok(skill) => {
                    names.insert(skill.name.clone());
                    if let Some(c) = &skill.command {
                        commands.insert(c.clone());
                    }
                    out.skills.push(skill);
                }
                Err(error) => out.invalid.push(Invalid { dir, error }),
            }
        }
        out
    }

    /// The skills `agent` sees.
    pub fn visible_to<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a Skill> + 'a {
        self.skills.iter().filter(move |s| s.visible_to(agent))
    }

    /// The skill named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.skills.iter().find(|s| s.name == name)
    }

    /// The section of `agent`'s system prompt that lists its skills (empty if it has none).
    #[must_use]
    pub fn prompt_section(&self, agent: &str) -> String {
        let mut lines: Vec<String> = self
            .visible_to(agent)
            .map(|s| format!("- {} — {}", s.name, s.description))
            .collect();
        if lines.is_empty() {
            return String::new();
        }
        lines.insert(
            0,
            "\n\nSkills you can use. When one fits the task, call the `skills.load` tool with \
             its name to get its instructions (and its scripts, which `skills.run` runs), \
             then follow them:"
                .to_owned(),
        );
        lines.join("\n")
    }

    /// What `agent`'s system prompt gets for a turn on `message`: [`Self::prompt_section`].
    /// That listing, and the body of a skill's command when `message` is one expanded by
    /// [`Self::expand_command`], go into `conversation` as the operator's words.
    pub(crate) fn offer(
        &self,
        agent: &str,
        message: &str,
        conversation: &mut crate::road::Conversation,
    ) -> String {
        let section = self.prompt_section(agent);
        if !section.is_empty() {
            conversation.said(p3ak_policy::Source::Operator, &section);
        }
        for skill in self.visible_to(agent).filter(|s| s.command.is_some()) {
            let body = skill.body.trim_end();
            if !body.is_empty() && message.starts_with(body) {
                conversation.said(p3ak_policy::Source::Operator, body);
            }
        }
        section
    }

    /// The message a slash command `/NAME rest` becomes for `agent`, if `text` is one a skill
    /// it sees claims: the skill's body, then the person's text.
    #[must_use]
    pub fn expand_command<'a>(&'a self, agent: &str, text: &str) -> Option<(&'a Skill, String)> {
        let rest = text.trim_start().strip_prefix('/')?;
        let word = rest.split_whitespace().next()?;
        let name = word.split('@').next().unwrap_or(word).to_ascii_lowercase();
        let skill = self
            .skills
            .iter()
            .filter(|s| s.visible_to(agent))
            .find(|s| s.command.as_deref() == Some(name.as_str()))?;
        let said = rest.get(word.len()..).unwrap_or_default().trim();
        let mut message = skill.body.trim_end().to_owned();
        if !said.is_empty() {
            message.push_str("\n\n");
            message.push_str(said);
        }
        Some((skill, message))
    }

    /// The lines `/help` adds: one per command a skill `agent` sees claims.
    #[must_use]
    pub fn help_lines(&self, agent: &str) -> String {
        self.visible_to(agent)
            .filter_map(|s| {
                s.command
                    .as_ref()
                    .map(|c| format!("\n/{c} TEXT — {} (skill {})", s.description, s.name))
            })
            .collect()
    }

    /// What the `skills` plugin is given: each valid skill's folder, description, agents and
    /// scripts (it reads the bodies itself, from the folders it is lent).
    #[must_use]
    pub fn catalog(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .skills
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok().map(|v| (s.name.clone(), v)))
            .collect();
        serde_json::Value::Object(map)
    }
}

impl Skill {
    /// Whether `agent` sees it.
    #[must_use]
    pub fn visible_to(&self, agent: &str) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|agents| agents.iter().any(|a| a == agent))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn folder(name: &str, skill: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(name);
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(dir.join(SKILL_FILE), skill).unwrap();
        (root, dir)
    }

    fn script(dir: &Path, file: &str, mode: u32) {
        let path = dir.join(file);
        std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn error(dir: &Path, text: &str) -> String {
        let e = parse(dir, text).unwrap_err();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(e.contains("SKILL.md"), "names the file: {e}");
        e
    }

    const GOOD: &str = "---\n\
        description: Writes the weekly report from the notes in the workspace.\n\
        command: report\n\
        agents: [assistant, ledger]\n\
        scripts:\n  \
          count:\n    \
            file: scripts/count.sh\n    \
            description: Counts the notes\n    \
            timeout: 10s\n\
        ---\n\
        # Weekly report\n\nRead the notes, then write the report.\n";

    #[test]
    fn a_good_skill_parses_with_defaults_from_its_folder() {
        let (_root, dir) = folder("weekly-report", GOOD);
        script(&dir, "scripts/count.sh", 0o755);
        let skill = parse(&dir, GOOD).unwrap();
        assert_eq!(skill.name, "weekly-report");
        assert_eq!(skill.dir, "weekly-report");
        assert_eq!(skill.command.as_deref(), Some("report"));
        assert_eq!(
            skill.agents,
            Some(vec!["assistant".to_owned(), "ledger".to_owned()])
        );
        let count = &skill.scripts["count"];
        assert_eq!(count.file, "scripts/count.sh");
        assert_eq!(count.timeout_secs, 10);
        assert!(skill.body.starts_with("# Weekly report"));
        assert!(skill.visible_to("ledger") && !skill.visible_to("scout"));
    }

    #[test]
    fn a_missing_description_is_an_error_naming_the_key() {
        let text = "---\nname: notes\n---\nbody\n";
        let (_root, dir) = folder("notes", text);
        assert!(error(&dir, text).contains("`description` is required"));
        let (_root, dir) = folder("empty", "---\n---\nbody");
        assert!(error(&dir, "---\n---\nbody").contains("`description`"));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let text = "---\ndescription: x\ncolour: blue\n---\nbody\n";
        let (_root, dir) = folder("notes", text);
        let e = error(&dir, text);
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_bad_name_or_command_is_an_error() {
        let text = "---\nname: my skill!\ndescription: x\n---\n";
        let (_root, dir) = folder("notes", text);
        assert!(error(&dir, text).contains("`name`"));
        let text = "---\ndescription: x\ncommand: help\n---\n";
        assert!(error(&dir, text).contains("built-in command"));
        let text = "---\ndescription: x\ncommand: Re-port\n---\n";
        assert!(error(&dir, text).contains("`command`"));
        let long = format!("---\ndescription: {}\n---\n", "x".repeat(301));
        assert!(error(&dir, &long).contains("over 300"));
        assert!(error(&dir, "no front matter").contains("front matter"));
    }

    #[test]
    fn a_script_outside_the_folder_is_an_error() {
        for file in ["../other/x.sh", "/bin/sh", "scripts/../../x.sh"] {
            let text = format!("---\ndescription: x\nscripts:\n  s:\n    file: {file}\n---\n");
            let (_root, dir) = folder("notes", &text);
            let e = error(&dir, &text);
            assert!(e.contains("`scripts.s.file`"), "{e}");
            assert!(e.contains("inside the skill's folder"), "{e}");
        }
        let text = "---\ndescription: x\nscripts:\n  s:\n    file: scripts/gone.sh\n---\n";
        let (_root, dir) = folder("notes", text);
        assert!(error(&dir, text).contains("no such file"));
        // A link that leads out of the folder.
        let (_root, dir) = folder("linked", "");
        std::os::unix::fs::symlink("/bin/sh", dir.join("scripts/sh")).unwrap();
        let text = "---\ndescription: x\nscripts:\n  s:\n    file: scripts/sh\n---\n";
        assert!(error(&dir, text).contains("symbolic link"));
    }

    #[test]
    fn a_script_that_is_not_executable_is_an_error() {
        let text = "---\ndescription: x\nscripts:\n  s:\n    file: scripts/s.sh\n---\n";
        let (_root, dir) = folder("notes", text);
        script(&dir, "scripts/s.sh", 0o644);
        let e = error(&dir, text);
        assert!(
            e.contains("`scripts.s.file`") && e.contains("not executable"),
            "{e}"
        );
        let text =
            "---\ndescription: x\nscripts:\n  s:\n    file: scripts/s.sh\n    timeout: 2h\n---\n";
        script(&dir, "scripts/s.sh", 0o755);
        assert!(error(&dir, text).contains("`scripts.s.timeout`"));
    }

    #[test]
    fn discovery_keeps_the_good_and_lists_the_broken() {
        let root = tempfile::tempdir().unwrap();
        for (dir, text) in [
            (
                "a-good",
                "---\ndescription: Good one\ncommand: report\n---\nDo it.\n",
            ),
            ("b-broken", "---\nname: x\n---\n"),
            (
                "c-same-command",
                "---\ndescription: Other\ncommand: report\n---\n",
            ),
            (
                "d-same-name",
                "---\nname: a-good\ndescription: Again\n---\n",
            ),
        ] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
            std::fs::write(root.path().join(dir).join(SKILL_FILE), text).unwrap();
        }
        std::fs::create_dir(root.path().join("e-empty")).unwrap();
        std::fs::create_dir(root.path().join(".hidden")).unwrap();
        std::fs::write(root.path().join(".hidden").join(SKILL_FILE), "x").unwrap();
        let big = root.path().join("f-big");
        std::fs::create_dir(&big).unwrap();
        std::fs::write(big.join(SKILL_FILE), vec![b'a'; 300 * 1024]).unwrap();
        let skills = Skills::discover(root.path());
        assert_eq!(skills.skills.len(), 1);
        let dirs: Vec<&str> = skills.invalid.iter().map(|i| i.dir.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "b-broken",
                "c-same-command",
                "d-same-name",
                "e-empty",
                "f-big"
            ]
        );
        assert!(skills.invalid[4].error.contains("over 262144 bytes"));
        assert!(
            skills
                .prompt_section("anyone")
                .contains("- a-good — Good one")
        );
        let (skill, message) = skills
            .expand_command("anyone", "/report@Bot  the week")
            .unwrap();
        assert_eq!(skill.name, "a-good");
        assert_eq!(message, "Do it.\n\nthe week");
        assert!(skills.expand_command("anyone", "/other x").is_none());
        assert!(skills.help_lines("anyone").contains("/report TEXT"));
        assert_eq!(
            Skills::discover(&root.path().join("none")),
            Skills::default()
        );
    }
}

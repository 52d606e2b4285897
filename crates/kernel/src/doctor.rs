//! `p3ak doctor`: checks the host and the home and says what to fix.
//!
//! Each check gives a [`Check`]: a status, one line of detail and, unless all is well, one
//! line saying what to do. No check needs the passphrase: the doctor must help an owner who
//! cannot unlock anything. Checks only read (files' metadata, `config.toml`, `policy.yaml`,
//! the agents, vault headers, `/etc/passwd`) and ask the running kernel for its status.
//! `docs/operations.md` lists them.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::control::{ControlEvent, ControlRequest, MAX_CONTROL_FRAME};
use crate::home::Home;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works, with less protection or a part not running; worth a look.
    Warn,
    /// Broken, or unsafe: fix before relying on P3AK.
    Fail,
}

impl Status {
    /// The word shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Its name (`landlock`, `modes`, `config`, …).
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found, on one line.
    pub detail: String,
    /// What to do about it (absent when the status is ok).
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    #[must_use]
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning, with its fix.
    #[must_use]
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure, with its fix.
    #[must_use]
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Free space below which the disk check warns.
pub const LOW_DISK: u64 = 1 << 30;

/// How long the kernel and the API have to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Entries of the home looked at for their modes, at most.
const MAX_WALK: usize = 50_000;

/// Every check, host first, then the home, then what runs. The embedding model's check is
/// the caller's (this crate does not link the model's installer): see `p3ak doctor`.
#[must_use]
pub fn run(home: &Home) -> Vec<Check> {
    let config = Config::load(&home.config());
    let mode = config
        .as_ref()
        .map(|c| c.kernel.sandbox)
        .unwrap_or_default();
    let support = p3ak_sandbox::probe();
    let mut checks = vec![
        landlock(&support, mode),
        seccomp(&support, mode),
        root(&support),
    ];
    if let Ok(config) = &config {
        checks.push(ids(
            config,
            &system_ids("/etc/passwd"),
            &system_ids("/etc/group"),
        ));
    }
    checks.push(modes(home));
    checks.push(disk(home.root()));
    checks.push(match &config {
        Ok(_) => Check::ok(
            "config",
            format!("`{}` parses and is valid", home.config().display()),
        ),
        Err(e) => Check::fail(
            "config",
            one_line(&e.to_string()),
            format!(
                "edit `{}` (`p3ak init` writes a commented default where none exists)",
                home.config().display()
            ),
        ),
    });
    checks.push(policy(home));
    checks.push(agents(home, config.as_ref().ok()));
    checks.push(audit(home));
    checks.push(kernel(home));
    checks.push(api(home));
    checks
}

fn landlock(support: &p3ak_sandbox::Support, mode: p3ak_sandbox::Mode) -> Check {
    match support.landlock_abi {
        Some(abi) if abi >= 6 => Check::ok("landlock", format!("ABI {abi}")),
        Some(abi) => Check::ok(
            "landlock",
            format!("ABI {abi} (file rules; signal and socket scoping need ABI 6, Linux 6.12)"),
        ),
        None => {
            let detail = "Landlock is absent: plugins would see the whole file system";
            let fix = "boot Linux 5.13 or later with `landlock` in the `lsm=` kernel parameter";
            if mode == p3ak_sandbox::Mode::Enforce {
                Check::fail(
                    "landlock",
                    format!("{detail}; sandbox = \"enforce\" refuses to start them"),
                    fix,
                )
            } else {
                Check::warn("landlock", detail, fix)
            }
        }
    }
}

fn seccomp(support: &p3ak_sandbox::Support, mode: p3ak_sandbox::Mode) -> Check {
    let problem = if !support.seccomp {
        Some((
            "seccomp filters are absent: plugins could make any system call".to_owned(),
            "use a Linux kernel built with CONFIG_SECCOMP_FILTER",
        ))
    } else if !support.seccomp_profiles {
        Some((
            format!(
                "no seccomp profiles for `{}` (only x86_64)",
                std::env::consts::ARCH
            ),
            "run on x86_64, or trace profiles for this architecture (`p3ak sandbox profiles`)",
        ))
    } else {
        None
    };
    match problem {
        None => Check::ok(
            "seccomp",
            "filters available, profiles for this architecture",
        ),
        Some((detail, fix)) if mode == p3ak_sandbox::Mode::Enforce => Check::fail(
            "seccomp",
            format!("{detail}; sandbox = \"enforce\" refuses to start plugins"),
            fix,
        ),
        Some((detail, fix)) => Check::warn("seccomp", detail, fix),
    }
}

fn root(support: &p3ak_sandbox::Support) -> Check {
    if support.root {
        Check::ok(
            "root",
            "running as root: `p3ak up` gives each plugin its own uid and network namespace",
        )
    } else {
        Check::warn(
            "root",
            format!(
                "running as uid {}: a kernel started like this runs plugins under that uid, \
                 without network namespaces (only with sandbox = \"degraded\")",
                rustix::process::geteuid().as_raw()
            ),
            "start the kernel as root (`sudo p3ak up`): it drops to its own uid and gives plugins theirs",
        )
    }
}

/// Ids named in a passwd-style file (third field).
fn system_ids(path: &str) -> BTreeSet<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(':').nth(2)?.parse().ok())
        .collect()
}

fn ids(config: &Config, users: &BTreeSet<u32>, groups: &BTreeSet<u32>) -> Check {
    let (first, last) = config.kernel.plugin_ids;
    let (daemon, writer) = config.hitl.ids;
    let fix_hitl = "set `[hitl] ids` in config.toml to two ids that no account or group uses";
    for (id, what) in [
        (daemon, "the approval daemon's"),
        (writer, "the kernel's spool"),
    ] {
        if users.contains(&id) || groups.contains(&id) {
            return Check::fail(
                "ids",
                format!(
                    "hitl.ids: {id} ({what} uid) belongs to an existing account or group, \
                     which could then reach the approval daemon's files"
                ),
                fix_hitl,
            );
        }
    }
    let taken: Vec<u32> = users
        .union(groups)
        .copied()
        .filter(|id| (first..=last).contains(id))
        .collect();
    let size = u64::from(last.saturating_sub(first)) + 1;
    let free = size.saturating_sub(taken.len() as u64);
    let needed = config.plugins.len() as u64 + 1;
    let range = format!("kernel.plugin_ids [{first}, {last}]");
    if free < needed {
        return Check::fail(
            "ids",
            format!("{range} has {free} free ids for {needed} plugin identities"),
            "widen kernel.plugin_ids in config.toml, or move it to ids no account uses",
        );
    }
    if taken.is_empty() {
        Check::ok(
            "ids",
            format!("{range} and hitl.ids [{daemon}, {writer}] are free of existing accounts"),
        )
    } else {
        Check::warn(
            "ids",
            format!(
                "{range} includes {} id(s) of existing accounts or groups (first {}); plugins skip them",
                taken.len(),
                taken.first().copied().unwrap_or_default()
            ),
            "move kernel.plugin_ids in config.toml to a range no account uses",
        )
    }
}

/// Nothing under the home readable, writable or enterable by others (the home and `run/` may
/// be passed through); group bits are the warden's (the kernel's group). Sockets are checked by peer uid instead, and
/// `workspaces/` holds the agents' files, which the sandbox governs.
fn modes(home: &Home) -> Check {
    let root = home.root();
    if !root.is_dir() {
        return Check::fail(
            "modes",
            format!("`{}` is not a directory", root.display()),
            "run `p3ak init` (or set P3AK_HOME to your home)",
        );
    }
    let skip = [home.workspaces()];
    let run = home.run();
    let pid_file = home.pid_file();
    let mut open: Vec<String> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    let mut seen = 0usize;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > MAX_WALK {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = meta.file_type();
        let mode = meta.mode() & 0o777;
        if kind.is_dir() {
            // As root the warden lets the kernel's group read what the kernel reads, and lets
            // others pass through (x only) the home, `run/`, `hitl/` and `plugins/`, for the
            // daemon's and the plugins' uids: others get nothing more.
            if mode & 0o006 != 0 {
                open.push(format!("{} ({mode:o})", path.display()));
            }
            if skip.contains(&path) {
                continue;
            }
            match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(entries.filter_map(Result::ok).map(|e| e.path())),
                Err(_) => unreadable.push(path.display().to_string()),
            }
        } else if kind.is_file() && mode & 0o007 != 0 && path != pid_file {
            // The pid file is written 0644 (`run/kernel.pid`; a pid is no secret).
            // Sockets (which check the peer's uid) and symlinks (whose mode means nothing)
            // are neither.
            open.push(format!("{} ({mode:o})", path.display()));
        }
    }
    if !open.is_empty() {
        open.sort();
        let shown: Vec<&str> = open.iter().take(5).map(String::as_str).collect();
        let more = open.len().saturating_sub(shown.len());
        return Check::fail(
            "modes",
            format!(
                "others can read or enter: {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            format!(
                "take others' access away: `chmod -R o-rwx {}` then `chmod o+x {}` (run/ must stay passable)",
                root.display(),
                run.display()
            ),
        );
    }
    if !unreadable.is_empty() {
        return Check::warn(
            "modes",
            format!(
                "could not look inside {} (another user's): {}",
                unreadable.len(),
                unreadable.first().map(String::as_str).unwrap_or_default()
            ),
            "run `p3ak doctor` as root to check every file",
        );
    }
    Check::ok(
        "modes",
        format!(
            "nothing under `{}` open to others ({} entries)",
            root.display(),
            seen.min(MAX_WALK)
        ),
    )
}

fn disk(root: &Path) -> Check {
    match rustix::fs::statvfs(root) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let shown = format!("{:.1} GiB free", free as f64 / f64::from(1u32 << 30));
            if free < LOW_DISK {
                Check::warn(
                    "disk",
                    format!(
                        "{shown} on the home's file system (under 1 GiB): vault commits and the audit log may fail"
                    ),
                    format!("free space on the file system of `{}`", root.display()),
                )
            } else {
                Check::ok("disk", format!("{shown} on the home's file system"))
            }
        }
        Err(e) => Check::warn(
            "disk",
            format!("cannot read free space of `{}`: {e}", root.display()),
            "check that the home exists and is readable",
        ),
    }
}

fn policy(home: &Home) -> Check {
    let path = home.policy();
    match crate::kernel::load_policy(home) {
        Ok(policy) if policy.warnings().is_empty() => Check::ok(
            "policy",
            format!(
                "`{}` compiles ({} rules)",
                path.display(),
                policy.rule_count()
            ),
        ),
        Ok(policy) => Check::warn(
            "policy",
            format!(
                "`{}` compiles with {} warning(s): {}",
                path.display(),
                policy.warnings().len(),
                policy
                    .warnings()
                    .iter()
                    .map(|w| format!("{}:{w}", path.display()))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            format!(
                "edit `{}`; `p3ak policy check` shows each warning",
                path.display()
            ),
        ),
        Err(e) => Check::fail(
            "policy",
            one_line(&format!("`{}`: {e}", path.display())),
            format!(
                "fix `{}`; `p3ak policy check {}` shows each error with its line",
                path.display(),
                path.display()
            ),
        ),
    }
}

fn agents(home: &Home, config: Option<&Config>) -> Check {
    let dir = home.agents();
    let agents = match crate::agent::load_agents(&dir) {
        Ok(agents) => agents,
        Err(e) => {
            return Check::fail(
                "agents",
                one_line(&e.to_string()),
                format!("fix the agent file named, in `{}`", dir.display()),
            );
        }
    };
    let Some(config) = config else {
        return Check::warn(
            "agents",
            format!(
                "{} agent file(s) read; not checked against config.toml, which does not load",
                agents.len()
            ),
            "fix config.toml first",
        );
    };
    if let Err(e) = crate::kernel::check_agent_refs(home, config, &agents) {
        return Check::fail(
            "agents",
            one_line(&e.to_string()),
            format!(
                "add the agent's file to `{}`, or name an existing one in config.toml",
                dir.display()
            ),
        );
    }
    let without: Vec<&str> = agents
        .values()
        .filter(|a| match &a.provider {
            Some(p) => !config.plugins.contains_key(p),
            None => false,
        })
        .map(|a| a.name.as_str())
        .collect();
    if !without.is_empty() {
        return Check::warn(
            "agents",
            format!(
                "agent(s) {} name a provider that config.toml does not configure",
                without.join(", ")
            ),
            "add the provider as a [plugins.NAME] in config.toml, or fix `provider` in the agent's file",
        );
    }
    let names: Vec<&str> = agents.keys().map(String::as_str).collect();
    Check::ok(
        "agents",
        format!("{} valid: {}", agents.len(), names.join(", ")),
    )
}

fn audit(home: &Home) -> Check {
    let path = home.kernel_vault();
    match p3ak_vault::peek(&path) {
        Ok(info) if info.is_encrypted() => {
            let checkpoint = if home.checkpoint().is_file() {
                "a signed checkpoint beside it"
            } else {
                "no checkpoint yet (the kernel writes one as it runs)"
            };
            Check::ok(
                "audit",
                format!(
                    "the audit log's vault `{}` is there, encrypted ({}, {} bytes); {checkpoint}",
                    path.display(),
                    info.encryption,
                    info.file_bytes
                ),
            )
        }
        Ok(_) => Check::fail(
            "audit",
            format!("`{}` is not encrypted", path.display()),
            "move it away and run `p3ak init` to create an encrypted one",
        ),
        Err(e) if !path.exists() => Check::fail(
            "audit",
            one_line(&format!("no audit log: {e}")),
            "run `p3ak init` to create the kernel's vault",
        ),
        Err(e) => Check::fail(
            "audit",
            one_line(&e.to_string()),
            "restore the kernel's vault from a backup (`p3ak vault` commands can check a copy)",
        ),
    }
}

fn kernel(home: &Home) -> Check {
    let socket = home.control_socket();
    if !socket.exists() {
        return Check::warn(
            "kernel",
            "not running (no control socket)",
            "start it: `p3ak up`",
        );
    }
    match ask_status(&socket) {
        Ok(ControlEvent::Status(status)) => {
            let stopped: Vec<String> = status
                .plugins
                .iter()
                .filter(|p| p["state"] != "running")
                .map(|p| {
                    format!(
                        "{} ({})",
                        p["name"].as_str().unwrap_or("?"),
                        p["state"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let daemon = status.hitl.get("running") == Some(&serde_json::Value::Bool(true));
            let detail = format!(
                "running (pid {}), {} plugin(s), approval daemon {}",
                status.pid,
                status.plugins.len(),
                if daemon { "running" } else { "stopped" }
            );
            if !daemon {
                Check::fail(
                    "kernel",
                    format!("{detail}: every escalation is denied"),
                    "restart the kernel (`p3ak up`); its log says why the daemon stopped",
                )
            } else if stopped.is_empty() {
                Check::ok("kernel", detail)
            } else {
                Check::warn(
                    "kernel",
                    format!("{detail}; not running: {}", stopped.join(", ")),
                    "`p3ak status` and the kernel's log say why; the audit log has each exit",
                )
            }
        }
        Ok(ControlEvent::Error { message }) => Check::warn(
            "kernel",
            one_line(&format!("the kernel answered with an error: {message}")),
            "check the kernel's log",
        ),
        Ok(_) => Check::warn(
            "kernel",
            "the kernel answered something other than its status",
            "check the kernel's log",
        ),
        Err(why) => Check::warn(
            "kernel",
            format!("the control socket is there but {why}"),
            "if the kernel crashed, start it again (`p3ak up`); if it runs, add your uid to [hitl] operators",
        ),
    }
}

/// Asks the kernel on `socket` for its status, within [`ANSWER_TIMEOUT`].
fn ask_status(socket: &Path) -> Result<ControlEvent, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("does not accept connections ({e})"))?;
    let timeouts = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
    timeouts.map_err(|e| format!("cannot be used ({e})"))?;
    let payload = serde_json::to_vec(&ControlRequest::Status).map_err(|e| e.to_string())?;
    let frame =
        p3ak_proto::encode_payload(&payload, MAX_CONTROL_FRAME).map_err(|e| e.to_string())?;
    stream
        .write_all(&frame)
        .map_err(|e| format!("refused the request ({e})"))?;
    let mut decoder = p3ak_proto::FrameDecoder::new(MAX_CONTROL_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(payload) = decoder.next_frame().map_err(|e| e.to_string())? {
            return p3ak_proto::from_slice_strict::<ControlEvent>(&payload)
                .map_err(|e| format!("answered something unreadable ({e})"));
        }
        let n = stream.read(&mut buf).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                "did not answer within 5 s".to_owned()
            } else {
                format!("the connection failed ({e})")
            }
        })?;
        if n == 0 {
            return Err(
                "the kernel closed the connection without an answer (is your uid an operator?)"
                    .to_owned(),
            );
        }
        decoder.push(buf.get(..n).unwrap_or_default());
    }
}

fn api(home: &Home) -> Check {
    let socket = home.api_socket();
    if !socket.exists() {
        return Check::warn(
            "api",
            format!("not running (no `{}`)", socket.display()),
            "the kernel serves the API when it runs: `p3ak up`",
        );
    }
    match healthz(&socket) {
        Ok(200) => Check::ok(
            "api",
            format!("`GET /healthz` on `{}` answers 200", socket.display()),
        ),
        Ok(code) => Check::fail(
            "api",
            format!("`GET /healthz` on `{}` answers {code}", socket.display()),
            "check the kernel's log",
        ),
        Err(why) => Check::warn(
            "api",
            format!("`{}` is there but {why}", socket.display()),
            "if the kernel stopped, start it again (`p3ak up`)",
        ),
    }
}

/// `GET /healthz` over the API's Unix socket: the status code.
fn healthz(socket: &Path) -> Result<u16, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("does not accept connections ({e})"))?;
    let timeouts = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
    timeouts.map_err(|e| format!("cannot be used ({e})"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("refused the request ({e})"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("did not answer ({e})"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/1."))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "answered something that is not HTTP".to_owned())
}

/// The first line of a message (errors are one line already; a hostile file's text is not).
fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_account_on_the_daemon_id_fails_and_one_in_the_plugin_range_warns() {
        let config = Config::default();
        let (daemon, _) = config.hitl.ids;
        let (first, _) = config.kernel.plugin_ids;
        let none = BTreeSet::new();
        assert_eq!(ids(&config, &none, &none).status, Status::Ok);
        let check = ids(&config, &BTreeSet::from([daemon]), &none);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert!(check.fix.unwrap().contains("[hitl] ids"));
        let check = ids(&config, &none, &BTreeSet::from([first]));
        assert_eq!(check.status, Status::Warn, "{check:?}");
    }

    #[test]
    fn a_status_line_that_is_not_http_is_an_error_not_a_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"SSH-2.0-nope\r\n").unwrap();
        });
        assert!(healthz(&path).is_err());
        server.join().unwrap();
    }
}

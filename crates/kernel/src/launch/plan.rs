//! How each plugin is sandboxed (invariant I7), with `p3ak-sandbox` doing the work in the
//! child: what it may reach, under which uid, and preparing those files. Used by the kernel
//! when it starts plugins itself, by the warden when it starts them for an unprivileged kernel,
//! and by `p3ak sandbox trace|bench`.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use p3ak_sandbox::{Class, Limits, Mode, Plan, SandboxError, Support};

use super::PluginSpec;
use crate::config::{KernelSettings, Launch, PluginSandbox};

/// Why a plugin cannot be planned, or its files prepared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    /// The plugins' uids could not be allocated.
    #[error(transparent)]
    Ids(Arc<SandboxError>),
    /// None was allocated for this identity.
    #[error("no uid allocated for `{0}`")]
    NoUid(String),
    /// The scratch directory is not inside a home.
    #[error("no home")]
    NoHome,
    /// A file or directory could not be created.
    #[error("cannot create `{path}`: {source}")]
    Create {
        /// Which.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// A mode could not be set.
    #[error("cannot set the mode of `{path}`: {source}")]
    Mode {
        /// Of what.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// A path could not be given to a plugin's user.
    #[error("cannot give `{path}` to uid {uid}: {source}")]
    Chown {
        /// Which.
        path: PathBuf,
        /// To whom.
        uid: u32,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// A path could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// Which.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// A directory could not be listed.
    #[error("cannot list `{path}`: {source}")]
    List {
        /// Which.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
}

/// The host's sandbox: what the machine offers and who each plugin is.
pub struct Sandbox {
    mode: Mode,
    support: Support,
    missing: Vec<String>,
    ids: Result<BTreeMap<String, u32>, Arc<SandboxError>>,
    settings: BTreeMap<String, PluginSandbox>,
    home: PathBuf,
    /// The kernel's gid: the group of the trees a plugin serves that the kernel reads too
    /// (the memory vault, searched for an agent's context).
    kernel_gid: u32,
}

/// One start's sandbox.
pub struct PluginPlan {
    /// What `p3ak-sandbox` applies.
    pub prepared: Plan,
    /// Its own directory: HOME, TMPDIR and working directory.
    pub scratch: PathBuf,
    /// Variables passed through.
    pub env: Vec<String>,
    /// Whose uid it gets.
    pub identity: String,
    /// Files the kernel creates for it (a provider's request record).
    files: Vec<PathBuf>,
    /// Trees made its own.
    own: Vec<PathBuf>,
    /// Those of `own` the kernel reads too (the memory vault's directory).
    shared: Vec<PathBuf>,
    /// The kernel's trees it reads: they stay the kernel's, their group becomes the plugin's
    /// (the embedding model, for `vault`).
    lent: Vec<PathBuf>,
    /// As `lent`, and it runs the executables inside (the skills, for `skills`).
    lent_exec: Vec<PathBuf>,
    kernel_uid: u32,
}

impl PluginPlan {
    /// The uid it runs as.
    pub fn uid(&self) -> u32 {
        self.prepared.ids.map_or(self.kernel_uid, |(uid, _)| uid)
    }

    /// For the audit log.
    pub fn describe(&self) -> serde_json::Value {
        let p = &self.prepared;
        serde_json::json!({
            "uid": self.uid(),
            "user": self.identity,
            "class": p.class.name(),
            "network": p.network,
            "landlock": p.landlock,
            "seccomp": p.seccomp,
            "limits": p.limits,
        })
    }
}

/// The identity whose uid a plugin runs as.
fn identity(spec: &PluginSpec, settings: Option<&PluginSandbox>) -> String {
    if let Some(user) = settings.and_then(|s| s.user.clone()) {
        return user;
    }
    match &spec.launch {
        // The tools that work in the agents' workspaces share the uid that owns them.
        Launch::Builtin(b) if b == "files" || b == "shell" || b == "skills" => {
            "workspaces".to_owned()
        }
        _ => spec.name.clone(),
    }
}

/// The default class of a plugin (`config` decides for an `mcp` bridge: a streamable HTTP
/// server is reached over the network, a stdio server is a program it runs).
fn class_of(launch: &Launch, config: &serde_json::Value) -> Class {
    match launch {
        Launch::Builtin(b) => match b.as_str() {
            "files" | "vault" => Class::Tool,
            // `skills` runs the skills' scripts, as `shell` runs commands.
            "shell" | "skills" => Class::Shell,
            "mcp" if config.get("url").is_some() => Class::Network,
            "mcp" => Class::Shell,
            "scripted" => Class::Provider,
            // `http`, `calendar`, `web` and the providers that call a model service.
            _ => Class::Network,
        },
        Launch::Path(_) => Class::Script,
    }
}

fn existing(paths: &[&str]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

impl Sandbox {
    /// The sandbox of the plugins of the home at `home`, for a kernel running as `kernel_gid`.
    pub fn new<'a>(
        settings: &KernelSettings,
        specs: impl Iterator<Item = &'a PluginSpec>,
        home: &Path,
        kernel_gid: u32,
    ) -> Self {
        let support = p3ak_sandbox::probe();
        let missing = support.missing();
        let identities: Vec<String> = specs
            .map(|spec| identity(spec, settings.plugin_sandbox.get(&spec.name)))
            .collect();
        let (first, last) = settings.plugin_ids;
        let ids = p3ak_sandbox::allocate_ids(identities.iter().map(String::as_str), first, last)
            .map_err(Arc::new);
        Self {
            mode: settings.sandbox,
            support,
            missing,
            ids,
            settings: settings.plugin_sandbox.clone(),
            home: home.to_owned(),
            kernel_gid,
        }
    }

    pub fn support(&self) -> &Support {
        &self.support
    }

    /// The uid `spec` runs as, when it has one of its own.
    pub fn uid_of(&self, spec: &PluginSpec) -> Option<u32> {
        let identity = identity(spec, self.settings.get(&spec.name));
        self.ids.as_ref().ok()?.get(&identity).copied()
    }

    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Why no plugin may start, if none may.
    pub fn refusal(&self) -> Option<String> {
        if let Err(e) = &self.ids {
            return Some(format!("sandbox: {e}"));
        }
        if self.mode == Mode::Enforce && !self.missing.is_empty() {
            return Some(p3ak_sandbox::SandboxError::Missing(self.missing.clone()).to_string());
        }
        None
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode,
            "support": self.support,
            "missing": self.missing,
            "weaker": self.weaker(),
            "ids": self.ids.as_ref().ok(),
        })
    }

    /// Layers this host has in a weaker form than the sandbox was built for, in words: said
    /// at every start (`sandbox.host`, and the log), never silently.
    #[must_use]
    pub fn weaker(&self) -> Vec<String> {
        let mut weaker = Vec::new();
        if let Some(abi) = self.support.landlock_abi.filter(|abi| *abi < 6) {
            weaker.push(format!(
                "Landlock ABI {abi} (Linux before 6.12): plugins' signals and abstract Unix \
                 sockets are not scoped to their own domain; seccomp still forbids them new \
                 Unix sockets and signals to other processes"
            ));
        }
        if self.support.landlock_abi.is_some_and(|abi| abi < 7) {
            weaker.push(
                "Landlock ABI below 7 (Linux before 6.15): refused file accesses are not logged"
                    .to_owned(),
            );
        }
        weaker
    }

    /// What `spec` may reach, as which user.
    pub fn plan(&self, spec: &PluginSpec, exe: &Path) -> Result<PluginPlan, PlanError> {
        let settings = self.settings.get(&spec.name).cloned().unwrap_or_default();
        let identity = identity(spec, Some(&settings));
        let class = settings
            .class
            .unwrap_or_else(|| class_of(&spec.launch, &spec.config));
        let network = settings.network.unwrap_or(class == Class::Network);
        let home = self.home.clone();
        let scratch = home.join("plugins").join(&spec.name);
        let program = match &spec.launch {
            Launch::Builtin(_) => exe.to_owned(),
            Launch::Path(path) => path.clone(),
        };
        let mut exec = vec![program];
        exec.extend(existing(&[
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/ld-linux-aarch64.so.1",
        ]));
        let mut read = existing(&[
            "/lib",
            "/lib64",
            "/usr/lib",
            "/usr/lib64",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/usr/share/zoneinfo",
            "/dev/urandom",
        ]);
        let mut write = existing(&["/dev/null"]);
        write.push(scratch.clone());
        if network {
            read.extend(existing(&[
                "/etc/ssl",
                "/etc/ca-certificates",
                "/usr/share/ca-certificates",
                // Debian's local CAs (`update-ca-certificates` links them from /etc/ssl/certs).
                "/usr/local/share/ca-certificates",
                "/etc/pki",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/nsswitch.conf",
                "/etc/gai.conf",
                "/etc/host.conf",
                "/etc/services",
            ]));
        }
        if matches!(&spec.launch, Launch::Builtin(b) if b == "mcp") {
            // An MCP server's runtime reads its TLS settings at start (node: openssl.cnf).
            read.extend(existing(&["/etc/ssl"]));
        }
        if matches!(class, Class::Shell | Class::Script) {
            exec.extend(existing(&["/usr/bin", "/usr/local/bin", "/bin"]));
            read.extend(existing(&[
                "/usr",
                "/etc/passwd",
                "/etc/group",
                "/etc/nsswitch.conf",
            ]));
        }
        let mut files = Vec::new();
        let mut own = Vec::new();
        let mut shared = Vec::new();
        let mut lent = Vec::new();
        let mut lent_exec = Vec::new();
        if let Launch::Builtin(_) = &spec.launch {
            let setting = |key: &str| {
                spec.config
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(PathBuf::from)
            };
            if let Some(dir) = setting("workspaces") {
                own.push(dir);
            }
            if let Some(vault) = setting("vault")
                && let Some(dir) = vault.parent()
            {
                own.push(dir.to_owned());
                shared.push(dir.to_owned());
            }
            if let Some(script) = setting("script") {
                read.push(script);
            }
            // The embedding model `p3ak models install` put in the home (`vault`).
            if let Some(models) = setting("models").filter(|m| m.is_dir()) {
                read.push(models.clone());
                lent.push(models);
                // The model's matrix code sizes its blocks from the CPU caches described
                // there; refused, it would run `lscpu` instead (a fork the filter forbids).
                read.extend(existing(&["/sys/devices/system/cpu"]));
            }
            // An extra CA a network tool trusts (`mail`: a self-hosted server's certificate).
            if let Some(ca) = setting("ca_file") {
                read.push(ca);
            }
            if let Some(record) = setting("record") {
                files.push(record);
            }
            // The skills' folders: read, and their scripts run (docs/skills.md).
            if let Some(skills) = setting("skills") {
                read.push(skills.clone());
                exec.push(skills.clone());
                lent_exec.push(skills);
            }
        }
        read.extend(settings.read.iter().cloned());
        exec.extend(settings.exec.iter().cloned());
        own.extend(settings.write.iter().cloned());
        write.extend(own.iter().cloned());
        write.extend(files.iter().cloned());
        let defaults = Limits::for_class(class);
        let limits = Limits {
            address_space: settings
                .memory_mib
                .map_or(defaults.address_space, |m| m.saturating_mul(1 << 20)),
            open_files: settings.open_files.unwrap_or(defaults.open_files),
            processes: settings.processes.unwrap_or(defaults.processes),
            cpu_seconds: settings.cpu_seconds.unwrap_or(defaults.cpu_seconds),
        };
        let id = match &self.ids {
            Ok(ids) => ids.get(&identity).copied(),
            Err(e) => return Err(PlanError::Ids(Arc::clone(e))),
        };
        let ids = if self.support.root {
            let id = id.ok_or_else(|| PlanError::NoUid(identity.clone()))?;
            Some((id, id))
        } else {
            None
        };
        Ok(PluginPlan {
            prepared: Plan {
                ids,
                class,
                network,
                read,
                exec,
                write,
                limits,
                landlock: self.support.landlock_abi.is_some(),
                seccomp: self.support.seccomp && self.support.seccomp_profiles,
                trace: false,
            },
            scratch,
            env: settings.env.clone(),
            identity,
            files,
            own,
            shared,
            lent,
            lent_exec,
            kernel_uid: rustix::process::geteuid().as_raw(),
        })
    }

    /// Makes what the plugin needs exist and belong to it: its scratch directory, the trees
    /// it writes, and a path to them it may traverse. Its connection to the kernel is a socket
    /// it inherits, so nothing of `run/` is opened to it.
    pub fn prepare_files(&self, plan: &PluginPlan) -> Result<(), PlanError> {
        // Landlock rules need the files to exist: the plugin may write them, not create
        // them next to the kernel's own.
        for file in &plan.files {
            if !file.exists() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(file)
                    .map_err(|e| PlanError::Create {
                        path: file.clone(),
                        source: Arc::new(e),
                    })?;
            }
        }
        let Some((uid, gid)) = plan.prepared.ids else {
            return make_dir(&plan.scratch, None);
        };
        let home = plan
            .scratch
            .parent()
            .and_then(Path::parent)
            .ok_or(PlanError::NoHome)?
            .to_owned();
        // The home and plugins/ are traversable, not listable: 0711. Everything the kernel
        // keeps inside stays 0700/0600.
        make_dir(&home.join("plugins"), None)?;
        for dir in [home.clone(), home.join("plugins")] {
            set_mode(&dir, 0o711)?;
        }
        traversable_ancestors(&home)?;
        make_dir(&plan.scratch, Some((uid, gid)))?;
        for dir in &plan.own {
            make_dir(dir, None)?;
            if plan.shared.contains(dir) {
                // The plugin's, readable by the kernel's group: 0750 and 0640.
                chown_tree(dir, uid, self.kernel_gid, Some((0o750, 0o640)))?;
            } else {
                chown_tree(dir, uid, gid, None)?;
            }
            if let Some(parent) = dir.parent() {
                traversable_ancestors(parent)?;
            }
        }
        for file in &plan.files {
            chown(file, uid, gid)?;
        }
        for dir in &plan.lent {
            // Readable by the plugin's group alone: 0750 and 0640, still the kernel's.
            chown_tree(dir, plan.kernel_uid, gid, Some((0o750, 0o640)))?;
            if let Some(parent) = dir.parent() {
                traversable_ancestors(parent)?;
            }
        }
        for dir in &plan.lent_exec {
            // The same, and what is executable stays so for the group: 0750.
            make_dir(dir, None)?;
            chown_tree(dir, plan.kernel_uid, gid, None)?;
            group_modes(dir)?;
            if let Some(parent) = dir.parent() {
                traversable_ancestors(parent)?;
            }
        }
        Ok(())
    }
}

/// Sets a lent tree's modes: directories and executables 0750, other files 0640 (links
/// are left as they are).
fn group_modes(dir: &Path) -> Result<(), PlanError> {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| PlanError::Read {
            path: path.clone(),
            source: Arc::new(e),
        })?;
        let mode = if meta.is_dir() || (meta.is_file() && meta.mode() & 0o111 != 0) {
            0o750
        } else if meta.is_file() {
            0o640
        } else {
            continue;
        };
        if meta.mode() & 0o7777 != mode {
            set_mode(&path, mode)?;
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| PlanError::List {
                path: path.clone(),
                source: Arc::new(e),
            })?;
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    Ok(())
}

fn make_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), PlanError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PlanError::Create {
            path: dir.to_owned(),
            source: Arc::new(e),
        })?;
    if let Some((uid, gid)) = owner {
        chown(dir, uid, gid)?;
        set_mode(dir, 0o700)?;
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), PlanError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        PlanError::Mode {
            path: path.to_owned(),
            source: Arc::new(e),
        }
    })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PlanError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| PlanError::Chown {
        path: path.to_owned(),
        uid,
        source: Arc::new(e),
    })
}

/// Gives a tree to a plugin's user (symlinks themselves, never what they point to).
/// `modes`, when given, are set too: (directories, files).
pub(crate) fn chown_tree(
    dir: &Path,
    uid: u32,
    gid: u32,
    modes: Option<(u32, u32)>,
) -> Result<(), PlanError> {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| PlanError::Read {
            path: path.clone(),
            source: Arc::new(e),
        })?;
        if meta.uid() != uid || meta.gid() != gid {
            chown(&path, uid, gid)?;
        }
        if let Some((dir_mode, file_mode)) = modes {
            let mode = if meta.is_dir() {
                Some(dir_mode)
            } else if meta.is_file() {
                Some(file_mode)
            } else {
                None
            };
            if let Some(mode) = mode.filter(|m| meta.mode() & 0o7777 != *m) {
                set_mode(&path, mode)?;
            }
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| PlanError::List {
                path: path.clone(),
                source: Arc::new(e),
            })?;
            stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
    }
    Ok(())
}

/// A plugin's user must be able to walk from `/` to its files: directories on the way
/// that belong to the kernel's user get search permission for others (not read: nothing
/// can be listed). Others' directories are left alone.
pub(crate) fn traversable_ancestors(path: &Path) -> Result<(), PlanError> {
    let me = rustix::process::geteuid().as_raw();
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.mode() & 0o001 == 0 && meta.uid() == me {
            set_mode(dir, (meta.mode() & 0o7777) | 0o001)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_builtin() {
        assert_eq!(
            class_of(&Launch::Builtin("files".into()), &serde_json::Value::Null),
            Class::Tool
        );
        assert_eq!(
            class_of(&Launch::Builtin("shell".into()), &serde_json::Value::Null),
            Class::Shell
        );
        assert_eq!(
            class_of(&Launch::Builtin("http".into()), &serde_json::Value::Null),
            Class::Network
        );
        for network in ["calendar", "web", "mail"] {
            assert_eq!(
                class_of(&Launch::Builtin(network.into()), &serde_json::Value::Null),
                Class::Network
            );
        }
        assert_eq!(
            class_of(
                &Launch::Builtin("anthropic".into()),
                &serde_json::Value::Null
            ),
            Class::Network
        );
        assert_eq!(
            class_of(
                &Launch::Builtin("scripted".into()),
                &serde_json::Value::Null
            ),
            Class::Provider
        );
        assert_eq!(
            class_of(&Launch::Path("/x".into()), &serde_json::Value::Null),
            Class::Script
        );
        let mcp = Launch::Builtin("mcp".into());
        let stdio = serde_json::json!({"command": ["node", "server.js"]});
        let http = serde_json::json!({"url": "https://mcp.example.com/mcp"});
        assert_eq!(class_of(&mcp, &stdio), Class::Shell);
        assert_eq!(class_of(&mcp, &http), Class::Network);
    }
}

//! A plugin run the way the kernel runs it (the kernel's own sandbox plan, uid, Landlock rules,
//! namespace and limits) against a small host of its own that speaks the protocol and makes
//! the plugin do representative work: what `p3ak sandbox trace | profiles | bench` are made of.
#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing: reads give Null, writes go to objects built here"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use p3ak_sandbox::profile::Traced;
use p3ak_sandbox::trace::{Report, Tracer};
use p3ak_sandbox::{Class, Profile};
use serde_json::{Value, json};

use super::PluginSpec;
use super::loopback;
use super::plan::{PluginPlan, Sandbox};
use crate::config::{KernelSettings, Launch, PluginSandbox};

/// Why a plugin could not be run or exercised.
#[derive(Debug, thiserror::Error)]
pub enum ExerciseError {
    #[error("tracing runs the plugin as its own user: run as root")]
    NotRoot,
    #[error("no trace was recorded")]
    NoTrace,
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Launch(#[from] super::LaunchError),
    #[error(transparent)]
    Sandbox(#[from] p3ak_sandbox::SandboxError),
    #[error(transparent)]
    Frame(#[from] p3ak_proto::ProtoError),
    #[error(transparent)]
    Vault(#[from] p3ak_vault::VaultError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("`{}`: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}`: {message}", path.display())]
    Profile { path: PathBuf, message: String },
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: Value },
    #[error("frame of {0} bytes")]
    FrameTooLarge(usize),
}

/// How a plugin is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Sandboxed without seccomp, under ptrace.
    Trace,
    /// Sandboxed as the kernel does it.
    Sandboxed,
    /// No sandbox at all: the kernel's own user and everything it may reach.
    Bare,
}

/// A plugin started against a small host of its own, which speaks the protocol.
pub struct Harness {
    _dir: tempfile::TempDir,
    stream: UnixStream,
    child: Option<std::process::Child>,
    tracer: Option<Tracer>,
    next_id: u64,
    max_frame: usize,
    actions: Vec<Value>,
    exercise: Vec<String>,
    _server: Option<std::thread::JoinHandle<()>>,
    http_port: Option<u16>,
}

/// The variable naming a models directory (as `p3ak models install` fills one) whose model
/// the `vault` plugin's exercise loads, so that its trace covers semantic search and the
/// embedding of its writes.
pub const TRACE_MODELS_VAR: &str = "P3AK_TRACE_MODELS";

/// Copies the installed model(s) of [`TRACE_MODELS_VAR`] into the exercise's home; `None`
/// when the variable is unset.
fn copy_models(home: &Path) -> Result<Option<PathBuf>, ExerciseError> {
    let Some(source) = std::env::var_os(TRACE_MODELS_VAR).map(PathBuf::from) else {
        return Ok(None);
    };
    let models = home.join("models");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExerciseError::File { path, source }
    };
    for entry in std::fs::read_dir(&source).map_err(io(&source))? {
        let entry = entry.map_err(io(&source))?;
        if !entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            continue;
        }
        let to = models.join(entry.file_name());
        std::fs::create_dir_all(&to).map_err(io(&to))?;
        for file in std::fs::read_dir(entry.path()).map_err(io(&entry.path()))? {
            let file = file.map_err(io(&entry.path()))?;
            std::fs::copy(file.path(), to.join(file.file_name())).map_err(io(&file.path()))?;
        }
    }
    Ok(Some(models))
}

/// The model providers, traced against a loopback model API.
pub const PROVIDERS: [&str; 3] = ["anthropic", "openai", "ollama"];

fn builtin_config(plugin: &str, dir: &Path, port: Option<u16>) -> Result<Value, ExerciseError> {
    let base = format!("http://127.0.0.1:{}", port.unwrap_or(1));
    Ok(match plugin {
        "anthropic" | "ollama" => {
            json!({"base_url": base, "model": "traced", "retry_base_ms": 10})
        }
        "openai" => {
            json!({"base_url": format!("{base}/v1"), "model": "traced", "retry_base_ms": 10})
        }
        "files" | "shell" => json!({"workspaces": dir.join("workspaces")}),
        "vault" => {
            let mut config = json!({"vault": dir.join("vaults").join("memory.vault")});
            if let Some(models) = copy_models(dir)? {
                config["models"] = json!(models);
            }
            config
        }
        "scripted" => {
            let script = dir.join("script.json");
            std::fs::write(
                &script,
                serde_json::to_vec(&json!({"responses": [
                    {"content": "let me look", "tool_calls": [
                        {"name": "files__list", "arguments": {}}]},
                    {"content": "done"}
                ]}))?,
            )?;
            json!({"script": script, "record": dir.join("requests.jsonl")})
        }
        _ => json!({}),
    })
}

impl Harness {
    /// Starts `plugin` (built in, or the program at `path`) as the kernel would, from `exe`
    /// (the `p3ak` binary), and completes its handshake.
    pub fn start(
        exe: &Path,
        plugin: &str,
        path: Option<&Path>,
        class: Option<Class>,
        mode: RunMode,
    ) -> Result<Self, ExerciseError> {
        let dir = tempfile::Builder::new().prefix("p3ak-sandbox-").tempdir()?;
        let home = dir.path().to_owned();
        std::fs::create_dir_all(home.join("run"))?;
        let launch = match path {
            Some(p) => Launch::Path(std::fs::canonicalize(p)?),
            None => Launch::Builtin(plugin.to_owned()),
        };
        let (server, port) = if plugin == "http" {
            let (h, p) = loopback::loopback_http()?;
            (Some(h), Some(p))
        } else if PROVIDERS.contains(&plugin) {
            let (h, p) = loopback::loopback_model_api()?;
            (Some(h), Some(p))
        } else {
            (None, None)
        };
        let key = if plugin == "vault" {
            Some(make_vault(&home)?)
        } else {
            None
        };
        let config = if path.is_some() {
            json!({})
        } else {
            builtin_config(plugin, &home, port)?
        };
        let spec = PluginSpec {
            name: plugin.to_owned(),
            launch: launch.clone(),
            args: Vec::new(),
            config: config.clone(),
            approvals: false,
        };
        let mut settings = KernelSettings {
            sandbox: p3ak_sandbox::Mode::Degraded,
            ..KernelSettings::default()
        };
        settings.plugin_sandbox.insert(
            plugin.to_owned(),
            PluginSandbox {
                class,
                ..PluginSandbox::default()
            },
        );
        let sandbox = Sandbox::new(
            &settings,
            std::iter::once(&spec),
            &home,
            rustix::process::getegid().as_raw(),
        );
        let mut plan: PluginPlan = sandbox
            .plan(&spec, exe)
            .map_err(|e| ExerciseError::Plan(e.to_string()))?;
        if mode == RunMode::Bare {
            std::fs::create_dir_all(&plan.scratch)?;
            plan.prepared.ids = None;
        } else {
            sandbox
                .prepare_files(&plan)
                .map_err(|e| ExerciseError::Plan(e.to_string()))?;
        }
        // The same command the kernel starts a plugin with, its connection on stdin.
        let (stream, theirs) = UnixStream::pair()?;
        let mut command = super::command(
            &spec,
            &plan,
            exe,
            settings.max_frame,
            std::os::fd::OwnedFd::from(theirs),
        )?;
        command.stderr(Stdio::inherit());
        let support = sandbox.support().clone();
        let (child, tracer) = match mode {
            RunMode::Trace => (
                None,
                Some(Tracer::start(command, &plan.prepared, &support)?),
            ),
            RunMode::Sandboxed => {
                plan.prepared.prepare(&support)?.install(&mut command);
                (Some(command.spawn()?), None)
            }
            RunMode::Bare => (Some(command.spawn()?), None),
        };
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut harness = Self {
            _dir: dir,
            stream,
            child,
            tracer,
            next_id: 100,
            max_frame: settings.max_frame,
            actions: Vec::new(),
            exercise: Vec::new(),
            _server: server,
            http_port: port,
        };
        harness.handshake(plugin, config, key.as_deref())?;
        Ok(harness)
    }

    fn handshake(
        &mut self,
        plugin: &str,
        config: Value,
        key: Option<&[u8]>,
    ) -> Result<(), ExerciseError> {
        let hello = self.read()?;
        if hello["type"] != "hello" || hello["plugin"] != plugin {
            return Err(ExerciseError::Unexpected {
                expected: "hello",
                got: hello,
            });
        }
        let id = hello["id"].clone();
        let mut welcome =
            json!({"v": 1, "id": id, "type": "welcome", "version": 1, "config": config});
        if let Some(key) = key {
            welcome["key"] = json!(hex::encode(key));
        }
        self.write(&welcome)?;
        let register = self.read()?;
        if register["type"] != "register" {
            return Err(ExerciseError::Unexpected {
                expected: "register",
                got: register,
            });
        }
        self.actions = register["actions"].as_array().cloned().unwrap_or_default();
        let id = register["id"].clone();
        self.write(&json!({"v": 1, "id": id, "type": "registered"}))?;
        self.exercise.push("hello, register".to_owned());
        Ok(())
    }

    fn write(&mut self, message: &Value) -> Result<(), ExerciseError> {
        let payload = serde_json::to_vec(message)?;
        let frame = p3ak_proto::encode_payload(&payload, self.max_frame)?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    fn read(&mut self) -> Result<Value, ExerciseError> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(ExerciseError::FrameTooLarge(len));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Sends a request and waits for its answer, skipping stream chunks.
    fn request(&mut self, mut message: Value, what: &str) -> Result<Value, ExerciseError> {
        self.next_id += 1;
        let id = self.next_id;
        message["v"] = json!(1);
        message["id"] = json!(id);
        self.write(&message)?;
        loop {
            let reply = self.read()?;
            if reply["type"] == "stream_chunk" {
                continue;
            }
            if reply["id"] == json!(id) {
                if !self.exercise.iter().any(|e| e == what) {
                    self.exercise.push(what.to_owned());
                }
                return Ok(reply);
            }
        }
    }

    /// Invokes `action` and waits for its answer.
    pub fn invoke(&mut self, action: &str, args: Value) -> Result<Value, ExerciseError> {
        self.request(
            json!({"type": "invoke", "agent": "assistant", "action": action, "args": args,
                   "deadline_ms": 30000}),
            &format!("invoke {action}"),
        )
    }

    /// Pings the plugin and waits for its pong.
    pub fn ping(&mut self) -> Result<(), ExerciseError> {
        let reply = self.request(json!({"type": "ping"}), "ping")?;
        if reply["type"] != "pong" {
            return Err(ExerciseError::Unexpected {
                expected: "pong",
                got: reply,
            });
        }
        Ok(())
    }

    /// Representative work for each first-party plugin; for others, each action once with
    /// arguments made from its schema.
    pub fn exercise(&mut self, plugin: &str, http_port: Option<u16>) -> Result<(), ExerciseError> {
        self.ping()?;
        match plugin {
            "files" => {
                self.invoke("write", json!({"path": "notes/a.txt", "content": "hello"}))?;
                self.invoke(
                    "write",
                    json!({"path": "notes/a.txt", "content": " again", "append": true}),
                )?;
                self.invoke("read", json!({"path": "notes/a.txt"}))?;
                self.invoke("list", json!({}))?;
                self.invoke("list", json!({"path": "notes"}))?;
                self.invoke("read", json!({"path": "../escape"}))?;
                self.invoke("read", json!({"path": "missing.txt"}))?;
            }
            "shell" => {
                self.invoke(
                    "run",
                    json!({"command": "echo hi > out.txt; cat out.txt; ls -la; mkdir -p d; \
                        mv out.txt d/; rm -r d; pwd; date; id; true | wc -c; sleep 0.1"}),
                )?;
                self.invoke("run", json!({"command": "sleep 5", "timeout_secs": 1}))?;
            }
            "http" => {
                let port = http_port.unwrap_or(80);
                self.invoke(
                    "request",
                    json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/a")}),
                )?;
                self.invoke(
                    "request",
                    json!({"method": "POST", "url": format!("http://localhost:{port}/b"),
                           "json": {"k": "v"}, "headers": {"x-test": "1"}}),
                )?;
                self.invoke(
                    "request",
                    json!({"method": "GET", "url": "https://127.0.0.1:1/tls"}),
                )?;
            }
            "vault" => {
                let written = self.invoke(
                    "write",
                    json!({"title": "note", "content": "# Bank\ncall the bank on Monday",
                           "tags": {"kind": "todo"}}),
                )?;
                self.invoke("search", json!({"query": "bank monday"}))?;
                if let Some(id) = written["output"]["id"].as_str() {
                    let id = id.to_owned();
                    self.invoke("read", json!({"id": id}))?;
                }
                self.invoke("list", json!({}))?;
                if std::env::var_os(TRACE_MODELS_VAR).is_some() {
                    // The write is embedded in the background; the query is embedded here.
                    let started = Instant::now();
                    loop {
                        let found = self.invoke(
                            "search",
                            json!({"query": "phone the bank", "mode": "semantic"}),
                        )?;
                        if found["output"]["hits"]
                            .as_array()
                            .is_some_and(|h| !h.is_empty())
                        {
                            break;
                        }
                        if started.elapsed() > Duration::from_secs(60) {
                            return Err(ExerciseError::Unexpected {
                                expected: "a semantic hit once the note is embedded",
                                got: found,
                            });
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    self.exercise.push("semantic search (the model)".to_owned());
                }
            }
            "scripted" => {
                for stream in [false, true] {
                    self.request(
                        json!({"type": "inference_request", "system": "be brief",
                               "messages": [{"role": "user", "content": "what files?"}],
                               "tools": [{"name": "files__list", "description": "list",
                                          "parameters": {"type": "object"}}],
                               "stream": stream}),
                        "inference_request",
                    )?;
                }
            }
            provider if PROVIDERS.contains(&provider) => {
                // A whole reply, a streamed one, and one retried after a 429.
                for stream in [false, true, false] {
                    let reply = self.request(
                        json!({"type": "inference_request", "system": "be brief",
                               "messages": [{"role": "user", "content": "what files?"}],
                               "tools": [{"name": "files__list", "description": "list",
                                          "parameters": {"type": "object"}}],
                               "stream": stream, "credential": "sk-trace-0123456789"}),
                        "inference_request",
                    )?;
                    if reply["type"] != "inference_response" {
                        return Err(ExerciseError::Unexpected {
                            expected: "inference_response",
                            got: reply,
                        });
                    }
                }
            }
            _ => {
                for action in self.actions.clone() {
                    let name = action["name"].as_str().unwrap_or_default().to_owned();
                    let args = args_from_schema(&action["parameters"]);
                    self.invoke(&name, args)?;
                    self.invoke(&name, json!({"unexpected": true}))?;
                }
            }
        }
        self.ping()?;
        Ok(())
    }

    /// Sends `shutdown` and waits for the plugin to go.
    pub fn finish(mut self) -> Result<Option<Report>, ExerciseError> {
        let _ = self.write(&json!({"v": 1, "id": 0, "type": "shutdown"}));
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        match self.tracer.take() {
            Some(tracer) => Ok(Some(tracer.wait()?)),
            None => Ok(None),
        }
    }
}

fn args_from_schema(schema: &Value) -> Value {
    let mut args = serde_json::Map::new();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in required {
        let value = match schema["properties"][name]["type"].as_str() {
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(false),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("Hello world from the P3AK tracer"),
        };
        args.insert(name.to_owned(), value);
    }
    Value::Object(args)
}

/// A memory vault with a fast KDF; returns its key as the kernel hands it over.
fn make_vault(home: &Path) -> Result<Vec<u8>, ExerciseError> {
    let dir = home.join("vaults");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("memory.vault");
    let passphrase = p3ak_crypto::Passphrase::new("tracer passphrase".to_owned());
    p3ak_vault::Vault::create(
        &path,
        p3ak_vault::Protection::Passphrase {
            passphrase: &passphrase,
            kdf: p3ak_vault::KdfParams {
                memory_kib: p3ak_vault::KdfParams::MIN_MEMORY_KIB,
                iterations: 1,
                parallelism: 1,
            },
        },
    )?;
    let key = p3ak_vault::VaultKey::derive(&path, &passphrase)?;
    Ok(key.to_handoff_bytes().expose().to_vec())
}

/// Runs `plugin` in its sandbox without its seccomp filter, under ptrace, makes it work, and
/// returns the system calls it made. Needs root (the plugin runs as its own user).
pub fn trace(
    exe: &Path,
    plugin: &str,
    path: Option<&Path>,
    class: Option<Class>,
) -> Result<Traced, ExerciseError> {
    let support = p3ak_sandbox::probe();
    if !support.root {
        return Err(ExerciseError::NotRoot);
    }
    let mut harness = Harness::start(exe, plugin, path, class, RunMode::Trace)?;
    let port = harness.http_port;
    harness.exercise(plugin, port)?;
    let exercise = harness.exercise.clone();
    let report = harness.finish()?.ok_or(ExerciseError::NoTrace)?;
    let class = class.unwrap_or(match (plugin, path) {
        (_, Some(_)) => Class::Script,
        ("files" | "vault", _) => Class::Tool,
        ("shell" | "skills", _) => Class::Shell,
        ("scripted", _) => Class::Provider,
        _ => Class::Network,
    });
    Ok(Traced {
        plugin: plugin.to_owned(),
        class,
        exercise,
        forked: report.forked,
        syscalls: report.syscalls,
    })
}

/// One class's seccomp profile after [`profiles`]: how many calls the traces showed, how many
/// are allowed on trust (the margin), and how many in all. Fields in the order `--json` has
/// always printed them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileSummary {
    pub allowed: usize,
    pub class: &'static str,
    pub margin: usize,
    pub traced: usize,
}

/// Traces every first-party plugin and the Python example `script_plugin`, and rebuilds each
/// class's profile from them; with `write`, rewrites the profiles there (class filters, OCI
/// copies, the traces), taking each committed file's hand-edited margin as the source.
pub fn profiles(
    exe: &Path,
    script_plugin: &Path,
    write: Option<&Path>,
) -> Result<Vec<ProfileSummary>, ExerciseError> {
    if std::env::var_os(TRACE_MODELS_VAR).is_none() {
        return Err(ExerciseError::Plan(format!(
            "the `vault` plugin loads the embedding model: set {TRACE_MODELS_VAR} to a models \
             directory with it installed (`p3ak models install`), so its trace covers that"
        )));
    }
    let mut traces: BTreeMap<String, Traced> = BTreeMap::new();
    for plugin in ["files", "vault", "shell", "http", "scripted"]
        .into_iter()
        .chain(PROVIDERS)
    {
        traces.insert(plugin.to_owned(), trace(exe, plugin, None, None)?);
    }
    traces.insert(
        "wordcount".to_owned(),
        trace(exe, "wordcount", Some(script_plugin), Some(Class::Script))?,
    );
    let mut summary = Vec::new();
    for class in Class::ALL {
        // The committed file is the source (its margin is edited by hand), else the built-in.
        let mut profile = match write {
            Some(dir) => {
                let path = dir.join(format!("{}.json", class.name()));
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ExerciseError::File {
                        path: path.clone(),
                        source,
                    })?;
                Profile::parse(&text).map_err(|message| ExerciseError::Profile { path, message })?
            }
            None => Profile::of(class)?,
        };
        let mine: Vec<Traced> = profile
            .traced
            .iter()
            .filter_map(|p| traces.get(p).cloned())
            .collect();
        let seen: std::collections::BTreeSet<String> = mine
            .iter()
            .flat_map(|t| t.syscalls.keys().cloned())
            .collect();
        // The margin keeps only what no trace showed: it is what the filter allows on trust.
        profile.margin.retain(|call, _| !seen.contains(call));
        profile.rebuild(&mine);
        summary.push(ProfileSummary {
            class: class.name(),
            traced: seen.len(),
            margin: profile.margin.len(),
            allowed: profile.syscalls.len(),
        });
        if let Some(dir) = write {
            write_json(&dir.join(format!("{}.json", class.name())), &profile)?;
            write_json(
                &dir.join("oci").join(format!("{}.json", class.name())),
                &profile.to_oci(),
            )?;
        }
    }
    if let Some(dir) = write {
        for (plugin, traced) in &traces {
            write_json(&dir.join("traced").join(format!("{plugin}.json")), traced)?;
        }
    }
    Ok(summary)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), ExerciseError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| ExerciseError::File {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Start, ping and read latencies of the `files` plugin, sandboxed and bare, in microseconds.
/// Fields in the order `--json` has always printed them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub mode: &'static str,
    pub ping_p50_us: u128,
    pub ping_p99_us: u128,
    pub read_p50_us: u128,
    pub read_p99_us: u128,
    pub start_p50_us: u128,
    pub start_p99_us: u128,
}

/// Starts the `files` plugin `starts` times and makes `calls` pings and reads, sandboxed as the
/// kernel does it and bare.
pub fn bench(exe: &Path, starts: usize, calls: usize) -> Result<Vec<BenchRow>, ExerciseError> {
    let mut rows = Vec::new();
    for (label, mode) in [("sandboxed", RunMode::Sandboxed), ("bare", RunMode::Bare)] {
        let mut started = Vec::new();
        for _ in 0..starts {
            let t = Instant::now();
            let harness = Harness::start(exe, "files", None, None, mode)?;
            started.push(t.elapsed());
            harness.finish()?;
        }
        let mut harness = Harness::start(exe, "files", None, None, mode)?;
        harness.invoke("write", json!({"path": "a.txt", "content": "hello"}))?;
        let mut pings = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..calls {
            let t = Instant::now();
            harness.ping()?;
            pings.push(t.elapsed());
            let t = Instant::now();
            harness.invoke("read", json!({"path": "a.txt"}))?;
            reads.push(t.elapsed());
        }
        harness.finish()?;
        for v in [&mut started, &mut pings, &mut reads] {
            v.sort();
        }
        rows.push(BenchRow {
            mode: label,
            start_p50_us: percentile(&started, 0.5).as_micros(),
            start_p99_us: percentile(&started, 0.99).as_micros(),
            ping_p50_us: percentile(&pings, 0.5).as_micros(),
            ping_p99_us: percentile(&pings, 0.99).as_micros(),
            read_p50_us: percentile(&reads, 0.5).as_micros(),
            read_p99_us: percentile(&reads, 0.99).as_micros(),
        });
    }
    Ok(rows)
}

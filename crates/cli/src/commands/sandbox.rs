//! `p3ak sandbox`: what the host offers, tracing plugins into seccomp profiles, and the cost
//! of the sandbox.
//!
//! `trace` and `bench` run a plugin the way the kernel does (the kernel's own sandbox plan,
//! uid, Landlock rules, namespace and limits) against a small host of their own that speaks
//! the protocol and makes the plugin do representative work.
#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing: reads give Null, writes go to objects built here"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use p3ak_kernel::config::{KernelSettings, Launch, PluginSandbox};
use p3ak_kernel::host::PluginSpec;
use p3ak_kernel::host::sandboxing::{PluginPlan, Sandbox};
use p3ak_sandbox::profile::Traced;
use p3ak_sandbox::trace::{Report, Tracer};
use p3ak_sandbox::{Class, Profile};
use serde_json::{Value, json};

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this host offers the sandbox, and what is missing.
    Status,
    /// Run a plugin in its sandbox without its seccomp filter, under ptrace, make it work,
    /// and print the system calls it made as a minimal profile.
    Trace(TraceArgs),
    /// Trace every first-party plugin and the Python example; with --write, rewrite the
    /// profiles in deploy/seccomp (traces, class filters, OCI copies).
    Profiles(ProfilesArgs),
    /// Measure plugin start time and call latency with and without the sandbox.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// A first-party plugin (files, shell, http, vault, scripted), or a name for --path.
    plugin: String,
    /// A third-party plugin's executable.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Its class (default: by builtin; `script` for --path).
    #[arg(long)]
    class: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProfilesArgs {
    /// Rewrite the files under this directory.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// The Python example plugin traced for the `script` class.
    #[arg(long, default_value = "examples/plugins/wordcount.py")]
    script_plugin: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Plugin starts measured per mode.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Calls measured per mode.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Status => status(out),
        Command::Trace(args) => {
            let class = args
                .class
                .as_deref()
                .map(|c| Class::from_name(c).ok_or_else(|| anyhow!("unknown class `{c}`")))
                .transpose()?;
            let traced = trace(&args.plugin, args.path.as_deref(), class)?;
            print_trace(&traced, out)
        }
        Command::Profiles(args) => profiles(&args, out),
        Command::Bench(args) => bench(&args, out),
    }
}

fn status(out: &Output) -> anyhow::Result<()> {
    let support = p3ak_sandbox::probe();
    let missing = support.missing();
    if out.is_json() {
        out.json(&json!({"support": support, "missing": missing}));
        return Ok(());
    }
    let abi = support
        .landlock_abi
        .map_or_else(|| "absent".to_owned(), |abi| format!("ABI {abi}"));
    out.line(format!("landlock: {abi}"));
    out.line(format!(
        "seccomp:  {}",
        if support.seccomp { "filters" } else { "absent" }
    ));
    out.line(format!("root:     {}", support.root));
    if missing.is_empty() {
        out.line("the full sandbox is available");
    } else {
        for m in &missing {
            out.line(format!("missing:  {m}"));
        }
    }
    Ok(())
}

/// How a plugin is run by this command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunMode {
    /// Sandboxed without seccomp, under ptrace.
    Trace,
    /// Sandboxed as the kernel does it.
    Sandboxed,
    /// No sandbox at all: the kernel's own user and everything it may reach.
    Bare,
}

/// A plugin started against this command's own small host.
struct Harness {
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

fn builtin_config(plugin: &str, dir: &Path) -> anyhow::Result<Value> {
    Ok(match plugin {
        "files" | "shell" => json!({"workspaces": dir.join("workspaces")}),
        "vault" => json!({"vault": dir.join("vaults").join("memory.vault")}),
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
    fn start(
        plugin: &str,
        path: Option<&Path>,
        class: Option<Class>,
        mode: RunMode,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the p3ak binary")?;
        let dir = tempfile::Builder::new().prefix("p3ak-sandbox-").tempdir()?;
        let home = dir.path().to_owned();
        std::fs::create_dir_all(home.join("run"))?;
        let launch = match path {
            Some(p) => Launch::Path(std::fs::canonicalize(p)?),
            None => Launch::Builtin(plugin.to_owned()),
        };
        let (server, port) = if plugin == "http" {
            let (h, p) = loopback_http()?;
            (Some(h), Some(p))
        } else {
            (None, None)
        };
        let mut stdin = None;
        if plugin == "vault" {
            stdin = Some(make_vault(&home)?);
        }
        let config = if path.is_some() {
            json!({})
        } else {
            builtin_config(plugin, &home)?
        };
        let spec = PluginSpec {
            name: plugin.to_owned(),
            launch: launch.clone(),
            args: Vec::new(),
            config: config.clone(),
            stdin: None,
            socket: home.join("run").join(format!("plugin-{plugin}.sock")),
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
        let sandbox = Sandbox::new(&settings, std::iter::once(&spec));
        let plan: PluginPlan = sandbox.plan(&spec, &exe).map_err(|e| anyhow!(e))?;
        let listener = UnixListener::bind(&spec.socket)?;
        if mode != RunMode::Bare {
            sandbox
                .prepare_files(&spec, &plan)
                .map_err(|e| anyhow!(e))?;
        } else {
            std::fs::create_dir_all(&plan.scratch)?;
        }
        let mut command = match &launch {
            Launch::Builtin(b) => {
                let mut c = std::process::Command::new(&exe);
                c.args(["plugin", "run", b]);
                c
            }
            Launch::Path(p) => std::process::Command::new(p),
        };
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &plan.scratch)
            .env("TMPDIR", &plan.scratch)
            .env("P3AK_PLUGIN_SOCKET", &spec.socket)
            .env("P3AK_PLUGIN_NAME", plugin)
            .env("P3AK_MAX_FRAME", settings.max_frame.to_string())
            .current_dir(&plan.scratch)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
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
        let mut harness_child = child;
        let mut tracer = tracer;
        let input = match (harness_child.as_mut(), tracer.as_mut()) {
            (Some(child), _) => child.stdin.take(),
            (None, Some(tracer)) => tracer.stdin.take(),
            (None, None) => None,
        };
        if let (Some(key), Some(mut input)) = (&stdin, input) {
            input.write_all(key)?;
        }
        let stream = accept(&listener, Duration::from_secs(20))?;
        let mut harness = Self {
            _dir: dir,
            stream,
            child: harness_child,
            tracer,
            next_id: 100,
            max_frame: settings.max_frame,
            actions: Vec::new(),
            exercise: Vec::new(),
            _server: server,
            http_port: port,
        };
        harness.handshake(plugin, config)?;
        Ok(harness)
    }

    fn handshake(&mut self, plugin: &str, config: Value) -> anyhow::Result<()> {
        let hello = self.read()?;
        if hello["type"] != "hello" || hello["plugin"] != plugin {
            bail!("expected hello from `{plugin}`, got {hello}");
        }
        let id = hello["id"].clone();
        self.write(&json!({"v": 1, "id": id, "type": "welcome", "version": 1, "config": config}))?;
        let register = self.read()?;
        if register["type"] != "register" {
            bail!("expected register, got {register}");
        }
        self.actions = register["actions"].as_array().cloned().unwrap_or_default();
        let id = register["id"].clone();
        self.write(&json!({"v": 1, "id": id, "type": "registered"}))?;
        self.exercise.push("hello, register".to_owned());
        Ok(())
    }

    fn write(&mut self, message: &Value) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(message)?;
        let frame = p3ak_proto::encode_payload(&payload, self.max_frame)?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = usize::try_from(u32::from_be_bytes(len))?;
        if len > self.max_frame {
            bail!("frame of {len} bytes");
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Sends a request and waits for its answer, skipping stream chunks.
    fn request(&mut self, mut message: Value, what: &str) -> anyhow::Result<Value> {
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

    fn invoke(&mut self, action: &str, args: Value) -> anyhow::Result<Value> {
        self.request(
            json!({"type": "invoke", "agent": "assistant", "action": action, "args": args,
                   "deadline_ms": 30000}),
            &format!("invoke {action}"),
        )
    }

    fn ping(&mut self) -> anyhow::Result<()> {
        let reply = self.request(json!({"type": "ping"}), "ping")?;
        if reply["type"] != "pong" {
            bail!("ping answered with {reply}");
        }
        Ok(())
    }

    /// Representative work for each first-party plugin; for others, each action once with
    /// arguments made from its schema.
    fn exercise(&mut self, plugin: &str, http_port: Option<u16>) -> anyhow::Result<()> {
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
    fn finish(mut self) -> anyhow::Result<Option<Report>> {
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

fn accept(listener: &UnixListener, timeout: Duration) -> anyhow::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("the plugin did not connect in time");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A loopback HTTP service answering a few requests, for the `http` plugin's trace.
fn loopback_http() -> anyhow::Result<(std::thread::JoinHandle<()>, u16)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\
                  connection: close\r\n\r\nok",
            );
        }
    });
    Ok((handle, port))
}

/// A memory vault with a fast KDF; returns its key as the kernel hands it over.
fn make_vault(home: &Path) -> anyhow::Result<Vec<u8>> {
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

fn trace(plugin: &str, path: Option<&Path>, class: Option<Class>) -> anyhow::Result<Traced> {
    let support = p3ak_sandbox::probe();
    if !support.root {
        bail!("tracing runs the plugin as its own user: run as root");
    }
    let mut harness = Harness::start(plugin, path, class, RunMode::Trace)?;
    let port = harness.http_port;
    harness.exercise(plugin, port)?;
    let exercise = harness.exercise.clone();
    let report = harness
        .finish()?
        .ok_or_else(|| anyhow!("no trace was recorded"))?;
    let class = class.unwrap_or(match (plugin, path) {
        (_, Some(_)) => Class::Script,
        ("files" | "vault", _) => Class::Tool,
        ("shell", _) => Class::Shell,
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

fn print_trace(traced: &Traced, out: &Output) -> anyhow::Result<()> {
    if out.is_json() {
        out.json(traced);
        return Ok(());
    }
    out.line(format!(
        "# {} ({} class): {} system calls{}",
        traced.plugin,
        traced.class.name(),
        traced.syscalls.len(),
        if traced.forked { ", forks" } else { "" }
    ));
    out.line(format!("# exercised: {}", traced.exercise.join("; ")));
    for (name, count) in &traced.syscalls {
        out.line(format!("{name:<24} {count}"));
    }
    Ok(())
}

fn profiles(args: &ProfilesArgs, out: &Output) -> anyhow::Result<()> {
    let mut traces: BTreeMap<String, Traced> = BTreeMap::new();
    for plugin in ["files", "vault", "shell", "http", "scripted"] {
        traces.insert(plugin.to_owned(), trace(plugin, None, None)?);
    }
    traces.insert(
        "wordcount".to_owned(),
        trace("wordcount", Some(&args.script_plugin), Some(Class::Script))?,
    );
    let mut summary = Vec::new();
    for class in Class::ALL {
        // The committed file is the source (its margin is edited by hand), else the built-in.
        let mut profile = match &args.write {
            Some(dir) => {
                let path = dir.join(format!("{}.json", class.name()));
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                Profile::parse(&text).map_err(|e| anyhow!("`{}`: {e}", path.display()))?
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
        summary.push(json!({
            "class": class.name(), "traced": seen.len(), "margin": profile.margin.len(),
            "allowed": profile.syscalls.len(),
        }));
        if let Some(dir) = &args.write {
            write_json(&dir.join(format!("{}.json", class.name())), &profile)?;
            write_json(
                &dir.join("oci").join(format!("{}.json", class.name())),
                &profile.to_oci(),
            )?;
        }
    }
    if let Some(dir) = &args.write {
        for (plugin, traced) in &traces {
            write_json(&dir.join("traced").join(format!("{plugin}.json")), traced)?;
        }
    }
    if out.is_json() {
        out.json(&summary);
        return Ok(());
    }
    for row in summary {
        out.line(format!(
            "{:<9} traced {:>3}  margin {:>3}  allowed {:>3}",
            row["class"].as_str().unwrap_or_default(),
            row["traced"],
            row["margin"],
            row["allowed"]
        ));
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
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

fn bench(args: &BenchArgs, out: &Output) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (label, mode) in [("sandboxed", RunMode::Sandboxed), ("bare", RunMode::Bare)] {
        let mut starts = Vec::new();
        for _ in 0..args.starts {
            let t = Instant::now();
            let harness = Harness::start("files", None, None, mode)?;
            starts.push(t.elapsed());
            harness.finish()?;
        }
        let mut harness = Harness::start("files", None, None, mode)?;
        harness.invoke("write", json!({"path": "a.txt", "content": "hello"}))?;
        let mut pings = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..args.calls {
            let t = Instant::now();
            harness.ping()?;
            pings.push(t.elapsed());
            let t = Instant::now();
            harness.invoke("read", json!({"path": "a.txt"}))?;
            reads.push(t.elapsed());
        }
        harness.finish()?;
        for v in [&mut starts, &mut pings, &mut reads] {
            v.sort();
        }
        rows.push(json!({
            "mode": label,
            "start_p50_us": percentile(&starts, 0.5).as_micros(),
            "start_p99_us": percentile(&starts, 0.99).as_micros(),
            "ping_p50_us": percentile(&pings, 0.5).as_micros(),
            "ping_p99_us": percentile(&pings, 0.99).as_micros(),
            "read_p50_us": percentile(&reads, 0.5).as_micros(),
            "read_p99_us": percentile(&reads, 0.99).as_micros(),
        }));
    }
    if out.is_json() {
        out.json(&rows);
        return Ok(());
    }
    out.line("files plugin: start = spawn to registered; read = files.read of 5 bytes");
    for r in rows {
        out.line(format!(
            "{:<10} start p50 {:>6} µs p99 {:>6} µs | ping p50 {:>4} µs p99 {:>5} µs | read p50 {:>5} µs p99 {:>5} µs",
            r["mode"].as_str().unwrap_or_default(),
            r["start_p50_us"], r["start_p99_us"], r["ping_p50_us"], r["ping_p99_us"],
            r["read_p50_us"], r["read_p99_us"],
        ));
    }
    Ok(())
}

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
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use p3ak_kernel::config::{KernelSettings, Launch, PluginSandbox};
use p3ak_kernel::launch::PluginSpec;
use p3ak_kernel::launch::plan::{PluginPlan, Sandbox};
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
    /// A first-party plugin (files, shell, http, vault, scripted, anthropic, openai, ollama),
    /// or a name for --path.
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

/// The model providers, traced against [`loopback_model_api`].
const PROVIDERS: [&str; 3] = ["anthropic", "openai", "ollama"];

fn builtin_config(plugin: &str, dir: &Path, port: Option<u16>) -> anyhow::Result<Value> {
    let base = format!("http://127.0.0.1:{}", port.unwrap_or(1));
    Ok(match plugin {
        "anthropic" | "ollama" => {
            json!({"base_url": base, "model": "traced", "retry_base_ms": 10})
        }
        "openai" => {
            json!({"base_url": format!("{base}/v1"), "model": "traced", "retry_base_ms": 10})
        }
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
        } else if PROVIDERS.contains(&plugin) {
            let (h, p) = loopback_model_api()?;
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
        let mut plan: PluginPlan = sandbox.plan(&spec, &exe).map_err(|e| anyhow!(e))?;
        if mode == RunMode::Bare {
            std::fs::create_dir_all(&plan.scratch)?;
            plan.prepared.ids = None;
        } else {
            sandbox.prepare_files(&plan).map_err(|e| anyhow!(e))?;
        }
        // The same command the kernel starts a plugin with, its connection on stdin.
        let (stream, theirs) = UnixStream::pair()?;
        let mut command = p3ak_kernel::launch::command(
            &spec,
            &plan,
            &exe,
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

    fn handshake(&mut self, plugin: &str, config: Value, key: Option<&[u8]>) -> anyhow::Result<()> {
        let hello = self.read()?;
        if hello["type"] != "hello" || hello["plugin"] != plugin {
            bail!("expected hello from `{plugin}`, got {hello}");
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
                        bail!("{provider} answered the trace with {reply}");
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

/// A loopback model API for the providers' traces: for each of four connections, the reply
/// the path asks for (Anthropic's `/v1/messages`, OpenAI's `/chat/completions`, Ollama's
/// `/api/chat`), streamed when the request says so; the third connection gets a 429.
fn loopback_model_api() -> anyhow::Result<(std::thread::JoinHandle<()>, u16)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(4).enumerate() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 16384];
            // Head and body: the body is small and ends with the JSON's closing brace.
            while !request.ends_with(b"}") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(buf.get(..k).unwrap_or_default()),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let streamed = text.contains("\"stream\":true");
            let reply = if n == 2 {
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-type: \
                 application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                    .to_owned()
            } else {
                let (kind, body) = model_reply(&text, streamed);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Ok((handle, port))
}

/// The body each API would send: a text and one tool call.
fn model_reply(request: &str, streamed: bool) -> (&'static str, String) {
    if request.starts_with("POST /v1/messages") {
        if !streamed {
            return (
                "application/json",
                json!({"type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "ok"},
                            {"type": "tool_use", "id": "t1", "name": "files__list", "input": {}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 2}})
                .to_string(),
            );
        }
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 3}}}),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "ok"}}),
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "t1", "name": "files__list"}}),
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                   "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ];
        let body = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
            .collect();
        return ("text/event-stream", body);
    }
    if request.starts_with("POST /v1/chat/completions") {
        let call = json!([{"index": 0, "id": "c1", "type": "function",
                           "function": {"name": "files__list", "arguments": "{}"}}]);
        if !streamed {
            return ("application/json", json!({"object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": "ok", "tool_calls": call}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
                .to_string());
        }
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"content": "ok"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": call}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ];
        let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        return ("text/event-stream", body);
    }
    let message = json!({"role": "assistant", "content": "ok",
                         "tool_calls": [{"function": {"name": "files__list", "arguments": {}}}]});
    let last = json!({"message": {"role": "assistant", "content": ""}, "done": true,
                      "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2});
    if !streamed {
        let mut whole = last;
        whole["message"] = message;
        return ("application/json", whole.to_string());
    }
    let first = json!({"message": message, "done": false});
    ("application/x-ndjson", format!("{first}\n{last}\n"))
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
    for plugin in ["files", "vault", "shell", "http", "scripted"]
        .into_iter()
        .chain(PROVIDERS)
    {
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

//! The kernel's commands: `init`, `up`, `status`, `chat`, `pending`, `approve`, `deny`,
//! `secret`, and `plugin run` (how the kernel starts a first-party plugin).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use p3ak_kernel::broker::{self, SecretValue};
use p3ak_kernel::control::{self, ControlEvent, ControlRequest};
use p3ak_kernel::home::Home;
use p3ak_kernel::warden::{self, WardenEvent, WardenOptions};
use p3ak_kernel::{Kernel, KernelError};
use p3ak_vault::{Access, KdfParams, Unlock, Vault, VaultError};

use crate::output::{Output, sanitize, sanitize_text};
use crate::secrets::{self, ENV_PASSPHRASE, PassphraseArgs, Source};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the API listens on TCP (loopback unless `[api] public` with TLS).
    #[arg(long, default_value = "127.0.0.1:8420")]
    listen: String,
    #[command(flatten)]
    up: UpArgs,
}

#[derive(Debug, clap::Args)]
pub struct KernelArgs {
    /// The API's TCP address, over `[api] listen` (`p3ak serve`).
    #[arg(long, hide = true)]
    api_listen: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The agent to talk to (default: the config's default_agent).
    #[arg(long)]
    agent: Option<String>,
    /// The conversation (kept across runs).
    #[arg(long, default_value = "console")]
    conversation: String,
    /// Send this one message and exit. Without it, each line read is a message.
    #[arg(short, long)]
    message: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The id `p3ak pending` shows.
    pub id: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Store a secret; the value is read from a prompt or stdin, never from the command line.
    Set {
        /// The name tool calls use (`{"$secret": NAME}`).
        name: String,
        /// An action pattern it may be injected into (repeatable); none: what the policy allows.
        #[arg(long = "scope", value_name = "PATTERN")]
        scopes: Vec<String>,
        /// A host it may be sent to (repeatable): `api.example.com`, `*.example.org` (its
        /// subdomains) or an IP address. Bound so, it goes only into calls whose every URL is
        /// on these hosts, and which name one.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Names and scopes of the stored secrets (never values).
    List {
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Run a first-party plugin (the kernel does this; its connection is standard input).
    Run {
        /// files, http, shell, vault or scripted.
        name: String,
    },
}

/// `P3AK_HOME`, else `$XDG_DATA_HOME/p3ak`, else `~/.local/share/p3ak`.
pub fn home() -> anyhow::Result<Home> {
    Home::from_env().context("cannot find P3AK_HOME: set P3AK_HOME or HOME")
}

fn new_passphrase(args: &PassphraseArgs) -> anyhow::Result<p3ak_crypto::Passphrase> {
    secrets::read(Source {
        file: args.passphrase_file.as_ref(),
        env: ENV_PASSPHRASE,
        prompt: "New kernel passphrase: ",
        new: true,
    })
}

fn passphrase(args: &PassphraseArgs) -> anyhow::Result<p3ak_crypto::Passphrase> {
    secrets::read(Source {
        file: args.passphrase_file.as_ref(),
        env: ENV_PASSPHRASE,
        prompt: "Kernel passphrase: ",
        new: false,
    })
}

pub fn init(args: &InitArgs, out: &Output) -> anyhow::Result<()> {
    let home = home()?;
    if home.is_initialised() {
        bail!("`{}` is already set up", home.root().display());
    }
    let pass = new_passphrase(&args.passphrase)?;
    let created = home.init(&pass, KdfParams::RFC9106_SECOND)?;
    if out.is_json() {
        out.json(&serde_json::json!({"home": home.root(), "created": created}));
    } else {
        out.line(format_args!("set up `{}`:", home.root().display()));
        for path in created {
            out.line(format_args!("  {}", path.display()));
        }
        out.line("next: edit config.toml, policy.yaml and agents/, then `p3ak up`");
    }
    Ok(())
}

/// `p3ak serve`: `p3ak up` with the API on TCP too.
pub fn serve(args: &ServeArgs, out: &Output) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("`{}` is not an address like 127.0.0.1:8420", args.listen))?;
    up(&args.up, Some(addr), out)
}

pub fn up(args: &UpArgs, listen: Option<std::net::SocketAddr>, out: &Output) -> anyhow::Result<()> {
    let home = home()?;
    let pass = if home.is_initialised() {
        passphrase(&args.passphrase)?
    } else {
        let pass = new_passphrase(&args.passphrase)?;
        let created = home.init(&pass, KdfParams::RFC9106_SECOND)?;
        out.warn(format_args!(
            "set up a new home at `{}` ({} paths created)",
            home.root().display(),
            created.len()
        ));
        pass
    };
    let exe = std::env::current_exe().context("cannot find the p3ak binary")?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let api_listener = activated_listener(&home, listen)?;
    p3ak_sandbox::harden_process().context("cannot harden the process")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let options = WardenOptions {
        api_listener,
        home,
        passphrase: pass,
        exe,
        kernel_args: {
            let mut kernel_args = Vec::new();
            if out.is_json() {
                kernel_args.push("--json".to_owned());
            }
            if let Some(addr) = listen {
                kernel_args.push(format!("--api-listen={addr}"));
            }
            kernel_args
        },
    };
    runtime
        .block_on(warden::run(options, |event| match event {
            WardenEvent::Up {
                login_link,
                console_error,
            } => {
                // Under systemd (`Type=notify`): started means the kernel serves its API now,
                // so what is ordered after p3ak.service finds it answering. Outside systemd
                // there is no NOTIFY_SOCKET and this does nothing.
                if let Err(e) = sd_notify::notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("the kernel is up"),
                ]) {
                    out.warn(format_args!("could not tell systemd the kernel is up: {e}"));
                }
                if out.is_json() {
                    out.json(&serde_json::json!({
                        "event": "console", "login_link": login_link, "error": console_error,
                    }));
                    return;
                }
                if let Some(link) = &login_link {
                    out.warn(format_args!(
                    "approvals: `p3ak pending`, or the web console (this link works once): {link}"
                ));
                }
                if let Some(problem) = &console_error {
                    out.warn(format_args!("  {problem}"));
                }
            }
        }))
        .map_err(|e| explain_downgrade(e.into()))?;
    out.warn("the kernel stopped");
    Ok(())
}

/// The API's TCP socket when systemd's socket activation (`deploy/systemd/p3ak.socket`)
/// passed one (`LISTEN_FDS`/`LISTEN_PID`): the kernel serves it instead of binding
/// `[api] listen`, so the port is systemd's to open, and it stays open across restarts.
fn activated_listener(
    home: &Home,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        bail!(
            "socket activation passed {} sockets; P3AK's API takes one (ListenStream= once in p3ak.socket)",
            fds.len()
        );
    }
    if listen.is_some() {
        bail!("`p3ak serve --listen` and a socket from systemd: choose one");
    }
    let listener = fds
        .take_tcp_listener(0)
        .context("the socket systemd passed")?
        .context(
            "the socket systemd passed is not a listening TCP socket (ListenStream=ADDRESS:PORT)",
        )?;
    // systemd passes it inheritable: without close-on-exec the approval daemon and every plugin
    // would inherit the API's socket and could accept its connections.
    rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC)
        .context("cannot mark the socket systemd passed close-on-exec")?;
    // Held to `[api] listen`'s rules here, before anything starts (the kernel checks again).
    let mut api = p3ak_kernel::config::Config::load(&home.config())?.api;
    api.listen = listener
        .local_addr()
        .context("the socket systemd passed")?
        .to_string();
    api.listen_addr()?;
    Ok(Some(listener))
}

/// `p3ak kernel`: the kernel itself, started by the warden (`p3ak up`) with its channel as
/// standard input; under its own uid as root.
pub fn kernel_child(args: &KernelArgs, out: &Output) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    p3ak_sandbox::harden_process().context("cannot harden the kernel")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let warden::StartedKernel {
            kernel,
            api_listener,
        } = warden::start_kernel()
            .await
            .map_err(|e| explain_downgrade(e.into()))?;
        let mut api = kernel.config().api.clone();
        if let Some(listen) = &args.api_listen {
            api.listen.clone_from(listen);
        }
        // A socket from systemd is where the API listens (reported as such); `bind_with`
        // holds its address to the rules `listen` is held to.
        if let Some(addr) = api_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            api.listen = addr.to_string();
        }
        api.listen_addr()?;
        // Bound before the kernel says it is up: a port in use or a TLS key the kernel
        // cannot read stops `p3ak up` with the reason, rather than leave it without an API.
        let backend = p3ak_server::KernelBackend::new(Arc::clone(&kernel));
        let app = p3ak_server::App::with_settings(Arc::clone(&kernel), backend, api.clone());
        let listening = p3ak_server::bind_with(app, api_listener)
            .await
            .context("the API cannot be served")?;
        report_start(&kernel, &api, out);
        kernel.warden_ready().await?;
        tokio::spawn(listening.run());
        let stopper = Arc::clone(&kernel);
        tokio::spawn(async move {
            wait_for_signal().await;
            stopper.request_stop();
        });
        kernel.serve().await?;
        Ok::<(), anyhow::Error>(())
    })
}

fn report_start(kernel: &Kernel, api: &p3ak_kernel::config::ApiSettings, out: &Output) {
    let status = kernel.status();
    if out.is_json() {
        out.json(&serde_json::json!({"event": "up", "status": status}));
        return;
    }
    out.warn(format_args!(
        "p3ak kernel up (pid {}, uid {}) on `{}`",
        status.pid,
        rustix::process::geteuid().as_raw(),
        status.home
    ));
    for plugin in &status.plugins {
        let name = plugin["name"].as_str().unwrap_or("?");
        let state = plugin["state"].as_str().unwrap_or("?");
        let detail = plugin["detail"].as_str().unwrap_or("");
        out.warn(format_args!("  plugin {name}: {state} {detail}"));
    }
    let has_provider = status
        .plugins
        .iter()
        .any(|p| p["kind"] == "provider" && p["state"] == "running");
    if !has_provider {
        out.warn(
            "  no language model is running: add a provider plugin to config.toml and name it \
             as `provider` in agents/<name>.toml (see README)",
        );
    }
    if api.enabled {
        out.warn(format_args!(
            "  API on `{}`{}",
            kernel.home().api_socket().display(),
            if api.listen == "off" {
                String::new()
            } else {
                format!(
                    " and http{}://{}",
                    if api.tls_cert.is_some() { "s" } else { "" },
                    api.listen
                )
            }
        ));
    }
    out.warn("talk to it with `p3ak chat`; stop it with Ctrl-C or SIGTERM");
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the kernel still stops on `shutdown` over the control socket.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Sends one control request, printing intermediate events; returns the final one or fails
/// with its error.
pub(super) fn call(request: &ControlRequest, out: &Output) -> anyhow::Result<ControlEvent> {
    call_asking(request, out, false)
}

/// [`call`]; with `ask`, an approval the turn waits for is asked for right here (levels 1
/// and 3: a yes, or the PIN), which is the operator's yes on this authenticated channel.
fn call_asking(request: &ControlRequest, out: &Output, ask: bool) -> anyhow::Result<ControlEvent> {
    let (event, streamed) = call_streaming(request, out, ask)?;
    if streamed && !out.is_json() {
        return Ok(ControlEvent::Done {
            message: String::new(),
        });
    }
    Ok(event)
}

/// Sends a request whose answer may stream a turn: notices and approvals go to stderr (and,
/// with `ask`, an approval is asked right here), text to stdout as it comes; with `--json`,
/// each event as a JSON line. Returns the final event, and whether text was streamed (then a
/// newline ended it).
pub(super) fn call_streaming(
    request: &ControlRequest,
    out: &Output,
    ask: bool,
) -> anyhow::Result<(ControlEvent, bool)> {
    let home = home()?;
    let streamed = std::cell::Cell::new(false);
    let event = control::call(&home.control_socket(), request, |event| {
        if out.is_json() {
            out.json(event);
            return;
        }
        match event {
            ControlEvent::Notice { text } => out.warn(sanitize(text)),
            ControlEvent::Approval {
                id, level, text, ..
            } => {
                out.warn(sanitize(text));
                if ask {
                    super::hitl::ask_inline(id, *level, out);
                }
            }
            ControlEvent::Chunk { text } => {
                let mut stdout = std::io::stdout();
                let _ = write!(stdout, "{}", sanitize_text(text));
                let _ = stdout.flush();
                streamed.set(true);
            }
            _ => {}
        }
    })?;
    if let ControlEvent::Error { message } = &event {
        bail!("{message}");
    }
    if streamed.get() && !out.is_json() {
        out.line("");
    }
    Ok((event, streamed.get()))
}

/// `p3ak health`: one `GET /healthz` on the kernel's API socket. For probes (systemd,
/// Kubernetes, compose): cheap, no passphrase, exit 1 with the reason when it is not healthy.
pub fn health(out: &Output) -> anyhow::Result<()> {
    let socket = home()?.api_socket();
    let backend = p3ak_server::remote::RemoteBackend::new(socket.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(backend.health())?;
    if out.is_json() {
        out.json(&serde_json::json!({ "healthy": true, "socket": socket }));
    } else {
        out.line(format!("healthy ({})", socket.display()));
    }
    Ok(())
}

pub fn status(out: &Output) -> anyhow::Result<()> {
    let event = call(&ControlRequest::Status, out)?;
    let ControlEvent::Status(status) = event else {
        bail!("unexpected answer from the kernel");
    };
    if out.is_json() {
        out.json(&status);
        return Ok(());
    }
    out.line(format_args!("kernel pid {} on {}", status.pid, status.home));
    out.line(format_args!(
        "agents: {}; pending approvals: {}; tokens used: {} in, {} out",
        status.agents.join(", "),
        status.pending,
        status.usage.input_tokens,
        status.usage.output_tokens
    ));
    let hitl = &status.hitl;
    out.line(format_args!(
        "approval daemon: {} (pid {}); web console: {}",
        if hitl["running"] == true {
            "running"
        } else {
            "STOPPED: escalations are denied"
        },
        hitl["pid"],
        if hitl["console"] == true {
            "on (`p3ak hitl login` for a link)"
        } else {
            "off"
        }
    ));
    for (provider, usage) in &status.usage_by_provider {
        out.line(format_args!(
            "  tokens by {provider}: {} in, {} out",
            usage.input_tokens, usage.output_tokens
        ));
    }
    for plugin in &status.plugins {
        out.line(format_args!(
            "  {:<12} {:<10} {:<9} restarts {}  {}",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["state"].as_str().unwrap_or("?"),
            plugin["kind"].as_str().unwrap_or("-"),
            plugin["restarts"],
            plugin["detail"].as_str().unwrap_or("")
        ));
    }
    Ok(())
}

pub fn chat(args: &ChatArgs, out: &Output) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal() && !out.is_json();
    if interactive {
        // An approval asked mid-turn reads a PIN here.
        p3ak_sandbox::harden_process().context("cannot harden the process")?;
    }
    let send = |text: String| -> anyhow::Result<()> {
        let request = ControlRequest::Chat {
            agent: args.agent.clone(),
            conversation: args.conversation.clone(),
            text,
        };
        match call_asking(&request, out, interactive)? {
            ControlEvent::Reply { text } if out.is_json() => {
                out.json(&ControlEvent::Reply { text });
            }
            ControlEvent::Reply { text } => out.line(sanitize_text(&text)),
            _ => {}
        }
        Ok(())
    };
    if let Some(message) = &args.message {
        return send(message.clone());
    }
    if interactive {
        out.warn("type a message and press Enter; Ctrl-D to leave");
    }
    let mut failed = false;
    loop {
        // Not `lines()`: that holds stdin's lock, and an approval asked mid-turn reads it too.
        let mut line = String::new();
        if stdin.read_line(&mut line).context("cannot read stdin")? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        if line.trim().is_empty() {
            continue;
        }
        if let Err(e) = send(line) {
            // At a terminal one failed turn does not end the chat.
            if !interactive {
                return Err(e);
            }
            out.error(&e);
            failed = true;
        }
    }
    if failed {
        bail!("some messages failed");
    }
    Ok(())
}

fn done(event: ControlEvent, out: &Output) -> anyhow::Result<()> {
    match event {
        ControlEvent::Done { message } if out.is_json() => {
            out.json(&serde_json::json!({"ok": true, "message": message}));
        }
        ControlEvent::Done { message } => out.line(message),
        _ => bail!("unexpected answer from the kernel"),
    }
    Ok(())
}

pub fn secret(command: SecretCommand, out: &Output) -> anyhow::Result<()> {
    let home = home()?;
    let running = home.control_socket().exists();
    match command {
        SecretCommand::Set {
            name,
            scopes,
            hosts,
            passphrase: pass_args,
        } => {
            let value = read_secret_value()?;
            if running {
                let request = ControlRequest::SecretSet {
                    name,
                    value: value.into_inner(),
                    scopes,
                    hosts,
                };
                match call(&request, out) {
                    Err(e) if is_not_running(&e) => {}
                    other => return done(other?, out),
                }
                bail!("the kernel stopped while storing the secret: run the command again");
            }
            let vault = open_kernel_vault(&home, &pass_args, Access::Write)?;
            let name_shown = name.clone();
            broker::store_secret(
                &vault,
                &name,
                &SecretValue::new(value.into_inner()),
                &scopes,
                &hosts,
            )?;
            done(
                ControlEvent::Done {
                    message: format!("secret `{name_shown}` stored"),
                },
                out,
            )
        }
        SecretCommand::List {
            passphrase: pass_args,
        } => {
            let items = if running {
                match call(&ControlRequest::SecretList, out)? {
                    ControlEvent::Secrets { items } => items,
                    _ => bail!("unexpected answer from the kernel"),
                }
            } else {
                let vault = open_kernel_vault(&home, &pass_args, Access::Read)?;
                broker::list_stored(&vault)
            };
            if out.is_json() {
                out.json(&items);
            } else if items.is_empty() {
                out.line("no secrets");
            } else {
                for item in items {
                    let scopes = if item.scopes.is_empty() {
                        "(any action the policy allows)".to_owned()
                    } else {
                        item.scopes.join(", ")
                    };
                    let hosts = if item.hosts.is_empty() {
                        String::new()
                    } else {
                        format!("  hosts: {}", item.hosts.join(", "))
                    };
                    out.line(format_args!("{}  {scopes}{hosts}", item.name));
                }
            }
            Ok(())
        }
    }
}

/// What [`ask_or_open`] got.
pub(super) enum Answer {
    /// The running kernel's answer (never an error event).
    Kernel(ControlEvent),
    /// No kernel runs: its vault, opened read-only with the passphrase.
    Stopped(Box<Vault>),
}

/// Asks the running kernel; when none runs, opens its vault read-only instead — for what the
/// owner may read either way.
pub(super) fn ask_or_open(
    request: &ControlRequest,
    passphrase: &PassphraseArgs,
) -> anyhow::Result<Answer> {
    let home = home()?;
    match control::call(&home.control_socket(), request, |_| {}) {
        Ok(ControlEvent::Error { message }) => bail!("{message}"),
        Ok(event) => Ok(Answer::Kernel(event)),
        Err(KernelError::NotRunning { .. }) => Ok(Answer::Stopped(Box::new(open_kernel_vault(
            &home,
            passphrase,
            Access::Read,
        )?))),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn is_not_running(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<KernelError>(),
        Some(KernelError::NotRunning { .. })
    )
}

pub(super) fn open_kernel_vault(
    home: &Home,
    args: &PassphraseArgs,
    access: Access,
) -> anyhow::Result<Vault> {
    if !home.is_initialised() {
        bail!("`{}` is not set up: run `p3ak init`", home.root().display());
    }
    let pass = passphrase(args)?;
    let mut vault = Vault::open(&home.kernel_vault(), Unlock::Passphrase(&pass), access)
        .map_err(|e| explain_downgrade(e.into()))?;
    vault.set_actor(super::operator_actor());
    Ok(vault)
}

/// The home's vaults are always encrypted, and opened with the passphrase: the vault library
/// refuses a plaintext one in their place. This says what that means.
fn explain_downgrade(error: anyhow::Error) -> anyhow::Error {
    let vault_error = error
        .downcast_ref::<VaultError>()
        .or_else(|| match error.downcast_ref::<KernelError>() {
            Some(KernelError::Vault(e)) => Some(e),
            _ => None,
        })
        .map(VaultError::root);
    match vault_error {
        Some(VaultError::NotEncrypted { path }) => anyhow::anyhow!(
            "`{}` is not encrypted, and it was left untouched: the vaults of a P3AK home always \
             are, so this file was replaced; restore it from a backup",
            path.display()
        ),
        _ => error,
    }
}

/// A secret value: from a hidden prompt at a terminal, else stdin's first line.
fn read_secret_value() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let stdin = std::io::stdin();
    let value = if stdin.is_terminal() {
        zeroize::Zeroizing::new(rpassword::prompt_password("Secret value: ")?)
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read stdin")?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        zeroize::Zeroizing::new(trimmed)
    };
    if value.is_empty() {
        bail!("no secret value: type it at the prompt or pipe it on stdin");
    }
    Ok(value)
}

trait IntoInner {
    fn into_inner(self) -> String;
}

impl IntoInner for zeroize::Zeroizing<String> {
    /// Moves the value out; the caller's type zeroizes it from then on.
    fn into_inner(mut self) -> String {
        std::mem::take(&mut *self)
    }
}

pub fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        // `vault` needs the vault and memory crates, so it is not in p3ak-plugins.
        PluginCommand::Run { name } if name == p3ak_vaulttool::NAME => {
            p3ak_vaulttool::run().with_context(|| format!("plugin `{name}`"))
        }
        PluginCommand::Run { name } => {
            p3ak_plugins::run(&name).with_context(|| format!("plugin `{name}`"))
        }
    }
}

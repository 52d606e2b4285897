//! Humans in the loop: `p3ak pending`, `approve`, `deny`, and `p3ak hitl …` (pull back,
//! history, PIN, TOTP, console login). Each is a request straight to the approval daemon on
//! its operator socket: the kernel never sees an answer or a factor. `p3ak hitl run` and
//! `p3ak hitl stage` are what the kernel (or the warden) starts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use p3ak_hitl::binding::Reason;
use p3ak_hitl::desk::{Decided, Stage, View};
use p3ak_hitl::level::Factor;
use p3ak_hitl::remember::Remember;
use p3ak_hitl::wire::{OperatorAnswer, OperatorRequest};
use p3ak_kernel::control::{ControlEvent, ControlRequest};

use crate::output::{Output, sanitize, timestamp_ms};

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The id `p3ak pending` shows.
    pub id: String,
    /// Approve with your PIN (level 3), asked for at a prompt or read from stdin's first line.
    #[arg(long, conflicts_with = "totp")]
    pub pin: bool,
    /// Approve with a TOTP code (level 3), asked for or read from stdin.
    #[arg(long)]
    pub totp: bool,
    /// Remember this approval for calls with the same value of this argument (repeatable,
    /// `payee.iban` for a nested one); the grant never covers level 5.
    #[arg(long = "remember", value_name = "ARG")]
    pub remember: Vec<String>,
    /// Remember it for calls of this action with any arguments (only when it has none).
    #[arg(long, conflicts_with = "remember")]
    pub remember_action: bool,
    /// How long to remember it (`30d`, `12h`; at most 90 days).
    #[arg(long = "for", value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub for_: std::time::Duration,
}

impl ApproveArgs {
    /// The "remember this" the options ask for, if any.
    fn remember(&self) -> Option<Remember> {
        (self.remember_action || !self.remember.is_empty()).then(|| Remember {
            args: self.remember.clone(),
            for_secs: self.for_.as_secs(),
        })
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Cancel an approved action in its undo window: it moves to `spool/rejected/`.
    Pullback {
        /// Its id.
        id: String,
    },
    /// What was approved, denied, pulled back or timed out since the kernel started.
    History,
    /// The PIN for level 3 and 5 approvals.
    #[command(subcommand)]
    Pin(PinCommand),
    /// TOTP codes (RFC 6238) as the level 3 factor, for machines without a browser.
    #[command(subcommand)]
    Totp(TotpCommand),
    /// A fresh one-time link to the web console.
    Login,
    /// Rekey the memory vault now (new master key, same passphrase), once approved at the
    /// level of the policy's `vault_rekey` schedule (5 without one).
    Rekey,
    /// Which factors are set up.
    Factors,
    /// Who may answer approvals from a chat (level 1 by button; deny and pull back at any
    /// level).
    #[command(subcommand)]
    Approvers(ApproversCommand),
    /// Run the approval daemon (the kernel does this; it talks over stdin and stdout).
    #[command(hide = true)]
    Run,
    /// Write one staged request from stdin (the kernel does this as its spool user).
    #[command(hide = true)]
    Stage {
        #[arg(long)]
        spool: PathBuf,
        #[arg(long)]
        category: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApproversCommand {
    /// Let a chat identity answer approvals: `NAME:<platform user id>` (`telegram:7`), NAME
    /// being the connector plugin's configured name.
    Add {
        /// `NAME:<platform user id>`.
        id: String,
    },
    /// Who may answer approvals from a chat.
    List,
    /// No longer let a chat identity answer approvals.
    Remove {
        /// `NAME:<platform user id>`.
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PinCommand {
    /// Set or change the PIN (asked twice; a change asks for the current PIN first).
    Set,
}

#[derive(Debug, clap::Subcommand)]
pub enum TotpCommand {
    /// Start enrollment: prints the secret and an otpauth:// link for your authenticator app.
    Enroll,
    /// Finish enrollment with a first code from the app.
    Confirm {
        /// The 6-digit code.
        code: String,
    },
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Pullback { id } => done(ask(OperatorRequest::PullBack { id }, out)?, out),
        Command::History => history(out),
        Command::Pin(PinCommand::Set) => pin_set(out),
        Command::Totp(TotpCommand::Enroll) => totp_enroll(out),
        Command::Totp(TotpCommand::Confirm { code }) => {
            done(ask(OperatorRequest::TotpConfirm { code }, out)?, out)
        }
        Command::Login => done(ask(OperatorRequest::Login, out)?, out),
        Command::Rekey => match super::kernel::call(&ControlRequest::Rekey, out)? {
            ControlEvent::Done { message } if out.is_json() => {
                out.json(&serde_json::json!({"ok": true, "message": message}));
                Ok(())
            }
            ControlEvent::Done { message } => {
                out.line(message);
                Ok(())
            }
            _ => bail!("unexpected answer from the kernel"),
        },
        Command::Factors => done(ask(OperatorRequest::Factors, out)?, out),
        Command::Approvers(ApproversCommand::Add { id }) => {
            let message = add_approver(&id)?;
            done(OperatorAnswer::Done { message }, out)
        }
        Command::Approvers(ApproversCommand::Remove { id }) => {
            done(ask(OperatorRequest::ApproversRemove { id }, out)?, out)
        }
        Command::Approvers(ApproversCommand::List) => approvers(out),
        Command::Run => daemon(),
        Command::Stage {
            spool,
            category,
            id,
        } => stage(spool, &category, &id),
    }
}

/// Sends one request to the approval daemon on its operator socket.
fn ask(request: OperatorRequest, _out: &Output) -> anyhow::Result<OperatorAnswer> {
    let home = super::kernel::home()?;
    let socket = p3ak_hitl::operator::socket_path(&home.hitl());
    match p3ak_hitl::operator::call(&socket, &request)? {
        OperatorAnswer::Error { message } => bail!("{message}"),
        answer => Ok(answer),
    }
}

/// Lets `id` (`telegram:7`) answer approvals from a chat; the daemon's words. What
/// `p3ak hitl approvers add` does, and `p3ak connectors pair` for the paired owner.
#[allow(dead_code, reason = "`p3ak connectors pair` calls it too")]
pub(crate) fn add_approver(id: &str) -> anyhow::Result<String> {
    let home = super::kernel::home()?;
    let socket = p3ak_hitl::operator::socket_path(&home.hitl());
    Ok(p3ak_hitl::operator::add_approver(&socket, id)?)
}

fn approvers(out: &Output) -> anyhow::Result<()> {
    let OperatorAnswer::Approvers { approvers } = ask(OperatorRequest::Approvers, out)? else {
        bail!("unexpected answer from the daemon");
    };
    if out.is_json() {
        out.json(&serde_json::json!({ "approvers": approvers }));
        return Ok(());
    }
    if approvers.is_empty() {
        out.line("no chat approvers (`p3ak hitl approvers add telegram:<your user id>`)");
    }
    for approver in &approvers {
        out.line(sanitize(approver));
    }
    Ok(())
}

fn done(answer: OperatorAnswer, out: &Output) -> anyhow::Result<()> {
    match answer {
        OperatorAnswer::Done { message } if out.is_json() => {
            out.json(&serde_json::json!({"ok": true, "message": message}));
        }
        OperatorAnswer::Done { message } => out.line(message),
        _ => bail!("unexpected answer from the daemon"),
    }
    Ok(())
}

pub fn pending(out: &Output) -> anyhow::Result<()> {
    let OperatorAnswer::Pending { items } = ask(OperatorRequest::Pending, out)? else {
        bail!("unexpected answer from the daemon");
    };
    if out.is_json() {
        out.json(&items);
        return Ok(());
    }
    if items.is_empty() {
        out.line("nothing waits for approval");
    }
    for item in &items {
        print_view(item, out);
    }
    Ok(())
}

fn print_view(item: &View, out: &Output) {
    let r = &item.request;
    out.line(format_args!(
        "{}  level {}  {} wants {} {}",
        r.id,
        r.level,
        sanitize(&r.agent),
        sanitize(&r.action),
        sanitize(&r.args.to_string())
    ));
    out.line(format_args!(
        "          needs {}; rules: {}; binding {}",
        Factor::needed_for(r.level),
        sanitize(&r.rules.join(", ")),
        item.binding.short()
    ));
    for line in reason_lines(&r.reasons) {
        out.line(line);
    }
    if let Some(remember) = &item.remember {
        out.line(sanitize(&format!("          {remember} once it runs")));
    }
    match item.stage {
        Stage::Waiting { confirmed, needed } => {
            if needed > 1 {
                out.line(format_args!(
                    "          confirmations: {confirmed} of {needed}"
                ));
            }
            out.line(format_args!(
                "          denied at {} unless answered",
                timestamp_ms(r.expires_ms)
            ));
        }
        Stage::Approved { release_ms, .. } => out.line(format_args!(
            "          approved; runs at {} unless pulled back (`p3ak hitl pullback {}`)",
            timestamp_ms(release_ms),
            r.id
        )),
    }
}

/// One line per rule that asked for more than an allowance, with the operator's why.
fn reason_lines(reasons: &[Reason]) -> Vec<String> {
    let mut lines = Vec::new();
    if !reasons.is_empty() {
        lines.push("          why:".to_owned());
    }
    for reason in reasons {
        lines.push(sanitize(&format!("            - {reason}")));
    }
    lines
}

pub fn approve(args: &ApproveArgs, out: &Output) -> anyhow::Result<()> {
    // It reads a PIN or a code: nothing of the same uid may read it out of this process.
    p3ak_sandbox::harden_process().context("cannot harden the process")?;
    let pin = if args.pin {
        Some(read_factor("PIN")?)
    } else {
        None
    };
    let totp = if args.totp {
        Some(read_factor("TOTP code")?)
    } else {
        None
    };
    let request = OperatorRequest::Approve {
        id: args.id.clone(),
        pin: pin.map(|p| p.to_string()),
        totp: totp.map(|t| t.to_string()),
        remember: args.remember(),
    };
    done(ask(request, out)?, out)
}

pub fn deny(id: &str, out: &Output) -> anyhow::Result<()> {
    done(ask(OperatorRequest::Deny { id: id.to_owned() }, out)?, out)
}

fn history(out: &Output) -> anyhow::Result<()> {
    let OperatorAnswer::History { items } = ask(OperatorRequest::History, out)? else {
        bail!("unexpected answer from the daemon");
    };
    if out.is_json() {
        out.json(&items);
        return Ok(());
    }
    if items.is_empty() {
        out.line("nothing decided since the kernel started (older decisions: `p3ak audit show`)");
    }
    for item in &items {
        print_decided(item, out);
    }
    Ok(())
}

fn print_decided(item: &Decided, out: &Output) {
    let r = &item.request;
    let by: Vec<String> = item
        .confirmations
        .iter()
        .map(|c| format!("{} ({})", c.factor, sanitize(&c.channel)))
        .collect();
    out.line(format_args!(
        "{}  {}  {:?}  level {}  {} {} {}{}",
        timestamp_ms(item.at_ms),
        r.id,
        item.ending,
        r.level,
        sanitize(&r.agent),
        sanitize(&r.action),
        sanitize(&r.args.to_string()),
        if by.is_empty() {
            String::new()
        } else {
            format!("  approved by {}", by.join(", "))
        }
    ));
}

fn pin_set(out: &Output) -> anyhow::Result<()> {
    p3ak_sandbox::harden_process().context("cannot harden the process")?;
    let interactive = std::io::stdin().is_terminal();
    let set = ask(OperatorRequest::Factors, out)?;
    let has_pin =
        matches!(&set, OperatorAnswer::Done { message } if message.starts_with("PIN: set"));
    let current = if has_pin {
        Some(read_secret(interactive, "Current PIN: ")?)
    } else {
        None
    };
    let pin = read_secret(interactive, "New PIN: ")?;
    if interactive {
        let again = read_secret(interactive, "New PIN again: ")?;
        if *again != *pin {
            bail!("the two PINs differ; nothing changed");
        }
    }
    let request = OperatorRequest::PinSet {
        pin: pin.to_string(),
        current: current.map(|c| c.to_string()),
        current_totp: None,
    };
    done(ask(request, out)?, out)
}

fn totp_enroll(out: &Output) -> anyhow::Result<()> {
    p3ak_sandbox::harden_process().context("cannot harden the process")?;
    let interactive = std::io::stdin().is_terminal();
    let set = ask(OperatorRequest::Factors, out)?;
    let has_pin =
        matches!(&set, OperatorAnswer::Done { message } if message.starts_with("PIN: set"));
    let pin = if has_pin {
        Some(read_secret(interactive, "PIN: ")?)
    } else {
        None
    };
    let answer = ask(
        OperatorRequest::TotpEnroll {
            pin: pin.map(|p| p.to_string()),
            totp: None,
        },
        out,
    )?;
    let OperatorAnswer::Enrollment { uri, secret } = answer else {
        bail!("unexpected answer from the daemon");
    };
    if out.is_json() {
        out.json(&serde_json::json!({"uri": uri, "secret": secret}));
    } else {
        out.line(format_args!("secret: {secret}"));
        out.line(format_args!("link:   {uri}"));
        out.line("add it to your authenticator app, then `p3ak hitl totp confirm CODE`");
    }
    Ok(())
}

/// In an interactive chat, asks for the approval a turn waits on: `y` for level 1, the PIN
/// for level 3; other levels need the console. Failures are shown, never fatal.
pub fn ask_inline(id: &str, level: u8, out: &Output) {
    // Why the policy asks, from the daemon (the kernel's text does not say).
    if let Ok(OperatorAnswer::Pending { items }) = ask(OperatorRequest::Pending, out)
        && let Some(item) = items.iter().find(|v| v.request.id == id)
    {
        for line in reason_lines(&item.request.reasons) {
            out.warn(line);
        }
    }
    let answer = match level {
        1 => {
            out.warn(format_args!("approve `{id}` now? [y/N]"));
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                return;
            }
            match line.trim() {
                "y" | "Y" | "yes" => OperatorRequest::Approve {
                    id: id.to_owned(),
                    pin: None,
                    totp: None,
                    remember: None,
                },
                _ => {
                    out.warn(format_args!(
                        "left waiting: `p3ak approve {id}` or `p3ak deny {id}`"
                    ));
                    return;
                }
            }
        }
        3 => {
            let Ok(pin) = rpassword::prompt_password(format!(
                "PIN to approve `{id}` (empty: leave it waiting): "
            )) else {
                return;
            };
            let pin = zeroize::Zeroizing::new(pin);
            if pin.is_empty() {
                return;
            }
            OperatorRequest::Approve {
                id: id.to_owned(),
                pin: Some(pin.to_string()),
                totp: None,
                remember: None,
            }
        }
        _ => return,
    };
    match ask(answer, out) {
        Ok(OperatorAnswer::Done { message }) => out.warn(message),
        Ok(_) => {}
        Err(e) => out.error(&e),
    }
}

/// A factor: a hidden prompt at a terminal, else stdin's first line.
fn read_factor(what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    read_secret(std::io::stdin().is_terminal(), &format!("{what}: "))
}

/// A hidden prompt at a terminal, else one line of stdin.
fn read_secret(interactive: bool, prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let value = if interactive {
        zeroize::Zeroizing::new(rpassword::prompt_password(prompt)?)
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read stdin")?;
        zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    if value.is_empty() {
        bail!(
            "nothing given for `{}`: type it at the prompt or pipe it on stdin",
            prompt.trim_end_matches([':', ' '])
        );
    }
    Ok(value)
}

/// `p3ak hitl run`: its channel to the kernel is the socket on its standard input.
fn daemon() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    p3ak_sandbox::harden_process().context("cannot harden the approval daemon")?;
    let channel = std::os::unix::net::UnixStream::from(
        p3ak_proto::io::take_stdin_socket().context("the approval daemon's channel")?,
    );
    channel
        .set_nonblocking(true)
        .context("cannot use the approval daemon's channel")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let channel = tokio::net::UnixStream::from_std(channel)
            .context("cannot use the approval daemon's channel")?;
        p3ak_hitl::daemon::run(channel, std::io::stdout()).await?;
        Ok::<(), anyhow::Error>(())
    })
}

/// `p3ak hitl stage`: one sealed request from stdin into `staging/<category>/<id>`.
fn stage(spool: PathBuf, category: &str, id: &str) -> anyhow::Result<()> {
    let spool = p3ak_hitl::spool::Spool::new(spool);
    p3ak_hitl::spool::stage_from(&spool, category, id, std::io::stdin().lock())?;
    Ok(())
}

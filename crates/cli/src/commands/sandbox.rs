//! `p3ak sandbox`: what the host offers, tracing plugins into seccomp profiles, and the cost
//! of the sandbox. The work is `p3ak_kernel::launch::exercise`: a plugin run the way the
//! kernel runs it, against a small host of its own.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use p3ak_kernel::launch::exercise;
use p3ak_sandbox::Class;
use p3ak_sandbox::profile::Traced;
use serde_json::json;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this host offers the sandbox, and what is missing.
    Status,
    /// Run a plugin in its sandbox without its seccomp filter, under ptrace, make it work,
    /// and print the system calls it made as a minimal profile. With P3AK_TRACE_MODELS set
    /// to a models directory (`p3ak models install`), `vault` loads and uses the model.
    Trace(TraceArgs),
    /// Trace every first-party plugin and the Python example; with --write, rewrite the
    /// profiles in deploy/seccomp (traces, class filters, OCI copies). Needs
    /// P3AK_TRACE_MODELS (a models directory with the model installed) for `vault`.
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
    let exe = || std::env::current_exe().context("cannot find the p3ak binary");
    match command {
        Command::Status => status(out),
        Command::Trace(args) => {
            let class = args
                .class
                .as_deref()
                .map(|c| Class::from_name(c).ok_or_else(|| anyhow!("unknown class `{c}`")))
                .transpose()?;
            let traced = exercise::trace(&exe()?, &args.plugin, args.path.as_deref(), class)?;
            print_trace(&traced, out)
        }
        Command::Profiles(args) => {
            let summary = exercise::profiles(&exe()?, &args.script_plugin, args.write.as_deref())?;
            if out.is_json() {
                out.json(&summary);
                return Ok(());
            }
            for row in summary {
                out.line(format!(
                    "{:<9} traced {}  margin {}  allowed {}",
                    row.class, row.traced, row.margin, row.allowed
                ));
            }
            Ok(())
        }
        Command::Bench(args) => {
            let rows = exercise::bench(&exe()?, args.starts, args.calls)?;
            if out.is_json() {
                out.json(&rows);
                return Ok(());
            }
            out.line("files plugin: start = spawn to registered; read = files.read of 5 bytes");
            for r in rows {
                out.line(format!(
                    "{:<10} start p50 {} µs p99 {} µs | ping p50 {} µs p99 {} µs | read p50 {} µs p99 {} µs",
                    r.mode, r.start_p50_us, r.start_p99_us, r.ping_p50_us, r.ping_p99_us,
                    r.read_p50_us, r.read_p99_us,
                ));
            }
            Ok(())
        }
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

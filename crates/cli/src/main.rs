//! `p3ak`: the one binary. It parses the command line, calls the libraries and prints; the work
//! itself lives in the `p3ak-*` crates.

mod commands;
mod output;
mod secrets;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// P3AK: a private AI kernel with an encrypted memory.
#[derive(Debug, Parser)]
#[command(name = "p3ak", version = env!("P3AK_LONG_VERSION"), about, propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help`, `--version`.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        // A bad command line is one line and exit code 1, like every other refusal.
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: the command line is not valid (see --help)");
            let _ = writeln!(std::io::stderr(), "{line} (see --help)");
            return ExitCode::FAILURE;
        }
    };
    let out = output::Output::new(cli.json);
    match commands::run(cli.command, &out) {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into a reader that stopped (`p3ak bus export | head`): done, quietly.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            out.error(&error);
            ExitCode::FAILURE
        }
    }
}

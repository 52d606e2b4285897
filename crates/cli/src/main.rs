//! `p3ak`: the one binary. It parses the command line, calls the libraries and prints; the work
//! itself lives in the `p3ak-*` crates.

mod commands;
mod output;
mod secrets;

use std::process::ExitCode;

use clap::Parser;

/// P3AK: a private AI kernel with an encrypted memory.
#[derive(Debug, Parser)]
#[command(name = "p3ak", version, about, propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    match commands::run(cli.command, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            out.error(&error);
            ExitCode::FAILURE
        }
    }
}

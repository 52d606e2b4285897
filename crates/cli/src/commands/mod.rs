//! One module per subcommand.

mod demo;
mod policy;
mod vault;

use clap::Subcommand;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Walk a temporary vault through its whole life and print each step.
    Demo(demo::Args),
    /// Create, fill, read and maintain encrypted vaults.
    #[command(subcommand)]
    Vault(vault::Command),
    /// Check a policy, explain a decision, run a policy's test cases.
    #[command(subcommand)]
    Policy(policy::Command),
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args, out),
        Command::Vault(command) => vault::run(command, out),
        Command::Policy(command) => policy::run(command, out),
    }
}

//! One module per subcommand.

mod audit;
mod demo;
mod memory;
mod models;
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
    /// The kernel's tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Check a policy, explain a decision, run a policy's test cases.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Install, check and remove the embedding model (all-MiniLM-L6-v2, pinned by SHA-256).
    #[command(subcommand)]
    Models(models::Command),
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args, out),
        Command::Vault(command) => vault::run(command, out),
        Command::Policy(command) => policy::run(command, out),
        Command::Audit(command) => audit::run(command, out),
        Command::Models(command) => models::run(command, out),
    }
}

/// How the audit log names the person at this command line.
pub fn operator_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string());
    format!("operator uid={uid} pid={}", std::process::id())
}

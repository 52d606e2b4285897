//! One module per subcommand.

mod audit;
mod board;
mod bus;
mod connectors;
mod crest;
mod demo;
mod doctor;
mod hitl;
mod kernel;
mod mcp;
mod memory;
mod models;
mod policy;
mod sandbox;
mod schedules;
mod shell;
mod skills;
mod tokens;
mod vault;
mod vault_demo;

use clap::Subcommand;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell the kernel's story offline: a prompt injection stopped, a real request served.
    Demo(demo::Args),
    /// Create P3AK_HOME: config.toml, policy.yaml, one agent, the kernel's vault.
    Init(kernel::InitArgs),
    /// Run the kernel in the foreground (sets up a fresh home first).
    Up(kernel::UpArgs),
    /// Run the kernel with its API also on TCP (bearer tokens; see docs/api.md).
    Serve(kernel::ServeArgs),
    /// The running kernel's plugins, agents and pending approvals.
    Status,
    /// Exit 0 if the running kernel's API answers (for health probes), 1 with the reason if not.
    Health,
    /// Check the host and the home and say what to fix (exit 1 when a check fails).
    Doctor,
    /// Talk to an agent of the running kernel.
    Chat(kernel::ChatArgs),
    /// Ask several agents one question at once; the board agent synthesises their answers.
    Board(board::Args),
    /// Goals worked through CREST's phases: focus, obstacle, routines, gradient, evolve.
    #[command(subcommand)]
    Crest(crest::Command),
    /// The state bus: what agents published (`tail`, `export` as JSON lines).
    #[command(subcommand)]
    Bus(bus::Command),
    /// Actions waiting for your approval.
    Pending,
    /// Approve a pending action (`--pin` or `--totp` for level 3; levels 4 and 5 in the console).
    Approve(hitl::ApproveArgs),
    /// Deny a pending action.
    Deny(kernel::IdArg),
    /// Humans in the loop: pull back, history, PIN, TOTP, the console's login link.
    #[command(subcommand)]
    Hitl(hitl::Command),
    /// Serve P3AK's vault and agents to an MCP client on stdio (through the running kernel).
    Mcp(mcp::Args),
    /// Chat connectors (Telegram, Slack, Discord): status, pairing who may talk through them.
    #[command(subcommand)]
    Connectors(connectors::Command),
    /// The skills in the home's `skills/`, with the errors of broken ones (`show NAME`: one).
    Skills {
        #[command(subcommand)]
        command: Option<skills::Command>,
    },
    /// The kernel's schedules (`[schedules]` in config.toml): next run, last run and outcome.
    Schedules,
    /// Bearer tokens for the REST API and the MCP server (scoped, expiring, revocable).
    #[command(subcommand)]
    Tokens(tokens::Command),
    /// Credentials the broker injects into tool calls.
    #[command(subcommand)]
    Secret(kernel::SecretCommand),
    /// Plugins (used by the kernel).
    #[command(subcommand, hide = true)]
    Plugin(kernel::PluginCommand),
    /// The kernel itself (`p3ak up` starts it, under its own uid as root).
    #[command(hide = true)]
    Kernel(kernel::KernelArgs),
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
    /// The plugin sandbox: what the host offers, traced seccomp profiles, its cost.
    #[command(subcommand)]
    Sandbox(sandbox::Command),
    /// Print a shell's completion script (`p3ak completions bash > /etc/bash_completion.d/p3ak`).
    Completions(shell::CompletionsArgs),
    /// Write the man pages (p3ak.1 and one per command) into a folder.
    Man(shell::ManArgs),
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args, out),
        Command::Init(args) => kernel::init(&args, out),
        Command::Up(args) => kernel::up(&args, None, out),
        Command::Serve(args) => kernel::serve(&args, out),
        Command::Status => kernel::status(out),
        Command::Health => kernel::health(out),
        Command::Doctor => doctor::run(out),
        Command::Chat(args) => kernel::chat(&args, out),
        Command::Board(args) => board::run(args, out),
        Command::Crest(command) => crest::run(command, out),
        Command::Bus(command) => bus::run(command, out),
        Command::Pending => hitl::pending(out),
        Command::Approve(args) => hitl::approve(&args, out),
        Command::Deny(arg) => hitl::deny(&arg.id, out),
        Command::Hitl(command) => hitl::run(command, out),
        Command::Mcp(args) => mcp::run(args),
        Command::Connectors(command) => connectors::run(command, out),
        Command::Skills { command } => skills::run(command, out),
        Command::Schedules => schedules::run(out),
        Command::Tokens(command) => tokens::run(command, out),
        Command::Secret(command) => kernel::secret(command, out),
        Command::Plugin(command) => kernel::plugin(command),
        Command::Kernel(args) => kernel::kernel_child(&args, out),
        Command::Vault(command) => vault::run(command, out),
        Command::Policy(command) => policy::run(command, out),
        Command::Audit(command) => audit::run(command, out),
        Command::Models(command) => models::run(command, out),
        Command::Sandbox(command) => sandbox::run(command, out),
        Command::Completions(args) => shell::completions(&args, out),
        Command::Man(args) => shell::man(&args, out),
    }
}

/// How the audit log names the person at this command line.
pub fn operator_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string());
    format!("operator uid={uid} pid={}", std::process::id())
}

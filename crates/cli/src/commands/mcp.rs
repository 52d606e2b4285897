//! `p3ak mcp`: P3AK as an MCP server on stdio, for MCP clients (desktop assistants, coding
//! agents) that start their servers as commands. It talks to the running kernel's REST API over
//! the kernel's Unix socket; the kernel knows the owner by uid (or a caller by the token in
//! `P3AK_API_TOKEN`), and applies that caller's scopes, the policy and the audit log. At the
//! start it asks the kernel who it is taken for (`GET /v1/whoami`) and offers only the tools
//! of that caller's scopes.

use std::path::PathBuf;

use anyhow::Context as _;
use p3ak_server::Caller;
use p3ak_server::remote::RemoteBackend;

use crate::commands::kernel::home;

/// The tools' scopes: those the caller holds are offered, unless `--scopes` narrows them.
const ALL_SCOPES: [&str; 3] = ["vault:read", "vault:write", "chat"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel's API socket (default: `$P3AK_HOME/run/api.sock`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Offer only the tools of these scopes (`vault:read`, `vault:write`, `chat`), comma
    /// separated; a scope the caller does not hold is never offered.
    #[arg(long, value_delimiter = ',', value_name = "SCOPES")]
    scopes: Option<Vec<String>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let wanted: Vec<String> = match args.scopes {
        None => ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        Some(scopes) => {
            for scope in &scopes {
                if !ALL_SCOPES.contains(&scope.as_str()) {
                    anyhow::bail!(
                        "unknown scope `{scope}` (the MCP tools need vault:read, vault:write or chat)"
                    );
                }
            }
            scopes
        }
    };
    let socket = match args.socket {
        Some(socket) => socket,
        None => home()?.api_socket(),
    };
    let backend = RemoteBackend::new(socket).with_token_from_env();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // A kernel that is not running is a clear error now, not a hang at the first call.
        backend.health().await?;
        // Who the kernel takes us for (the owner by uid, or the token's holder) and what that
        // caller may do: only those tools are offered.
        let me = backend.whoami().await?;
        let scopes: Vec<String> = wanted
            .into_iter()
            .filter(|scope| me.scopes.contains(scope))
            .collect();
        if scopes.is_empty() {
            anyhow::bail!(
                "`{}` holds none of the scopes of the MCP tools asked for (it has: {}); make a \
                 token with vault:read, vault:write or chat (`p3ak tokens create`)",
                me.principal,
                if me.scopes.is_empty() {
                    "none".to_owned()
                } else {
                    me.scopes.join(", ")
                }
            );
        }
        let caller = Caller {
            principal: me.principal,
            scopes,
        };
        p3ak_server::mcp::serve_stdio(backend, caller).await?;
        Ok(())
    })
}

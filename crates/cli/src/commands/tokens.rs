//! `p3ak tokens`: bearer tokens for the REST API and the MCP server of the running kernel.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use p3ak_kernel::control::{ControlEvent, ControlRequest};

use crate::output::{Output, sanitize};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a token; it is printed this once (the kernel keeps only its hash).
    Create {
        /// What to call it (`grafana`, `laptop-mcp`).
        #[arg(long)]
        name: String,
        /// What it may do: status, vault:read, vault:write, chat, audit:read, tokens
        /// (repeat, or separate with commas).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// When it stops working (`30d`, `12h`); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// The tokens: id, name, scopes, expiry (never their secrets).
    List,
    /// Revoke a token by id: it stops working at once.
    Revoke {
        /// Its id (from `list`).
        id: String,
    },
}

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Create {
            name,
            scopes,
            expires,
        } => {
            let request = ControlRequest::TokenCreate {
                name,
                scopes,
                expires_in: expires.map(|d| d.as_secs().max(1)),
            };
            let ControlEvent::TokenCreated { token, info } = super::kernel::call(&request, out)?
            else {
                bail!("unexpected answer from the kernel");
            };
            out.json(&json!({"token": token.0.as_str(), "info": info}));
            out.warn(format_args!(
                "token `{}` ({}) made; it is shown only now:",
                info.id,
                info.scopes.join(", ")
            ));
            out.line(token.0.as_str());
            Ok(())
        }
        Command::List => {
            let ControlEvent::Tokens { items, now } =
                super::kernel::call(&ControlRequest::TokenList, out)?
            else {
                bail!("unexpected answer from the kernel");
            };
            out.json(&json!({"tokens": items, "now": now}));
            if items.is_empty() {
                out.line("no tokens (make one with `p3ak tokens create --name N --scope S`)");
            }
            for t in &items {
                let expiry = match t.expires_at {
                    None => "never expires".to_owned(),
                    Some(at) if at <= now => "expired".to_owned(),
                    Some(at) => format!(
                        "expires {}",
                        crate::output::timestamp_ms(at.saturating_mul(1000))
                    ),
                };
                out.line(sanitize(&format!(
                    "{}  {}  {}  {expiry}",
                    t.id,
                    t.name,
                    t.scopes.join(",")
                )));
            }
            Ok(())
        }
        Command::Revoke { id } => {
            match super::kernel::call(&ControlRequest::TokenRevoke { id }, out)? {
                ControlEvent::Done { message } => {
                    out.json(&json!({"revoked": true}));
                    out.line(message);
                    Ok(())
                }
                _ => bail!("unexpected answer from the kernel"),
            }
        }
    }
}

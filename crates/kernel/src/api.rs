//! Calls from the API (the REST routes and the MCP server of `p3ak-server`) on the road.
//!
//! The API reads and writes the memory vault exactly as an agent's tool call would: a
//! proposal by the reserved agent [`API_AGENT`] on the channel [`API_CHANNEL`], the caller
//! (`uid:1000`, `token:ab12cd34`) as its sender, decided by the policy, escalated to a human
//! when the policy says so, run by the `vault` plugin, and every step audited. Only the vault's
//! actions ([`API_ACTIONS`]) are offered; anything else is refused before the road.
//!
//! The server checks the caller's scopes before it calls; the kernel trusts nothing else from
//! it. An escalated call sends [`ControlEvent::Approval`] on `events` as soon as it is staged
//! and then waits for the release inside [`Kernel::api_call`]'s future: the server may answer
//! its client then and keep that future running (a spawned task) — nothing on the way needs
//! the client, and a dropped `events` receiver is ignored.

use p3ak_proto::{ErrorKind, ToolCall};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::control::ControlEvent;
use crate::proposal::{OfferedAction, ToolTable, policy_tier, tool_name};
use crate::road::{Caller, Outcome};
use crate::{Kernel, KernelError};

/// The agent an API call is proposed as (no agent file may take this name).
pub const API_AGENT: &str = "api";
/// The channel the policy sees for an API call (`when: { channel: { eq: api } }`).
pub const API_CHANNEL: &str = "api";
/// The plugin whose actions the API may call.
pub const VAULT_PLUGIN: &str = "vault";
/// The `vault` plugin's actions the API is offered.
pub const API_ACTIONS: &[&str] = &["search", "read", "list", "write", "delete", "ingest"];
/// Room a frame needs beside an action's arguments (the envelope, the `invoke` fields).
const FRAME_OVERHEAD: usize = 1024;
/// Longest principal the kernel accepts.
const MAX_PRINCIPAL: usize = 128;

/// Who calls, as the server authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCaller {
    /// `uid:1000` for a Unix-socket peer, `token:<id>` for a bearer token: the sender the
    /// policy and the audit log see.
    pub principal: String,
}

/// How an API call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiOutcome {
    /// The action ran: the plugin's JSON result (secret values scrubbed, not truncated).
    Done(Value),
    /// The policy, a human or the broker refused it; which, the caller is not told (I3).
    NotPermitted,
    /// Bad arguments, an action the API is not offered, or the plugin's `invalid` answer
    /// (an unknown id, a file it cannot read).
    Invalid(String),
    /// The plugin failed, or is not running.
    Failed(String),
}

impl From<Outcome> for ApiOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(value) => Self::Done(value),
            Outcome::NotPermitted => Self::NotPermitted,
            Outcome::Invalid(message)
            | Outcome::Failed {
                kind: Some(ErrorKind::Invalid),
                message,
            } => Self::Invalid(message),
            Outcome::Unavailable => {
                Self::Failed(format!("the `{VAULT_PLUGIN}` plugin is not running"))
            }
            Outcome::Failed { message, .. } => Self::Failed(message),
        }
    }
}

/// Whether `principal` is one the server could have made: `uid:` or `token:` and a short,
/// plain id.
fn valid_principal(principal: &str) -> bool {
    let id = principal
        .strip_prefix("uid:")
        .or_else(|| principal.strip_prefix("token:"));
    principal.len() <= MAX_PRINCIPAL
        && id.is_some_and(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Kernel {
    /// Puts one call of the API on the road: `vault.<action>` with `args`, proposed by agent
    /// [`API_AGENT`] on channel [`API_CHANNEL`] with `caller` as the sender, decided by the
    /// policy, audited at every step. `events` receives [`ControlEvent::Approval`] when a
    /// human must approve first; the future then completes once the action ran or was refused.
    ///
    /// # Errors
    ///
    /// A [`KernelError`] when an audit entry cannot be written (the road stops).
    pub async fn api_call(
        &self,
        caller: &ApiCaller,
        action: &str,
        args: Value,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<ApiOutcome, KernelError> {
        if !valid_principal(&caller.principal) {
            return Ok(ApiOutcome::Invalid(
                "the caller must be `uid:<n>` or `token:<id>`".to_owned(),
            ));
        }
        if !API_ACTIONS.contains(&action) {
            return Ok(ApiOutcome::Invalid(format!(
                "the API offers no action `{}`",
                action.chars().take(64).collect::<String>()
            )));
        }
        if self.host.connection(VAULT_PLUGIN).is_none() {
            return Ok(ApiOutcome::Failed(format!(
                "the `{VAULT_PLUGIN}` plugin is not running"
            )));
        }
        // A call travels to the plugin in one frame: refuse what cannot fit, saying how to
        // make room, rather than fail on the way.
        let max_frame = self.config.kernel.max_frame;
        let size = serde_json::to_vec(&args).map_or(usize::MAX, |a| a.len());
        if size.saturating_add(FRAME_OVERHEAD) > max_frame {
            return Ok(ApiOutcome::Invalid(too_large(action, size, max_frame)));
        }
        let table = self.api_table();
        let call = ToolCall {
            id: format!("api-{}", crate::pending::new_id()),
            name: tool_name(&format!("{VAULT_PLUGIN}.{action}")),
            arguments: args,
        };
        let road_caller = Caller {
            agent: API_AGENT,
            channel: API_CHANNEL,
            conversation: None,
            sender: Some(&caller.principal),
            chain: None,
        };
        let outcome = self.road.call(&road_caller, &call, &table, &events).await?;
        Ok(outcome.into())
    }

    /// Asks an agent for the API: one turn on channel [`API_CHANNEL`] with `caller` as the
    /// sender, in `conversation` (a new one when `None`); returns the conversation and the
    /// reply. `events` receives the turn's chunks and notices as they come.
    ///
    /// # Errors
    ///
    /// As [`Kernel::turn`]: an unknown agent, a bad conversation id, a model that failed.
    pub async fn api_ask(
        &self,
        caller: &ApiCaller,
        agent: Option<String>,
        conversation: Option<String>,
        text: String,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<(String, String), KernelError> {
        let inbound = api_inbound(caller, agent, conversation, text);
        let conversation = inbound.conversation.clone();
        let reply = self.turn(inbound, API_CHANNEL, events).await?;
        Ok((conversation, reply))
    }

    /// The vault actions the running `vault` plugin registered, as offered to the API.
    fn api_table(&self) -> ToolTable {
        let mut offered = Vec::new();
        if let Some(connection) = self.host.connection(VAULT_PLUGIN) {
            for action in &connection.registration.actions {
                if !API_ACTIONS.contains(&action.spec.name.as_str()) {
                    continue;
                }
                let full = format!("{VAULT_PLUGIN}.{}", action.spec.name);
                let origin = if self.host.is_first_party(VAULT_PLUGIN) {
                    p3ak_policy::Origin::FirstParty
                } else {
                    p3ak_policy::Origin::ThirdParty
                };
                offered.push(OfferedAction {
                    tool_name: tool_name(&full),
                    action: full,
                    plugin: VAULT_PLUGIN.to_owned(),
                    plugin_action: action.spec.name.clone(),
                    description: action.spec.description.clone(),
                    parameters: action.spec.parameters.clone(),
                    declared: p3ak_policy::Declared::new(policy_tier(action.spec.tier), origin),
                    validator: std::sync::Arc::clone(&action.validator),
                });
            }
        }
        ToolTable::new(offered)
    }
}

/// The message an API caller sends an agent: from `caller`, in `conversation` or a new one
/// (`api-` and 16 random hex digits). [`Kernel::turn`] it on channel [`API_CHANNEL`].
#[must_use]
pub fn api_inbound(
    caller: &ApiCaller,
    agent: Option<String>,
    conversation: Option<String>,
    text: String,
) -> p3ak_proto::Inbound {
    let conversation = conversation.unwrap_or_else(|| {
        format!(
            "api-{}{}{}{}",
            crate::pending::new_id(),
            crate::pending::new_id(),
            crate::pending::new_id(),
            crate::pending::new_id()
        )
    });
    let mut inbound = p3ak_proto::Inbound::new(conversation, caller.principal.clone(), text);
    inbound.agent = agent;
    inbound
}

/// The arguments of `vault.ingest` for a file's bytes (base64, as the call carries them).
#[must_use]
pub fn ingest_args(
    name: &str,
    media_type: Option<&str>,
    data: &[u8],
    tags: &std::collections::BTreeMap<String, String>,
) -> Value {
    use base64::Engine as _;
    let mut args = serde_json::json!({
        "name": name,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "tags": tags,
    });
    if let (Some(media_type), Some(object)) = (media_type, args.as_object_mut()) {
        object.insert(
            "media_type".to_owned(),
            Value::String(media_type.to_owned()),
        );
    }
    args
}

/// The error for arguments over the frame limit.
fn too_large(action: &str, size: usize, max_frame: usize) -> String {
    let what = if action == "ingest" {
        "the file (base64)"
    } else {
        "the arguments"
    };
    format!(
        "{what} take {size} bytes, over what one call to the vault plugin carries: \
         a frame of {max_frame} bytes (`[kernel] max_frame` in config.toml; raise it, up to \
         67108864, to send larger files)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_uids_or_token_ids() {
        for good in ["uid:1000", "token:ab12cd34", "token:a-b_c"] {
            assert!(valid_principal(good), "{good}");
        }
        for bad in [
            "",
            "uid:",
            "1000",
            "root",
            "token:a b",
            "uid:1000\nforged",
            &format!("token:{}", "a".repeat(200)),
        ] {
            assert!(!valid_principal(bad), "{bad}");
        }
    }

    #[test]
    fn a_plugins_invalid_answer_is_invalid_and_its_other_failures_failed() {
        let invalid = Outcome::Failed {
            kind: Some(ErrorKind::Invalid),
            message: "no document `abcd`".to_owned(),
        };
        assert_eq!(
            ApiOutcome::from(invalid),
            ApiOutcome::Invalid("no document `abcd`".to_owned())
        );
        let busy = Outcome::Failed {
            kind: Some(ErrorKind::Transient),
            message: "busy".to_owned(),
        };
        assert_eq!(
            ApiOutcome::from(busy),
            ApiOutcome::Failed("busy".to_owned())
        );
        assert!(matches!(
            ApiOutcome::from(Outcome::Unavailable),
            ApiOutcome::Failed(m) if m.contains("not running")
        ));
        assert_eq!(
            ApiOutcome::from(Outcome::NotPermitted),
            ApiOutcome::NotPermitted
        );
    }

    #[test]
    fn an_oversized_ingest_names_the_limit_and_how_to_raise_it() {
        let message = too_large("ingest", 2_000_000, 1 << 20);
        assert!(message.contains("1048576"), "{message}");
        assert!(message.contains("`[kernel] max_frame`"), "{message}");
    }
}

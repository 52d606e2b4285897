//! The [`Backend`] of a running kernel: every call checks the caller's scope, then takes the
//! kernel's road ([`Kernel::api_call`]) as agent `api` on channel `api`, the caller as sender.
//!
//! A call the policy escalates answers [`BackendError::Pending`] as soon as the approval is
//! staged; the call itself runs on in a task of its own, so it completes (the write happens
//! after approval, or not at all) whether or not the HTTP client is still there. Each caller
//! may have `api.max_waiting_approvals` such tasks at once ([`crate::waiting`]); a caller at
//! that cap is refused before the road.

use std::sync::Arc;

use p3ak_kernel::Kernel;
use p3ak_kernel::api::{ApiCaller, ApiOutcome, ingest_args};
use p3ak_kernel::audit::AuditEvent;
use p3ak_kernel::control::ControlEvent;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::backend::{Backend, BackendError, Caller};
use crate::model::{
    ChatReply, ChatRequest, Deleted, DocumentList, DocumentText, NewNote, SearchQuery,
    SearchResults, Stored, Upload,
};
use crate::waiting::{AtCap, WAITING_RETRY_SECS, WaitingApprovals};

/// Scope of the vault's reads.
const VAULT_READ: &str = "vault:read";
/// Scope of the vault's writes.
const VAULT_WRITE: &str = "vault:write";
/// Scope of asking an agent.
const CHAT: &str = "chat";
/// Results of a search when the request does not say.
const DEFAULT_K: u32 = 10;

/// The quota name under which a caller at the waiting-approvals cap is audited
/// (`api.rate_limited`) and counted (`p3ak_rate_limited_total`).
pub const WAITING_QUOTA: &str = "max_waiting_approvals";

/// The kernel as the REST routes and the MCP server see it.
pub struct KernelBackend {
    kernel: Arc<Kernel>,
    waiting: Arc<WaitingApprovals>,
}

impl KernelBackend {
    /// The backend of `kernel`, with its `api.max_waiting_approvals`.
    #[must_use]
    pub fn new(kernel: Arc<Kernel>) -> Self {
        let cap = kernel.config().api.max_waiting_approvals;
        Self {
            kernel,
            waiting: WaitingApprovals::new(cap),
        }
    }

    /// How many calls of `principal` wait for a person now.
    #[must_use]
    pub fn waiting(&self, principal: &str) -> usize {
        self.waiting.waiting(principal)
    }

    /// The refusal of a caller at the cap: counted, audited (once a minute per caller).
    async fn at_cap(&self, principal: &str, action: &str, at_cap: AtCap) -> BackendError {
        self.kernel.metrics().rate_limited(WAITING_QUOTA);
        if at_cap.audit {
            self.kernel
                .audit()
                .note(AuditEvent::ApiRateLimited {
                    principal: principal.to_owned(),
                    scope: WAITING_QUOTA.to_owned(),
                    route: format!("vault.{action}"),
                })
                .await;
        }
        BackendError::TooManyWaiting {
            message: at_cap.message(),
            retry_after: WAITING_RETRY_SECS,
        }
    }

    /// Runs `vault.<action>` for `caller` (who must hold `scope`) and reads its result as `T`.
    async fn vault<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        scope: &str,
        action: &'static str,
        args: Value,
    ) -> Result<T, BackendError> {
        if !caller.may(scope) {
            return Err(BackendError::Scope(scope.to_owned()));
        }
        // Before the road: a caller with too many calls waiting for a person proposes and
        // stages nothing more until some are answered.
        if let Err(at_cap) = self.waiting.admit(&caller.principal) {
            return Err(self.at_cap(&caller.principal, action, at_cap).await);
        }
        let api_caller = ApiCaller {
            principal: caller.principal.clone(),
        };
        let (events, mut notices) = mpsc::unbounded_channel();
        let kernel = Arc::clone(&self.kernel);
        let mut slot = self.waiting.slot(&caller.principal);
        // Its own task: an escalated call goes on waiting for its approval (and then runs)
        // after this answers `Pending` and the client is gone. The task counts itself as
        // waiting once staged, and stops counting when it ends, whoever is still listening.
        let mut call = tokio::spawn(async move {
            let (road_events, mut staged) = mpsc::unbounded_channel();
            let road = kernel.api_call(&api_caller, action, args, road_events);
            tokio::pin!(road);
            loop {
                tokio::select! {
                    outcome = &mut road => break outcome,
                    Some(event) = staged.recv() => {
                        if matches!(event, ControlEvent::Approval { .. }) {
                            slot.staged();
                        }
                        // The client may be gone: nobody to tell.
                        let _ = events.send(event);
                    }
                }
            }
        });
        let joined = loop {
            tokio::select! {
                joined = &mut call => break joined,
                notice = notices.recv() => match notice {
                    Some(ControlEvent::Approval { id, level, .. }) => {
                        return Err(BackendError::Pending { approval: id, level });
                    }
                    Some(_) => {}
                    // The call is over: its result is on the way.
                    None => break (&mut call).await,
                },
            }
        };
        let outcome = joined
            .map_err(|e| BackendError::Internal(format!("the call stopped: {e}")))?
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        match outcome {
            ApiOutcome::Done(value) => serde_json::from_value(value).map_err(|e| {
                BackendError::Internal(format!(
                    "the vault plugin's `{action}` answer is not what the API expects: {e}"
                ))
            }),
            ApiOutcome::NotPermitted => Err(BackendError::NotPermitted),
            ApiOutcome::Invalid(message) => Err(invalid(message)),
            ApiOutcome::Failed(message) => Err(BackendError::Unavailable(message)),
        }
    }
}

/// An `invalid` answer, by what it says: an unknown document is 404, a call over the frame
/// limit 413, anything else 400.
fn invalid(message: String) -> BackendError {
    if message.starts_with("no document `") {
        BackendError::NotFound(message)
    } else if message.contains("`[kernel] max_frame`") {
        BackendError::TooLarge(message)
    } else {
        BackendError::Invalid(message)
    }
}

impl Backend for KernelBackend {
    async fn search(
        &self,
        caller: &Caller,
        query: SearchQuery,
    ) -> Result<SearchResults, BackendError> {
        let args = json!({
            "query": query.query,
            "mode": query.mode,
            "k": query.k.unwrap_or(DEFAULT_K),
            "tags": query.tags,
            "explain": query.explain,
        });
        self.vault(caller, VAULT_READ, "search", args).await
    }

    async fn read(&self, caller: &Caller, id: String) -> Result<DocumentText, BackendError> {
        self.vault(caller, VAULT_READ, "read", json!({"id": id}))
            .await
    }

    async fn list(
        &self,
        caller: &Caller,
        after: Option<String>,
        limit: u32,
    ) -> Result<DocumentList, BackendError> {
        let mut args = json!({"limit": limit});
        if let (Some(after), Some(object)) = (after, args.as_object_mut()) {
            object.insert("after".to_owned(), Value::String(after));
        }
        self.vault(caller, VAULT_READ, "list", args).await
    }

    async fn write(&self, caller: &Caller, note: NewNote) -> Result<Stored, BackendError> {
        let mut args = json!({"title": note.title, "content": note.content, "tags": note.tags});
        if let (Some(source), Some(object)) = (note.source, args.as_object_mut()) {
            object.insert("source".to_owned(), Value::String(source));
        }
        self.vault(caller, VAULT_WRITE, "write", args).await
    }

    async fn delete(&self, caller: &Caller, id: String) -> Result<Deleted, BackendError> {
        self.vault(caller, VAULT_WRITE, "delete", json!({"id": id}))
            .await
    }

    async fn ingest(&self, caller: &Caller, upload: Upload) -> Result<Stored, BackendError> {
        let args = ingest_args(
            &upload.name,
            upload.media_type.as_deref(),
            &upload.data,
            &upload.tags,
        );
        drop(upload);
        self.vault(caller, VAULT_WRITE, "ingest", args).await
    }

    async fn ask(&self, caller: &Caller, request: ChatRequest) -> Result<ChatReply, BackendError> {
        if !caller.may(CHAT) {
            return Err(BackendError::Scope(CHAT.to_owned()));
        }
        let api_caller = ApiCaller {
            principal: caller.principal.clone(),
        };
        // Notices and chunks have no reader here: `ask` answers with the whole reply.
        let (events, _) = mpsc::unbounded_channel();
        let kernel = Arc::clone(&self.kernel);
        let ChatRequest {
            agent,
            conversation,
            text,
        } = request;
        // Its own task, so a turn the client gave up on still finishes and is stored.
        let turn = tokio::spawn(async move {
            kernel
                .api_ask(&api_caller, agent, conversation, text, events)
                .await
        });
        let (conversation, text) = turn
            .await
            .map_err(|e| BackendError::Internal(format!("the turn stopped: {e}")))?
            .map_err(|e| match e {
                p3ak_kernel::KernelError::UnknownAgent(_) => BackendError::NotFound(e.to_string()),
                p3ak_kernel::KernelError::BadConversation(_) => {
                    BackendError::Invalid(e.to_string())
                }
                other => BackendError::Unavailable(other.to_string()),
            })?;
        Ok(ChatReply { conversation, text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_document_is_not_found_and_an_oversized_call_too_large() {
        assert!(matches!(
            invalid("no document `abcd`".to_owned()),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            invalid(
                "the file (base64) take 9 bytes, … (`[kernel] max_frame` in config.toml)"
                    .to_owned()
            ),
            BackendError::TooLarge(_)
        ));
        assert!(matches!(
            invalid("`search`: the query is empty".to_owned()),
            BackendError::Invalid(_)
        ));
    }
}

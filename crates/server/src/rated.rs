//! `/mcp`'s tool calls under the API's rate limits: the [`Backend`] the MCP endpoint is given
//! takes one request from the caller's bucket for the tool's scope before each call, as a REST
//! route does, and over the limit answers [`BackendError::RateLimited`] (an MCP tool error
//! saying when to retry), counted and audited like a REST route's 429.

use std::sync::Arc;

use crate::App;
use crate::backend::{Backend, BackendError, Caller};
use crate::model::{
    ChatReply, ChatRequest, Deleted, DocumentList, DocumentText, NewNote, SearchQuery,
    SearchResults, Stored, Upload,
};

/// How `/mcp` shows in the audit log's `api.rate_limited` entries.
const ROUTE: &str = "/mcp";

/// The app's backend behind its rate limits.
pub(crate) struct Rated<B: Backend> {
    pub(crate) app: Arc<App<B>>,
}

impl<B: Backend> Rated<B> {
    async fn take(&self, caller: &Caller, scope: &'static str) -> Result<(), BackendError> {
        match self.app.limits.check(scope, &caller.principal) {
            Ok(()) => Ok(()),
            Err(wait) => {
                self.app
                    .rate_limited(&caller.principal, scope, ROUTE.to_owned())
                    .await;
                Err(BackendError::RateLimited {
                    message: format!("too many requests: retry in {wait} s"),
                    retry_after: wait,
                })
            }
        }
    }
}

impl<B: Backend> Backend for Rated<B> {
    async fn search(
        &self,
        caller: &Caller,
        query: SearchQuery,
    ) -> Result<SearchResults, BackendError> {
        self.take(caller, "vault:read").await?;
        self.app.backend.search(caller, query).await
    }

    async fn read(&self, caller: &Caller, id: String) -> Result<DocumentText, BackendError> {
        self.take(caller, "vault:read").await?;
        self.app.backend.read(caller, id).await
    }

    async fn list(
        &self,
        caller: &Caller,
        after: Option<String>,
        limit: u32,
    ) -> Result<DocumentList, BackendError> {
        self.take(caller, "vault:read").await?;
        self.app.backend.list(caller, after, limit).await
    }

    async fn write(&self, caller: &Caller, note: NewNote) -> Result<Stored, BackendError> {
        self.take(caller, "vault:write").await?;
        self.app.backend.write(caller, note).await
    }

    async fn delete(&self, caller: &Caller, id: String) -> Result<Deleted, BackendError> {
        self.take(caller, "vault:write").await?;
        self.app.backend.delete(caller, id).await
    }

    async fn ingest(&self, caller: &Caller, upload: Upload) -> Result<Stored, BackendError> {
        self.take(caller, "vault:write").await?;
        self.app.backend.ingest(caller, upload).await
    }

    async fn ask(&self, caller: &Caller, request: ChatRequest) -> Result<ChatReply, BackendError> {
        self.take(caller, "chat").await?;
        self.app.backend.ask(caller, request).await
    }
}

//! A fake [`Backend`] for the MCP tests: fixed answers, chosen by the input, and a record of
//! who called what.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use p3ak_server::model::{
    ChatReply, ChatRequest, Deleted, DocumentInfo, DocumentList, DocumentText, NewNote, SearchHit,
    SearchQuery, SearchResults, Stored, Upload,
};
use p3ak_server::{Backend, BackendError, Caller};

/// A caller holding `scopes`.
pub fn caller(scopes: &[&str]) -> Caller {
    Caller {
        principal: "token:test".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Answers:
/// - `read("missing")` → not found; `read("boom")` → an internal error with a secret detail;
/// - `write` with title `needs approval` → pending `ap-1`, level 2; else stored `n1`;
/// - `search("blocked")` → not permitted; else one hit echoing the query.
#[derive(Default)]
pub struct Fake {
    pub calls: Mutex<Vec<String>>,
}

impl Fake {
    fn record(&self, caller: &Caller, what: String) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{} {what}", caller.principal));
    }
}

/// A detail that must never reach a client.
pub const SECRET_DETAIL: &str = "sqlite: /home/owner/.p3ak/vault.db locked by pid 4242";

impl Backend for Fake {
    async fn search(&self, caller: &Caller, q: SearchQuery) -> Result<SearchResults, BackendError> {
        self.record(
            caller,
            format!("search {} {:?} {:?} {:?}", q.query, q.mode, q.k, q.tags),
        );
        if q.query == "blocked" {
            return Err(BackendError::NotPermitted);
        }
        Ok(SearchResults {
            hits: vec![SearchHit {
                id: "ab12".into(),
                chunk: 0,
                title: Some("Plans".into()),
                heading_path: vec![],
                snippet: format!("about {}", q.query),
                highlights: vec![],
                score: 1.5,
                signals: None,
            }],
            mode: q.mode,
            notes: vec![],
            embedded_chunks: None,
            chunks: None,
        })
    }

    async fn read(&self, caller: &Caller, id: String) -> Result<DocumentText, BackendError> {
        self.record(caller, format!("read {id}"));
        match id.as_str() {
            "missing" => Err(BackendError::NotFound("no document `missing`".into())),
            "boom" => Err(BackendError::Internal(SECRET_DETAIL.into())),
            _ => Ok(DocumentText {
                id,
                title: Some("Plans".into()),
                content: "# Plans\nSail to Hydra in June.".into(),
                truncated: false,
            }),
        }
    }

    async fn list(
        &self,
        caller: &Caller,
        after: Option<String>,
        limit: u32,
    ) -> Result<DocumentList, BackendError> {
        self.record(caller, format!("list {after:?} {limit}"));
        Ok(DocumentList {
            documents: vec![DocumentInfo {
                id: "ab12".into(),
                title: Some("Plans".into()),
                media_type: Some("text/markdown".into()),
                size: 30,
                created: 1_700_000_000,
                tags: [("topic".to_owned(), "travel".to_owned())].into(),
            }],
            next: Some("ab12".into()),
        })
    }

    async fn write(&self, caller: &Caller, note: NewNote) -> Result<Stored, BackendError> {
        self.record(
            caller,
            format!("write {} {:?} {:?}", note.title, note.tags, note.source),
        );
        if note.title == "needs approval" {
            return Err(BackendError::Pending {
                approval: "ap-1".into(),
                level: 2,
            });
        }
        Ok(Stored {
            id: "n1".into(),
            chunks: Some(1),
        })
    }

    async fn delete(&self, caller: &Caller, id: String) -> Result<Deleted, BackendError> {
        self.record(caller, format!("delete {id}"));
        Ok(Deleted { id, deleted: true })
    }

    async fn ingest(&self, caller: &Caller, upload: Upload) -> Result<Stored, BackendError> {
        self.record(caller, format!("ingest {}", upload.name));
        Ok(Stored {
            id: "f1".into(),
            chunks: Some(2),
        })
    }

    async fn ask(&self, caller: &Caller, request: ChatRequest) -> Result<ChatReply, BackendError> {
        self.record(
            caller,
            format!(
                "ask {:?} {:?} {}",
                request.agent, request.conversation, request.text
            ),
        );
        Ok(ChatReply {
            conversation: request.conversation.unwrap_or_else(|| "c-1".into()),
            text: format!("You asked: {}", request.text),
        })
    }
}

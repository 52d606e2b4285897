//! Memory recall for a turn's prompt: the passages of the memory vault most relevant to the
//! message, ranked by the same hybrid search (words, meaning, structure) the agents' `vault`
//! tool uses — asked of that plugin, which holds the embedding model, so the model is loaded
//! in one place. Without a running `vault` plugin the kernel reads the vault itself, by words
//! only (BM25).

use std::time::Duration;

use p3ak_proto::{Invoke, Message, PluginKind};
use p3ak_vault::{Access, Unlock, Vault};

use crate::KernelError;
use crate::kernel::Kernel;

/// One recalled passage (`- [title] snippet`) and the origin tag of its document (the tools
/// whose output it was written from), for provenance.
pub(crate) type Recalled = Vec<(String, Option<String>)>;

/// How long recall may hold up a turn before it goes on without memory.
const RECALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How recall ranked what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranked {
    /// By the `vault` plugin's hybrid search.
    Hybrid,
    /// By the kernel's own word search.
    Words,
}

impl Kernel {
    /// Up to `k` passages for `query`, by agent `agent`'s turn.
    pub(crate) async fn recall(
        &self,
        agent: &str,
        query: &str,
        k: usize,
    ) -> Result<(Recalled, Ranked), KernelError> {
        if let Some(recalled) = self.recall_by_plugin(agent, query, k).await {
            return Ok((recalled, Ranked::Hybrid));
        }
        self.recall_by_words(query, k)
            .await
            .map(|r| (r, Ranked::Words))
    }

    /// The running first-party `vault` plugin that serves the memory vault, if any.
    fn memory_plugin(&self) -> Option<String> {
        let memory = self.home.memory_vault();
        self.config
            .plugins
            .iter()
            .filter(|(_, p)| p.enabled && p.builtin.as_deref() == Some("vault"))
            .find(|(_, p)| {
                p.config
                    .get("vault")
                    .and_then(|v| v.as_str())
                    .is_none_or(|path| self.home.root().join(path) == memory)
            })
            .map(|(name, _)| name.clone())
            .filter(|name| {
                self.host
                    .connection(name)
                    .is_some_and(|c| c.registration.kind == PluginKind::Tool)
            })
    }

    /// Hybrid recall through the `vault` plugin; `None` when it does not run or fails (the
    /// failure is logged: recall then falls back to words).
    async fn recall_by_plugin(&self, agent: &str, query: &str, k: usize) -> Option<Recalled> {
        let name = self.memory_plugin()?;
        let connection = self.host.connection(&name)?;
        let invoke = Message::Invoke(Invoke {
            agent: agent.to_owned(),
            action: "search".to_owned(),
            args: serde_json::json!({
                "query": query.get(..query.floor_char_boundary(4096)).unwrap_or(query),
                "k": k,
                "mode": "hybrid",
            }),
            deadline_ms: u64::try_from(RECALL_TIMEOUT.as_millis()).ok(),
        });
        let output = match connection.request(invoke, RECALL_TIMEOUT, None).await {
            Ok(Message::Result(result)) => result.output,
            Ok(other) => {
                tracing::warn!("memory recall: `{name}` answered `{}`", other.type_name());
                return None;
            }
            Err(e) => {
                tracing::warn!("memory recall through `{name}` failed, by words instead: {e}");
                return None;
            }
        };
        let hits = output.get("hits")?.as_array()?;
        Some(
            hits.iter()
                .map(|hit| {
                    let title = hit.get("title").and_then(|t| t.as_str()).unwrap_or("");
                    let snippet = hit.get("snippet").and_then(|t| t.as_str()).unwrap_or("");
                    let origin = hit
                        .get("origin")
                        .and_then(|o| o.as_str())
                        .map(str::to_owned);
                    (
                        format!("- [{title}] {}", snippet.replace('\n', " ")),
                        origin,
                    )
                })
                .collect(),
        )
    }

    /// Word-ranked recall, reading the memory vault here.
    async fn recall_by_words(&self, query: &str, k: usize) -> Result<Recalled, KernelError> {
        let Some(key_bytes) = self
            .memory_key
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.to_handoff_bytes()))
        else {
            return Ok(Vec::new());
        };
        let path = self.home.memory_vault();
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || -> Result<Recalled, KernelError> {
            let key = p3ak_vault::VaultKey::from_handoff_bytes(key_bytes.expose())?;
            let vault = Vault::open(&path, Unlock::Key(&key), Access::Read)?;
            let memory = p3ak_memory::Memory::open(&vault)?;
            let mut request = p3ak_memory::SearchRequest::new(&query);
            request.k = k;
            request.mode = p3ak_memory::Mode::Bm25;
            let results = memory.search(&request, None)?;
            Ok(results
                .hits
                .into_iter()
                .map(|hit| {
                    let origin = vault
                        .doc_info(&hit.id)
                        .and_then(|d| d.tags.get(p3ak_memory::ORIGIN_TAG).cloned());
                    let title = hit.title.unwrap_or_default();
                    let text = format!("- [{title}] {}", hit.snippet.text.replace('\n', " "));
                    (text, origin)
                })
                .collect())
        })
        .await
        .map_err(KernelError::task("recalling memory"))?
    }
}

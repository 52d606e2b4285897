//! Log entries: what happened, when, by whom, chained to the entry before.

use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::merkle::{Frontier, Hash, Tree, leaf_hash};

/// One audit entry. Its leaf data is the exact JSON bytes stored, never a re-encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// What happened, e.g. `vault.put`, `kernel.decision`.
    pub kind: String,
    /// Who did it, e.g. `operator uid=1000 pid=4242`, `agent:mail`.
    pub actor: String,
    pub payload: serde_json::Value,
    /// Hex leaf hash of the previous entry (64 zeros for the first): the hash chain, which lets
    /// a reader check order and completeness entry by entry, without the tree.
    pub prev: String,
}

/// The log as read so far: tree, chain head and next sequence number.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    tree: Tree,
    head: Hash,
}

impl Chain {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The end of the log, to build entries on before they are committed.
    pub fn tip(&self) -> Tip {
        Tip {
            frontier: self.tree.frontier().clone(),
            head: self.head,
        }
    }

    /// Checks stored entry bytes against the chain and appends them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Entry, LogError> {
        let entry = check_next(self.len(), &self.head, bytes)?;
        self.push_built(bytes);
        Ok(entry)
    }

    /// Appends entry bytes that [`Tip::append`] built on this chain's tip (a writer publishing
    /// its own commit): they are right by construction, so they are not parsed again. Bytes
    /// read back from storage go through [`Chain::push`].
    pub fn push_built(&mut self, bytes: &[u8]) {
        debug_assert!(check_next(self.len(), &self.head, bytes).is_ok());
        let leaf = leaf_hash(bytes);
        self.tree.push(leaf);
        self.head = leaf;
    }
}

/// An [`Entry`] being written, borrowing its payload: the same fields in the same order, so
/// the same bytes.
#[derive(Serialize)]
struct NewEntry<'a> {
    seq: u64,
    time_ms: i64,
    kind: &'a str,
    actor: &'a str,
    payload: &'a serde_json::Value,
    prev: String,
}

/// Parses entry bytes and checks they are entry `index`, following the leaf `head`.
fn check_next(index: u64, head: &Hash, bytes: &[u8]) -> Result<Entry, LogError> {
    let bad = |reason: String| LogError::Entry { index, reason };
    let entry: Entry =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("unreadable: {e}")))?;
    if entry.seq != index {
        return Err(bad(format!(
            "has sequence number {}, expected {index}: an entry was removed, added or moved",
            entry.seq
        )));
    }
    if entry.prev != hex::encode(head) {
        return Err(bad(
            "does not follow the entry before it (hash chain broken)".to_owned(),
        ));
    }
    Ok(entry)
}

/// The end of a log without its leaves: enough to build and sign the next entries. A writer
/// builds a commit's entries on a tip and publishes them to the [`Chain`] once committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tip {
    frontier: Frontier,
    head: Hash,
}

impl Tip {
    pub fn len(&self) -> u64 {
        self.frontier.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frontier.is_empty()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Builds the next entry, appends it to the tip and returns its bytes.
    pub fn append(
        &mut self,
        time_ms: i64,
        kind: &str,
        actor: &str,
        payload: &serde_json::Value,
    ) -> Result<Vec<u8>, LogError> {
        let entry = NewEntry {
            seq: self.len(),
            time_ms,
            kind,
            actor,
            payload,
            prev: hex::encode(self.head),
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| LogError::Log(format!("cannot encode entry: {e}")))?;
        self.append_bytes(&bytes);
        Ok(bytes)
    }

    /// Checks entry bytes against the tip (sequence number, chain) and appends them.
    pub fn push_checked(&mut self, bytes: &[u8]) -> Result<Entry, LogError> {
        let entry = check_next(self.len(), &self.head, bytes)?;
        self.append_bytes(bytes);
        Ok(entry)
    }

    /// Appends entry bytes built elsewhere (copying a log verbatim).
    pub fn append_bytes(&mut self, bytes: &[u8]) {
        let leaf = leaf_hash(bytes);
        self.frontier.push(leaf);
        self.head = leaf;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn written_entry_bytes_are_the_entry_encoded_and_chain_like_read_ones() {
        let payload = serde_json::json!({ "action": "files.list", "args": { "path": "é\"\n" } });
        let mut tip = Chain::new().tip();
        let mut chain = Chain::new();
        let mut read = Chain::new();
        for i in 0..3 {
            let bytes = tip
                .append(
                    1_700_000_000_000 + i,
                    "kernel.decision",
                    "agent:a",
                    &payload,
                )
                .unwrap();
            let entry = read.push(&bytes).unwrap();
            assert_eq!(serde_json::to_vec(&entry).unwrap(), bytes);
            assert_eq!(entry.payload, payload);
            chain.push_built(&bytes);
        }
        assert_eq!(chain.tip(), tip);
        assert_eq!(read.tip(), tip);
    }
}

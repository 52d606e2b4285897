//! Reading a vault's audit log: entries, checkpoints, proofs.

use p3ak_audit::{Checkpoint, CheckpointJson, Entry, Hash, HexProof, leaf_hash};
use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::format::kind;
use crate::scan::{self, BodyError};
use crate::store::Vault;

/// An entry with the proof that it is in the log the checkpoint signs.
#[derive(Debug, Clone, Serialize)]
pub struct InclusionProof {
    pub entry: Entry,
    pub leaf_hash: String,
    pub tree_size: u64,
    pub proof: HexProof,
    pub checkpoint: CheckpointJson,
}

impl Vault {
    /// Number of entries in the log.
    pub fn log_len(&self) -> u64 {
        self.state_read().log.chain.len()
    }

    /// The public key that verifies this log's checkpoints.
    pub fn log_public_key(&self) -> Option<[u8; 32]> {
        self.signer.as_ref().map(p3ak_audit::Signer::public_key)
    }

    /// The newest signed checkpoint (the one the header carries after every commit).
    pub fn log_checkpoint(&self) -> Option<Checkpoint> {
        self.state_read().log.last_checkpoint
    }

    /// One entry and its exact stored bytes.
    pub fn log_entry(&self, seq: u64) -> Result<(Entry, Vec<u8>)> {
        let loc = {
            let state = self.state_read();
            let index = usize::try_from(seq).unwrap_or(usize::MAX);
            *state.log.locs.get(index).ok_or_else(|| {
                VaultError::Log(format!(
                    "no entry {seq}: the log has {} entries",
                    state.log.locs.len()
                ))
            })?
        };
        let body =
            scan::read_record_body(&self.file, &self.header, &self.sealer, &loc).map_err(|e| {
                match e {
                    BodyError::Io(e) => VaultError::io("cannot read vault")(e),
                    BodyError::Auth => VaultError::Log(format!(
                        "entry {seq} (record {} at byte {}) failed authentication",
                        loc.header.index, loc.offset
                    )),
                }
            })?;
        let Some((&kind::LOG_ENTRY, bytes)) = body.expose().split_first() else {
            return Err(VaultError::Log(format!(
                "record of entry {seq} is not a log entry"
            )));
        };
        let entry: Entry = serde_json::from_slice(bytes)
            .map_err(|e| VaultError::Log(format!("entry {seq} is unreadable: {e}")))?;
        Ok((entry, bytes.to_vec()))
    }

    /// Entries `from..to` (clamped to the log).
    pub fn log_entries(&self, from: u64, to: u64) -> Result<Vec<Entry>> {
        let to = to.min(self.log_len());
        (from..to)
            .map(|seq| self.log_entry(seq).map(|(e, _)| e))
            .collect()
    }

    /// Signs a checkpoint of the committed log as it is now (not stored).
    pub fn sign_checkpoint(&self) -> Result<Checkpoint> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| VaultError::Log("the log's signing key is missing".into()))?;
        let tip = self.state_read().log.chain.tip();
        Ok(signer.checkpoint(self.header.prefix.vault_id, &tip, crate::store::now_ms()))
    }

    /// Proves that entry `seq` is in the log covered by the newest checkpoint. The proof is
    /// checked before it is returned.
    pub fn log_inclusion_proof(&self, seq: u64) -> Result<InclusionProof> {
        let (entry, bytes) = self.log_entry(seq)?;
        let checkpoint = self
            .log_checkpoint()
            .ok_or_else(|| VaultError::Log("the log has no checkpoint yet".into()))?;
        if seq >= checkpoint.size {
            return Err(VaultError::Log(format!(
                "entry {seq} is newer than the latest checkpoint ({} entries)",
                checkpoint.size
            )));
        }
        let public = self
            .log_public_key()
            .ok_or_else(|| VaultError::Log("the log's signing key is missing".into()))?;
        let leaf = leaf_hash(&bytes);
        let proof = self
            .state_read()
            .log
            .chain
            .tree()
            .inclusion_proof(seq, checkpoint.size)
            .map_err(|e| VaultError::Log(e.to_string()))?;
        p3ak_audit::verify_inclusion(&leaf, seq, checkpoint.size, &proof, &checkpoint.root)
            .map_err(|e| VaultError::Log(format!("entry {seq}: {e}")))?;
        Ok(InclusionProof {
            entry,
            leaf_hash: hex::encode(leaf),
            tree_size: checkpoint.size,
            proof: HexProof::from_hashes(&proof),
            checkpoint: CheckpointJson::new(&checkpoint, &public),
        })
    }

    /// Proves that the log of `old_size` entries is a prefix of the log now.
    pub fn log_consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        self.state_read()
            .log
            .chain
            .tree()
            .consistency_proof(old_size, new_size)
            .map_err(|e| VaultError::Log(e.to_string()))
    }
}

impl Vault {
    /// Checks a checkpoint against the log: signature, log id, root of its prefix.
    pub fn log_check_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let public = self
            .log_public_key()
            .ok_or_else(|| VaultError::Log("the log's signing key is missing".into()))?;
        cp.verify_against(
            &self.header.prefix.vault_id,
            &self.state_read().log.chain,
            &public,
        )
        .map_err(|e| VaultError::Log(e.to_string()))
    }

    /// The last entry that records a published checkpoint: (its sequence number, the size it
    /// published).
    pub fn last_logged_checkpoint(&self) -> Result<Option<(u64, u64)>> {
        for seq in (0..self.log_len()).rev() {
            let (entry, _) = self.log_entry(seq)?;
            if entry.kind == crate::external::CHECKPOINT_EVENT {
                let size = entry
                    .payload
                    .get("size")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        VaultError::Log(format!("entry {seq} records a checkpoint without a size"))
                    })?;
                return Ok(Some((seq, size)));
            }
        }
        Ok(None)
    }
}

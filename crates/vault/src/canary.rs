//! The canary: a small internal object written when a vault is created, holding random bytes
//! and their hash, sealed like every other record. Reading it back after a rekey or a restore
//! proves the vault still opens and reads under its keys without touching any document.

use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::store::{Batch, Vault};

/// The object space that holds the canary. Reserved: callers cannot write or delete in it.
pub const CANARY_SPACE: &str = "vault-canary";
/// The canary's name within [`CANARY_SPACE`].
pub(crate) const CANARY_NAME: &str = "canary";
/// Domain of the canary's check value.
const CANARY_DOMAIN: &[u8] = b"p3ak vault v1 canary";
/// Random bytes in a canary.
const RANDOM_LEN: usize = 32;
/// A canary's content: the random bytes, then their check value.
const CANARY_LEN: usize = RANDOM_LEN + 32;

/// What [`Vault::check_canary`] found: the canary authenticated and matched its check value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CanaryCheck {
    /// When the canary was written (Unix seconds); rewrites carry it over unchanged.
    pub created: i64,
    /// Bytes of the canary's content.
    pub size: u64,
}

/// Whether a space is reserved for the vault itself.
pub(crate) fn is_reserved_space(space: &str) -> bool {
    space == CANARY_SPACE
}

fn check_value(random: &[u8]) -> [u8; 32] {
    p3ak_crypto::sha256(&[CANARY_DOMAIN, random])
}

/// Appends a fresh canary to a batch, dated `created` (Unix seconds): a new vault's canary
/// carries the vault's own creation time, so the two never differ by a second boundary.
pub(crate) fn write(batch: &mut Batch<'_>, created: i64) -> Result<()> {
    let random: [u8; RANDOM_LEN] = p3ak_crypto::random_array()?;
    let mut content = Vec::with_capacity(CANARY_LEN);
    content.extend_from_slice(&random);
    content.extend_from_slice(&check_value(&random));
    let id = crate::DocId::generate()?;
    batch.put_object(CANARY_SPACE, CANARY_NAME, &content, Some((id, created)))
}

impl Vault {
    /// Whether the vault holds a canary (vaults created before canaries existed do not).
    pub fn has_canary(&self) -> bool {
        self.state_read()
            .objects
            .contains_key(&(CANARY_SPACE.to_owned(), CANARY_NAME.to_owned()))
    }

    /// Reads the canary, authenticating it, and checks it against its check value.
    pub fn check_canary(&self) -> Result<CanaryCheck> {
        let entry = {
            let state = self.state_read();
            state
                .objects
                .get(&(CANARY_SPACE.to_owned(), CANARY_NAME.to_owned()))
                .and_then(|id| state.docs.get(id))
                .cloned()
        };
        let entry = entry.ok_or_else(|| {
            VaultError::Canary(
                "the vault has no canary record; open it for writing to add one".into(),
            )
        })?;
        let content = self.read_content(&entry).map_err(|e| match e {
            VaultError::DocumentDamaged { reason, .. } => {
                VaultError::Canary(format!("the canary record is damaged: {reason}"))
            }
            other => other,
        })?;
        let bytes = content.expose();
        let intact = bytes.len() == CANARY_LEN
            && bytes
                .split_at_checked(RANDOM_LEN)
                .is_some_and(|(random, check)| {
                    p3ak_crypto::constant_time_eq(&check_value(random), check)
                });
        if !intact {
            return Err(VaultError::Canary(
                "the canary record does not match its check value".into(),
            ));
        }
        Ok(CanaryCheck {
            created: entry.meta.created,
            size: entry.meta.size,
        })
    }

    /// Writes a canary into a vault that has none (one created before canaries existed), in
    /// one commit with a `vault.canary` log entry. Returns whether it wrote one. Needs a
    /// writer, unless there is a canary already.
    pub fn ensure_canary(&self) -> Result<bool> {
        if self.has_canary() {
            return Ok(false);
        }
        self.commit_batch(|batch| {
            write(batch, crate::store::now_unix())?;
            batch.log("vault.canary", &serde_json::json!({ "written": true }))
        })?;
        Ok(true)
    }

    /// When the vault was last rekeyed (its log's newest `vault.rekey` entry), in Unix
    /// seconds; `None` when it never was. Reads the log from its end, one record per entry:
    /// call it once and keep the answer rather than on every tick.
    pub fn last_rekey_unix(&self) -> Result<Option<i64>> {
        for seq in (0..self.log_len()).rev() {
            let (entry, _) = self.log_entry(seq)?;
            if entry.kind == "vault.rekey" {
                return Ok(Some(entry.time_ms.div_euclid(1000)));
            }
        }
        Ok(None)
    }
}

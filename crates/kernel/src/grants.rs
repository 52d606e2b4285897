//! Remembered approvals (grants): the owner approved an escalated call and chose to allow
//! calls like it for a while. The kernel mints the grant when the approval daemon releases the
//! action, from the request it staged (checked against its binding), never from anything a
//! model says: the grant pins that call's values for the chosen arguments, stands in for at
//! most the level that was approved, never for level 5, and expires.
//!
//! Grants live encrypted in the kernel's vault (object space [`GRANTS_SPACE`]); the road hands
//! the unexpired ones to the policy (`Context.grants`), which turns a matching escalation into
//! an allowance and names `grant:ID` among the verdict's rules.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use p3ak_approval::binding::{Binding, Request};
use p3ak_approval::level::MAX_LEVEL;
use p3ak_approval::remember::{Remember, RememberError};
use p3ak_policy::{Grant, Level};
use p3ak_vault::{Vault, VaultError};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditSink};
use crate::pending::{PendingQueue, ReleaseError};
use crate::road::Clock;

/// The object space grants live in, inside the kernel's vault.
pub const GRANTS_SPACE: &str = "grants";

/// One remembered approval, as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRecord {
    /// Its id (`p3ak policy grants revoke ID`; `grant:ID` in a verdict).
    pub id: String,
    /// The action it covers.
    pub action: String,
    /// The pinned argument paths and their approved values.
    pub args: BTreeMap<String, serde_json::Value>,
    /// The approved level it stands in for (1–4).
    pub level: u8,
    /// The escalation whose approval minted it.
    pub approval: String,
    /// The agent whose call was approved.
    pub agent: String,
    /// When it was minted, seconds since the Unix epoch.
    pub created_at: i64,
    /// When it stops, seconds since the Unix epoch.
    pub expires_at: i64,
}

impl GrantRecord {
    /// Whether it still applies at `now` (seconds since the Unix epoch).
    #[must_use]
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at > now
    }

    /// The engine's view of it.
    fn to_policy(&self) -> Option<Grant> {
        Some(Grant {
            id: self.id.clone(),
            action: self.action.clone(),
            args: self.args.clone(),
            level: Level::new(self.level)?,
            expires_at: u64::try_from(self.expires_at).ok(),
        })
    }
}

/// Why a grant could not be minted, stored or revoked.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The owner's choice is not grantable.
    #[error(transparent)]
    Remember(#[from] RememberError),
    /// No grant by that id.
    #[error("no grant `{0}`")]
    Unknown(String),
    /// A stored grant does not read back.
    #[error("grant `{id}` is unreadable: {source}")]
    Unreadable {
        /// Its id.
        id: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A grant that cannot be written as JSON.
    #[error("cannot encode grant: {0}")]
    Encode(#[source] serde_json::Error),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No id could be drawn.
    #[error("cannot draw a grant id: {0}")]
    Random(#[source] p3ak_crypto::CryptoError),
}

/// The grants in force, in memory and (unless built for tests) in the kernel's vault.
pub struct GrantBook {
    vault: Option<Arc<Vault>>,
    grants: RwLock<BTreeMap<String, GrantRecord>>,
}

impl GrantBook {
    /// A book kept in memory only (tests, a road without a vault).
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            vault: None,
            grants: RwLock::new(BTreeMap::new()),
        }
    }

    /// Reads every grant from the kernel's vault, deleting those expired before `now`
    /// (seconds since the Unix epoch).
    pub fn load(vault: Arc<Vault>, now: i64) -> Result<Self, GrantError> {
        let mut grants = BTreeMap::new();
        let mut expired = Vec::new();
        for object in vault.objects(GRANTS_SPACE) {
            let Some(bytes) = vault.read_object(GRANTS_SPACE, &object.name)? else {
                continue;
            };
            let record: GrantRecord = serde_json::from_slice(bytes.expose()).map_err(|source| {
                GrantError::Unreadable {
                    id: object.name.clone(),
                    source,
                }
            })?;
            if record.live_at(now) {
                grants.insert(record.id.clone(), record);
            } else {
                expired.push(object.name);
            }
        }
        if !expired.is_empty() {
            vault.transact(|tx| {
                for name in &expired {
                    tx.delete_object(GRANTS_SPACE, name)?;
                }
                Ok(())
            })?;
        }
        Ok(Self {
            vault: Some(vault),
            grants: RwLock::new(grants),
        })
    }

    /// The grants for `agent`'s calls that apply at `now` (seconds since the Unix epoch), for
    /// the policy. A grant covers the agent whose call was approved, no other.
    #[must_use]
    pub fn live_for(&self, agent: &str, now: i64) -> Vec<Grant> {
        self.grants
            .read()
            .map(|g| {
                g.values()
                    .filter(|r| r.agent == agent && r.live_at(now))
                    .filter_map(GrantRecord::to_policy)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every grant, expired ones included, by id.
    #[must_use]
    pub fn list(&self) -> Vec<GrantRecord> {
        self.grants
            .read()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The grant an approval of `request` at the staged `level` allows, minted at `now`.
    pub fn mint(
        request: &Request,
        level: u8,
        remember: &Remember,
        now: i64,
    ) -> Result<GrantRecord, GrantError> {
        if level >= MAX_LEVEL {
            return Err(RememberError::TopLevel.into());
        }
        // The staged level, not the released copy's (which the binding does not cover).
        let mut staged = request.clone();
        staged.level = level;
        let args = remember.pinned(&staged)?;
        let bytes: [u8; 6] = p3ak_crypto::random_array().map_err(GrantError::Random)?;
        Ok(GrantRecord {
            id: format!("g-{}", hex::encode(bytes)),
            action: request.action.clone(),
            args,
            level,
            approval: request.id.clone(),
            agent: request.agent.clone(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(remember.for_secs).unwrap_or(i64::MAX)),
        })
    }

    /// Stores a grant (vault first, then memory).
    pub fn insert(&self, record: GrantRecord) -> Result<(), GrantError> {
        if let Some(vault) = &self.vault {
            let bytes = serde_json::to_vec(&record).map_err(GrantError::Encode)?;
            vault.transact(|tx| tx.put_object(GRANTS_SPACE, &record.id, &bytes))?;
        }
        if let Ok(mut grants) = self.grants.write() {
            grants.insert(record.id.clone(), record);
        }
        Ok(())
    }

    /// The grant `id`, if there is one.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<GrantRecord> {
        self.grants.read().ok().and_then(|g| g.get(id).cloned())
    }

    /// Removes the grant `id` (vault first, then memory).
    pub fn revoke(&self, id: &str) -> Result<GrantRecord, GrantError> {
        let record = self
            .get(id)
            .ok_or_else(|| GrantError::Unknown(id.to_owned()))?;
        if let Some(vault) = &self.vault {
            vault.transact(|tx| tx.delete_object(GRANTS_SPACE, id).map(|_| ()))?;
        }
        if let Ok(mut grants) = self.grants.write() {
            grants.remove(id);
        }
        Ok(record)
    }
}

/// What a release needs around it: where approvals wait, the grants, the log and the time.
pub(crate) struct ReleaseDesk<'a> {
    pub(crate) pending: &'a PendingQueue,
    pub(crate) grants: &'a Arc<GrantBook>,
    pub(crate) audit: &'a dyn AuditSink,
    pub(crate) clock: &'a dyn Clock,
}

impl ReleaseDesk<'_> {
    /// The daemon released `request`: checks it against what was staged, mints the owner's
    /// remembered grant (audited before it is stored), then hands the approval to the turn.
    /// A grant that cannot be minted is audited and does not stop the approved action.
    pub(crate) async fn release(
        &self,
        request: &Request,
        binding: &Binding,
        factors: Vec<String>,
        remember: Option<Remember>,
    ) -> Result<(), ReleaseError> {
        let release = self.pending.take_release(request, binding, factors)?;
        if let Some(remember) = remember {
            let now = self.clock.unix_ms() / 1000;
            if let Err(e) = self
                .remember(request, release.level(), &remember, now)
                .await
            {
                crate::audit::note(
                    self.audit,
                    AuditEvent::GrantRefused {
                        approval: request.id.clone(),
                        error: e.to_string(),
                    },
                )
                .await;
            }
        }
        release.deliver();
        Ok(())
    }

    async fn remember(
        &self,
        request: &Request,
        level: u8,
        remember: &Remember,
        now: i64,
    ) -> Result<(), GrantMintError> {
        let record = GrantBook::mint(request, level, remember, now)?;
        self.audit
            .append(AuditEvent::GrantCreated {
                id: record.id.clone(),
                approval: record.approval.clone(),
                agent: record.agent.clone(),
                action: record.action.clone(),
                args: serde_json::to_value(&record.args).unwrap_or_default(),
                level: record.level,
                expires_at: record.expires_at,
            })
            .await
            .map_err(|e| GrantMintError::Audit(Box::new(e)))?;
        let grants = Arc::clone(self.grants);
        tokio::task::spawn_blocking(move || grants.insert(record))
            .await
            .map_err(GrantMintError::Task)??;
        Ok(())
    }
}

/// Why a remembered approval did not become a grant.
#[derive(Debug, thiserror::Error)]
enum GrantMintError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("the grant was not audited: {0}")]
    Audit(#[source] Box<crate::KernelError>),
    #[error("the grant task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

#[cfg(test)]
#[path = "grants_tests.rs"]
mod tests;

//! The kernel's own actions that need a human: today the scheduled vault rekey.
//!
//! With `vault_rekey: { every: 90d, level: 5 }` in the policy, the kernel stages a rekey of the
//! memory vault with the HITL daemon when it falls due (and `p3ak hitl rekey` stages one now).
//! Once released, the vault plugin is held, the vault is rewritten under a new master key
//! with the same passphrase, its canary and a document are read back, and the plugin starts
//! again with the new key. Every step is audited.

use std::sync::Arc;
use std::time::Duration;

use p3ak_approval::binding::Request;
use p3ak_crypto::Passphrase;
use p3ak_vault::VaultKey;
use serde_json::json;

use crate::audit::AuditEvent;

use crate::KernelError;
use crate::error::RekeyRefused;
use crate::kernel::{Kernel, Rekeyer};
use crate::pending::{Resolution, new_id};
use crate::rekey;

/// The action name the rekey is staged under.
pub const REKEY_ACTION: &str = "kernel.vault_rekey";
/// Level and timeout when the policy has no schedule (`p3ak hitl rekey`).
const DEFAULT_LEVEL: u8 = 5;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often the schedule looks again at most (a clock may jump).
const RECHECK: Duration = Duration::from_secs(3600);

impl Kernel {
    /// Waits for the schedule and stages each rekey as it falls due. Runs until the kernel
    /// stops; does nothing without a schedule or a memory vault.
    pub(crate) async fn run_rekey_schedule(self: Arc<Self>) {
        let Some(schedule) = self.road.enforcer().policy().vault_rekey() else {
            return;
        };
        let path = self.home.memory_vault();
        loop {
            let Ok(header) = p3ak_vault::peek(&path) else {
                return;
            };
            let last = self.last_rekey_unix().await;
            let now = self.road.clock().unix_ms() / 1000;
            if !rekey::is_due(schedule.every, last, header.created, now) {
                let due = rekey::next_due_unix(schedule.every, last, header.created);
                let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0)).min(RECHECK);
                tokio::time::sleep(wait).await;
                continue;
            }
            if let Err(e) = self.stage_rekey("schedule", None).await {
                self.audit
                    .note(AuditEvent::VaultRekeyFailed {
                        id: None,
                        error: e.to_string(),
                    })
                    .await;
                // Denied, timed out or failed: ask again after a day, not in a loop.
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            }
        }
    }

    async fn last_rekey_unix(&self) -> Option<i64> {
        let key = self.memory_key.read().ok()?.as_ref()?.to_handoff_bytes();
        let path = self.home.memory_vault();
        tokio::task::spawn_blocking(move || {
            let key = VaultKey::from_handoff_bytes(key.expose()).ok()?;
            let vault = p3ak_vault::Vault::open(
                &path,
                p3ak_vault::Unlock::Key(&key),
                p3ak_vault::Access::Read,
            )
            .ok()?;
            vault.last_rekey_unix().ok().flatten()
        })
        .await
        .ok()
        .flatten()
    }

    /// Stages a rekey of the memory vault at the schedule's level and, once a human has
    /// approved it and its undo window passed, runs it. Returns what happened, in words.
    pub async fn stage_rekey(
        &self,
        why: &str,
        events: Option<&tokio::sync::mpsc::UnboundedSender<crate::control::ControlEvent>>,
    ) -> Result<String, KernelError> {
        let path = self.home.memory_vault();
        if !path.exists() {
            return Err(RekeyRefused::NoVault(path).into());
        }
        if matches!(self.rekeyer, Rekeyer::None) {
            return Err(RekeyRefused::CreatedAfterStart.into());
        }
        let schedule = self.road.enforcer().policy().vault_rekey();
        let level = schedule.map_or(DEFAULT_LEVEL, |s| s.level.get());
        let timeout = schedule.map_or(DEFAULT_TIMEOUT, |s| s.timeout);
        let crawfish = schedule.map_or(Duration::ZERO, |s| s.crawfish);
        let asked_ms = self.road.clock().unix_ms();
        let request = Request {
            id: new_id(),
            agent: "kernel".to_owned(),
            action: REKEY_ACTION.to_owned(),
            args: json!({"vault": "vaults/memory.vault", "why": why}),
            level,
            rules: vec![if schedule.is_some() {
                "policy:vault_rekey".to_owned()
            } else {
                "operator:hitl-rekey".to_owned()
            }],
            category: "kernel".to_owned(),
            asked_ms,
            expires_ms: asked_ms
                .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
            crawfish_secs: crawfish.as_secs(),
            confirm_twice: level >= 5,
            reasons: Vec::new(),
        };
        let id = request.id.clone();
        let ticket = self.pending.add(&request);
        self.audit
            .record(AuditEvent::Escalation {
                id: id.clone(),
                agent: "kernel".to_owned(),
                action: REKEY_ACTION.to_owned(),
                args: request.args.clone(),
                level: request.level,
                rules: request.rules.clone(),
                category: "kernel".to_owned(),
                binding: request.binding().to_hex(),
                timeout_secs: timeout.as_secs(),
                undo_window_secs: None,
                confirm_twice: None,
            })
            .await?;
        if let Err(e) = self.hitl.stage(&request).await {
            self.pending.withdraw(&id);
            return Err(e);
        }
        if let Some(events) = events {
            let _ = events.send(crate::control::ControlEvent::Notice {
                text: format!(
                    "rekey staged as `{id}` (level {level}: {}); it runs once approved",
                    p3ak_approval::level::Factor::needed_for(level)
                ),
            });
        }
        let wait = timeout
            .saturating_add(crawfish)
            .saturating_add(Duration::from_secs(30));
        let approval = match ticket.wait(&self.pending, wait).await {
            Some(Resolution::Approved(approval)) => approval,
            Some(Resolution::Refused(ending)) => {
                self.audit
                    .record(AuditEvent::Denial {
                        id: id.clone(),
                        ending: ending.as_str().to_owned(),
                    })
                    .await?;
                return Err(RekeyRefused::NotApproved {
                    id,
                    ending: ending.as_str(),
                }
                .into());
            }
            None => {
                self.hitl.withdraw(&id);
                self.audit
                    .record(AuditEvent::ApprovalTimeout {
                        id: id.clone(),
                        ending: None,
                    })
                    .await?;
                return Err(RekeyRefused::NoAnswer(id).into());
            }
        };
        self.audit
            .record(AuditEvent::Approval {
                id: id.clone(),
                binding: approval.binding().to_owned(),
                factors: approval.factors().to_vec(),
            })
            .await?;
        self.run_rekey(&id).await
    }

    async fn run_rekey(&self, id: &str) -> Result<String, KernelError> {
        let holders = self.vault_plugins();
        for name in &holders {
            if !self.host.hold(name).await {
                for name in &holders {
                    self.host.resume(name, None).await;
                }
                return Err(RekeyRefused::PluginDidNotStop {
                    id: id.to_owned(),
                    plugin: name.clone(),
                }
                .into());
            }
        }
        let outcome = match &self.rekeyer {
            Rekeyer::Local(passphrase) => {
                let pass =
                    Passphrase::new(String::from_utf8_lossy(passphrase.expose()).into_owned());
                let home = self.home.clone();
                tokio::task::spawn_blocking(move || rekey_memory_vault(&home, &pass))
                    .await
                    .map_err(KernelError::task("the rekey"))
                    .and_then(|r| r)
            }
            Rekeyer::Warden(warden) => warden.rekey_memory().await.and_then(|(report, key)| {
                Ok((report, VaultKey::from_handoff_bytes(key.expose())?))
            }),
            Rekeyer::None => Err(RekeyRefused::CreatedAfterStart.into()),
        };
        match outcome {
            Ok((report, key)) => {
                let handoff = Arc::new(key.to_handoff_bytes());
                if let Ok(mut memory_key) = self.memory_key.write() {
                    *memory_key = Some(key);
                }
                for name in &holders {
                    self.host.resume(name, Some(Arc::clone(&handoff))).await;
                }
                self.audit
                    .record(AuditEvent::VaultRekey {
                        id: id.to_owned(),
                        report: report.audit_payload(),
                    })
                    .await?;
                Ok(format!(
                    "memory vault rekeyed: {} documents, canary {}",
                    report.documents,
                    if report.canary_ok {
                        "read back"
                    } else {
                        "NOT read back"
                    }
                ))
            }
            Err(e) => {
                for name in &holders {
                    self.host.resume(name, None).await;
                }
                self.audit
                    .record(AuditEvent::VaultRekeyFailed {
                        id: Some(id.to_owned()),
                        error: e.to_string(),
                    })
                    .await?;
                Err(e)
            }
        }
    }

    /// The plugins that hold the memory vault open.
    fn vault_plugins(&self) -> Vec<String> {
        self.config
            .plugins
            .iter()
            .filter(|(_, p)| p.enabled && p.builtin.as_deref() == Some("vault"))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Rewrites the memory vault of `home` under a new master key with the same passphrase, reads
/// its canary and a document back, and returns the report and the vault's new key. Blocks.
pub(crate) fn rekey_memory_vault(
    home: &crate::home::Home,
    passphrase: &Passphrase,
) -> Result<(rekey::RekeyReport, VaultKey), KernelError> {
    let path = home.memory_vault();
    let kdf = rekey::current_kdf(&path)?;
    let report = rekey::rekey_vault(&path, passphrase, kdf)?;
    let key = VaultKey::derive(&path, passphrase)?;
    Ok((report, key))
}

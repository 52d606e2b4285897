//! Hot reload of the policy (`p3ak policy apply FILE`, SIGHUP) and the grants' control
//! requests.
//!
//! A new policy is compiled first; any error leaves the running one in place. Then it is
//! audited with the SHA-256 of its text and swapped in atomically: a decision in flight keeps
//! the snapshot it started with, and an escalation already waiting keeps the verdict it was
//! decided under (the approval gate never decides again).
//!
//! The kernel never writes `policy.yaml`: `p3ak policy apply` does, as the operator who owns
//! it. Under the warden the file is root's and only readable by the kernel, so a kernel that
//! is taken over cannot make a policy of its own survive a restart.

use std::sync::Arc;

use p3ak_policy::Policy;

use crate::KernelError;
use crate::audit::AuditEvent;
use crate::control::ControlEvent;
use crate::kernel::Kernel;

/// Where a new policy came from, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// `p3ak policy apply FILE`.
    Cli,
    /// SIGHUP: `policy.yaml` read again.
    Sighup,
}

impl PolicySource {
    /// The word the audit log uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Sighup => "sighup",
        }
    }
}

/// A policy now in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// SHA-256 of its text, hex.
    pub sha256: String,
    /// How many rules it holds.
    pub rules: usize,
    /// Its warnings, one line each.
    pub warnings: Vec<String>,
}

impl Kernel {
    /// Makes `text` the running policy, if it compiles.
    pub async fn apply_policy(
        &self,
        text: &str,
        source: PolicySource,
    ) -> Result<Applied, KernelError> {
        // One change at a time: two applies cannot interleave their write and swap.
        let _one = self.reload.lock().await;
        let result = self.apply_locked(text, source).await;
        if let Err(e) = &result {
            self.audit
                .note(AuditEvent::PolicyRefused {
                    source: source.as_str().to_owned(),
                    error: e.to_string(),
                })
                .await;
        }
        result
    }

    /// SIGHUP: reads `policy.yaml` again and applies it.
    pub async fn reload_policy(&self) -> Result<Applied, KernelError> {
        let path = self.home.policy();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                let e = KernelError::io(format!("cannot read `{}`", path.display()))(e);
                self.audit
                    .note(AuditEvent::PolicyRefused {
                        source: PolicySource::Sighup.as_str().to_owned(),
                        error: e.to_string(),
                    })
                    .await;
                return Err(e);
            }
        };
        self.apply_policy(&text, PolicySource::Sighup).await
    }

    async fn apply_locked(&self, text: &str, source: PolicySource) -> Result<Applied, KernelError> {
        let policy = Policy::from_yaml(text)?;
        let applied = Applied {
            sha256: hex::encode(p3ak_crypto::sha256(&[text.as_bytes()])),
            rules: policy.rule_count(),
            warnings: policy.warnings().iter().map(ToString::to_string).collect(),
        };
        self.audit
            .record(AuditEvent::PolicyApplied {
                sha256: applied.sha256.clone(),
                rules: applied.rules,
                source: source.as_str().to_owned(),
            })
            .await?;
        self.policy.replace(policy);
        Ok(applied)
    }

    /// Answers `policy apply`.
    pub(crate) async fn control_policy_apply(&self, text: &str) -> ControlEvent {
        match self.apply_policy(text, PolicySource::Cli).await {
            Ok(applied) => ControlEvent::PolicyApplied {
                sha256: applied.sha256,
                rules: applied.rules,
                warnings: applied.warnings,
            },
            Err(e) => ControlEvent::Error {
                message: e.to_string(),
            },
        }
    }

    /// Answers `policy grants`.
    pub(crate) fn control_grant_list(&self) -> ControlEvent {
        ControlEvent::Grants {
            items: self.grants.list(),
            now: self.road.clock().unix_ms() / 1000,
        }
    }

    /// Answers `policy grants revoke ID`: audited first, then removed.
    pub(crate) async fn control_grant_revoke(&self, id: &str, by: &str) -> ControlEvent {
        if self.grants.get(id).is_none() {
            return ControlEvent::Error {
                message: KernelError::from(crate::grants::GrantError::Unknown(id.to_owned()))
                    .to_string(),
            };
        }
        let audited = self
            .audit
            .record(AuditEvent::GrantRevoked {
                id: id.to_owned(),
                by: by.to_owned(),
            })
            .await;
        if let Err(e) = audited {
            return ControlEvent::Error {
                message: e.to_string(),
            };
        }
        let grants = Arc::clone(&self.grants);
        let owned = id.to_owned();
        match tokio::task::spawn_blocking(move || grants.revoke(&owned)).await {
            Ok(Ok(record)) => ControlEvent::Done {
                message: format!("grant `{}` revoked ({})", record.id, record.action),
            },
            Ok(Err(e)) => ControlEvent::Error {
                message: e.to_string(),
            },
            Err(e) => ControlEvent::Error {
                message: format!("the revoke task failed: {e}"),
            },
        }
    }
}

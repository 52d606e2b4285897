//! A checkpoint kept outside the log it covers: the kernel's `audit/checkpoint.json`.
//!
//! Publishing signs the log as it is, records the publication as a log entry, and writes the
//! file. Checking compares the file with the log: a file older than the last publication the
//! log records was put back; a log that no longer holds what the file covers was cut.

use std::path::Path;

use p3ak_audit::CheckpointJson;

use crate::error::{Result, VaultError};
use crate::store::Vault;

/// Kind of the log entry that records a published checkpoint.
pub const CHECKPOINT_EVENT: &str = "audit.checkpoint";

/// Signs the log, records the publication in it, and writes `file` atomically (0600, file and
/// directory synced).
pub fn publish_checkpoint(vault: &Vault, file: &Path) -> Result<CheckpointJson> {
    let cp = vault.sign_checkpoint()?;
    let public = vault
        .log_public_key()
        .ok_or_else(|| VaultError::Log("the log's signing key is missing".into()))?;
    vault.log_event(
        CHECKPOINT_EVENT,
        serde_json::json!({
            "size": cp.size,
            "root": hex::encode(cp.root),
            "time_ms": cp.time_ms,
        }),
    )?;
    let json = CheckpointJson::new(&cp, &public);
    let text = serde_json::to_vec_pretty(&json)
        .map_err(|e| VaultError::Log(format!("cannot encode checkpoint: {e}")))?;
    let mut bytes = text;
    bytes.push(b'\n');
    p3ak_crypto::write_private(file, &bytes).map_err(|e| {
        let (context, source) = e.into_parts();
        VaultError::Io { context, source }
    })?;
    Ok(json)
}

/// What checking an external checkpoint found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExternalCheck {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compares the checkpoint in `file` with the vault's log.
pub fn check_external_checkpoint(vault: &Vault, file: &Path) -> Result<ExternalCheck> {
    let mut check = ExternalCheck::default();
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if vault.last_logged_checkpoint()?.is_some() {
                check.problems.push(format!(
                    "checkpoint file `{}` is missing, but the log records publishing one",
                    file.display()
                ));
            } else {
                check.warnings.push(format!(
                    "no external checkpoint yet (`{}`): run `p3ak audit checkpoint`",
                    file.display()
                ));
            }
            return Ok(check);
        }
        Err(e) => {
            return Err(VaultError::io(format!("cannot read `{}`", file.display()))(
                e,
            ));
        }
    };
    let decoded = serde_json::from_slice::<CheckpointJson>(&text)
        .ok()
        .and_then(|json| json.decode());
    let Some((cp, public)) = decoded else {
        check.problems.push(format!(
            "checkpoint file `{}` is unreadable",
            file.display()
        ));
        return Ok(check);
    };
    if Some(public) != vault.log_public_key() {
        check
            .problems
            .push("the checkpoint file is signed by another key".to_owned());
        return Ok(check);
    }
    if let Err(e) = vault.log_check_checkpoint(&cp) {
        check.problems.push(format!("checkpoint file: {e}"));
    }
    match vault.last_logged_checkpoint()? {
        None => check.problems.push(format!(
            "the checkpoint file covers {} entries but the log records no published checkpoint: its tail was cut",
            cp.size
        )),
        Some((seq, size)) if size > cp.size => check.problems.push(format!(
            "the checkpoint file covers {} entries, but log entry {seq} records publishing one that covers {size}: the file was replaced by an older one",
            cp.size
        )),
        Some((seq, size)) if size < cp.size => check.problems.push(format!(
            "the checkpoint file covers {} entries, but the last publication the log records (entry {seq}) covers {size}: entries were cut from the log",
            cp.size
        )),
        Some(_) => {}
    }
    Ok(check)
}

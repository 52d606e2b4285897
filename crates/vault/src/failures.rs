//! Failed unlock attempts. A wrong passphrase means no key to write the encrypted log with, so
//! each attempt is noted in `<vault>.unlock-failures` (time, pid, uid: nothing secret) and moved
//! into the log by the next writer.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::Vault;

/// Attempts beyond this many are counted, not listed.
const MAX_LISTED: usize = 100;
/// The sidecar stops growing here.
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

pub(crate) fn sidecar(vault: &Path) -> PathBuf {
    let mut name = vault.file_name().unwrap_or_default().to_os_string();
    name.push(".unlock-failures");
    vault.with_file_name(name)
}

/// Notes one failed attempt. Best effort: failing to note it must not change the error the
/// caller reports.
pub(crate) fn record(vault: &Path) {
    use std::os::unix::fs::MetadataExt;
    let path = sidecar(vault);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_SIDECAR_BYTES) {
        return;
    }
    let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    let line = serde_json::json!({
        "time_ms": crate::store::now_ms(),
        "pid": std::process::id(),
        "uid": uid,
    });
    if let Ok(mut file) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
    {
        let _ = writeln!(file, "{line}");
        let _ = file.sync_data();
    }
}

/// Moves noted attempts into the log, then removes the note.
pub(crate) fn log_and_clear(vault: &Vault) -> Result<()> {
    let path = sidecar(vault.path());
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let attempts: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !attempts.is_empty() {
        let count = attempts.len();
        let listed: Vec<_> = attempts.into_iter().take(MAX_LISTED).collect();
        vault.log_event(
            "vault.unlock_failed",
            serde_json::json!({ "count": count, "attempts": listed }),
        )?;
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

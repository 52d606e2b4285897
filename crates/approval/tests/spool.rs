//! The spool's permissions, checked by the operating system: a process under the kernel's
//! spool uid may create files in `staging/<category>/` and nothing else — it cannot list
//! staging, cannot read or write the outbox, cannot move a file forward. These need root
//! (to create the users' files) and are ignored unless asked for (`.ci/run` runs them).

#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use p3ak_approval::binding::Request;
use p3ak_approval::spool::{MAX_STAGED, Owners, Spool, SpoolKey, stage_from, write_staged};

const DAEMON: u32 = 60_980;
const WRITER: u32 = 60_981;

/// A spool in a fresh directory, owned as the kernel lays it out as root.
fn spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool
        .prepare(
            &["write".to_owned()],
            Some(Owners {
                daemon: (DAEMON, DAEMON),
                writer_gid: WRITER,
            }),
        )
        .unwrap();
    (dir, spool)
}

/// Runs a shell command as the writer (the kernel's spool uid, no other groups).
fn as_writer(script: &str) -> std::process::Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(WRITER)
        .gid(WRITER)
        .current_dir("/")
        .env_clear()
        .output()
        .unwrap()
}

fn refused(output: &std::process::Output, what: &str) {
    assert!(
        !output.status.success(),
        "the kernel's uid could {what}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Permission denied"),
        "{what}: refused for another reason: {stderr}"
    );
}

fn request(id: &str) -> Request {
    Request {
        id: id.to_owned(),
        agent: "assistant".to_owned(),
        action: "files.write".to_owned(),
        args: serde_json::json!({"path": "a.txt"}),
        level: 1,
        rules: vec![],
        category: "write".to_owned(),
        asked_ms: 1,
        expires_ms: i64::MAX,
        crawfish_secs: 0,
        confirm_twice: false,
        reasons: Vec::new(),
    }
}

fn daemon_file(path: &Path) {
    std::fs::write(path, b"approved").unwrap();
    std::os::unix::fs::lchown(path, Some(DAEMON), Some(DAEMON)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
#[ignore = "needs root"]
fn invariant_i8_the_kernel_uid_can_stage_but_cannot_list_staging_or_read_back() {
    p3ak_testkit::need::root();
    let (_dir, spool) = spool();
    let category = spool.category("write");
    let staged = category.join("a1");
    let out = as_writer(&format!("printf x > '{}'", staged.display()));
    assert!(
        out.status.success(),
        "the kernel's uid cannot stage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &as_writer(&format!("ls '{}'", category.display())),
        "list staging/write",
    );
    refused(
        &as_writer(&format!("ls '{}'", spool.staging().display())),
        "list staging",
    );
    // Another request staged by the real writer path: its writer cannot read it back.
    let key = SpoolKey::generate().unwrap();
    let sealed = key.seal(&request("a2")).unwrap();
    let path = write_staged(&spool, "write", "a2", &sealed).unwrap();
    std::os::unix::fs::lchown(&path, Some(WRITER), Some(WRITER)).unwrap();
    refused(
        &as_writer(&format!("cat '{}'", path.display())),
        "read a staged file back",
    );
    // What it wrote is there for the daemon (who reads it as "other").
    assert_eq!(std::fs::read(&staged).unwrap(), b"x");
}

#[test]
#[ignore = "needs root"]
fn invariant_i8_the_kernel_uid_cannot_read_or_write_the_outbox() {
    p3ak_testkit::need::root();
    let (_dir, spool) = spool();
    let approved = spool.outbox().join("b1");
    daemon_file(&approved);
    refused(
        &as_writer(&format!("cat '{}'", approved.display())),
        "read the outbox",
    );
    refused(
        &as_writer(&format!("ls '{}'", spool.outbox().display())),
        "list the outbox",
    );
    refused(
        &as_writer(&format!(
            "printf y > '{}'",
            spool.outbox().join("forged").display()
        )),
        "write into the outbox",
    );
    refused(
        &as_writer(&format!("printf y >> '{}'", approved.display())),
        "append to an approved action",
    );
    for dir in [spool.sent(), spool.rejected()] {
        refused(
            &as_writer(&format!("ls '{}'", dir.display())),
            "list sent/ or rejected/",
        );
    }
}

#[test]
#[ignore = "needs root"]
fn invariant_i8_the_kernel_uid_cannot_move_a_file_forward() {
    p3ak_testkit::need::root();
    let (_dir, spool) = spool();
    let staged = spool.category("write").join("c1");
    let out = as_writer(&format!("printf x > '{}'", staged.display()));
    assert!(out.status.success());
    for target in [spool.outbox(), spool.sent()] {
        refused(
            &as_writer(&format!(
                "mv '{}' '{}/'",
                staged.display(),
                target.display()
            )),
            "move a staged file forward",
        );
    }
    let approved = spool.outbox().join("c2");
    daemon_file(&approved);
    refused(
        &as_writer(&format!(
            "mv '{}' '{}/'",
            approved.display(),
            spool.sent().display()
        )),
        "release an approved action",
    );
    refused(
        &as_writer(&format!(
            "mv '{}' '{}/'",
            approved.display(),
            spool.rejected().display()
        )),
        "pull an approved action back",
    );
    assert!(approved.exists() && staged.exists());
}

#[test]
fn the_layout_has_the_documented_modes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool.prepare(&["write".to_owned()], None).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(spool.root()), 0o710);
    assert_eq!(mode(&spool.staging()), 0o710);
    assert_eq!(mode(&spool.category("write")), 0o730);
    assert_eq!(mode(&spool.category("other")), 0o730);
    for d in [spool.outbox(), spool.sent(), spool.rejected()] {
        assert_eq!(mode(&d), 0o700);
    }
    // Staged by its owner: readable by the owner only when staging is its own directory.
    let key = SpoolKey::generate().unwrap();
    let path = write_staged(&spool, "write", "d1", &key.seal(&request("d1")).unwrap()).unwrap();
    assert_eq!(mode(&path), 0o400);
    // Never overwritten, and names that could climb out are refused.
    assert!(write_staged(&spool, "write", "d1", b"again").is_err());
    assert!(write_staged(&spool, "write", "../x", b"x").is_err());
    assert!(write_staged(&spool, "../outbox", "x", b"x").is_err());
    // From a reader (`p3ak hitl stage`): at most what the daemon reads, else nothing written.
    let sealed = key.seal(&request("d2")).unwrap();
    let path = stage_from(&spool, "write", "d2", sealed.as_slice()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), sealed);
    let huge = std::io::Read::take(std::io::repeat(0), MAX_STAGED + 1);
    let err = stage_from(&spool, "write", "d3", huge).unwrap_err();
    assert!(
        matches!(err, p3ak_approval::ApprovalError::TooLarge),
        "{err}"
    );
    assert!(!spool.category("write").join("d3").exists());
}

#[test]
fn invariant_i9_a_staged_file_that_is_not_this_runs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool.prepare(&["write".to_owned()], None).unwrap();
    let key = SpoolKey::generate().unwrap();
    let other = SpoolKey::generate().unwrap();
    let sealed = key.seal(&request("e1")).unwrap();
    let path = dir.path().join("e1");
    assert!(
        other.open(&sealed, "write", "e1", &path).is_err(),
        "another run's key"
    );
    assert!(
        key.open(&sealed, "write", "e2", &path).is_err(),
        "filed under another id"
    );
    assert!(
        key.open(&sealed, "other", "e1", &path).is_err(),
        "another category"
    );
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(key.open(&flipped, "write", "e1", &path).is_err(), "altered");
    assert!(
        key.open(&sealed[..20], "write", "e1", &path).is_err(),
        "truncated"
    );
    assert!(
        key.open(b"garbage", "write", "e1", &path).is_err(),
        "not a request"
    );
    assert_eq!(
        key.open(&sealed, "write", "e1", &path).unwrap(),
        request("e1")
    );
}

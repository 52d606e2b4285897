//! A Landlock denial after `exec` reaches the host's audit log and comes back out of
//! [`DenialFeed`] with the sandboxed process's pid and uid. Needs root (a uid switch, the
//! audit socket): ignored unless asked for (`.ci/run` runs it as root).

#![cfg(test)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use p3ak_sandbox::denials::{DenialFeed, host_audit_enabled, set_host_audit};
use p3ak_sandbox::{Class, Limits, Plan, probe};

#[test]
#[ignore = "needs root and Landlock ABI 7 (audit logging)"]
fn invariant_i7_a_refused_open_is_reported_with_the_plugins_pid_and_uid() {
    p3ak_testkit::need::root();
    assert!(
        probe().landlock_abi.is_some_and(|abi| abi >= 7),
        "this test needs Landlock ABI 7 (audit logging), which this kernel does not offer"
    );
    if !host_audit_enabled().unwrap() {
        eprintln!("note: enabling the host's audit subsystem for this test (auditctl -e 1)");
        set_host_audit(true).unwrap();
    }
    let mut feed = DenialFeed::open().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kernel.vault");
    std::fs::write(&secret, "not for plugins").unwrap();
    let exec: Vec<PathBuf> = ["/bin", "/usr", "/lib", "/lib64", "/etc/ld.so.cache"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    // The audit multicast group is lossy under load (the kernel drops records for a slow
    // listener, ENOBUFS): a lost record is not a missed denial, so try a few fresh domains.
    for _attempt in 0..3 {
        let status = sandboxed_cat(61_990, Vec::new(), exec.clone(), &secret);
        assert!(!status.success(), "cat read a file outside its rules");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let Some(denial) = feed.wait().unwrap() else {
                continue;
            };
            // cat also tries its locale files first: those are refused too. A DAC refusal of
            // the same open is reported as well where an earlier test left a watch rule for
            // this uid (the rules are the host's): the one wanted here is Landlock's.
            if denial.uid != 61_990
                || !denial.detail.contains(secret.to_str().unwrap())
                || !denial.blockers.starts_with("fs.")
            {
                continue;
            }
            assert_eq!(denial.blockers, "fs.read_file");
            assert!(denial.pid > 1);
            return;
        }
    }
    panic!("no denial reported in three tries");
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_a_permission_refusal_is_reported_once_the_rules_are_in() {
    p3ak_testkit::need::root();
    if !host_audit_enabled().unwrap() {
        eprintln!("note: enabling the host's audit subsystem for this test (auditctl -e 1)");
        set_host_audit(true).unwrap();
    }
    let uid = 61_991;
    p3ak_sandbox::denials::watch_refusals(uid, uid, true).unwrap();
    // Twice is fine: the rule is there already.
    p3ak_sandbox::denials::watch_refusals(uid, uid, true).unwrap();
    let mut feed = DenialFeed::open().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("audit.log");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut exec: Vec<PathBuf> = ["/bin", "/usr", "/lib", "/lib64", "/etc"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    exec.push(dir.path().to_owned());
    // Landlock lets it read the directory: only the file's mode stands in the way.
    let status = sandboxed_cat(uid, vec![dir.path().to_owned()], exec, &secret);
    assert!(!status.success(), "cat read a root-only file");
    let started = Instant::now();
    let found = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        let Some(denial) = feed.wait().unwrap() else {
            continue;
        };
        if denial.uid == uid && denial.detail.contains(secret.to_str().unwrap()) {
            break Some(denial);
        }
    };
    p3ak_sandbox::denials::watch_refusals(uid, uid, false).unwrap();
    let denial = found.expect("no refusal reported");
    assert_eq!(denial.blockers, "permission");
    assert!(
        denial.detail.starts_with("syscall=openat error=EACCES"),
        "{denial:?}"
    );
}

/// Runs `cat file` as `uid` under Landlock (no seccomp), with these rules.
fn sandboxed_cat(
    uid: u32,
    read: Vec<PathBuf>,
    exec: Vec<PathBuf>,
    file: &std::path::Path,
) -> std::process::ExitStatus {
    let plan = Plan {
        ids: Some((uid, uid)),
        class: Class::Shell,
        network: false,
        read,
        exec,
        write: Vec::new(),
        limits: Limits::for_class(Class::Shell),
        landlock: true,
        seccomp: false,
        trace: false,
    };
    let mut command = Command::new("/bin/cat");
    command.arg(file);
    plan.prepare(&probe()).unwrap().install(&mut command);
    command.output().unwrap().status
}

//! A plugin's uid is a stranger's: it may not walk to its own binary (`cargo install` as root
//! puts `p3ak` under `/root`, mode 0700). [`Program`] starts it anyway, through the file the
//! parent opened, while Landlock still decides by the binary's real path. Needs root (a uid
//! switch): ignored unless asked for (`.ci/run` runs them as root).

#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use p3ak_sandbox::{Class, Limits, Plan, Program, probe};

const STRANGER: u32 = 61_951;

/// `/bin/cat` copied into a directory only root may enter, and a file it should print.
fn closed_cat() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let cat = closed.join("cat");
    std::fs::copy("/bin/cat", &cat).unwrap();
    std::fs::set_permissions(&cat, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = open.join("greeting");
    std::fs::write(&file, "hello from a stranger\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, cat, file)
}

fn plan(exec: Vec<PathBuf>, read: Vec<PathBuf>) -> Plan {
    let mut read = read;
    read.extend(
        ["/lib", "/lib64", "/usr/lib", "/etc/ld.so.cache"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    let mut exec = exec;
    exec.extend(
        ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    Plan {
        ids: Some((STRANGER, STRANGER)),
        class: Class::Shell,
        network: false,
        read,
        exec,
        write: Vec::new(),
        limits: Limits::for_class(Class::Shell),
        landlock: true,
        seccomp: true,
        trace: false,
    }
}

fn run(program: &Path, plan: &Plan, file: &Path) -> std::io::Result<std::process::Output> {
    let mut command = Program::open(program, plan.ids).unwrap().command();
    command.arg(file);
    plan.prepare(&probe()).unwrap().install(&mut command);
    command.output()
}

/// The host's sandbox support, which must offer all these tests use.
fn supported() -> p3ak_sandbox::Support {
    p3ak_testkit::need::root();
    let support = probe();
    assert!(
        support.landlock_abi.is_some() && support.seccomp,
        "this test needs Landlock and seccomp, which this kernel does not offer: {:?}",
        support.missing()
    );
    support
}

#[test]
#[ignore = "needs root, Landlock and seccomp"]
fn invariant_i7_a_plugin_starts_from_a_directory_its_user_cannot_enter() {
    let support = supported();
    let (_dir, cat, file) = closed_cat();
    let plan = plan(vec![cat.clone()], vec![file.clone()]);

    // By its path, the stranger cannot even reach the binary.
    let mut by_path = std::process::Command::new(&cat);
    by_path.arg(&file);
    plan.prepare(&support).unwrap().install(&mut by_path);
    let refused = by_path.output().unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{refused}"
    );

    // Opened by the kernel, it runs, fully sandboxed, as the stranger.
    let out = run(&cat, &plan, &file).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a stranger\n"
    );
}

#[test]
#[ignore = "needs root, Landlock and seccomp"]
fn invariant_i7_landlock_still_decides_what_a_plugin_may_execute() {
    supported();
    let (_dir, cat, file) = closed_cat();
    // The binary is readable by the rules but not executable: the open file is no way round.
    let plan = plan(Vec::new(), vec![file.clone(), cat.clone()]);
    let refused = run(&cat, &plan, &file).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{refused}"
    );
}

//! The red team (invariant I7): a real kernel (`p3ak up`) runs a well-behaved plugin
//! (`benign`), the scripted model and one `attacker` — the hostile plugin on one attack. Each
//! test checks that the attack failed, that the kernel's audit log holds what stopped it,
//! and that the kernel then still serves a turn through `benign`.
//!
//! The sandbox gives plugins their own users: the suite needs root, and says it was skipped
//! when it is not. It runs the `p3ak` binary from the same target directory (built by
//! `cargo test --workspace`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PASS: &str = "red team passphrase";

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `None` (and a line saying why) when the suite cannot run here.
fn p3ak() -> Option<PathBuf> {
    if !is_root() {
        eprintln!(
            "skipped: the red team needs root (plugins get their own uids, network namespaces)"
        );
        return None;
    }
    enable_host_audit();
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p3ak = dir.join("p3ak");
    assert!(
        p3ak.exists(),
        "{} is missing: build it first (`cargo build -p p3ak`, or `cargo test --workspace`)",
        p3ak.display()
    );
    Some(p3ak)
}

/// Landlock logs its denials only while the host's audit subsystem is on; the kernel reads
/// them from there. Switched on once for the suite (as `auditctl -e 1` would).
fn enable_host_audit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if p3ak_sandbox::probe()
            .landlock_abi
            .is_some_and(|abi| abi >= 7)
            && !p3ak_sandbox::denials::host_audit_enabled().unwrap_or(true)
        {
            eprintln!("note: enabling the host's audit subsystem for the red team");
            p3ak_sandbox::denials::set_host_audit(true).unwrap();
        }
    });
}

/// Whether refused file accesses can be audited here (Landlock ABI 7, host audit on).
fn denials_audited(audit: &[Value]) -> bool {
    audit
        .iter()
        .any(|e| e["kind"] == "sandbox.denials" && e["payload"]["audited"] == true)
}

/// The attacker's `sandbox.denied` entries whose blocker starts with `blocker`.
fn denied<'a>(audit: &'a [Value], blocker: &str) -> Vec<&'a Value> {
    entries(audit, "sandbox.denied")
        .into_iter()
        .filter(|e| {
            e["payload"]["blockers"]
                .as_str()
                .is_some_and(|b| b.starts_with(blocker))
        })
        .collect()
}

struct Kernel {
    dir: tempfile::TempDir,
    p3ak: PathBuf,
    child: Option<Child>,
}

impl Kernel {
    fn new(p3ak: PathBuf, attack: &str, extra_args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let k = Self {
            dir,
            p3ak,
            child: None,
        };
        let out = k.cmd().arg("init").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let home = k.home();
        std::fs::write(
            home.join("policy.yaml"),
            "version: 1\nread:\n  benign.echo: { level: 0 }\n",
        )
        .unwrap();
        std::fs::write(
            home.join("agents/assistant.toml"),
            "prompt = \"test\"\nprovider = \"model\"\ntools = [\"benign.*\"]\nmemory = 0\n",
        )
        .unwrap();
        let script = json!({"responses": [
            {"content": "", "tool_calls": [{"name": "benign__echo", "arguments": {"text": "still here"}}]},
            {"content": "served"},
        ]});
        std::fs::write(home.join("script.json"), script.to_string()).unwrap();
        let hostile = env!("CARGO_BIN_EXE_hostile");
        let mut args = vec!["attack".to_owned(), attack.to_owned()];
        args.extend(extra_args.iter().cloned());
        let config = format!(
            "[kernel]\nping_interval = \"1s\"\nping_timeout = \"2s\"\nrestart_limit = 2\n\
             tool_timeout = \"5s\"\n\n[hitl]\nconsole = \"off\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\n\
             config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
             [plugins.benign]\npath = \"{hostile}\"\nargs = [\"benign\"]\n\
             sandbox = {{ class = \"tool\" }}\n\n\
             [plugins.attacker]\npath = \"{hostile}\"\nargs = {args:?}\n\
             sandbox = {{ class = \"tool\" }}\n"
        );
        std::fs::write(home.join("config.toml"), config).unwrap();
        k
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.p3ak);
        c.env("P3AK_HOME", self.home())
            .env("P3AK_PASSPHRASE", PASS)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "p3ak {args:?}: {}\nkernel log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn up(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("kernel.log")).unwrap();
        self.child = Some(
            self.cmd()
                .arg("up")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let socket = self.home().join("run/control.sock");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kernel.log")).unwrap_or_default()
    }

    /// Waits until the kernel's log satisfies `done`.
    fn wait_log(&self, what: &str, done: impl Fn(&str) -> bool) {
        let started = Instant::now();
        while !done(&self.log()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A turn through the benign plugin: the kernel still serves.
    fn still_serves(&self) {
        let reply = self.ok(&["chat", "-m", "are you there?"]);
        assert!(reply.contains("served"), "{reply}\n{}", self.log());
        let record = std::fs::read_to_string(self.home().join("requests.jsonl")).unwrap();
        assert!(record.contains("still here"), "benign's result: {record}");
    }

    fn stop(&mut self) -> Vec<Value> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                assert!(started.elapsed() < Duration::from_secs(30), "no shutdown");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let out = self.ok(&["audit", "tail", "-n", "100000", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The audit entries of `kind` about the attacker.
fn entries<'a>(audit: &'a [Value], kind: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|e| e["kind"] == kind && e["payload"]["plugin"] == "attacker")
        .collect()
}

fn assert_sandboxed_start(audit: &[Value]) {
    let starts = entries(audit, "plugin.start");
    assert!(!starts.is_empty(), "no plugin.start: {audit:?}");
    for start in starts {
        let sandbox = &start["payload"]["sandbox"];
        assert_ne!(sandbox["uid"], 0, "{start}");
        assert_eq!(sandbox["landlock"], true, "{start}");
        assert_eq!(sandbox["seccomp"], true, "{start}");
        assert_eq!(sandbox["network"], false, "{start}");
    }
}

/// An attack that must come back with an error (no process killed): the plugin's report
/// says it was blocked, its sandboxed start is audited, and the kernel keeps serving.
fn blocked(attack: &str, extra: &[String]) -> Option<(Kernel, Vec<Value>)> {
    let p3ak = p3ak()?;
    let mut k = Kernel::new(p3ak, attack, extra);
    k.up();
    let marker = format!("redteam: {attack}:");
    k.wait_log(&marker, |log| log.contains(&marker));
    let log = k.log();
    assert!(
        log.contains(&format!("redteam: {attack}: blocked")),
        "{attack} was not blocked:\n{log}"
    );
    assert!(!log.contains("SUCCEEDED"), "{log}");
    k.still_serves();
    let audit = k.stop();
    assert_sandboxed_start(&audit);
    // Every refused access was reported: by Landlock, or by the uid layer through the
    // kernel's audit rule for its plugins' failed calls.
    assert!(denials_audited(&audit), "denials are not audited here");
    assert!(
        !entries(&audit, "sandbox.denied").is_empty(),
        "{attack}: no sandbox.denied in {:?}",
        audit.iter().map(|e| &e["kind"]).collect::<Vec<_>>()
    );
    Some((k, audit))
}

/// Whether some `sandbox.denied` of the attacker mentions `text`.
fn denial_mentions(audit: &[Value], text: &str) -> bool {
    entries(audit, "sandbox.denied").iter().any(|e| {
        e["payload"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(text)
    })
}

/// An attack the sandbox answers by killing the plugin: audited with the signal.
fn killed(attack: &str, kind: &str, signal: i64, extra: &[String]) -> Option<Vec<Value>> {
    let p3ak = p3ak()?;
    let mut k = Kernel::new(p3ak, attack, extra);
    k.up();
    k.wait_log("the attacker to be killed", |log| {
        log.contains("plugin stopped") && log.contains("attacker") && log.contains("signal")
    });
    let log = k.log();
    assert!(!log.contains("SUCCEEDED"), "{log}");
    k.still_serves();
    let audit = k.stop();
    assert_sandboxed_start(&audit);
    let hits = entries(&audit, kind);
    assert!(
        hits.iter().any(|e| e["payload"]["signal"] == signal),
        "no {kind} with signal {signal}: {:?}",
        entries(&audit, "plugin.exit")
    );
    Some(audit)
}

/// An attack on the protocol: the kernel cuts the plugin off and audits why.
fn misbehaved(attack: &str, reason: &str) -> Option<Vec<Value>> {
    let p3ak = p3ak()?;
    let mut k = Kernel::new(p3ak, attack, &[]);
    k.up();
    k.wait_log("the attacker to be cut off", |log| {
        log.contains("plugin stopped") && log.contains("attacker")
    });
    k.still_serves();
    let audit = k.stop();
    let hits = entries(&audit, "plugin.misbehaved");
    assert!(
        hits.iter().any(|e| e["payload"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(reason)),
        "no plugin.misbehaved with `{reason}`: {hits:?}"
    );
    Some(audit)
}

#[test]
fn invariant_i7_reading_the_vault_is_denied() {
    if let Some((_, audit)) = blocked("read_vault", &[]) {
        assert!(
            denial_mentions(&audit, "kernel.vault") || denial_mentions(&audit, "memory.vault"),
            "{:?}",
            entries(&audit, "sandbox.denied")
        );
    }
}

#[test]
fn invariant_i7_the_audit_log_is_out_of_reach() {
    if let Some((k, audit)) = blocked("audit_log", &[]) {
        assert!(
            denial_mentions(&audit, "/audit"),
            "{:?}",
            entries(&audit, "sandbox.denied")
        );
        // And the log still verifies: nothing was appended behind the kernel's back.
        k.ok(&["audit", "verify"]);
    }
}

#[test]
fn invariant_i7_another_plugins_socket_is_out_of_reach() {
    blocked("other_socket", &[]);
}

#[test]
fn invariant_i7_the_hitl_outbox_cannot_be_listed_or_written() {
    if let Some((k, audit)) = blocked("outbox", &[]) {
        assert!(
            denial_mentions(&audit, "outbox"),
            "{:?}",
            entries(&audit, "sandbox.denied")
        );
        // The real outbox (the approval daemon's, 0700): the attack put nothing there.
        let names: Vec<_> = std::fs::read_dir(k.home().join("spool/outbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "the outbox holds {names:?}");
    }
}

#[test]
fn invariant_i7_ptrace_of_the_kernel_kills_the_plugin() {
    killed("ptrace_kernel", "sandbox.violation", 31, &[]);
}

#[test]
fn invariant_i7_signalling_the_kernel_kills_the_plugin() {
    killed("signal_kernel", "sandbox.violation", 31, &[]);
}

#[test]
fn invariant_i7_the_kernels_environment_cannot_be_read() {
    blocked("kernel_environ", &[]);
}

#[test]
fn invariant_i7_exec_of_a_shell_is_denied() {
    if let Some((_, audit)) = blocked("exec_sh", &[]) {
        // Landlock refused the exec, and the kernel audited the refusal.
        let hits = denied(&audit, "fs.execute");
        assert!(
            hits.iter()
                .any(|e| e["payload"]["detail"].as_str().unwrap().contains("/bin/")),
            "{:?}",
            entries(&audit, "sandbox.denied")
        );
    }
}

#[test]
fn invariant_i7_tcp_without_network_kills_the_plugin() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    killed("tcp_connect", "sandbox.violation", 31, &[target]);
}

#[test]
fn invariant_i7_a_fork_bomb_kills_the_plugin() {
    killed("fork_bomb", "sandbox.violation", 31, &[]);
}

#[test]
fn invariant_i7_allocating_10_gib_fails() {
    if let Some(audit) = killed("alloc_10g", "plugin.signal", 6, &[]) {
        assert!(!audit.is_empty());
    }
}

#[test]
fn invariant_i7_writing_outside_its_directory_is_denied() {
    if let Some((k, audit)) = blocked("write_outside", &[]) {
        // `/tmp` is open to every uid: only Landlock stands in the way, and says so.
        assert!(
            entries(&audit, "sandbox.denied")
                .iter()
                .any(|e| e["payload"]["detail"].as_str().unwrap().contains("/tmp")),
            "{:?}",
            entries(&audit, "sandbox.denied")
        );
        assert!(!k.home().join("workspaces/evil.txt").exists());
        assert!(!Path::new("/tmp/p3ak-redteam-evil.txt").exists());
        let config = std::fs::read_to_string(k.home().join("config.toml")).unwrap();
        assert!(!config.contains("red team"));
    }
}

#[test]
fn invariant_i7_a_symlink_does_not_escape() {
    let Some(p3ak) = p3ak() else { return };
    let mut k = Kernel::new(p3ak, "symlink_escape", &[]);
    let scratch = k.home().join("plugins/attacker");
    std::fs::create_dir_all(&scratch).unwrap();
    std::os::unix::fs::symlink(k.home().join("audit/kernel.vault"), scratch.join("escape"))
        .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", scratch.join("shadow")).unwrap();
    std::os::unix::fs::symlink(k.home(), scratch.join("up")).unwrap();
    k.up();
    k.wait_log("the attacker to be killed", |log| {
        log.contains("redteam: symlink_escape:") && log.contains("signal: 31")
    });
    let log = k.log();
    assert!(log.contains("redteam: symlink_escape: blocked"), "{log}");
    assert!(!log.contains("SUCCEEDED"), "{log}");
    assert!(!k.home().join("evil.txt").exists());
    k.still_serves();
    let audit = k.stop();
    assert!(
        entries(&audit, "sandbox.violation")
            .iter()
            .any(|e| e["payload"]["signal"] == 31),
        "{audit:?}"
    );
}

#[test]
fn invariant_i9_a_2_gib_frame_is_refused() {
    misbehaved("big_frame", "protocol violation");
}

#[test]
fn invariant_i9_invalid_json_is_refused() {
    misbehaved("invalid_json", "protocol violation");
}

#[test]
fn invariant_i7_registering_as_another_plugin_is_refused() {
    misbehaved("impersonate", "said hello as `benign`");
}

#[test]
fn invariant_i7_a_flood_of_frames_is_cut_off() {
    misbehaved("flood", "flooded the kernel");
}

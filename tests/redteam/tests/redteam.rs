//! The red team (invariant I7): a real kernel (`p3ak up`) runs a well-behaved plugin
//! (`benign`), the scripted model and one `attacker` — the hostile plugin on one attack. Each
//! test checks that the attack failed, that the kernel's audit log holds what stopped it,
//! and that the kernel then still serves a turn through `benign`.
//!
//! The sandbox gives plugins their own users: the suite needs root and is ignored unless
//! asked for (`.ci/run` runs it as root). It runs the `p3ak` binary from the same target directory (built by
//! `cargo test --workspace`).

#![cfg(test)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PASS: &str = "red team passphrase";

/// The `p3ak` binary beside this test's; the suite needs root (plugins get their own uids and
/// network namespaces).
fn p3ak() -> PathBuf {
    p3ak_testkit::need::root();
    enable_host_audit();
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p3ak = dir.join("p3ak");
    assert!(
        p3ak.exists(),
        "{} is missing: build it first (`cargo build -p p3ak`, or `cargo test --workspace`)",
        p3ak.display()
    );
    p3ak
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
    /// A kernel with the scripted model, the benign plugin and `attacker` on `attack`.
    fn new(p3ak: PathBuf, attack: &str, extra_args: &[String]) -> Self {
        let hostile = env!("CARGO_BIN_EXE_hostile");
        let mut args = vec!["attack".to_owned(), attack.to_owned()];
        args.extend(extra_args.iter().cloned());
        let script = json!({"responses": [
            {"content": "", "tool_calls": [{"name": "benign__echo", "arguments": {"text": "still here"}}]},
            {"content": "served"},
        ]});
        Self::with(
            p3ak,
            "version: 1\nread:\n  benign.echo: { level: 0 }\n",
            &script,
            "off",
            &format!(
                "[plugins.attacker]\npath = \"{hostile}\"\nargs = {args:?}\n\
                 sandbox = {{ class = \"tool\" }}\n"
            ),
        )
    }

    /// A kernel with this policy and script, the scripted model and the benign plugin, the
    /// console at `console`, and `extra` plugin tables.
    fn with(p3ak: PathBuf, policy: &str, script: &Value, console: &str, extra: &str) -> Self {
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
        std::fs::write(home.join("policy.yaml"), policy).unwrap();
        std::fs::write(
            home.join("agents/assistant.toml"),
            "prompt = \"test\"\nprovider = \"model\"\ntools = [\"benign.*\", \"leak.*\"]\nmemory = 0\n",
        )
        .unwrap();
        std::fs::write(home.join("script.json"), script.to_string()).unwrap();
        let hostile = env!("CARGO_BIN_EXE_hostile");
        let model = if extra.contains("[plugins.model]") {
            ""
        } else {
            "[plugins.model]\nbuiltin = \"scripted\"\n\
             config = { script = \"script.json\", record = \"requests.jsonl\" }\n\n"
        };
        let config = format!(
            "[kernel]\nping_interval = \"1s\"\nping_timeout = \"2s\"\nrestart_limit = 2\n\
             tool_timeout = \"5s\"\n\n[hitl]\nconsole = \"{console}\"\n\n{model}\
             [plugins.benign]\npath = \"{hostile}\"\nargs = [\"benign\"]\n\
             sandbox = {{ class = \"tool\" }}\n\n{extra}"
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
fn blocked(attack: &str, extra: &[String]) -> (Kernel, Vec<Value>) {
    let p3ak = p3ak();
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
    (k, audit)
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
fn killed(attack: &str, kind: &str, signal: i64, extra: &[String]) -> Vec<Value> {
    let p3ak = p3ak();
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
    audit
}

/// An attack on the protocol: the kernel cuts the plugin off and audits why.
fn misbehaved(attack: &str, reason: &str) -> Vec<Value> {
    let p3ak = p3ak();
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
    audit
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_reading_the_vault_is_denied() {
    let (_, audit) = blocked("read_vault", &[]);
    assert!(
        denial_mentions(&audit, "kernel.vault") || denial_mentions(&audit, "memory.vault"),
        "{:?}",
        entries(&audit, "sandbox.denied")
    );
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_the_audit_log_is_out_of_reach() {
    let (k, audit) = blocked("audit_log", &[]);
    assert!(
        denial_mentions(&audit, "/audit"),
        "{:?}",
        entries(&audit, "sandbox.denied")
    );
    // And the log still verifies: nothing was appended behind the kernel's back.
    k.ok(&["audit", "verify"]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_another_plugins_socket_is_out_of_reach() {
    // Its one connection is inherited: creating a Unix socket at all is outside every tool
    // profile (and `EACCES` where a class may create network sockets).
    let audit = killed("other_socket", "sandbox.violation", 31, &[]);
    assert!(
        denial_mentions(&audit, "/run"),
        "{:?}",
        entries(&audit, "sandbox.denied")
    );
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_the_hitl_outbox_cannot_be_listed_or_written() {
    let (k, audit) = blocked("outbox", &[]);
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

#[test]
#[ignore = "needs root"]
fn invariant_i7_ptrace_of_the_kernel_kills_the_plugin() {
    killed("ptrace_kernel", "sandbox.violation", 31, &[]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_signalling_the_kernel_kills_the_plugin() {
    killed("signal_kernel", "sandbox.violation", 31, &[]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_the_kernels_environment_cannot_be_read() {
    blocked("kernel_environ", &[]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_exec_of_a_shell_is_denied() {
    let (_, audit) = blocked("exec_sh", &[]);
    // Landlock refused the exec, and the kernel audited the refusal.
    let hits = denied(&audit, "fs.execute");
    assert!(
        hits.iter()
            .any(|e| e["payload"]["detail"].as_str().unwrap().contains("/bin/")),
        "{:?}",
        entries(&audit, "sandbox.denied")
    );
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_tcp_without_network_kills_the_plugin() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    killed("tcp_connect", "sandbox.violation", 31, &[target]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_a_fork_bomb_kills_the_plugin() {
    killed("fork_bomb", "sandbox.violation", 31, &[]);
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_allocating_10_gib_fails() {
    let audit = killed("alloc_10g", "plugin.signal", 6, &[]);
    assert!(!audit.is_empty());
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_writing_outside_its_directory_is_denied() {
    let (k, audit) = blocked("write_outside", &[]);
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

#[test]
#[ignore = "needs root"]
fn invariant_i7_a_symlink_does_not_escape() {
    let p3ak = p3ak();
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
#[ignore = "needs root"]
fn invariant_i9_a_2_gib_frame_is_refused() {
    misbehaved("big_frame", "protocol violation");
}

#[test]
#[ignore = "needs root"]
fn invariant_i9_invalid_json_is_refused() {
    misbehaved("invalid_json", "protocol violation");
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_registering_as_another_plugin_is_refused() {
    misbehaved("impersonate", "said hello as `benign`");
}

#[test]
#[ignore = "needs root"]
fn invariant_i7_a_flood_of_frames_is_cut_off() {
    misbehaved("flood", "flooded the kernel");
}

#[test]
#[ignore = "needs root"]
fn invariant_i8_a_plugin_cannot_reach_the_approval_daemon() {
    let audit = killed("approve", "sandbox.violation", 31, &[]);
    assert!(
        denial_mentions(&audit, "hitl"),
        "{:?}",
        entries(&audit, "sandbox.denied")
    );
}

/// The kernel's own uid as root (`[hitl] ids`, second): what runs `p3ak kernel`.
const KERNEL_UID: u32 = 60991;

impl Kernel {
    /// `p3ak ARGS` as the kernel's uid, as a kernel taken over by an attacker could run it.
    fn as_kernel(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let program =
            p3ak_sandbox::Program::open(&self.p3ak, Some((KERNEL_UID, KERNEL_UID))).unwrap();
        let mut command = program.command();
        std::os::unix::process::CommandExt::uid(&mut command, KERNEL_UID);
        std::os::unix::process::CommandExt::gid(&mut command, KERNEL_UID);
        let mut child = command
            .args(args)
            .env_clear()
            .env("P3AK_HOME", self.home())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts a chat in the background and returns it with the id of the approval it waits on.
    #[expect(
        clippy::zombie_processes,
        reason = "the caller waits for the chat once it answered the approval"
    )]
    fn escalate(&self, message: &str) -> (std::process::Child, String) {
        let chat = self
            .cmd()
            .args(["chat", "-m", message])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            let pending: Value = serde_json::from_str(&self.ok(&["pending", "--json"])).unwrap();
            if let Some(item) = pending.as_array().unwrap().first() {
                return (chat, item["request"]["id"].as_str().unwrap().to_owned());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A POST to the console without a session: what the kernel could send, as it has no login.
fn console_post(port: u16, path: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
#[ignore = "needs root"]
fn invariant_i8_the_kernels_uid_cannot_approve_mint_a_link_or_read_a_factor() {
    let p3ak = p3ak();
    const PIN: &str = "4826193";
    // Three escalations of the same action, at levels 1, 2 and 3.
    let policy = "version: 1\nact:\n  benign.echo:\n    level: 1\n    timeout: 60s\n    rules:\n      \
                  - id: two\n        when: { args.text: { eq: two } }\n        level: 2\n      \
                  - id: three\n        when: { args.text: { eq: three } }\n        level: 3\n";
    let turn = |text: &str| json!({"content": "", "tool_calls": [{"name": "benign__echo", "arguments": {"text": text}}]});
    let script = json!({"responses": [
        turn("one"), {"content": "done"}, turn("two"), {"content": "done"},
        turn("three"), {"content": "done"},
    ]});
    let mut k = Kernel::with(p3ak, policy, &script, "127.0.0.1:0", "");
    k.up();
    let set = k
        .cmd()
        .args(["hitl", "pin", "set"])
        .stdin(Stdio::piped())
        .spawn();
    let mut set = set.unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), format!("{PIN}\n").as_bytes()).unwrap();
    assert!(set.wait().unwrap().success(), "{}", k.log());
    // The kernel runs under its own uid.
    let status: Value = serde_json::from_str(&k.ok(&["status", "--json"])).unwrap();
    let pid = status["pid"].as_u64().unwrap();
    let uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(uid, KERNEL_UID, "the kernel is not running as its own uid");

    let refused = |out: &std::process::Output, what: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} from the kernel's uid worked");
        assert!(stderr.contains("not an operator"), "{what}: {stderr}");
    };
    // Level 1: a yes.
    let (mut chat, id) = k.escalate("one");
    refused(&k.as_kernel(&["approve", &id], ""), "a level 1 yes");
    k.ok(&["deny", &id]);
    assert!(chat.wait().unwrap().success());
    // Level 2: the console. The kernel cannot mint a login link, and without a session the
    // console approves nothing.
    let (mut chat, id) = k.escalate("two");
    refused(&k.as_kernel(&["hitl", "login"], ""), "a console link");
    let link = k
        .log()
        .lines()
        .find_map(|l| l.split("works once): ").nth(1).map(str::to_owned))
        .expect("the warden printed the console link");
    let port: u16 = link
        .trim_start_matches("http://localhost:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let answer = console_post(port, "/approve", &format!("id={id}"));
    assert!(
        !answer.starts_with("HTTP/1.1 2"),
        "the console approved without a session: {answer}"
    );
    let pending: Value = serde_json::from_str(&k.ok(&["pending", "--json"])).unwrap();
    assert_eq!(pending[0]["request"]["id"], id.as_str(), "{pending}");
    k.ok(&["deny", &id]);
    assert!(chat.wait().unwrap().success());
    // Level 3: even with the right PIN.
    let (mut chat, id) = k.escalate("three");
    refused(
        &k.as_kernel(&["approve", &id, "--pin"], &format!("{PIN}\n")),
        "a level 3 PIN",
    );
    refused(
        &k.as_kernel(&["hitl", "totp", "enroll"], ""),
        "a TOTP enrolment",
    );
    refused(&k.as_kernel(&["pending"], ""), "the pending list");
    k.ok(&["deny", &id]);
    assert!(chat.wait().unwrap().success());
    // The factor store and its salt are the daemon's alone.
    for file in ["hitl/factors.sealed", "hitl/state.salt"] {
        let path = k.home().join(file);
        let mut cat = Command::new("/bin/cat");
        std::os::unix::process::CommandExt::uid(&mut cat, KERNEL_UID);
        std::os::unix::process::CommandExt::gid(&mut cat, KERNEL_UID);
        let out = cat.env_clear().arg(&path).output().unwrap();
        assert!(!out.status.success(), "the kernel's uid read {file}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(path.exists(), "{file} is missing");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o077, 0, "{file} is readable by others");
        assert_ne!(meta.uid(), KERNEL_UID, "{file} belongs to the kernel");
    }
    // Nothing ran: every echo was denied, so the model heard only that.
    let record = std::fs::read_to_string(k.home().join("requests.jsonl")).unwrap();
    assert!(!record.contains("\\\"echo\\\""), "{record}");
    assert!(record.contains("action not permitted"), "{record}");
    let audit = k.stop();
    let refusals: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "hitl.operator.refused")
        .collect();
    let requests: Vec<&str> = refusals
        .iter()
        .map(|e| {
            assert_eq!(e["payload"]["peer_uid"], KERNEL_UID, "{e}");
            e["payload"]["request"].as_str().unwrap()
        })
        .collect();
    // `totp enroll` (the only answer that carries a TOTP secret) is refused at its first
    // request, which asks what factors are set.
    for request in ["approve", "login", "factors", "pending"] {
        assert!(
            requests.contains(&request),
            "{request} not audited: {requests:?}"
        );
    }
    assert_eq!(
        requests.iter().filter(|r| **r == "approve").count(),
        2,
        "{requests:?}"
    );
    // The reads of the daemon's files were refused by their permissions, and reported.
    assert!(denials_audited(&audit), "denials are not audited here");
    assert!(
        audit.iter().any(|e| e["kind"] == "kernel.denied"
            && e["payload"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("factors.sealed"))),
        "{:?}",
        audit
            .iter()
            .filter(|e| e["kind"] == "kernel.denied")
            .collect::<Vec<_>>()
    );
}

/// Runs `p3ak secret set NAME`, the value on stdin.
fn set_secret(k: &Kernel, name: &str, value: &str, scopes: &[&str]) {
    let mut command = k.cmd();
    command.args(["secret", "set", name]);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{value}\n").as_bytes(),
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "{}", k.log());
}

/// The disguises `hostile leak` puts a secret in.
fn disguises(key: &str) -> Vec<String> {
    use data_encoding::{BASE32, BASE64};
    let utf16: Vec<u8> = key.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let base64 = BASE64.encode(key.as_bytes());
    vec![
        key.to_owned(),
        key.to_uppercase(),
        key.chars().map(String::from).collect::<Vec<_>>().join(" "),
        key.bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        BASE32.encode(key.as_bytes()),
        BASE64.encode(&utf16),
        key.chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect::<String>(),
        base64.clone(),
        base64.get(..6).unwrap().to_owned() + "\\n" + base64.get(6..12).unwrap(),
        // The two halves of a split, side by side in the JSON text.
        format!(
            "{}\",\"{}",
            key.get(..key.len() / 2).unwrap(),
            key.get(key.len() / 2..).unwrap()
        ),
    ]
}

#[test]
#[ignore = "needs root"]
fn invariant_i3_i4_a_hostile_model_and_tool_learn_nothing_and_leak_nothing() {
    let p3ak = p3ak();
    const MODEL_KEY: &str = "sk-redteam-9f8e7d6c5b4a3f2e";
    const TOOL_KEY: &str = "tk-leaky-7a6b5c4d3e2f1a0b";
    let hostile = env!("CARGO_BIN_EXE_hostile");
    // Both credentials may go to `leak`; only `api` exists: the broker refuses `unbound`.
    let policy = "version: 1\ncredentials:\n  api: [leak.*]\n  unbound: [leak.*]\n\
                  read:\n  leak.leak: { level: 0 }\n  benign.echo:\n    level: 0\n    \
                  rules:\n      - id: secret-rule-name\n        when: { args.text: { eq: forbidden } }\n        \
                  reject: true\n      - id: ask-a-human\n        when: { args.text: { eq: ask a human } }\n        \
                  level: 1\n        timeout: 2s\n";
    let extra = format!(
        "[plugins.model]\npath = \"{hostile}\"\nargs = [\"model\", \"probe\"]\n\
         credential = \"model_key\"\nsandbox = {{ class = \"tool\" }}\n\n\
         [plugins.leak]\npath = \"{hostile}\"\nargs = [\"leak\"]\nsandbox = {{ class = \"tool\" }}\n"
    );
    let mut k = Kernel::with(p3ak, policy, &json!({}), "off", &extra);
    set_secret(&k, "model_key", MODEL_KEY, &[]);
    set_secret(&k, "api", TOOL_KEY, &["leak.*"]);
    k.up();
    let out = k
        .cmd()
        .args(["chat", "-m", "show me everything"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}\n{}", k.log());
    let audit = k.stop();
    let audit_text = serde_json::to_string(&audit).unwrap();
    // I4: neither key, in any disguise, reached the person, the audit log or the kernel's log.
    for key in [MODEL_KEY, TOOL_KEY] {
        for form in disguises(key) {
            assert!(!said.contains(&form), "`{form}` reached the chat:\n{said}");
            assert!(
                !audit_text.contains(&form),
                "`{form}` reached the audit log"
            );
            assert!(
                !k.log().contains(&form),
                "`{form}` reached the kernel's log"
            );
        }
    }
    assert!(said.contains("[redacted]"), "{said}");
    // I3: the model heard the same four words for a rule's reject, an action it was never
    // offered, a human who did not answer, and a credential that does not exist.
    let reply = audit
        .iter()
        .rev()
        .find(|e| e["kind"] == "reply")
        .expect("a reply");
    let results: Vec<Value> =
        serde_json::from_str(reply["payload"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(results.len(), 5, "{results:?}");
    for n in [0, 1, 2, 4] {
        assert_eq!(
            results[n], "action not permitted",
            "result {n}: {results:?}"
        );
    }
    let leaked = results[3].as_str().unwrap();
    assert!(leaked.contains("[redacted]"), "{leaked}");
    let model_saw = reply["payload"]["text"].as_str().unwrap();
    for word in [
        "secret-rule-name",
        "ask-a-human",
        "escalat",
        "level",
        "credential",
        "unbound",
    ] {
        assert!(
            !model_saw.contains(word),
            "`{word}` reached the model: {model_saw}"
        );
    }
    // The operator sees it all.
    for rule in ["secret-rule-name", "ask-a-human", "kernel:not-offered"] {
        assert!(audit_text.contains(rule), "{rule} is not in the audit log");
    }
    assert!(
        audit.iter().any(|e| e["kind"] == "credential.refused"),
        "the unknown credential was not audited"
    );
}

#[test]
#[ignore = "needs root"]
fn invariant_i9_a_provider_streaming_without_end_is_cut_off_and_the_kernel_stays_small() {
    let p3ak = p3ak();
    let hostile = env!("CARGO_BIN_EXE_hostile");
    let extra = format!(
        "[plugins.model]\npath = \"{hostile}\"\nargs = [\"model\", \"stream_flood\"]\n\
         sandbox = {{ class = \"tool\" }}\n"
    );
    let mut k = Kernel::with(
        p3ak,
        "version: 1\nread:\n  benign.echo: { level: 0 }\n",
        &json!({}),
        "off",
        &extra,
    );
    k.up();
    let status: Value = serde_json::from_str(&k.ok(&["status", "--json"])).unwrap();
    let pid = status["pid"].as_u64().unwrap();
    let out = k.cmd().args(["chat", "-m", "talk"]).output().unwrap();
    assert!(!out.status.success(), "the flood was answered as a reply");
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!(
        "kernel peak RSS while a provider streamed: {} MiB",
        peak_kib / 1024
    );
    // 16 MiB of stream per request at most, a bounded queue for the live view.
    assert!(peak_kib < 256 * 1024, "the kernel grew to {peak_kib} KiB");
    let audit = k.stop();
    assert!(
        audit.iter().any(|e| e["kind"] == "plugin.misbehaved"
            && e["payload"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("streamed more than"))),
        "{:?}",
        audit.iter().map(|e| &e["kind"]).collect::<Vec<_>>()
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            out.push(path);
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn invariant_i6_nothing_the_kernel_keeps_is_plaintext_at_rest() {
    let p3ak = p3ak();
    const CANARY: &str = "launch code PLAINTEXT-CANARY-4711";
    const SECRET: &str = "sk-at-rest-5e4d3c2b1a09";
    let mut k = Kernel::new(p3ak, "benign", &[]);
    set_secret(&k, "api", SECRET, &[]);
    k.up();
    let reply = k.ok(&["chat", "-m", CANARY]);
    assert!(reply.contains("served"), "{reply}");
    drop(k.stop());
    // The kernel's vault (audit log, sessions, secrets), the memory vault, the daemon's files
    // and the spool: none holds the message, the tool's result or the secret in the clear. The
    // scripted model's own record file is the test's instrument, not the kernel's.
    let home = k.home();
    let mut scanned = 0;
    for file in files(&home) {
        let relative = file.strip_prefix(&home).unwrap();
        if relative.starts_with("plugins") || relative.starts_with("workspaces") {
            continue;
        }
        if relative == Path::new("requests.jsonl") || relative == Path::new("script.json") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for plain in [CANARY, SECRET, "still here"] {
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "`{plain}` lies in the clear in {}",
                relative.display()
            );
        }
        scanned += 1;
    }
    assert!(scanned >= 3, "only {scanned} files scanned");
}

#[test]
#[ignore = "needs root"]
fn invariant_i6_a_swapped_plaintext_vault_stops_the_kernel_and_stays_untouched() {
    let p3ak = p3ak();
    let k = Kernel::new(p3ak, "benign", &[]);
    for vault in ["audit/kernel.vault", "vaults/memory.vault"] {
        let path = k.home().join(vault);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let made = k
            .cmd()
            .args(["vault", "create", "--no-encrypt"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let plain = std::fs::read(&path).unwrap();
        let out = k.cmd().arg("up").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{vault}: the kernel started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not encrypted"), "{stderr}");
        assert_eq!(std::fs::read(&path).unwrap(), plain, "{vault} was written");
        std::fs::write(&path, saved).unwrap();
    }
}

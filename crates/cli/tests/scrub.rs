//! End-to-end tests of the scrubber and of credential host binding through a real kernel
//! (`p3ak init`, `p3ak up`, `p3ak secret set`, `p3ak chat`) with the scripted provider.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use p3ak_kernel::broker::Scrubber;

const PASS: &str = "scrub test passphrase";

/// The scripted provider's own API key, which it then streams back.
const KEY: &str = "sk-live-4f9a8b7c6d5e";

struct Kernel {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Kernel {
    /// A home set up by `p3ak init` with this policy, one agent `assistant` on the scripted
    /// provider `model` (whose credential is the secret `model`), the `http` tool, and this
    /// script.
    fn new(policy: &str, script: &serde_json::Value) -> Self {
        let k = Self {
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        let out = k.run(&["init"]);
        assert!(out.status.success(), "init: {}", stderr(&out));
        std::fs::write(k.home().join("policy.yaml"), policy).unwrap();
        std::fs::write(
            k.home().join("agents/assistant.toml"),
            "prompt = \"test agent\"\nprovider = \"model\"\ntools = [\"*\"]\nmemory = 0\n",
        )
        .unwrap();
        std::fs::write(
            k.home().join("script.json"),
            serde_json::to_vec(script).unwrap(),
        )
        .unwrap();
        std::fs::write(
            k.home().join("config.toml"),
            format!(
                "[kernel]\n{}ping_interval = \"1s\"\ntool_timeout = \"3s\"\n\n\
                 [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
                 [plugins.http]\nbuiltin = \"http\"\n\n\
                 [plugins.model]\nbuiltin = \"scripted\"\ncredential = \"model\"\n\
                 config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n",
                sandbox_setting()
            ),
        )
        .unwrap();
        k
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("p3ak").unwrap();
        cmd.env("P3AK_HOME", self.home())
            .env("P3AK_PASSPHRASE", PASS)
            .env_remove("P3AK_NEW_PASSPHRASE")
            .timeout(Duration::from_secs(120));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "p3ak {args:?} failed: {}\nkernel log:\n{}",
            stderr(&out),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `p3ak secret set NAME FLAGS…` with the value on stdin.
    fn set_secret(&self, name: &str, flags: &[&str], value: &str) {
        let out = self
            .cmd()
            .args(["secret", "set", name])
            .args(flags)
            .write_stdin(format!("{value}\n"))
            .output()
            .unwrap();
        assert!(out.status.success(), "secret set: {}", stderr(&out));
    }

    fn up(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("kernel.log")).unwrap();
        let child = StdCommand::new(assert_cmd::cargo::cargo_bin("p3ak"))
            .arg("up")
            .env("P3AK_HOME", self.home())
            .env("P3AK_PASSPHRASE", PASS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.home().join("run/control.sock");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the kernel did not come up:\n{}",
                self.log()
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the kernel exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kernel.log")).unwrap_or_default()
    }

    /// The requests the scripted provider received, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.home().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["audit", "tail", "-n", "100000", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = StdCommand::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// As root the plugins run fully sandboxed; without root, where they cannot get users of
/// their own, in degraded mode (these tests are about the scrubber, not the sandbox).
fn sandbox_setting() -> &'static str {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root { "" } else { "sandbox = \"degraded\"\n" }
}

/// Asserts that no form of [`KEY`] the scrubber knows, and none of the pieces it was streamed
/// in, is in `text`.
fn holds_no_form_of_the_key(what: &str, text: &str, pieces: &[&str]) {
    assert!(
        !Scrubber::new([KEY]).finds(text),
        "a form of the key reached the {what}:\n{text}"
    );
    let lower = text.to_lowercase();
    for piece in pieces {
        assert!(
            !lower.contains(&piece.to_lowercase()),
            "`{piece}` reached the {what}:\n{text}"
        );
    }
}

#[test]
fn invariant_i4_a_key_streamed_in_pieces_and_upper_cased_reaches_no_one() {
    // The provider streams its own key in two halves, then once upper-cased and cut
    // elsewhere; the next turn of the conversation carries the history back to it.
    let pieces = ["sk-live-4f", "9a8b7c6d5e", "SK-LIVE-4F9A8", "B7C6D5E"];
    let script = serde_json::json!({"responses": [
        {"chunks": [
            "Here is my key: sk-live-4f",
            "9a8b7c6d5e, and louder: SK-LIVE-4F9A8",
            "B7C6D5E. Done.",
        ]},
        {"chunks": ["Nothing ", "more."]},
    ]});
    let mut k = Kernel::new("version: 1\n", &script);
    k.up();
    k.set_secret("model", &["--scope", "model.inference"], KEY);

    let out = k.ok(&["chat", "-m", "what is your key?"]);
    assert_eq!(
        out, "Here is my key: [redacted], and louder: [redacted]. Done.\n",
        "what `p3ak chat` printed"
    );
    let json = k.ok(&["chat", "--json", "-m", "anything else?"]);
    holds_no_form_of_the_key("JSON chat output", &json, &pieces);

    // The session history, as the provider got it back on the second turn.
    let requests = k.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let history = serde_json::to_string(&requests[1]["messages"]).unwrap();
    assert!(history.contains("[redacted]"), "{history}");
    holds_no_form_of_the_key("session history", &history, &pieces);

    let audit = k.audit();
    assert!(
        audit.iter().any(|e| e["kind"] == "reply"
            && e["payload"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("[redacted]"))),
        "{audit:?}"
    );
    let audit = serde_json::to_string(&audit).unwrap();
    holds_no_form_of_the_key("audit log", &audit, &pieces);
    k.stop();
    holds_no_form_of_the_key("kernel log", &k.log(), &pieces);
}

/// A loopback service that records the `x-api-key` header of each request and answers 200.
fn key_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keys = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8).flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut key = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-api-key:") {
                    key = line[line.len() - v.len()..].trim().to_owned();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            keys.lock().unwrap().push(key);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (port, seen)
}

#[test]
fn invariant_i4_a_host_bound_credential_goes_only_to_its_hosts() {
    let (port, seen) = key_server();
    // The policy lets both loopback names through: the binding alone must stop the second.
    let policy = "version: 1
network:
  http.request:
    level: 0
    rules:
      - id: loopback-only
        when: { args.url: { host_not_in: ['127.0.0.1', 'localhost'] } }
        reject: true
credentials:
  api: [http.request]
";
    let call = |url: String| {
        serde_json::json!({"content": "", "tool_calls": [{"name": "http__request",
            "arguments": {"method": "POST", "url": url,
                "headers": {"x-api-key": {"$secret": "api"}}, "body": "hello"}}]})
    };
    let script = serde_json::json!({"responses": [
        call(format!("http://127.0.0.1:{port}/bound")),
        call(format!("http://localhost:{port}/elsewhere")),
        {"content": "done"},
    ]});
    let mut k = Kernel::new(policy, &script);
    k.up();
    k.set_secret("model", &[], "sk-model-unused-0000");
    k.set_secret(
        "api",
        &["--scope", "http.request", "--host", "127.0.0.1"],
        "sk-bound-7e6d5c4b3a29",
    );
    let list = k.ok(&["secret", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("api") && l.contains("http.request") && l.contains("127.0.0.1")),
        "{list}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&k.ok(&["secret", "list", "--json"])).unwrap();
    let api = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert_eq!(api["hosts"], serde_json::json!(["127.0.0.1"]), "{listed}");

    k.ok(&["chat", "-m", "call the api twice"]);
    let audit = k.audit();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["sk-bound-7e6d5c4b3a29"],
        "only the bound host got the key; audit: {audit:#?}"
    );
    let refused: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "credential.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{audit:?}");
    let error = refused[0]["payload"]["error"].as_str().unwrap();
    assert!(error.contains("localhost"), "{error}");
    // The model hears only that the action is not permitted (invariant I3).
    let results: Vec<String> = k.requests()[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results.last().unwrap(), "action not permitted");
}

//! A kernel started with `p3ak up` on a [`Home`], stopped with SIGTERM when dropped.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::home::{Home, p3ak_path, stderr};
use crate::need;

/// A [`Home`] and, once [`Kernel::up`], its running kernel (log in `kernel.log` beside the home).
pub struct Kernel {
    home: Home,
    child: Option<Child>,
}

impl Deref for Kernel {
    type Target = Home;

    fn deref(&self) -> &Home {
        &self.home
    }
}

/// The `[kernel]` line for tests about the kernel rather than the sandbox (the red team's
/// job): as root, plugins run fully sandboxed; without root, where they cannot get users of
/// their own, in degraded mode.
pub fn sandbox_setting() -> &'static str {
    if need::is_root() {
        ""
    } else {
        "sandbox = \"degraded\"\n"
    }
}

impl Kernel {
    pub fn new(home: Home) -> Self {
        Self { home, child: None }
    }

    /// `p3ak args…`, which must succeed (the kernel's log in the failure); its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "p3ak {args:?} failed: {}\nkernel log:\n{}",
            stderr(&out),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `p3ak up` and waits for its control socket.
    pub fn up(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(p3ak_path())
            .arg("up")
            .env("P3AK_HOME", self.home())
            .env("P3AK_PASSPHRASE", self.pass())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.home.home().join("run/control.sock");
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

    fn log_path(&self) -> PathBuf {
        self.home.path("kernel.log")
    }

    /// What the kernel wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The requests the scripted provider recorded in `requests.jsonl`, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.home().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The tool results in the provider's `n`th request.
    pub fn tool_results(&self, n: usize) -> Vec<String> {
        let requests = self.requests();
        requests[n]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The kernel's audit log, as JSON entries.
    pub fn audit(&self) -> Vec<Value> {
        let out = self.ok(&["audit", "tail", "-n", "100000", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The kinds of the audit log's entries, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.audit()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the approval daemon lists `n` pending items; returns them.
    pub fn wait_pending(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let items: Value = serde_json::from_str(&self.ok(&["pending", "--json"])).unwrap();
            let items = items.as_array().unwrap().clone();
            if items.len() >= n {
                return items;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing became pending:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// One plugin's entry in `p3ak status`.
    pub fn plugin_status(&self, name: &str) -> Value {
        self.status()["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    }

    /// SIGTERM, and the exit status once it has stopped cleanly (within 30 s).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the kernel is not running");
        term(&child);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no clean shutdown"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; nothing if it is not running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        term(&child);
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `p3ak args…` as it ran.
    pub fn run(&self, args: &[&str]) -> Output {
        self.home.run(args)
    }
}

fn term(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.kill();
    }
}

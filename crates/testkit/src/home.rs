//! A temporary directory with a P3AK home in it, and the `p3ak` binary run against it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;

/// A fresh temporary directory; the home is `home/` inside it unless set with
/// [`Home::with_home`]. Commands run in the directory with the home and passphrase in their
/// environment.
pub struct Home {
    dir: tempfile::TempDir,
    home: PathBuf,
    pass: String,
}

impl Home {
    /// A fresh directory; the home in it is not created.
    pub fn new(pass: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        Self {
            dir,
            home,
            pass: pass.to_owned(),
        }
    }

    /// A home set up by `p3ak init`.
    pub fn init(pass: &str) -> Self {
        let this = Self::new(pass);
        let out = this.run(&["init"]);
        assert!(out.status.success(), "init: {}", stderr(&out));
        this
    }

    /// Uses `home` (shared, say, for an installed model) instead of one in the directory.
    #[must_use]
    pub fn with_home(mut self, home: &Path) -> Self {
        home.clone_into(&mut self.home);
        self
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `P3AK_HOME`.
    pub fn home(&self) -> PathBuf {
        self.home.clone()
    }

    pub fn pass(&self) -> &str {
        &self.pass
    }

    /// `p3ak` in the directory, with `P3AK_HOME` and `P3AK_PASSPHRASE` set.
    pub fn cmd(&self) -> Command {
        let mut cmd = p3ak();
        cmd.current_dir(self.dir.path())
            .env("P3AK_HOME", &self.home)
            .env("P3AK_PASSPHRASE", &self.pass)
            .timeout(Duration::from_secs(300));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `p3ak args…` with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        self.cmd()
            .args(args)
            .write_stdin(input.to_owned())
            .output()
            .unwrap()
    }

    /// `p3ak args…`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "p3ak {args:?} failed: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `p3ak --json args…`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// A scripted setup: `policy.yaml`, one agent `assistant` on the provider `model` with every
    /// tool, and the provider's `script.json`.
    pub fn write_scripted(&self, policy: &str, script: &serde_json::Value) {
        std::fs::write(self.home.join("policy.yaml"), policy).unwrap();
        std::fs::write(
            self.home.join("agents/assistant.toml"),
            "prompt = \"test agent\"\nprovider = \"model\"\ntools = [\"*\"]\nmemory = 0\n",
        )
        .unwrap();
        std::fs::write(
            self.home.join("script.json"),
            serde_json::to_vec(script).unwrap(),
        )
        .unwrap();
    }

    /// `p3ak secret set NAME FLAGS…` with the value on stdin.
    pub fn set_secret(&self, name: &str, flags: &[&str], value: &str) {
        let out = self
            .cmd()
            .args(["secret", "set", name])
            .args(flags)
            .write_stdin(format!("{value}\n"))
            .output()
            .unwrap();
        assert!(out.status.success(), "secret set: {}", stderr(&out));
    }
}

/// The `p3ak` binary of this build, with no passphrase from the caller's environment.
pub fn p3ak() -> Command {
    let mut cmd = Command::new(p3ak_path());
    cmd.env_remove("P3AK_PASSPHRASE")
        .env_remove("P3AK_NEW_PASSPHRASE");
    cmd
}

/// Where the `p3ak` binary of this build is (beside the test binary's `deps/`).
pub fn p3ak_path() -> PathBuf {
    assert_cmd::cargo::cargo_bin("p3ak")
}

/// The step names of a demo's `--json` report, which must say `"ok": true`; the command must
/// have succeeded.
pub fn demo_steps(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", stderr(out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

//! Invariant I6 against a downgrade, end to end: a P3AK home's vaults are swapped for vaults
//! made with `p3ak vault create --no-encrypt` (what anyone who can write the directory can do).
//! `p3ak up`, `p3ak secret set`, `p3ak vault put` and `p3ak vault ingest` all refuse with one
//! line, and the swapped file is left byte for byte as it was: no secret, no document, no audit
//! entry is written in plaintext. A plaintext vault is used only with `--no-encrypt`.

#![cfg(test)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use p3ak_testkit::{Home, stderr};

const PASS: &str = "downgrade test passphrase";
const SECRET: &str = "the-secret-value-4f2a9c";
const DOCUMENT: &str = "the confidential document 7b31e0";

struct Downgrade(Home);

impl Deref for Downgrade {
    type Target = Home;

    fn deref(&self) -> &Home {
        &self.0
    }
}

impl Downgrade {
    /// A home set up by `p3ak init`; plugins in degraded mode when not root (as the kernel
    /// tests run them), though `up` must refuse before it starts any.
    fn new() -> Self {
        let this = Self(Home::init(PASS));
        if !p3ak_testkit::need::is_root() {
            let config = this.home().join("config.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains("# sandbox = \"enforce\""));
            let text = text.replace("# sandbox = \"enforce\"", "sandbox = \"degraded\"");
            std::fs::write(&config, text).unwrap();
        }
        this
    }

    fn kernel_vault(&self) -> PathBuf {
        self.home().join("audit/kernel.vault")
    }

    fn memory_vault(&self) -> PathBuf {
        self.home().join("vaults/memory.vault")
    }

    /// Replaces `target` with a vault made by `p3ak vault create --no-encrypt`.
    fn swap_for_plaintext(&self, target: &Path) {
        let plain = self.path("plain.vault");
        let out = self.run(&["vault", "create", plain.to_str().unwrap(), "--no-encrypt"]);
        assert!(out.status.success(), "create: {}", stderr(&out));
        std::fs::rename(&plain, target).unwrap();
        let _ = std::fs::remove_file(self.path("plain.vault.lock"));
    }

    /// Every file under the home, with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![self.home()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.is_file() {
                    files.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        files
    }
}

/// Exit 1, one `error:` line naming `path` as not encrypted.
fn assert_refused(out: &Output, path: &Path) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(&format!("`{}` is not encrypted", path.display())),
        "{err}"
    );
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn invariant_i6_secret_set_refuses_a_plaintext_kernel_vault() {
    let h = Downgrade::new();
    let vault = h.kernel_vault();
    h.swap_for_plaintext(&vault);
    let before = h.snapshot();

    let out = h
        .cmd()
        .args(["secret", "set", "api"])
        .write_stdin(format!("{SECRET}\n"))
        .output()
        .unwrap();
    assert_refused(&out, &vault);
    assert!(
        stderr(&out).contains("restore it from a backup"),
        "{}",
        stderr(&out)
    );
    let out = h.run(&["secret", "list"]);
    assert_refused(&out, &vault);

    let after = h.snapshot();
    assert_eq!(after, before, "something under the home was written");
    assert!(after.values().all(|bytes| !contains(bytes, SECRET)));
}

/// `p3ak up` refuses the plaintext vault at `vault` (as `which` picks it) and writes nothing.
fn up_refuses(which: fn(&Downgrade) -> PathBuf) {
    let h = Downgrade::new();
    let vault = which(&h);
    h.swap_for_plaintext(&vault);
    let before = std::fs::read(&vault).unwrap();

    let out = h
        .cmd()
        .arg("up")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_refused(&out, &vault);
    assert_eq!(
        std::fs::read(&vault).unwrap(),
        before,
        "the vault was written"
    );
    assert!(!h.home().join("run/control.sock").exists());
    assert!(!h.home().join("run/kernel.pid").exists());
}

#[test]
fn invariant_i6_up_refuses_a_plaintext_kernel_vault() {
    up_refuses(Downgrade::kernel_vault);
}

#[test]
fn invariant_i6_up_refuses_a_plaintext_memory_vault() {
    up_refuses(Downgrade::memory_vault);
}

#[test]
fn invariant_i6_vault_put_and_ingest_refuse_a_plaintext_memory_vault() {
    let h = Downgrade::new();
    let vault = h.memory_vault();
    let v = vault.to_str().unwrap().to_owned();
    h.swap_for_plaintext(&vault);
    let doc = h.path("note.md");
    std::fs::write(&doc, format!("# Note\n\n{DOCUMENT}\n")).unwrap();
    let pass_file = h.path("pass.txt");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    let before = h.snapshot();

    // The passphrase from the environment, from a file, or none at all: refused every way.
    let out = h.run(&["vault", "put", &v, "--text", DOCUMENT]);
    assert_refused(&out, &vault);
    assert!(stderr(&out).contains("--no-encrypt"), "says how to proceed");
    let out = h.run(&[
        "vault",
        "put",
        &v,
        "--text",
        DOCUMENT,
        "--passphrase-file",
        pass_file.to_str().unwrap(),
    ]);
    assert_refused(&out, &vault);
    let out = h
        .cmd()
        .env_remove("P3AK_PASSPHRASE")
        .args(["vault", "put", &v, "--text", DOCUMENT])
        .output()
        .unwrap();
    assert_refused(&out, &vault);
    let out = h.run(&["vault", "ingest", &v, doc.to_str().unwrap()]);
    assert_refused(&out, &vault);
    let out = h
        .cmd()
        .args(["vault", "ingest", &v, "-"])
        .write_stdin(DOCUMENT)
        .output()
        .unwrap();
    assert_refused(&out, &vault);

    let after = h.snapshot();
    assert_eq!(after, before, "something under the home was written");
    assert!(after.values().all(|bytes| !contains(bytes, DOCUMENT)));
}

/// Every command that opens a vault refuses a plaintext one without `--no-encrypt`, before
/// asking for a passphrase, and writes nothing; `info --header-only` reads only the header and
/// says `none`.
#[test]
fn invariant_i6_every_vault_command_refuses_a_plaintext_vault_without_no_encrypt() {
    let h = Home::new(PASS);
    let dir = h.dir();
    let vault = h.path("plain.vault");
    let v = vault.to_str().unwrap().to_owned();
    let p3ak = || {
        let mut cmd = h.cmd();
        cmd.env("P3AK_NEW_PASSPHRASE", "a new passphrase for rekey")
            .timeout(Duration::from_secs(60));
        cmd
    };
    let out = p3ak()
        .args(["vault", "create", &v, "--no-encrypt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p3ak()
        .args([
            "--json",
            "vault",
            "put",
            &v,
            "--text",
            "on purpose",
            "--no-encrypt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let put: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = put["id"].as_str().unwrap().to_owned();
    let import = dir.join("import");
    std::fs::create_dir(&import).unwrap();
    std::fs::write(import.join("a.txt"), "imported").unwrap();
    let note = dir.join("note.md");
    std::fs::write(&note, "# Note\n\nText.\n").unwrap();
    let _ = std::fs::remove_file(dir.join("plain.vault.lock"));
    let before = std::fs::read(&vault).unwrap();
    let export = dir.join("export");
    let commands: Vec<Vec<&str>> = vec![
        vec!["put", &v, "--text", "more"],
        vec!["get", &v, &id],
        vec!["list", &v],
        vec!["delete", &v, &id],
        vec!["info", &v],
        vec!["export", &v, export.to_str().unwrap()],
        vec!["import", &v, import.to_str().unwrap()],
        vec!["ingest", &v, note.to_str().unwrap()],
        vec!["search", &v, "text"],
        vec!["status", &v],
        vec!["embed", &v],
        vec!["reindex", &v],
        vec!["compact", &v],
        vec!["verify", &v],
        vec!["log", &v],
        vec!["rekey", &v],
    ];
    for args in &commands {
        let out = p3ak().arg("vault").args(args).output().unwrap();
        assert_refused(&out, &vault);
        assert_eq!(std::fs::read(&vault).unwrap(), before, "{args:?} wrote");
        assert!(!export.exists());
        let entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("plain.vault"))
            .collect();
        assert_eq!(entries, ["plain.vault"], "{args:?} left files");
    }

    let out = p3ak()
        .args(["--json", "vault", "info", &v, "--header-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["encryption"], "none");

    // With the flag, the operator's explicit choice, they work.
    for args in [
        vec!["get", &v, &id],
        vec!["list", &v],
        vec!["info", &v],
        vec!["verify", &v],
        vec!["compact", &v],
    ] {
        let out = p3ak()
            .arg("vault")
            .args(&args)
            .arg("--no-encrypt")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        if args[0] == "verify" {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("unencrypted"), "{stdout}");
        }
    }
    // Rekey has no passphrase to change: it says so.
    let out = p3ak()
        .args(["vault", "rekey", &v, "--no-encrypt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("export it and import it"),
        "{}",
        stderr(&out)
    );
}

/// The other direction: `--no-encrypt` does not open an encrypted vault.
#[test]
fn invariant_i6_no_encrypt_does_not_open_an_encrypted_vault() {
    let h = Home::new(PASS);
    let vault = h.path("enc.vault");
    let v = vault.to_str().unwrap().to_owned();
    let p3ak = || {
        let mut cmd = h.cmd();
        cmd.timeout(Duration::from_secs(60));
        cmd
    };
    let out = p3ak().args(["vault", "create", &v]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(&vault).unwrap();
    for args in [
        vec!["put", &v, "--text", "x", "--no-encrypt"],
        vec!["list", &v, "--no-encrypt"],
        vec!["rekey", &v, "--no-encrypt"],
    ] {
        let out = p3ak().arg("vault").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("`{v}` is encrypted: drop `--no-encrypt`")),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&vault).unwrap(), before);
}

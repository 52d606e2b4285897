//! End-to-end tests of `p3ak audit …` and `p3ak vault log`, driving the real binary.

#![cfg(test)]

use std::process::Output;

use assert_cmd::Command;

const PASS: &str = "kernel passphrase for tests";

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, pass: &str, args: &[&str]) -> Output {
        Command::cargo_bin("p3ak")
            .unwrap()
            .current_dir(self.dir.path())
            .env("P3AK_HOME", self.dir.path())
            .env("P3AK_PASSPHRASE", pass)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(PASS, args);
        assert!(out.status.success(), "p3ak {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("audit/kernel.vault")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails_with(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("error: "),
        "{err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn init_tail_checkpoint_prove_verify() {
    let home = Home::new();
    fails_with(
        &home.run(PASS, &["audit", "tail"]),
        "run `p3ak audit init` first",
    );
    home.ok(&["audit", "init"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.dir.path().join("audit"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(home.ok(&["audit", "tail"]).contains("vault.create"));
    let cp: serde_json::Value =
        serde_json::from_str(&home.ok(&["audit", "checkpoint", "--json"])).unwrap();
    assert_eq!(cp["size"], 1);
    assert_eq!(cp["public_key"].as_str().unwrap().len(), 64);
    assert!(home.ok(&["audit", "verify"]).starts_with("ok: 2 entries"));
    let proof: serde_json::Value =
        serde_json::from_str(&home.ok(&["audit", "prove", "0", "--json"])).unwrap();
    assert_eq!(proof["entry"]["kind"], "vault.create");
    assert_eq!(proof["tree_size"], 2);
    fails_with(&home.run(PASS, &["audit", "prove", "9"]), "no entry 9");
    let tail: serde_json::Value =
        serde_json::from_str(&home.ok(&["audit", "tail", "-n", "1", "--json"])).unwrap();
    assert_eq!(tail.as_array().unwrap().len(), 1);
    assert_eq!(tail[0]["kind"], "audit.checkpoint");
    assert!(
        tail[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator uid=")
    );
}

#[test]
fn an_older_checkpoint_file_is_detected() {
    let home = Home::new();
    home.ok(&["audit", "init"]);
    home.ok(&["audit", "checkpoint"]);
    let file = home.dir.path().join("audit/checkpoint.json");
    let older = std::fs::read(&file).unwrap();
    home.ok(&["audit", "checkpoint"]);
    std::fs::write(&file, older).unwrap();
    fails_with(
        &home.run(PASS, &["audit", "verify"]),
        "log entry 2 records publishing one that covers 2: the file was replaced by an older one",
    );
}

#[test]
fn a_cut_log_is_detected_against_the_checkpoint_file() {
    let home = Home::new();
    home.ok(&["audit", "init"]);
    let before = std::fs::read(home.log()).unwrap();
    home.ok(&["audit", "checkpoint"]);
    // Put the whole log file back as it was before the checkpoint: every record and the
    // header are consistent, only the external file knows better.
    std::fs::write(home.log(), before).unwrap();
    fails_with(
        &home.run(PASS, &["audit", "verify"]),
        "the log records no published checkpoint",
    );
}

#[test]
fn a_tampered_log_names_what_broke() {
    let home = Home::new();
    home.ok(&["audit", "init"]);
    home.ok(&["audit", "checkpoint"]);
    let mut bytes = std::fs::read(home.log()).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 0x20;
    std::fs::write(home.log(), bytes).unwrap();
    fails_with(
        &home.run(PASS, &["audit", "verify"]),
        "audit log is damaged: ",
    );
    let wrong = home.run("not the kernel passphrase", &["audit", "verify"]);
    fails_with(&wrong, "wrong passphrase or damaged header");
}

#[test]
fn invariant_i5_the_vault_log_records_what_was_done_to_it() {
    let home = Home::new();
    let v = home.dir.path().join("n.vault");
    let v = v.to_str().unwrap();
    home.ok(&["vault", "create", v]);
    let id = home.ok(&["vault", "put", v, "--text", "hello"]);
    home.ok(&["vault", "delete", v, id.trim()]);
    home.ok(&["vault", "put", v, "--text", "kept"]);
    fails_with(
        &home.run("wrong passphrase!", &["vault", "list", v]),
        "wrong passphrase",
    );
    home.ok(&["vault", "verify", v]);
    home.ok(&["vault", "export", v, "out"]);
    home.ok(&["vault", "compact", v]);
    let entries: serde_json::Value =
        serde_json::from_str(&home.ok(&["vault", "log", v, "--json"])).unwrap();
    let kinds: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "vault.create",
            "vault.put",
            "memory.index",
            "vault.delete",
            "vault.put",
            "memory.index",
            "vault.unlock_failed",
            "vault.verify",
            "vault.export",
            "vault.compact"
        ]
    );
    let text = home.ok(&["vault", "log", v, "-n", "2"]);
    assert_eq!(text.lines().count(), 2);
    assert!(
        home.ok(&["vault", "verify", v])
            .starts_with("ok: 1 documents")
    );
}

#[test]
fn invariant_i4_the_passphrase_never_appears_in_output_logs_or_files() {
    let home = Home::new();
    let v = home.dir.path().join("s.vault");
    let v = v.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["vault", "create", v],
        vec!["vault", "put", v, "--text", "content"],
        vec!["vault", "list", v, "--json"],
        vec!["vault", "verify", v],
        vec!["vault", "log", v, "--json"],
        vec!["audit", "init"],
        vec!["audit", "checkpoint", "--json"],
        vec!["audit", "tail", "--json"],
    ] {
        outputs.push(home.run(PASS, &args));
    }
    outputs.push(home.run("a wrong passphrase", &["vault", "list", v]));
    outputs.push(home.run("a wrong passphrase", &["audit", "verify"]));
    for out in &outputs {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(PASS), "passphrase printed: {text}");
            assert!(
                !text.contains("a wrong passphrase"),
                "passphrase printed: {text}"
            );
        }
    }
    let mut stack = vec![home.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                for secret in [PASS.as_bytes(), b"a wrong passphrase"] {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret),
                        "passphrase stored in `{}`",
                        path.display()
                    );
                }
            }
        }
    }
}

//! End-to-end tests of `p3ak vault …`, driving the real binary.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use base64::Engine;
use p3ak_testkit::{Home, stderr};

const PASS: &str = "correct horse battery staple";
const NEW_PASS: &str = "a completely different passphrase";

struct Env {
    home: Home,
}

impl Env {
    fn new() -> Self {
        Self {
            home: Home::new(PASS),
        }
    }

    fn dir(&self) -> &Path {
        self.home.dir()
    }

    fn vault(&self) -> PathBuf {
        self.home.path("notes.vault")
    }

    /// `p3ak <args>` with this passphrase (or none) in the environment.
    fn p3ak(&self, pass: Option<&str>) -> Command {
        let mut cmd = self.home.cmd();
        cmd.env_remove("P3AK_PASSPHRASE");
        if let Some(pass) = pass {
            cmd.env("P3AK_PASSPHRASE", pass);
        }
        cmd
    }

    fn run(&self, pass: Option<&str>, args: &[&str]) -> Output {
        self.p3ak(pass).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.home.ok(args)
    }

    fn create(&self) {
        self.ok(&["vault", "create", self.vault().to_str().unwrap()]);
    }

    fn v(&self) -> String {
        self.vault().to_str().unwrap().to_owned()
    }
}

/// The one-line error contract: exit 1, a single `error: ` line on stderr.
fn assert_fails_with(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(out));
    let err = stderr(out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "stderr: {err}");
    assert!(last.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn create_put_get_round_trip() {
    let env = Env::new();
    env.create();
    let v = env.v();
    let file = env.dir().join("letter.txt");
    std::fs::write(&file, "Dear Ada,\nthe engine works.\n").unwrap();
    let id = env.ok(&[
        "vault",
        "put",
        &v,
        file.to_str().unwrap(),
        "--tag",
        "kind=letter",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 32);
    assert_eq!(
        env.ok(&["vault", "get", &v, id]),
        "Dear Ada,\nthe engine works.\n"
    );
    assert_eq!(
        env.ok(&["vault", "get", &v, &id[..8]]),
        "Dear Ada,\nthe engine works.\n"
    );

    let id2 = env.ok(&[
        "vault",
        "put",
        &v,
        "--text",
        "a short note",
        "--title",
        "Note",
    ]);
    let out = env
        .p3ak(Some(PASS))
        .args(["vault", "put", &v, "-", "--title", "from stdin"])
        .write_stdin("piped bytes")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["vault", "list", &v, "--json"])).unwrap();
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["letter.txt", "Note", "from stdin"]);
    let filtered = env.ok(&["vault", "list", &v, "--tag", "kind=letter"]);
    assert_eq!(filtered.lines().count(), 1);
    assert!(filtered.contains("letter.txt"));
    assert!(
        env.ok(&["vault", "list", &v, "--match", "NOTE"])
            .contains(id2.trim())
    );

    let got: serde_json::Value =
        serde_json::from_str(&env.ok(&["vault", "get", &v, id2.trim(), "--json"])).unwrap();
    assert_eq!(got["content"], "a short note");
    assert_eq!(got["meta"]["title"], "Note");

    env.ok(&["vault", "delete", &v, id2.trim()]);
    let out = env.run(Some(PASS), &["vault", "get", &v, id2.trim()]);
    assert_fails_with(&out, "no document");

    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["vault", "info", &v, "--json"])).unwrap();
    assert_eq!(info["encryption"], "aes-256-gcm");
    assert_eq!(info["documents"], 2);
    assert_eq!(info["kdf"]["memory_kib"], 65536);
    assert_eq!(info["kdf"]["iterations"], 3);
    assert_eq!(info["kdf"]["parallelism"], 4);
    assert!(
        env.ok(&["vault", "verify", &v])
            .starts_with("ok: 2 documents")
    );
}

#[test]
fn wrong_passphrase_exits_1_with_the_documented_message() {
    let env = Env::new();
    env.create();
    let out = env.run(Some("not the passphrase"), &["vault", "list", &env.v()]);
    assert_fails_with(&out, "wrong passphrase or damaged header");
    let out = env.run(
        Some("not the passphrase"),
        &["vault", "list", &env.v(), "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"], "wrong passphrase or damaged header");
}

#[test]
fn passphrase_comes_from_a_file_the_environment_or_a_terminal_never_argv() {
    let env = Env::new();
    let pass_file = env.dir().join("pass.txt");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    let pf = pass_file.to_str().unwrap();
    let out = env.run(
        None,
        &["vault", "create", &env.v(), "--passphrase-file", pf],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The file (trailing newline dropped) and the environment give the same key.
    env.ok(&["vault", "list", &env.v()]);
    // No way to pass it on the command line.
    let out = env.run(None, &["vault", "list", &env.v(), "--passphrase", PASS]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing to ask and no terminal: a clear error, not a hang.
    let out = env.run(None, &["vault", "list", &env.v()]);
    assert_fails_with(&out, "no passphrase: set P3AK_PASSPHRASE");
    // New vaults refuse short passphrases.
    let out = env.run(Some("short"), &["vault", "create", "other.vault"]);
    assert_fails_with(&out, "passphrase too short");
}

#[test]
fn no_encrypt_sets_the_status_byte_and_info_prints_it() {
    let env = Env::new();
    let out = env.run(None, &["vault", "create", &env.v(), "--no-encrypt"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("UNENCRYPTED"));
    let bytes = std::fs::read(env.vault()).unwrap();
    assert_eq!(&bytes[..8], b"\x89P3AKV\r\n");
    assert_eq!(bytes[10], 0, "encryption-status byte");
    let out = env.run(None, &["vault", "info", &env.v(), "--header-only"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("encryption      none"));
    // Used as plaintext only when the operator says so again: the header does not decide.
    let out = env.run(None, &["vault", "put", &env.v(), "--text", "hello"]);
    assert_fails_with(&out, "is not encrypted");
    let out = env.run(
        None,
        &["vault", "put", &env.v(), "--text", "hello", "--no-encrypt"],
    );
    assert!(
        out.status.success(),
        "no passphrase needed: {}",
        stderr(&out)
    );

    // And an encrypted vault says so without a passphrase.
    let enc = Env::new();
    enc.create();
    let bytes = std::fs::read(enc.vault()).unwrap();
    assert_eq!(bytes[10], 1);
    let out = enc.run(
        None,
        &["vault", "info", &enc.v(), "--header-only", "--json"],
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["encryption"], "aes-256-gcm");
}

#[test]
fn rekey_old_passphrase_fails_new_one_works_documents_intact() {
    let env = Env::new();
    env.create();
    let v = env.v();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            env.ok(&[
                "vault",
                "put",
                &v,
                "--text",
                &format!("document number {i}"),
            ])
        })
        .collect();
    let out = env
        .p3ak(Some(PASS))
        .env("P3AK_NEW_PASSPHRASE", NEW_PASS)
        .args(["vault", "rekey", &v])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "list", &v]),
        "wrong passphrase or damaged header",
    );
    for (i, id) in ids.iter().enumerate() {
        let out = env.run(Some(NEW_PASS), &["vault", "get", &v, id.trim()]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("document number {i}")
        );
    }
    let out = env.run(Some(NEW_PASS), &["vault", "verify", &v]);
    assert!(out.status.success());
}

#[test]
fn second_writer_process_is_told_who_holds_the_lock() {
    let env = Env::new();
    env.create();
    let pass = p3ak_vault::Passphrase::new(PASS.into());
    let holder = p3ak_vault::Vault::open(
        &env.vault(),
        p3ak_vault::Unlock::Passphrase(&pass),
        p3ak_vault::Access::Write,
    )
    .unwrap();
    let out = env.run(Some(PASS), &["vault", "put", &env.v(), "--text", "blocked"]);
    assert_fails_with(
        &out,
        &format!("vault is locked by pid {}", std::process::id()),
    );
    // Readers still work.
    env.ok(&["vault", "list", &env.v()]);
    drop(holder);
    env.ok(&["vault", "put", &env.v(), "--text", "now it works"]);
}

#[test]
fn verify_names_the_first_bad_record() {
    let env = Env::new();
    env.create();
    let v = env.v();
    let first = env.ok(&["vault", "put", &v, "--text", "first"]);
    // A put is metadata, content, log entry, checkpoint (then the search index's own commit):
    // the second document's content is the record after its metadata.
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["vault", "info", &v, "--json"])).unwrap();
    let content_record = info["records"].as_u64().unwrap() + 1;
    let second = env.ok(&["vault", "put", &v, "--text", "second"]);
    let mut bytes = std::fs::read(env.vault()).unwrap();
    let mut at = 4096;
    for _ in 0..content_record {
        at += p3ak_vault::parse_record_header(&bytes[at..])
            .unwrap()
            .total_len() as usize;
    }
    bytes[at + 40] ^= 0x10;
    std::fs::write(env.vault(), &bytes).unwrap();
    let out = env.run(Some(PASS), &["vault", "verify", &v]);
    assert_fails_with(
        &out,
        &format!("vault is damaged: record {content_record} at byte {at}"),
    );
    assert!(stderr(&out).contains("failed authentication"));
    // The undamaged document is still readable, the damaged one says so.
    assert_eq!(env.ok(&["vault", "get", &v, first.trim()]), "first");
    let out = env.run(Some(PASS), &["vault", "get", &v, second.trim()]);
    assert_fails_with(&out, &format!("is damaged: record {content_record}"));
    // `compact` rebuilds the vault from what is intact and names what it dropped.
    let out = env.run(Some(PASS), &["vault", "compact", &v]);
    assert!(out.status.success());
    assert!(stderr(&out).contains(&format!("dropped damaged document {}", second.trim())));
    assert!(
        env.ok(&["vault", "verify", &v])
            .starts_with("ok: 1 documents")
    );
    env.ok(&["vault", "put", &v, "--text", "third"]);
}

#[test]
fn invariant_i9_bad_input_is_a_one_line_error_not_a_crash() {
    let env = Env::new();
    let junk = env.dir().join("junk.vault");
    std::fs::write(&junk, b"this is not a vault at all").unwrap();
    let junk = junk.to_str().unwrap();
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "list", junk]),
        "is not a p3ak vault",
    );
    let empty = env.dir().join("empty.vault");
    std::fs::write(&empty, b"").unwrap();
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "list", empty.to_str().unwrap()]),
        "is not a p3ak vault",
    );
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "list", "missing.vault"]),
        "cannot open",
    );
    env.create();
    let mut bytes = std::fs::read(env.vault()).unwrap();
    bytes[8] = 9; // format version
    let future = env.dir().join("future.vault");
    std::fs::write(&future, &bytes).unwrap();
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "info", future.to_str().unwrap()]),
        "uses vault format version 9",
    );
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "get", &env.v(), "xyz"]),
        "invalid document id",
    );
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "put", &env.v(), "no-such-file.txt"]),
        "cannot read `no-such-file.txt`",
    );
    let out = env.run(
        Some(PASS),
        &["vault", "put", &env.v(), "--text", "x", "--tag", "novalue"],
    );
    assert_eq!(out.status.code(), Some(1), "usage error");
    assert_fails_with(
        &env.run(Some(PASS), &["vault", "create", &env.v()]),
        "already exists",
    );
}

/// Every file under `root` (bounded), for plaintext scans.
fn files_under(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// The marker and the stable middle parts of its base64 encoding at each alignment.
fn needles(marker: &str) -> Vec<Vec<u8>> {
    let mut out = vec![marker.as_bytes().to_vec()];
    for pad in 0..3 {
        let mut input = vec![b'x'; pad];
        input.extend_from_slice(marker.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&input);
        out.push(encoded.as_bytes()[4..encoded.len() - 4].to_vec());
    }
    out
}

#[test]
fn invariant_i6_no_plaintext_at_rest() {
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let env = Env::new();
    env.create();
    let v = env.v();
    let marker = format!("P3AK-MARKER-{}-{}", std::process::id(), env.dir().display());
    let body = format!("top secret: {marker}\n").repeat(50);
    let file = std::env::temp_dir().join(format!("p3ak-i6-{}.txt", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let id = env.ok(&[
        "vault",
        "put",
        &v,
        file.to_str().unwrap(),
        "--title",
        &marker,
    ]);
    std::fs::remove_file(&file).unwrap();
    env.ok(&["vault", "put", &v, "--text", &format!("second {marker}")]);
    env.ok(&["vault", "delete", &v, id.trim()]);
    env.ok(&["vault", "compact", &v]);
    env.ok(&["vault", "verify", &v]);
    let out = env
        .p3ak(Some(PASS))
        .env("P3AK_NEW_PASSPHRASE", NEW_PASS)
        .args(["vault", "rekey", &v])
        .output()
        .unwrap();
    assert!(out.status.success());

    let mut files = Vec::new();
    files_under(env.dir(), &mut files);
    files_under(&std::env::temp_dir(), &mut files);
    assert!(files.iter().any(|f| f == &env.vault()));
    let needles = needles(&marker);
    for path in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        // A file last written before this test began cannot hold its marker.
        let fresh = meta.modified().is_ok_and(|m| m >= started);
        if meta.len() > 64 << 20 || !fresh {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "plaintext marker found in `{}`",
                path.display()
            );
        }
    }
}

#[test]
fn vault_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.create();
    env.ok(&["vault", "put", &env.v(), "--text", "x"]);
    let mode = std::fs::metadata(env.vault()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let lock = env.dir().join("notes.vault.lock");
    let mode = std::fs::metadata(lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn rekey_killed_at_random_moments_leaves_a_complete_vault() {
    let env = Env::new();
    let v = env.v();
    let src = env.dir().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..1500 {
        std::fs::write(
            src.join(format!("{i:04}.txt")),
            format!("file {i} ").repeat(400),
        )
        .unwrap();
    }
    env.create();
    env.ok(&["vault", "import", &v, src.to_str().unwrap()]);
    let bin = assert_cmd::cargo::cargo_bin("p3ak");
    for delay_ms in [30u64, 250, 420, 520, 620, 900] {
        let mut child = std::process::Command::new(&bin)
            .args(["vault", "rekey", &v])
            .env("P3AK_PASSPHRASE", PASS)
            .env("P3AK_NEW_PASSPHRASE", NEW_PASS)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no cleanup runs
        let _ = child.wait();
        // Whichever passphrase opens it, every document is there and authentic.
        let old = env.run(Some(PASS), &["vault", "verify", &v, "--json"]);
        let (pass, out) = if old.status.success() {
            (PASS, old)
        } else {
            (
                NEW_PASS,
                env.run(Some(NEW_PASS), &["vault", "verify", &v, "--json"]),
            )
        };
        assert!(
            out.status.success(),
            "after kill at {delay_ms} ms: {}",
            stderr(&out)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["documents"], 1500, "after kill at {delay_ms} ms");
        if pass == NEW_PASS {
            // Completed: rekey back so the next round starts from the old passphrase.
            let back = env
                .p3ak(Some(NEW_PASS))
                .env("P3AK_NEW_PASSPHRASE", PASS)
                .args(["vault", "rekey", &v])
                .output()
                .unwrap();
            assert!(back.status.success());
        }
    }
}

#[test]
fn the_demo_walks_every_step_and_says_so_in_json() {
    let env = Env::new();
    let out = env.run(None, &["vault", "demo", "--json"]);
    let steps = p3ak_testkit::demo_steps(&out);
    assert_eq!(
        steps,
        [
            "create", "put", "list", "get", "search", "scan", "rekey", "verify", "audit"
        ]
    );
}

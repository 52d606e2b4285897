//! A running kernel's policy and grants: `p3ak policy apply`, SIGHUP, and remembered
//! approvals (`p3ak approve --remember`, `p3ak policy grants`), end to end with `p3ak up`.

#![cfg(test)]

use std::path::Path;
use std::time::{Duration, Instant};

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};
use serde_json::{Value, json};

const PASS: &str = "policy live test passphrase";

const ALLOW: &str = "version: 1
read:
  files.read: { level: 0 }
write:
  files.write: { level: 0 }
";

const STRICT: &str = "version: 1
read:
  files.read: { level: 0 }
write:
  files.write: { level: 0 }
forbid:
  - id: no-writing
    actions: [files.write]
";

const ASK: &str = "version: 1
write:
  files.write: { level: 1, timeout: 30s, crawfish: 0s }
";

fn write(path: &str, content: &str) -> Value {
    json!({"content": "", "tool_calls": [
        {"name": "files__write", "arguments": {"path": path, "content": content}}
    ]})
}

fn say(text: &str) -> Value {
    json!({ "content": text })
}

/// A kernel whose model answers each chat with the next of `turns` (one write, then words).
fn kernel(policy: &str, writes: &[(&str, &str)]) -> Kernel {
    let home = Home::init(PASS);
    let responses: Vec<Value> = writes
        .iter()
        .flat_map(|(path, content)| [write(path, content), say("done")])
        .collect();
    home.write_scripted(policy, &json!({ "responses": responses }));
    let config = format!(
        "[kernel]\n{}tool_timeout = \"5s\"\n\n[hitl]\n\n\
         [plugins.files]\nbuiltin = \"files\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n",
        sandbox_setting()
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut k = Kernel::new(home);
    std::fs::create_dir_all(k.home().join("workspaces/assistant")).unwrap();
    k.up();
    k
}

fn written(k: &Kernel, name: &str) -> bool {
    k.home().join("workspaces/assistant").join(name).exists()
}

fn sha256_hex(text: &str) -> String {
    hex_encode(&p3ak_crypto::sha256(&[text.as_bytes()]))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the audit log holds an entry of `kind` with `source`; returns it.
fn wait_audit(k: &Kernel, kind: &str, source: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(entry) = k
            .audit()
            .into_iter()
            .find(|e| e["kind"] == kind && e["payload"]["source"] == source)
        {
            return entry;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no `{kind}` from {source}:\n{}",
            k.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hangup(k: &Kernel) {
    let pid = std::fs::read_to_string(k.home().join("run/kernel.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn policy_apply_makes_a_stricter_policy_decide_the_next_call() {
    let k = kernel(ALLOW, &[("one.txt", "1"), ("two.txt", "2")]);
    k.ok(&["chat", "-m", "write one"]);
    assert!(written(&k, "one.txt"));

    let dir = tempfile::tempdir().unwrap();
    let strict = file(dir.path(), "strict.yaml", STRICT);
    let out = k.ok(&["policy", "apply", &strict]);
    assert!(out.contains("applied"), "{out}");
    // The home's policy is the new one: a restart keeps it.
    assert_eq!(
        std::fs::read_to_string(k.home().join("policy.yaml")).unwrap(),
        STRICT
    );
    let applied = wait_audit(&k, "policy.applied", "cli");
    assert_eq!(applied["payload"]["sha256"], sha256_hex(STRICT));
    assert_eq!(applied["payload"]["rules"], 3);

    k.ok(&["chat", "-m", "write two"]);
    assert!(
        !written(&k, "two.txt"),
        "the stricter policy did not decide"
    );
}

#[test]
fn a_broken_policy_is_refused_with_its_line_and_the_old_one_still_decides() {
    let k = kernel(ALLOW, &[("one.txt", "1")]);
    let before = std::fs::read_to_string(k.home().join("policy.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = file(
        dir.path(),
        "broken.yaml",
        "version: 1\nwrite:\n  files.write: { level: 9 }\n",
    );
    let out = k.run(&["policy", "apply", &broken]);
    assert_eq!(out.status.code(), Some(1));
    let err = p3ak_testkit::stderr(&out);
    assert!(err.contains("broken.yaml:3:"), "{err}");
    assert_eq!(
        std::fs::read_to_string(k.home().join("policy.yaml")).unwrap(),
        before
    );
    k.ok(&["chat", "-m", "write one"]);
    assert!(written(&k, "one.txt"), "the old policy no longer decides");
    assert!(!k.kinds().contains(&"policy.applied".to_owned()));
}

#[test]
fn sighup_reloads_policy_yaml_and_keeps_the_old_one_when_it_is_broken() {
    let k = kernel(ALLOW, &[("one.txt", "1"), ("two.txt", "2")]);
    std::fs::write(k.home().join("policy.yaml"), STRICT).unwrap();
    hangup(&k);
    let applied = wait_audit(&k, "policy.applied", "sighup");
    assert_eq!(applied["payload"]["sha256"], sha256_hex(STRICT));
    k.ok(&["chat", "-m", "write one"]);
    assert!(!written(&k, "one.txt"));

    std::fs::write(k.home().join("policy.yaml"), "version: 1\nnonsense: [").unwrap();
    hangup(&k);
    wait_audit(&k, "policy.refused", "sighup");
    k.ok(&["chat", "-m", "write two"]);
    assert!(
        !written(&k, "two.txt"),
        "a broken reload dropped the policy"
    );
    assert!(
        k.ok(&["status"]).contains("assistant"),
        "the kernel stopped"
    );
}

/// Starts a chat that makes one escalated write; returns it and the pending id.
fn escalate(k: &Kernel) -> (std::thread::JoinHandle<std::process::Output>, String) {
    let mut chat = k.cmd();
    chat.args(["chat", "-m", "note it"])
        .timeout(Duration::from_secs(60));
    let handle = std::thread::spawn(move || chat.output().unwrap());
    let pending = k.wait_pending(1);
    let id = pending[0]["request"]["id"].as_str().unwrap().to_owned();
    (handle, id)
}

#[test]
fn a_remembered_approval_is_listed_and_revoked_and_only_for_arguments_the_call_has() {
    let k = kernel(ASK, &[("note.txt", "buy milk")]);
    let (chat, id) = escalate(&k);
    let wrong = k.run(&["approve", &id, "--remember", "recipient"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        p3ak_testkit::stderr(&wrong).contains("no argument `recipient`"),
        "{}",
        p3ak_testkit::stderr(&wrong)
    );
    let out = k.ok(&["approve", &id, "--remember", "path", "--for", "7d"]);
    assert!(out.contains("remembered for 7 days"), "{out}");
    assert!(chat.join().unwrap().status.success());
    assert!(written(&k, "note.txt"));

    let listed: Value = serde_json::from_str(&k.ok(&["policy", "grants", "--json"])).unwrap();
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{listed}");
    let grant = &grants[0];
    assert_eq!(grant["action"], "files.write");
    assert_eq!(grant["args"], json!({"path": "note.txt"}));
    assert_eq!(grant["level"], 1);
    assert_eq!(grant["approval"], id.as_str());
    let days =
        (grant["expires_at"].as_i64().unwrap() - grant["created_at"].as_i64().unwrap()) / 86_400;
    assert_eq!(days, 7);
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert!(k.ok(&["policy", "grants"]).contains(&grant_id));

    k.ok(&["policy", "grants", "revoke", &grant_id]);
    let listed: Value = serde_json::from_str(&k.ok(&["policy", "grants", "--json"])).unwrap();
    assert!(listed["grants"].as_array().unwrap().is_empty());
    assert_eq!(
        k.run(&["policy", "grants", "revoke", &grant_id])
            .status
            .code(),
        Some(1)
    );
    let kinds = k.kinds();
    assert!(kinds.contains(&"grant.created".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"grant.revoked".to_owned()), "{kinds:?}");
}

#[test]
fn level_five_is_never_remembered() {
    let k = kernel(
        "version: 1\nwrite:\n  files.write: { level: 5, timeout: 30s }\n",
        &[("pay.txt", "1")],
    );
    let (_chat, id) = escalate(&k);
    let out = k.run(&["approve", &id, "--remember", "path"]);
    assert_eq!(out.status.code(), Some(1));
    let err = p3ak_testkit::stderr(&out);
    assert!(err.contains("cannot be remembered"), "{err}");
    k.ok(&["deny", &id]);
}

#[test]
fn after_remember_the_same_call_runs_without_asking_and_another_path_still_asks() {
    let k = kernel(
        ASK,
        &[
            ("note.txt", "buy milk"),
            ("note.txt", "buy bread"),
            ("other.txt", "x"),
        ],
    );
    let (chat, id) = escalate(&k);
    k.ok(&["approve", &id, "--remember", "path", "--for", "1d"]);
    assert!(chat.join().unwrap().status.success());
    // The same path: no approval.
    k.ok(&["chat", "-m", "again"]);
    assert_eq!(
        std::fs::read_to_string(k.home().join("workspaces/assistant/note.txt")).unwrap(),
        "buy bread"
    );
    // Another path still waits for a human.
    let (_chat, other) = escalate(&k);
    k.ok(&["deny", &other]);
    assert!(!written(&k, "other.txt"));
}

fn explain_with_grant(to: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let policy = file(
        dir.path(),
        "policy.yaml",
        "version: 1\nsend:\n  mail.send: { level: 2 }\n",
    );
    let context = json!({"grants": [
        {"id": "g-1", "action": "mail.send", "args": {"to": "bob@example.com"}, "level": 2}
    ]});
    p3ak_testkit::home::p3ak()
        .args(["policy", "explain", &policy, "--agent", "assistant"])
        .args(["--action", "mail.send"])
        .args(["--args", &json!({"to": to, "body": "hi"}).to_string()])
        .args(["--context", &context.to_string()])
        .output()
        .unwrap()
}

#[test]
fn explain_takes_grants_in_its_context() {
    let out = explain_with_grant("eve@example.com");
    assert!(out.status.success(), "{}", p3ak_testkit::stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("escalate to level 2"), "{text}");
    assert!(!text.contains("grant `g-1`"), "{text}");
}

#[test]
fn explain_shows_the_grant_that_applies() {
    let out = explain_with_grant("bob@example.com");
    assert!(out.status.success(), "{}", p3ak_testkit::stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("decision: allow"), "{text}");
    assert!(text.contains("grant `g-1`"), "{text}");
}

#[test]
fn an_approval_waiting_across_policy_apply_keeps_the_verdict_it_was_decided_under() {
    let k = kernel(ASK, &[("note.txt", "buy milk")]);
    let (chat, id) = escalate(&k);
    let dir = tempfile::tempdir().unwrap();
    let strict = file(dir.path(), "strict.yaml", STRICT);
    k.ok(&["policy", "apply", &strict]);
    k.ok(&["approve", &id]);
    assert!(chat.join().unwrap().status.success());
    assert!(
        written(&k, "note.txt"),
        "the approved call was decided again"
    );
}

//! End-to-end tests of the kernel's connector routing: `p3ak up` with the scripted provider and
//! a connector plugin (`tests/plugins/chatroom.py`, whose "platform" is a folder), through the
//! kernel's pairing, commands, deduplication, limits and streamed replies.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

const PASS: &str = "connector test passphrase";

struct Room {
    kernel: Kernel,
    dir: PathBuf,
    next: u32,
}

/// A kernel whose agent `assistant` answers with `replies` (one per turn), and a chat room
/// connector `room` bound to it, with `[connectors]` settings `limits`.
fn room(replies: &[&str], limits: &str) -> Room {
    need::python3();
    let home = Home::init(PASS);
    let script = json!({
        "responses": replies.iter().map(|r| json!({"content": r})).collect::<Vec<_>>()
    });
    home.write_scripted("version: 1\n", &script);
    let scripts = home.path("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/chatroom.py");
    let plugin = scripts.join("chatroom.py");
    std::fs::copy(&source, &plugin).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = home.path("room");
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    for d in [dir.clone(), dir.join("inbox")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let config = format!(
        "[kernel]\n{}ping_interval = \"1s\"\nping_timeout = \"2s\"\n\n\
         [hitl]\nconsole = \"off\"\n\n\
         [connectors]\n{limits}\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
         [plugins.room]\npath = \"{}\"\nagent = \"assistant\"\n\
         config = {{ dir = \"{}\" }}\n\
         [plugins.room.sandbox]\nwrite = [\"{}\"]\n",
        sandbox_setting(),
        plugin.display(),
        dir.display(),
        dir.display(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    Room {
        kernel,
        dir,
        next: 0,
    }
}

impl Room {
    /// A person writes (the fields of an `inbound`); returns the connector's file name.
    fn say(&mut self, fields: Value) -> String {
        self.next += 1;
        let name = format!("{:04}.json", self.next);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, fields.to_string()).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.join("inbox").join(&name)).unwrap();
        name
    }

    fn direct(&mut self, user: &str, text: &str, id: &str) -> Value {
        let name = self.say(json!({
            "conversation": format!("room:{user}"), "sender": format!("room:{user}"),
            "text": text, "message_id": id, "direct": true, "sender_name": "Ann",
        }));
        self.answer(&name)
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The kernel's answer to the message in `file`.
    fn answer(&self, file: &str) -> Value {
        let started = Instant::now();
        loop {
            if let Some(a) = self
                .lines("answers.jsonl")
                .into_iter()
                .find(|a| a["file"] == file)
            {
                return a["answer"].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no answer to {file}:\n{}",
                self.kernel.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Waits for a posted (non-partial) message containing `text`.
    fn wait_sent(&self, text: &str) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let sent = self.lines("sent.jsonl");
            if sent
                .iter()
                .any(|m| m["text"].as_str().unwrap_or("").contains(text) && m["partial"] != true)
            {
                return sent;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "`{text}` never posted: {sent:?}\n{}",
                self.kernel.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Pairs whoever was shown the newest code.
    fn pair_newest(&self) -> String {
        let sent = self.wait_sent("p3ak connectors pair");
        let prompt = sent
            .iter()
            .rev()
            .find_map(|m| {
                m["text"]
                    .as_str()
                    .filter(|t| t.contains("p3ak connectors pair"))
            })
            .unwrap();
        let code = prompt.rsplit(' ').next().unwrap().trim().to_owned();
        self.kernel
            .ok(&["connectors", "pair", &code, "--no-approve"])
    }
}

#[test]
#[ignore = "needs python3"]
fn a_stranger_gets_only_a_pairing_code_and_once_paired_gets_streamed_replies() {
    let mut room = room(&["Hello Ann, here is the answer."], "");
    let answer = room.direct("7", "hi, who are you?", "m1");
    assert_eq!(answer["type"], "result", "{answer}");
    let sent = room.wait_sent("p3ak connectors pair");
    assert_eq!(sent.len(), 1, "only the pairing prompt: {sent:?}");
    assert_eq!(sent[0]["conversation"], "room:7");
    assert!(
        room.kernel.requests().is_empty(),
        "no model saw a stranger's message"
    );
    // Writing again while the code is valid gets nothing more.
    room.direct("7", "hello??", "m2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(room.lines("sent.jsonl").len(), 1);
    assert!(
        room.kernel
            .kinds()
            .iter()
            .any(|k| k == "connector.stranger")
    );

    let paired = room.pair_newest();
    assert!(paired.contains("paired room:7 (Ann)"), "{paired}");
    let status: Value =
        serde_json::from_str(&room.kernel.ok(&["--json", "connectors", "status"])).unwrap();
    assert_eq!(status["paired"][0]["identity"], "room:7", "{status}");
    assert_eq!(status["connectors"][0]["name"], "room");

    room.direct("7", "what is the answer?", "m3");
    let sent = room.wait_sent("Hello Ann, here is the answer.");
    let requests = room.kernel.requests();
    assert_eq!(requests.len(), 1, "one turn");
    assert!(requests[0].to_string().contains("what is the answer?"));
    assert!(sent.iter().all(|m| m["conversation"] == "room:7"));
    let audit = room.kernel.audit();
    let inbound = audit.iter().find(|e| e["kind"] == "inbound").unwrap();
    assert_eq!(inbound["payload"]["channel"], "room", "{inbound}");
    assert_eq!(inbound["payload"]["sender"], "room:7");
    assert_eq!(inbound["payload"]["message_id"], "m3");
}

#[test]
#[ignore = "needs python3"]
fn a_redelivered_message_is_taken_once_even_across_a_restart() {
    let mut room = room(&["first", "second"], "");
    room.direct("7", "hi", "m1");
    room.pair_newest();
    room.direct("7", "question", "q1");
    room.wait_sent("first");
    let again = room.direct("7", "question", "q1");
    assert_eq!(again["output"]["duplicate"], true, "{again}");
    room.kernel.stop();
    room.kernel.up();
    let after = room.direct("7", "question", "q1");
    assert_eq!(after["output"]["duplicate"], true, "{after}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(room.kernel.requests().len(), 1, "one turn for one message");
}

#[test]
#[ignore = "needs python3"]
fn commands_are_answered_by_the_kernel_and_never_reach_a_model() {
    let mut room = room(&["model answer"], "burst = 20");
    room.direct("7", "hi", "m1");
    room.pair_newest();
    room.direct("7", "/agents", "c1");
    room.wait_sent("assistant (here)");
    room.direct("7", "/approve 3f9a1c0b", "c2");
    room.wait_sent("Unknown command /approve");
    room.direct("7", "/agent nobody", "c3");
    room.wait_sent("No agent `nobody`");
    room.direct("7", "/stop", "c4");
    room.wait_sent("Nothing is running.");
    assert!(
        room.kernel.requests().is_empty(),
        "commands never reach the model"
    );
    // A command inside a message is text for the agent, not a command.
    room.direct("7", "please /stop and approve everything", "t1");
    room.wait_sent("model answer");
    assert_eq!(room.kernel.requests().len(), 1);
    let commands: Vec<Value> = room
        .kernel
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "connector.command")
        .collect();
    assert_eq!(commands.len(), 4, "{commands:?}");
}

#[test]
#[ignore = "needs python3"]
fn a_connector_cannot_speak_for_another_platform_and_limits_hold() {
    let mut room = room(&["ok"], "per_minute = 1\nburst = 1\nmax_message_bytes = 64");
    let name = room.say(json!({
        "conversation": "telegram:7", "sender": "telegram:7", "text": "hi", "direct": true,
    }));
    let answer = room.answer(&name);
    assert_eq!(answer["kind"], "invalid", "{answer}");
    let answer = room.direct("8", &"x".repeat(65), "big");
    assert_eq!(answer["kind"], "invalid", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("over the limit")
    );
    room.direct("8", "one", "r1");
    let limited = room.direct("8", "two", "r2");
    assert_eq!(limited["kind"], "rate_limited", "{limited}");
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 1000);
    let refused: Vec<Value> = room
        .kernel
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "connector.refused")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    // A stranger in a group is not prompted.
    let name = room.say(json!({
        "conversation": "room:group1", "sender": "room:9", "text": "hey bot",
    }));
    room.answer(&name);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !room
            .lines("sent.jsonl")
            .iter()
            .any(|m| m["conversation"] == "room:group1"),
        "no prompt in a group"
    );
}

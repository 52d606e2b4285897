//! The example Python plugins speak the protocol: this test plays the kernel's side of a whole
//! session with each over a real Unix socket. `examples/plugins/wordcount.py` does it by hand
//! with the standard library; `wordcount_sdk.py` is the same plugin written with the Python
//! SDK's helper (`p3ak.plugin`, pure Python, found through `PYTHONPATH` in the SDK's sources).

#![cfg(test)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{
    DEFAULT_MAX_FRAME, Envelope, ErrorKind, ErrorMessage, Invoke, Message, Ping, PluginKind,
    Registered, Shutdown, Tier, ToolResult, Welcome,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The two variants of the example, which must behave the same.
const PLUGINS: [&str; 2] = ["wordcount.py", "wordcount_sdk.py"];

fn plugin_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .join(file)
}

/// Where `import p3ak.plugin` finds the SDK's pure-Python sources.
fn sdk_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/python")
}

/// Kills the plugin if the test fails half-way.
struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Plugin {
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }

    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < TIMEOUT, "the plugin did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Kernel {
    stream: UnixStream,
}

impl Kernel {
    fn send(&mut self, id: u64, message: Message) {
        write_message(
            &mut self.stream,
            &Envelope::new(id, message),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
    }

    fn receive(&mut self) -> Envelope {
        read_message(&mut self.stream, DEFAULT_MAX_FRAME)
            .unwrap()
            .expect("a message, not the end of the stream")
    }

    /// Sends a request and returns the answer, which must repeat its id.
    fn request(&mut self, id: u64, message: Message) -> Message {
        self.send(id, message);
        let answer = self.receive();
        assert_eq!(answer.id, id, "a reply repeats the request's id");
        answer.message
    }

    fn invoke(&mut self, id: u64, action: &str, args: Value) -> Message {
        self.request(
            id,
            Message::Invoke(Invoke {
                agent: "amber".to_owned(),
                action: action.to_owned(),
                args,
                deadline_ms: Some(5000),
            }),
        )
    }
}

#[test]
fn the_file_can_be_run_directly() {
    for file in PLUGINS {
        let path = plugin_path(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/usr/bin/env python3\n"),
            "{file}: a shebang"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o111,
            0,
            "{file}: the executable bit (the kernel runs the file itself)"
        );
    }
}

#[test]
#[ignore = "needs python3"]
fn wordcount_plugin_speaks_the_protocol() {
    for file in PLUGINS {
        speaks_the_protocol(file);
    }
}

fn speaks_the_protocol(file: &str) {
    let (_dir, mut plugin, mut kernel) = start(file, "wordcount", DEFAULT_MAX_FRAME);

    // hello → welcome
    let hello = kernel.receive();
    let Message::Hello(h) = &hello.message else {
        panic!("expected hello, got {hello:?}");
    };
    assert_eq!(h.plugin, "wordcount");
    let version = p3ak_proto::negotiate(&h.versions).expect("a common version");
    kernel.send(
        hello.id,
        Message::Welcome(Welcome {
            version,
            config: json!({}),
            key: None,
        }),
    );

    // register → registered
    let register = kernel.receive();
    let Message::Register(r) = &register.message else {
        panic!("expected register, got {register:?}");
    };
    assert_ne!(register.id, hello.id, "each request has a fresh id");
    assert_eq!(r.kind, PluginKind::Tool);
    let tiers: Vec<(&str, Tier)> = r
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.tier))
        .collect();
    assert_eq!(tiers, [("count", Tier::Observe), ("shout", Tier::Act)]);
    let count_schema = jsonschema::validator_for(&r.actions[0].parameters).unwrap();
    assert!(count_schema.is_valid(&json!({"text": "x"})));
    assert!(!count_schema.is_valid(&json!({"text": 1})));
    kernel.send(register.id, Message::Registered(Registered {}));

    // Both actions.
    let text = "one two\nthree \u{e9}t\u{e9}";
    let words = text.split_whitespace().count();
    let lines = text.lines().count();
    let chars = text.chars().count();
    assert_eq!(
        kernel.invoke(100, "count", json!({ "text": text })),
        Message::Result(ToolResult {
            output: json!({"words": words, "lines": lines, "chars": chars})
        })
    );
    assert_eq!(
        kernel.invoke(101, "shout", json!({"text": "quiet \u{e9}"})),
        Message::Result(ToolResult {
            output: json!({"text": "QUIET \u{c9}"})
        })
    );

    // What it cannot serve is `invalid`, and the connection goes on.
    for (id, action, args) in [
        (102, "whisper", json!({"text": "x"})),
        (103, "count", json!({"txt": "x"})),
        (104, "count", json!({"text": 7})),
        (105, "shout", json!("not an object")),
    ] {
        match kernel.invoke(id, action, args) {
            Message::Error(ErrorMessage {
                kind: ErrorKind::Invalid,
                retry_after_ms: None,
                ..
            }) => {}
            other => panic!("{file} {action}: expected an invalid error, got {other:?}"),
        }
    }

    // Liveness.
    assert!(matches!(
        kernel.request(106, Message::Ping(Ping {})),
        Message::Pong(_)
    ));

    // Shutdown: the plugin closes its end and exits 0.
    kernel.send(107, Message::Shutdown(Shutdown {}));
    assert!(
        read_message(&mut kernel.stream, DEFAULT_MAX_FRAME)
            .unwrap()
            .is_none(),
        "nothing after shutdown"
    );
    let status = plugin.wait();
    assert!(
        status.success(),
        "{file}: exit {status}: {}",
        plugin.stderr()
    );
}

/// Starts the plugin `file` as `name` with a frame limit, and accepts its connection.
fn start(file: &str, name: &str, max_frame: usize) -> (tempfile::TempDir, Plugin, Kernel) {
    p3ak_testkit::need::python3();
    let dir = tempfile::tempdir().unwrap();
    let (stream, theirs) = UnixStream::pair().unwrap();
    let plugin = Plugin(
        Command::new("python3")
            .arg(plugin_path(file))
            // As the kernel does: an empty environment but for these (and the SDK's sources,
            // which an operator would have installed).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PYTHONPATH", sdk_source())
            .env("P3AK_PLUGIN_NAME", name)
            .env("P3AK_MAX_FRAME", max_frame.to_string())
            // Its connection to the kernel, as the kernel hands it over.
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    (dir, plugin, Kernel { stream })
}

#[test]
#[ignore = "needs python3"]
fn wordcount_plugin_exits_when_the_kernel_goes_away() {
    for file in PLUGINS {
        exits_when_the_kernel_goes_away(file);
    }
}

fn exits_when_the_kernel_goes_away(file: &str) {
    let (_dir, mut plugin, mut kernel) = start(file, "wc", 4096);
    let hello = kernel.receive();
    assert!(matches!(&hello.message, Message::Hello(h) if h.plugin == "wc"));
    kernel.send(
        hello.id,
        Message::Welcome(Welcome {
            version: 1,
            config: Value::Null,
            key: None,
        }),
    );
    let register = kernel.receive();
    assert!(matches!(register.message, Message::Register(_)));
    kernel.send(register.id, Message::Registered(Registered {}));
    // End of stream instead of shutdown: a clean exit too.
    drop(kernel);
    let status = plugin.wait();
    assert!(
        status.success(),
        "{file}: exit {status}: {}",
        plugin.stderr()
    );
}

#[test]
#[ignore = "needs python3"]
fn wordcount_plugin_gives_up_without_a_common_version() {
    for file in PLUGINS {
        gives_up_without_a_common_version(file);
    }
}

fn gives_up_without_a_common_version(file: &str) {
    let (_dir, mut plugin, mut kernel) = start(file, "wc", 4096);
    let hello = kernel.receive();
    kernel.send(
        hello.id,
        Message::Error(ErrorMessage {
            kind: ErrorKind::Invalid,
            message: "no common protocol version".to_owned(),
            retry_after_ms: None,
        }),
    );
    drop(kernel);
    let status = plugin.wait();
    assert!(
        !status.success(),
        "{file}: a failed handshake is a failure exit"
    );
    let stderr = plugin.stderr();
    assert!(stderr.contains("expected welcome"), "{file}: {stderr}");
}

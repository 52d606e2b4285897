//! MCP servers for the `mcp` bridge's tests: the reference server `server-everything` (stdio,
//! or streamable HTTP on a free loopback port) and a Python MCP SDK server that records every
//! call it receives.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::need;

/// The recording server's source.
pub const RECORDER_PY: &str = include_str!("mcp_recorder.py");

/// The command that runs server-everything over stdio (fails the test when it is missing).
pub fn everything_stdio() -> Vec<String> {
    let entry = need::mcp_everything();
    vec![
        "node".to_owned(),
        entry.display().to_string(),
        "stdio".to_owned(),
    ]
}

/// The directory server-everything is installed in (for a sandbox's `read`).
pub fn everything_dir() -> PathBuf {
    let entry = need::mcp_everything();
    // …/node_modules/@modelcontextprotocol/server-everything/dist/index.js → …/node_modules
    entry.ancestors().nth(4).unwrap().to_owned()
}

/// server-everything's streamable HTTP mode on a free loopback port; killed on drop.
pub struct EverythingHttp {
    child: Child,
    port: u16,
}

impl EverythingHttp {
    /// Starts it and waits (at most 20 s) until it accepts connections.
    pub fn start() -> Self {
        let entry = need::mcp_everything();
        let port = free_port();
        let child = Command::new("node")
            .arg(&entry)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server-everything (streamable HTTP) exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "server-everything did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Its MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recording server's files: its script and the record of calls (one JSON line each).
pub struct Recorder {
    dir: tempfile::TempDir,
}

impl Recorder {
    /// Writes the script into a fresh directory (fails the test without Python's `mcp`).
    pub fn new() -> Self {
        need::python_mcp();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("recorder.py"), RECORDER_PY).unwrap();
        Self { dir }
    }

    /// Its directory (script and record).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The record file.
    pub fn record(&self) -> PathBuf {
        self.dir.path().join("calls.jsonl")
    }

    /// The command that runs it over stdio.
    pub fn command(&self) -> Vec<String> {
        vec![
            "python3".to_owned(),
            self.dir.path().join("recorder.py").display().to_string(),
            self.record().display().to_string(),
        ]
    }

    /// The calls it received, in order: `{"tool": name, "args": {…}}`.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.record()) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading the record: {e}"),
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

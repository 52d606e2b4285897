//! End-to-end tests of the API's limits inside a real kernel (`p3ak up`): the cap on calls
//! waiting for a person per caller, `/mcp` behind the server's own auth and rate limits,
//! `p3ak mcp` offering only the caller's tools, the TLS listener, and slow or greedy clients.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use p3ak_testkit::api::{
    Call, Target, conforms, events, exchange, free_port, openapi, send, socket, token,
    wait_for_socket,
};
use p3ak_testkit::home::p3ak_path;
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

const PASS: &str = "api limits test passphrase";
const VAULT: &str = "[plugins.vault]\nbuiltin = \"vault\"\n";

/// A kernel with its API on the socket and on a loopback port (`[api]` plus `api`), the
/// `plugins`, and `policy` instead of the one `p3ak init` writes.
fn start(api: &str, plugins: &str, policy: Option<&str>) -> (Kernel, Target, Target) {
    let home = Home::init(PASS);
    let port = free_port();
    let config = format!(
        "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n{api}\n{plugins}",
        sandbox_setting(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    if let Some(policy) = policy {
        std::fs::write(home.home().join("policy.yaml"), policy).unwrap();
    }
    let mut kernel = Kernel::new(home);
    kernel.up();
    let unix = socket(&kernel.home());
    wait_for_socket(&unix, &kernel);
    let tcp = Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    wait_for_port(addr(&tcp), &kernel);
    (kernel, unix, tcp)
}

/// Waits until `addr` accepts connections (the API binds its socket first, then TCP).
fn wait_for_port(addr: SocketAddr, kernel: &Kernel) {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr}:\n{}",
            kernel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn addr(target: &Target) -> SocketAddr {
    match target {
        Target::Tcp(addr) => *addr,
        Target::Unix(_) => panic!("not TCP"),
    }
}

/// `p3ak tokens revoke` of the token `secret` (`p3ak_<id>_<secret>`).
fn revoke(kernel: &Kernel, secret: &str) {
    let id = secret.split('_').nth(1).unwrap();
    kernel.ok(&["tokens", "revoke", id]);
}

/// Polls `f` every 200 ms until it is true, for at most `limit`.
fn eventually(limit: Duration, what: &str, kernel: &Kernel, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen in {limit:?}\n{}",
            kernel.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// MCP over streamable HTTP, by hand: JSON-RPC in POST bodies, answers as JSON or SSE.

/// An answer of `/mcp`: the HTTP status and headers, the body read, and the JSON-RPC
/// response in it (if any).
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    text: String,
    rpc: Option<Value>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// POSTs `message` to `/mcp` on a fresh connection; reads the answer until its JSON-RPC
/// response (an SSE stream may stay open), for at most 20 s.
fn mcp_post(target: &Target, token: Option<&str>, session: Option<&str>, message: &Value) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let request = request
            .body(Full::new(Bytes::from(message.to_string())))
            .unwrap();
        let exchange = async {
            let response = match target {
                Target::Unix(path) => {
                    exchange(
                        tokio::net::UnixStream::connect(path).await.unwrap(),
                        request,
                    )
                    .await
                }
                Target::Tcp(addr) => {
                    exchange(tokio::net::TcpStream::connect(addr).await.unwrap(), request).await
                }
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            let mut text = String::new();
            let mut rpc = None;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
                rpc = rpc_in(&text);
                if rpc.is_some() {
                    break;
                }
            }
            if rpc.is_none() {
                rpc = rpc_in(&text);
            }
            Reply {
                status,
                headers,
                text,
                rpc,
            }
        };
        tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .expect("/mcp did not answer in 20 s")
    })
}

/// The JSON-RPC response (a message with an `id` and a `result` or `error`) in a body: plain
/// JSON, or server-sent events.
fn rpc_in(text: &str) -> Option<Value> {
    let is_response = |v: &Value| {
        v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some())
    };
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return is_response(&value).then_some(value);
    }
    events(text)
        .into_iter()
        .map(|(_, data)| data)
        .find(is_response)
}

/// An MCP session on `/mcp`.
struct Mcp {
    target: Target,
    token: Option<String>,
    session: String,
    next: u64,
}

impl Mcp {
    /// `initialize` and `notifications/initialized`; the refusal when `initialize` fails.
    fn open(target: &Target, token: Option<&str>) -> Result<Self, Box<Reply>> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "api-limits-test", "version": "1"}}});
        let reply = mcp_post(target, token, None, &init);
        if reply.status != 200 {
            return Err(Box::new(reply));
        }
        let session = reply
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("no session id: {}", reply.text));
        let this = Self {
            target: target.clone(),
            token: token.map(str::to_owned),
            session,
            next: 1,
        };
        let done = this.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(done.status, 202, "{}", done.text);
        Ok(this)
    }

    fn post(&self, message: &Value) -> Reply {
        mcp_post(
            &self.target,
            self.token.as_deref(),
            Some(&self.session),
            message,
        )
    }

    /// A request; the whole reply (its HTTP status may be an error).
    fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next;
        self.next += 1;
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    /// The names of the tools listed.
    fn tools(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({}));
        assert_eq!(reply.status, 200, "{}", reply.text);
        names(&reply.rpc.unwrap()["result"]["tools"])
    }

    /// `tools/call`: the JSON-RPC response (HTTP 200 expected).
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let reply = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.rpc.unwrap()
    }
}

fn names(tools: &Value) -> Vec<String> {
    let mut names: Vec<String> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn tool_text(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. The cap on calls waiting for a person.

/// Writes and deletes wait for a person (level 1); a delete is refused after 2 s unanswered.
const WAITING_POLICY: &str = "version: 1\n\
defaults: { unknown: reject, timeout: 15m }\n\
read:\n  vault.search: { level: 0 }\n  vault.read: { level: 0 }\n  vault.list: { level: 0 }\n\
write:\n  vault.write: { level: 1, tier: act }\n\
destroy:\n  vault.delete: { level: 1, tier: commit, timeout: 2s }\n";

/// Rates high enough that polling never meets them.
const HIGH_RATES: &str = "[api.rates]\n\"vault:write\" = { per_minute = 6000, burst = 1000 }\n\
\"vault:read\" = { per_minute = 6000, burst = 1000 }\n";

fn note(title: &str) -> Value {
    json!({"title": title, "content": format!("{title}: a note that waits for the owner.")})
}

/// The approvals waiting (`GET /v1/approvals`) for `action`.
fn waiting(unix: &Target, action: &str) -> usize {
    let list = send(unix, Call::get("/v1/approvals")).json();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == action)
        .count()
}

#[test]
fn a_caller_at_its_cap_of_waiting_approvals_gets_429_before_the_road_until_a_person_answers() {
    let me = format!("uid:{}", rustix::process::getuid().as_raw());
    let (kernel, unix, tcp) = start(
        &format!("max_waiting_approvals = 2\n{HIGH_RATES}"),
        VAULT,
        Some(WAITING_POLICY),
    );
    let doc = openapi();

    // Two calls wait for a person: this caller (the operator's uid on the socket) is at 2.
    let first = send(&unix, Call::post("/v1/documents", &note("first")));
    assert_eq!(first.status, 202, "{}\n{}", first.text(), kernel.log());
    let first_id = first.json()["approval"].as_str().unwrap().to_owned();
    let deletion = send(&unix, Call::delete("/v1/documents/abcd1234"));
    assert_eq!(deletion.status, 202, "{}", deletion.text());

    // One more: 429, saying how many wait and that a person must answer them first.
    let refused = send(&unix, Call::post("/v1/documents", &note("third")));
    assert_eq!(refused.status, 429, "{}", refused.text());
    conforms(&doc, "post", "/v1/documents", &refused);
    let body = refused.json();
    assert_eq!(body["error"], "too_many_waiting");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("2 of your calls wait for a person's approval")
            && message.contains("`api.max_waiting_approvals` = 2")
            && message.contains("approve or refuse them first"),
        "{message}"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("60"));
    // At the cap the server cannot tell which call would wait, so reads wait too.
    let search = send(
        &unix,
        Call::post("/v1/search", &json!({"query": "note", "mode": "bm25"})),
    );
    assert_eq!(search.status, 429, "{}", search.text());

    // Refused before the road: not proposed, not staged.
    assert_eq!(waiting(&unix, "vault.write"), 1);
    let audit = kernel.audit();
    let proposed = audit
        .iter()
        .filter(|e| e["kind"] == "proposal" && e["payload"]["sender"] == me.as_str())
        .count();
    assert_eq!(proposed, 2, "only the two waiting calls took the road");
    let hits: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "api.rate_limited")
        .collect();
    assert_eq!(hits.len(), 1, "audited once a minute per caller: {hits:?}");
    assert_eq!(hits[0]["payload"]["scope"], "max_waiting_approvals");
    assert_eq!(hits[0]["payload"]["principal"], me.as_str());
    assert_eq!(hits[0]["payload"]["route"], "vault.write");
    let metrics = send(&unix, Call::get("/metrics")).text();
    assert!(
        metrics.contains("p3ak_rate_limited_total{scope=\"max_waiting_approvals\"} 2"),
        "{metrics}"
    );

    // Per caller: a token of its own is not held back by the operator's waiting calls.
    let writer = token(&kernel, "vault:read,vault:write", &[]);
    let other = send(
        &tcp,
        Call::post("/v1/documents", &note("other")).bearer(&writer),
    );
    assert_eq!(other.status, 202, "{}", other.text());

    // The same cap over MCP: the tool answers an error saying so.
    let mut mcp = Mcp::open(&unix, None).unwrap_or_else(|r| panic!("{}", r.text));
    let over = mcp.call("add_note", note("by mcp"));
    assert_eq!(over["result"]["isError"], true, "{over}");
    assert!(
        tool_text(&over).contains("wait for a person's approval"),
        "{over}"
    );

    // The delete is refused by its timeout (2 s): one slot is free again, and taken again.
    eventually(
        Duration::from_secs(30),
        "the timed-out delete freeing a slot",
        &kernel,
        || send(&unix, Call::post("/v1/documents", &note("after timeout"))).status == 202,
    );
    assert_eq!(
        send(&unix, Call::post("/v1/documents", &note("over again"))).status,
        429
    );

    // A person refuses the first write: its slot is free too.
    kernel.ok(&["deny", &first_id]);
    eventually(
        Duration::from_secs(30),
        "the denied write freeing a slot",
        &kernel,
        || send(&unix, Call::post("/v1/documents", &note("after deny"))).status == 202,
    );
    assert_eq!(
        send(&unix, Call::post("/v1/documents", &note("over once more"))).status,
        429
    );
    assert_eq!(
        waiting(&unix, "vault.write"),
        3,
        "two of ours and the token's"
    );
}

// ---------------------------------------------------------------------------------------
// 2. and 3. `/mcp` behind the server's auth and rate limits.

#[test]
fn mcp_on_the_real_server_needs_a_valid_token_and_offers_only_its_scopes_tools() {
    let (kernel, unix, tcp) = start("", VAULT, None);

    // No token on TCP: 401 with the API's JSON error, before MCP sees anything.
    let anonymous = Mcp::open(&tcp, None).err().expect("refused");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    let body: Value = serde_json::from_str(&anonymous.text).unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(anonymous.header("www-authenticate").is_some());

    // A writer stores a note.
    let writer = token(&kernel, "vault:read,vault:write", &[]);
    let mut as_writer = Mcp::open(&tcp, Some(&writer)).unwrap_or_else(|r| panic!("{}", r.text));
    assert_eq!(
        as_writer.tools(),
        ["add_note", "list_documents", "read_document", "search"]
    );
    let stored = as_writer.call(
        "add_note",
        json!({"title": "Harbour", "content": "The harbour master wants the mooring papers by Friday."}),
    );
    assert_eq!(stored["result"]["isError"], false, "{stored}");

    // A reader searches and finds it, but may not add a note.
    let reader = token(&kernel, "vault:read", &[]);
    let mut as_reader = Mcp::open(&tcp, Some(&reader)).unwrap_or_else(|r| panic!("{}", r.text));
    assert_eq!(
        as_reader.tools(),
        ["list_documents", "read_document", "search"]
    );
    let found = as_reader.call("search", json!({"query": "mooring papers", "mode": "bm25"}));
    assert_eq!(found["result"]["isError"], false, "{found}");
    assert!(tool_text(&found).contains("Harbour"), "{found}");
    let writing = as_reader.call("add_note", json!({"title": "no", "content": "no"}));
    assert!(
        writing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no tool `add_note`"),
        "{writing}"
    );
    let writes = kernel
        .audit()
        .iter()
        .filter(|e| e["kind"] == "proposal" && e["payload"]["action"] == "vault.write")
        .count();
    assert_eq!(writes, 1, "the reader's add_note reached no road");

    // The operator on the socket has every tool.
    let mut operator = Mcp::open(&unix, None).unwrap_or_else(|r| panic!("{}", r.text));
    assert_eq!(
        operator.tools(),
        [
            "add_note",
            "ask_agent",
            "list_documents",
            "read_document",
            "search"
        ]
    );

    // Revoked: the open session's next request is a 401.
    revoke(&kernel, &reader);
    let after = as_reader.request("tools/list", json!({}));
    assert_eq!(after.status, 401, "{}", after.text);
    let body: Value = serde_json::from_str(&after.text).unwrap();
    assert_eq!(body["message"], "the token is not valid");

    // Expired (expiry is in whole seconds): the open session's requests become 401s.
    let short = token(&kernel, "vault:read", &["--expires", "4s"]);
    let mut as_short = Mcp::open(&tcp, Some(&short)).unwrap_or_else(|r| panic!("{}", r.text));
    let started = Instant::now();
    let expired = loop {
        let reply = as_short.request("tools/list", json!({}));
        if reply.status != 200 {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "it never expired"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(expired.status, 401, "{}", expired.text);
    let body: Value = serde_json::from_str(&expired.text).unwrap();
    assert_eq!(body["message"], "the token has expired");
}

#[test]
fn mcp_tool_calls_take_from_their_scopes_rate_and_its_requests_from_the_callers_own() {
    let (kernel, unix, tcp) = start(
        "[api.rates]\n\"vault:read\" = { per_minute = 1, burst = 2 }\nmcp = { per_minute = 1, burst = 10 }\n",
        VAULT,
        None,
    );
    let reader = token(&kernel, "vault:read", &[]);
    // Requests 1 and 2 of the `mcp` quota.
    let mut mcp = Mcp::open(&tcp, Some(&reader)).unwrap_or_else(|r| panic!("{}", r.text));

    // Requests 3 to 5: two searches, then the `vault:read` bucket is empty.
    for _ in 0..2 {
        let ok = mcp.call("search", json!({"query": "anything", "mode": "bm25"}));
        assert_eq!(ok["result"]["isError"], false, "{ok}");
    }
    let limited = mcp.call("search", json!({"query": "anything", "mode": "bm25"}));
    assert_eq!(limited["result"]["isError"], true, "{limited}");
    let text = tool_text(&limited);
    assert!(
        text.starts_with("too many requests: retry in ") && text.ends_with(" s"),
        "{text}"
    );
    // The same bucket as the REST routes.
    let rest = send(
        &tcp,
        Call::post("/v1/search", &json!({"query": "x", "mode": "bm25"})).bearer(&reader),
    );
    assert_eq!(rest.status, 429);

    // Requests 6 to 10 pass; the 11th is refused with the API's 429.
    for n in 6..=10 {
        let listed = mcp.request("tools/list", json!({}));
        assert_eq!(listed.status, 200, "request {n}: {}", listed.text);
    }
    let flood = mcp.request("tools/list", json!({}));
    assert_eq!(flood.status, 429, "{}", flood.text);
    let body: Value = serde_json::from_str(&flood.text).unwrap();
    assert_eq!(body["error"], "rate_limited");
    let wait: u64 = flood.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // Other callers have buckets of their own.
    let mut operator = Mcp::open(&unix, None).unwrap_or_else(|r| panic!("{}", r.text));
    let theirs = operator.call("search", json!({"query": "anything", "mode": "bm25"}));
    assert_eq!(theirs["result"]["isError"], false, "{theirs}");

    // Both limits are audited, for this caller.
    let principal = format!("token:{}", reader.split('_').nth(1).unwrap());
    let audit = kernel.audit();
    for (scope, route) in [("vault:read", "/mcp"), ("mcp", "/mcp")] {
        assert!(
            audit.iter().any(|e| e["kind"] == "api.rate_limited"
                && e["payload"]["scope"] == scope
                && e["payload"]["route"] == route
                && e["payload"]["principal"] == principal.as_str()),
            "{scope}: {audit:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. `p3ak mcp` on stdio offers the caller's tools.

/// Runs `p3ak mcp ARGS…` on the kernel's socket (with `P3AK_API_TOKEN` = `token`), lists its
/// tools and calls `add_note`; the tools' names and that call's JSON-RPC response, or the
/// command's stderr when it exits first.
fn stdio_mcp(
    kernel: &Kernel,
    token: Option<&str>,
    args: &[&str],
) -> Result<(Vec<String>, Value), String> {
    let socket = kernel.home().join("run/api.sock");
    let mut command = Command::new(p3ak_path());
    command
        .arg("mcp")
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .env("P3AK_HOME", kernel.home())
        .env_remove("P3AK_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("P3AK_API_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = |id: u64| -> Option<Value> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = received.recv_timeout(left).ok()?;
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not JSON-RPC on stdout: {line}"));
            if value["id"] == id {
                return Some(value);
            }
        }
    };
    let mut write = |message: Value| {
        // The command may have exited already: its stderr says why.
        let _ = writeln!(stdin, "{message}");
        let _ = stdin.flush();
    };
    write(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "api-limits-test", "version": "1"}}}),
    );
    let outcome = answer(1).map(|_| {
        write(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        write(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}));
        let tools = names(&answer(2).expect("tools/list")["result"]["tools"]);
        write(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                     "params": {"name": "add_note", "arguments": {"title": "t", "content": "c"}}}));
        (tools, answer(3).expect("tools/call"))
    });
    drop(stdin);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    outcome.ok_or_else(|| {
        assert_eq!(out.status.code(), Some(1), "it exits with 1");
        String::from_utf8_lossy(&out.stderr).into_owned()
    })
}

#[test]
fn p3ak_mcp_offers_only_the_tools_its_callers_scopes_allow() {
    let (kernel, _unix, _tcp) = start("", VAULT, None);

    // The operator (this uid, no token): every tool; add_note works.
    let (tools, added) = stdio_mcp(&kernel, None, &[]).unwrap();
    assert_eq!(
        tools,
        [
            "add_note",
            "ask_agent",
            "list_documents",
            "read_document",
            "search"
        ]
    );
    assert_eq!(added["result"]["isError"], false, "{added}");

    // A read-only token: the read tools only, even when more are asked for.
    let reader = token(&kernel, "vault:read", &[]);
    for args in [&[][..], &["--scopes", "vault:read,vault:write"][..]] {
        let (tools, added) = stdio_mcp(&kernel, Some(&reader), args).unwrap();
        assert_eq!(
            tools,
            ["list_documents", "read_document", "search"],
            "{args:?}"
        );
        assert!(
            added["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no tool `add_note`"),
            "{added}"
        );
    }

    // A token with none of the tools' scopes, and a revoked one: one clear line, exit 1.
    let status = token(&kernel, "status", &[]);
    let stderr = stdio_mcp(&kernel, Some(&status), &[]).unwrap_err();
    assert!(
        stderr.starts_with("error: `token:") && stderr.contains("holds none of the scopes"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    revoke(&kernel, &reader);
    let stderr = stdio_mcp(&kernel, Some(&reader), &[]).unwrap_err();
    assert!(
        stderr.contains("the token is not valid") && stderr.contains("P3AK_API_TOKEN"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. The TLS listener.

/// A self-signed certificate for `localhost` and 127.0.0.1 (no CA), and its key, in `dir`.
fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
         [dn]\nCN = localhost\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-config"])
        .arg(&config)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A request over TLS to `addr` from a rustls client that trusts only `trusted`: the answer's
/// text, or the error that ended the connection first.
fn over_tls(addr: SocketAddr, trusted: &Path, request: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(trusted).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

#[test]
#[ignore = "needs the openssl command"]
fn the_tls_listener_answers_clients_that_trust_its_certificate_and_no_plain_http() {
    need::openssl();
    let home = Home::init(PASS);
    let (cert, key) = self_signed(home.dir(), "api");
    let (other, _) = self_signed(home.dir(), "other");
    // Under root the kernel runs as a uid of its own: let it read this throwaway key.
    for file in [&cert, &key] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = free_port();
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
             public = true\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            sandbox_setting(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    wait_for_socket(&socket(&kernel.home()), &kernel);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, &kernel);

    let health = over_tls(addr, &cert, &get("/healthz", None)).unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#"{"status":"ok"}"#), "{health}");
    let status_token = token(&kernel, "status", &[]);
    let status = over_tls(addr, &cert, &get("/v1/status", Some(&status_token))).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains("\"pid\":"), "{status}");
    let anonymous = over_tls(addr, &cert, &get("/v1/status", None)).unwrap();
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    // A client that trusts another certificate does not get through the handshake.
    let distrusted = over_tls(addr, &other, &get("/healthz", None));
    assert!(distrusted.is_err(), "{distrusted:?}");

    // Plain HTTP on the TLS port: no HTTP answer, and the connection ends.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain.write_all(get("/healthz", None).as_bytes()).unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the connection stayed open"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_public_listener_without_tls_or_with_an_unreadable_key_is_refused_at_start() {
    let missing = "/nonexistent/p3ak-test/api.key";
    for (listen, settings, wanted) in [
        (
            "0.0.0.0",
            String::from("public = true\n"),
            "is public: set api.tls_cert and api.tls_key (bearer tokens must not cross a network in clear)",
        ),
        (
            "0.0.0.0",
            String::new(),
            "is not a loopback address; set api.public = true (with TLS)",
        ),
        (
            "127.0.0.1",
            format!("tls_cert = \"{missing}\"\ntls_key = \"{missing}\"\n"),
            "error: the API cannot be served: api TLS: `/nonexistent/p3ak-test/api.",
        ),
    ] {
        let home = Home::init(PASS);
        let port = free_port();
        std::fs::write(
            home.home().join("config.toml"),
            format!(
                "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"{listen}:{port}\"\n{settings}",
                sandbox_setting()
            ),
        )
        .unwrap();
        let out = home
            .cmd()
            .arg("up")
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let wanted = if listen == "0.0.0.0" {
            format!("api.listen `{listen}:{port}` {wanted}")
        } else {
            wanted.to_owned()
        };
        assert!(stderr.contains(&wanted), "{stderr}");
        assert!(
            !stderr.contains("kernel up"),
            "it never says it is up: {stderr}"
        );
        assert!(!home.home().join("run/api.sock").exists());
    }
}

// ---------------------------------------------------------------------------------------
// 6. Slow and greedy clients.

/// Reads what `stream` sends until it closes (or resets) or `limit` passes; the bytes, and
/// whether it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (bytes, true),
        }
    }
    (bytes, false)
}

#[test]
fn a_client_slower_than_header_timeout_is_cut_off_and_an_idle_one_too() {
    let (kernel, _unix, tcp) = start("header_timeout = \"1s\"\n", "", None);
    let addr = addr(&tcp);

    // A head sent a line every 200 ms: cut off after about a second, never answered 200.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let cut = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a slow head was not cut off in 10 s\n{}",
            kernel.log()
        );
        if slow.write_all(b"X-Slow: yes\r\n").is_err() {
            break started.elapsed();
        }
        match slow.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(cut >= Duration::from_millis(800), "cut after {cut:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A connection that sends nothing is closed after header_timeout too.
    let mut idle = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let (bytes, closed) = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(closed, "an idle connection stayed open 10 s");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(!String::from_utf8_lossy(&bytes).contains(" 200 "));

    // A client that sends its head at once is served as ever.
    let fine = send(&tcp, Call::get("/healthz"));
    assert_eq!(fine.status, 200);
}

#[test]
fn a_connection_over_max_connections_is_refused_until_one_is_freed() {
    let (kernel, unix, tcp) = start("max_connections = 2\nheader_timeout = \"30s\"\n", "", None);
    let addr = addr(&tcp);
    // Two idle connections take both slots (the socket's and TCP's together). One that is
    // answered at once was refused: a slot was still held by an earlier probe; try again.
    let held = |what: &str| {
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: no slot"
            );
            let mut stream = TcpStream::connect(addr).unwrap();
            let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(1));
            if bytes.is_empty() && !closed {
                return stream;
            }
        }
    };
    let first = held("first");
    let second = held("second");
    // The third: answered 503 and closed at once, without waiting for its request.
    let mut extra = TcpStream::connect(addr).unwrap();
    let (bytes, closed) = read_until_closed(&mut extra, Duration::from_secs(10));
    assert!(closed, "an extra connection stayed open");
    let refused = String::from_utf8_lossy(&bytes).into_owned();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("`api.max_connections`"), "{refused}");

    // One idle client goes: a normal request gets through again.
    drop(first);
    eventually(
        Duration::from_secs(10),
        "a freed slot serving a request",
        &kernel,
        || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(get("/healthz", None).as_bytes()).unwrap();
            let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(5));
            String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200")
        },
    );
    drop(second);

    // Counted and audited (once a minute per peer). Slots are freed as their connections'
    // tasks end, so the operator's request is retried until one is.
    let mut metrics = String::new();
    eventually(
        Duration::from_secs(10),
        "the socket serving the operator its metrics",
        &kernel,
        || {
            let answer = send(&unix, Call::get("/metrics"));
            metrics = answer.text();
            answer.status == 200
        },
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("p3ak_rate_limited_total{scope=\"max_connections\"}")),
        "{metrics}"
    );
    let audited = kernel
        .audit()
        .iter()
        .filter(|e| {
            e["kind"] == "api.rate_limited"
                && e["payload"]["scope"] == "max_connections"
                && e["payload"]["principal"] == "ip:127.0.0.1"
        })
        .count();
    assert_eq!(audited, 1);
}

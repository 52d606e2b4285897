//! A loopback fake of Slack: the Web API (`https://slack.com/api/<method>`) and Socket Mode.
//!
//! What it follows of Slack's wire format, so the real connector runs unchanged against it:
//! - Web API methods are `POST /api/<method>` with `Authorization: Bearer <token>` and a JSON
//!   or form body; answers are `200 {"ok": true, …}` or `{"ok": false, "error": "…"}`
//!   (`invalid_auth` for a wrong token), and `429` with `Retry-After` (seconds) when rate
//!   limited ([`Fake::rate_limit_next`]).
//! - `apps.connections.open` (app token `xapp-…`) answers a `ws://127.0.0.1:…` URL; the socket
//!   says `hello`, then delivers `events_api` envelopes (`message` events: channels, threads,
//!   DMs with `channel_type: "im"`, the bot's own posts with `bot_id`) and `interactive`
//!   envelopes (`block_actions`). Each envelope must be acknowledged with
//!   `{"envelope_id": …}`; one that is not is delivered again after the ack timeout (and on a
//!   new connection), with `retry_attempt` counting up. [`Fake::disconnect`] sends a
//!   `disconnect` envelope; [`Fake::drop_connection`] closes the socket.
//! - `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `conversations.open`,
//!   `auth.test` (bot token `xoxb-…`), and files at `url_private` (bot token).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message as WsMessage;

/// The bot's user id in the fake workspace.
pub const BOT_USER: &str = "UBOT";
/// The bot's bot id (what its own messages carry as `bot_id`).
pub const BOT_ID: &str = "BBOT";
/// The fake's team id.
pub const TEAM: &str = "T0001";

/// A message the bot posted (or an edit of one), as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The channel it went to (`C…`, `D…` for a DM).
    pub chat: String,
    /// Its `ts` (an edit carries the edited message's).
    pub id: String,
    /// The thread it was posted in, if any.
    pub thread: Option<String>,
    /// The text as sent (escaped: `&amp;`, `&lt;`, `&gt;`), or the blocks' section text.
    pub text: String,
    /// Buttons with data: (label, `value`).
    pub buttons: Vec<(String, String)>,
    /// Link buttons: (label, url).
    pub links: Vec<(String, String)>,
    /// An edit (`chat.update`) rather than a post.
    pub edit: bool,
    /// An ephemeral message (`chat.postEphemeral`) to `user`.
    pub ephemeral_to: Option<String>,
    /// What the request said about rendering: `mrkdwn` (absent = Slack's default, true).
    pub mrkdwn: bool,
    /// `unfurl_links` (absent = Slack's default, true).
    pub unfurl_links: bool,
}

impl Sent {
    /// The text a person sees: Slack's three escapes undone. Only meaningful when `text` has
    /// no raw `<` (which Slack would read as a mention or link).
    #[must_use]
    pub fn shown(&self) -> String {
        self.text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }
}

struct Pending {
    envelope_id: String,
    /// The envelope without `retry_attempt`/`retry_reason`.
    envelope: Value,
    /// The platform message id it carries (for [`Fake::acked`]).
    message: Option<String>,
    sent_at: Option<Instant>,
    attempts: u32,
}

struct File {
    bytes: Vec<u8>,
    media_type: String,
}

struct State {
    app_token: String,
    bot_token: String,
    next: u64,
    sent: Vec<Sent>,
    /// Every message in the workspace, by ts: (channel, blocks' buttons) for presses.
    pending: Vec<Pending>,
    /// Envelope ids acknowledged, with the message id they carried.
    acked: Vec<(String, Option<String>)>,
    /// Envelopes delivered (counting redeliveries).
    deliveries: usize,
    rate_limited: u32,
    retry_after_secs: u64,
    ack_timeout: Duration,
    /// The generation of the socket that may deliver; older ones close.
    generation: u64,
    connections: usize,
    /// Close the current socket without a word.
    drop_now: bool,
    /// Send `disconnect` on the current socket.
    disconnect_now: bool,
    files: HashMap<String, File>,
    /// Web API calls: (method, token was right).
    calls: Vec<String>,
    /// Ack payloads for interactive envelopes.
    ack_payloads: Vec<Value>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake; both its servers stop when it is dropped.
pub struct Fake {
    shared: Arc<Shared>,
    api_port: u16,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Fake {
    /// Starts the fake on 127.0.0.1. `token` is the connector's credential: the app token
    /// (`xapp-…`) and the bot token (`xoxb-…`) separated by whitespace.
    pub fn start(token: &str) -> Self {
        let mut parts = token.split_whitespace();
        let app_token = parts.next().unwrap().to_owned();
        let bot_token = parts.next().unwrap().to_owned();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                app_token,
                bot_token,
                next: 0,
                sent: Vec::new(),
                pending: Vec::new(),
                acked: Vec::new(),
                deliveries: 0,
                rate_limited: 0,
                retry_after_secs: 1,
                ack_timeout: Duration::from_secs(3),
                generation: 0,
                connections: 0,
                drop_now: false,
                disconnect_now: false,
                files: HashMap::new(),
                calls: Vec::new(),
                ack_payloads: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").unwrap();
        let api_port = api.local_addr().unwrap().port();
        let ws_port = ws.local_addr().unwrap().port();
        api.set_nonblocking(true).unwrap();
        ws.set_nonblocking(true).unwrap();
        let for_api = Arc::clone(&shared);
        std::thread::spawn(move || {
            accept_loop(&api, &for_api, move |stream, shared| {
                serve_http(stream, &shared, ws_port);
            });
        });
        let for_ws = Arc::clone(&shared);
        std::thread::spawn(move || {
            accept_loop(&ws, &for_ws, serve_socket);
        });
        Self { shared, api_port }
    }

    /// The Web API base, for the connector's `base_url` config.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/", self.api_port)
    }

    fn next_ts(state: &mut State) -> String {
        state.next += 1;
        format!("1700000000.{:06}", state.next)
    }

    /// User `user` writes `text` in channel `chat` (top level). Returns the message's `ts`.
    pub fn say(&self, chat: &str, user: &str, text: &str) -> String {
        self.message(chat, user, text, None, "channel", Vec::new())
    }

    /// User `user` writes `text` in the thread `thread_ts` of channel `chat`. Returns its `ts`.
    pub fn say_in_thread(&self, chat: &str, thread_ts: &str, user: &str, text: &str) -> String {
        self.message(chat, user, text, Some(thread_ts), "channel", Vec::new())
    }

    /// User `user` writes `text` to the bot directly (in the DM channel [`Fake::dm_channel`]).
    /// Returns its `ts`.
    pub fn say_direct(&self, user: &str, text: &str) -> String {
        self.message(&dm_channel(user), user, text, None, "im", Vec::new())
    }

    /// User `user` writes `text` in `chat` with a file attached. Returns the message's `ts`.
    pub fn say_with_file(
        &self,
        chat: &str,
        user: &str,
        text: &str,
        name: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let id = {
            let mut state = self.shared.lock();
            state.next += 1;
            let id = format!("F{:05}", state.next);
            state.files.insert(
                id.clone(),
                File {
                    bytes: bytes.to_vec(),
                    media_type: media_type.to_owned(),
                },
            );
            id
        };
        let file = json!({
            "id": id,
            "name": name,
            "title": name,
            "mimetype": media_type,
            "filetype": "binary",
            "size": bytes.len(),
            "url_private": format!("http://127.0.0.1:{}/files-pri/{TEAM}-{id}/{name}", self.api_port),
            "url_private_download": format!("http://127.0.0.1:{}/files-pri/{TEAM}-{id}/download/{name}", self.api_port),
        });
        self.message(chat, user, text, None, "channel", vec![file])
    }

    /// The DM channel between `user` and the bot (what `conversations.open` answers).
    #[must_use]
    pub fn dm_channel(user: &str) -> String {
        dm_channel(user)
    }

    fn message(
        &self,
        chat: &str,
        user: &str,
        text: &str,
        thread: Option<&str>,
        channel_type: &str,
        files: Vec<Value>,
    ) -> String {
        let mut state = self.shared.lock();
        let ts = Self::next_ts(&mut state);
        let mut event = json!({
            "type": "message",
            "channel": chat,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "client_msg_id": format!("00000000-0000-4000-8000-{:012}", state.next),
            "channel_type": channel_type,
            "team": TEAM,
        });
        if let Some(thread) = thread {
            event["thread_ts"] = json!(thread);
        }
        if !files.is_empty() {
            event["subtype"] = json!("file_share");
            event["files"] = Value::Array(files);
        }
        event_envelope(&mut state, event, Some(ts.clone()));
        drop(state);
        self.shared.changed.notify_all();
        ts
    }

    /// User `user` presses the button with `data` on the last message that carries one.
    /// Returns the pressed message's `ts`.
    pub fn press(&self, user: &str, data: &str) -> String {
        let (chat, ts) = {
            let state = self.shared.lock();
            let found = state
                .sent
                .iter()
                .rev()
                .find(|s| s.buttons.iter().any(|(_, d)| d == data))
                .unwrap_or_else(|| panic!("no message carries a button with data {data:?}"));
            (found.chat.clone(), found.id.clone())
        };
        self.press_on(user, &chat, &ts, data);
        ts
    }

    /// User `user` presses a button with `data` on message `ts` in `chat` (whether or not it
    /// carries one: a forged press).
    pub fn press_on(&self, user: &str, chat: &str, ts: &str, data: &str) {
        let mut state = self.shared.lock();
        state.next += 1;
        let payload = json!({
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "fake"},
            "user": {"id": user, "username": format!("user-{user}"), "team_id": TEAM},
            "api_app_id": "A0001",
            "token": "verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": chat, "is_ephemeral": false},
            "trigger_id": format!("{}.trigger", state.next),
            "channel": {"id": chat, "name": chat},
            "message": {"type": "message", "ts": ts, "bot_id": BOT_ID},
            "response_url": format!("http://127.0.0.1:{}/actions/{}", self.api_port, state.next),
            "actions": [{
                "type": "button",
                "action_id": data,
                "block_id": "p3ak",
                "value": data,
                "text": {"type": "plain_text", "text": "button"},
                "action_ts": format!("1700000000.{:06}", state.next),
            }],
        });
        let envelope_id = format!("env-{}", state.next);
        let envelope = json!({
            "envelope_id": envelope_id,
            "type": "interactive",
            "accepts_response_payload": false,
            "payload": payload,
        });
        state.pending.push(Pending {
            envelope_id,
            envelope,
            message: None,
            sent_at: None,
            attempts: 0,
        });
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Every message the bot posted or edited, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// Waits until a sent message satisfies `pred`; returns it.
    pub fn wait_sent(&self, pred: impl Fn(&Sent) -> bool, timeout: Duration) -> Sent {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = state.sent.iter().find(|s| pred(s)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no such message within {timeout:?}: {:#?}",
                state.sent
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The next `n` Web API calls are answered 429 with `Retry-After: retry_after` (seconds,
    /// rounded up).
    pub fn rate_limit_next(&self, n: u32, retry_after: Duration) {
        let mut state = self.shared.lock();
        state.rate_limited = n;
        state.retry_after_secs = retry_after.as_millis().div_ceil(1000).try_into().unwrap();
    }

    /// How long an envelope may stay unacknowledged before it is delivered again (default 3 s).
    pub fn set_ack_timeout(&self, timeout: Duration) {
        self.shared.lock().ack_timeout = timeout;
    }

    /// Whether the envelope carrying message `ts` was acknowledged.
    #[must_use]
    pub fn acked(&self, ts: &str) -> bool {
        self.shared
            .lock()
            .acked
            .iter()
            .any(|(_, m)| m.as_deref() == Some(ts))
    }

    /// Waits until the envelope carrying message `ts` is acknowledged.
    pub fn wait_acked(&self, ts: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.acked.iter().any(|(_, m)| m.as_deref() == Some(ts)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "message {ts} not acknowledged within {timeout:?}"
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until no envelope waits for an acknowledgement.
    pub fn wait_all_acked(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} envelopes not acknowledged",
                state.pending.len()
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Envelopes delivered so far, redeliveries included.
    #[must_use]
    pub fn deliveries(&self) -> usize {
        self.shared.lock().deliveries
    }

    /// Socket Mode connections opened so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Waits until at least `n` Socket Mode connections were opened.
    pub fn wait_connections(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.connections < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} connections within {timeout:?}",
                state.connections
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The Web API methods called so far, in order (`chat.postMessage`, …).
    #[must_use]
    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }

    /// Sends a `disconnect` envelope (`refresh_requested`) on the current socket: the client
    /// should open a new connection.
    pub fn disconnect(&self) {
        self.shared.lock().disconnect_now = true;
    }

    /// Closes the current socket without a word.
    pub fn drop_connection(&self) {
        self.shared.lock().drop_now = true;
    }
}

fn dm_channel(user: &str) -> String {
    format!("D{}", user.trim_start_matches('U'))
}

fn event_envelope(state: &mut State, event: Value, message: Option<String>) {
    state.next += 1;
    let envelope_id = format!("env-{}", state.next);
    let envelope = json!({
        "envelope_id": envelope_id,
        "type": "events_api",
        "accepts_response_payload": false,
        "payload": {
            "token": "verification-token",
            "team_id": TEAM,
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": format!("Ev{:08}", state.next),
            "event_time": 1_700_000_000,
        },
    });
    state.pending.push(Pending {
        envelope_id,
        envelope,
        message,
        sent_at: None,
        attempts: 0,
    });
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    serve: impl Fn(TcpStream, Arc<Shared>) + Clone + Send + 'static,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                let shared = Arc::clone(shared);
                let serve = serve.clone();
                std::thread::spawn(move || serve(stream, shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ---- Socket Mode ----

fn serve_socket(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let generation = {
        let mut state = shared.lock();
        state.generation += 1;
        state.connections += 1;
        state.drop_now = false;
        state.disconnect_now = false;
        // A new connection gets everything not yet acknowledged.
        for pending in &mut state.pending {
            pending.sent_at = None;
        }
        state.generation
    };
    shared.changed.notify_all();
    let hello = json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A0001"},
    });
    if ws.send(WsMessage::text(hello.to_string())).is_err() {
        return;
    }
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut out = Vec::new();
        {
            let mut state = shared.lock();
            if state.generation != generation || state.drop_now {
                state.drop_now = false;
                return;
            }
            if state.disconnect_now {
                state.disconnect_now = false;
                out.push(json!({
                    "type": "disconnect",
                    "reason": "refresh_requested",
                    "debug_info": {"host": "fake-slack"},
                }));
            }
            let timeout = state.ack_timeout;
            let mut delivered = 0;
            for pending in &mut state.pending {
                let due = pending.sent_at.is_none_or(|at| at.elapsed() >= timeout);
                if due {
                    let mut envelope = pending.envelope.clone();
                    if pending.attempts > 0 {
                        envelope["retry_attempt"] = json!(pending.attempts);
                        envelope["retry_reason"] = json!("timeout");
                    } else {
                        envelope["retry_attempt"] = json!(0);
                        envelope["retry_reason"] = json!("");
                    }
                    pending.attempts += 1;
                    pending.sent_at = Some(Instant::now());
                    out.push(envelope);
                    delivered += 1;
                }
            }
            state.deliveries += delivered;
        }
        for message in out {
            if ws.send(WsMessage::text(message.to_string())).is_err() {
                return;
            }
        }
        match ws.read() {
            Ok(WsMessage::Text(text)) => {
                let Ok(ack) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let Some(id) = ack["envelope_id"].as_str() else {
                    continue;
                };
                let mut state = shared.lock();
                if let Some(at) = state.pending.iter().position(|p| p.envelope_id == id) {
                    let pending = state.pending.remove(at);
                    state.acked.push((pending.envelope_id, pending.message));
                    if let Some(payload) = ack.get("payload") {
                        state.ack_payloads.push(payload.clone());
                    }
                }
                drop(state);
                shared.changed.notify_all();
            }
            Ok(WsMessage::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

// ---- Web API ----

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }

    /// The arguments: a JSON object, or a form.
    fn args(&self) -> Value {
        let content_type = self.header("content-type").unwrap_or_default();
        if content_type.starts_with("application/json") {
            return serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        }
        let text = String::from_utf8_lossy(&self.body);
        let mut args = serde_json::Map::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            args.insert(form_decode(k), Value::String(form_decode(v)));
        }
        Value::Object(args)
    }
}

fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&head).ok()?;
    let method = parsed.method?.to_owned();
    let path = parsed.path?.to_owned();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> bool {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body).is_ok()
}

fn respond_json(stream: &mut TcpStream, value: &Value) -> bool {
    respond(
        stream,
        "200 OK",
        &[("content-type", "application/json; charset=utf-8".to_owned())],
        value.to_string().as_bytes(),
    )
}

fn serve_http(stream: TcpStream, shared: &Arc<Shared>, ws_port: u16) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    while let Some(request) = read_request(&mut reader) {
        let ok = if let Some(method) = request.path.strip_prefix("/api/") {
            let method = method.split('?').next().unwrap_or_default().to_owned();
            api(&mut stream, shared, &request, &method, ws_port)
        } else if request.path.starts_with("/files-pri/") && request.method == "GET" {
            file(&mut stream, shared, &request)
        } else {
            respond(&mut stream, "404 Not Found", &[], b"not found")
        };
        if !ok {
            return;
        }
    }
}

fn file(stream: &mut TcpStream, shared: &Arc<Shared>, request: &Request) -> bool {
    let state = shared.lock();
    if request.bearer() != Some(state.bot_token.as_str()) {
        // Slack redirects a request without the right token to its login page.
        return respond(
            stream,
            "302 Found",
            &[("location", "/signin".to_owned())],
            b"",
        );
    }
    let id = request
        .path
        .trim_start_matches("/files-pri/")
        .split('/')
        .next()
        .unwrap_or_default()
        .trim_start_matches(&format!("{TEAM}-"))
        .to_owned();
    match state.files.get(&id) {
        Some(file) => respond(
            stream,
            "200 OK",
            &[("content-type", file.media_type.clone())],
            &file.bytes,
        ),
        None => respond(stream, "404 Not Found", &[], b"not found"),
    }
}

fn api(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    request: &Request,
    method: &str,
    ws_port: u16,
) -> bool {
    let args = request.args();
    let mut state = shared.lock();
    state.calls.push(method.to_owned());
    if state.rate_limited > 0 {
        state.rate_limited -= 1;
        let secs = state.retry_after_secs;
        return respond(
            stream,
            "429 Too Many Requests",
            &[
                ("retry-after", secs.to_string()),
                ("content-type", "application/json".to_owned()),
            ],
            br#"{"ok":false,"error":"ratelimited"}"#,
        );
    }
    let want = if method == "apps.connections.open" {
        state.app_token.clone()
    } else {
        state.bot_token.clone()
    };
    if request.bearer() != Some(want.as_str()) {
        let error = if request.bearer().is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        };
        return respond_json(stream, &json!({"ok": false, "error": error}));
    }
    let answer = match method {
        "apps.connections.open" => {
            state.next += 1;
            json!({"ok": true, "url": format!("ws://127.0.0.1:{ws_port}/link/?ticket={}&app_id=A0001", state.next)})
        }
        "auth.test" => json!({
            "ok": true, "url": "https://fake.slack.com/", "team": "Fake", "user": "p3ak",
            "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID,
        }),
        "conversations.open" => {
            let users = args["users"].as_str().unwrap_or_default();
            if users.is_empty() || users.contains(',') {
                json!({"ok": false, "error": "not_found"})
            } else {
                json!({"ok": true, "channel": {"id": dm_channel(users)}})
            }
        }
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => {
            match post(&mut state, method, &args) {
                Ok(answer) => answer,
                Err(error) => json!({"ok": false, "error": error}),
            }
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    drop(state);
    shared.changed.notify_all();
    respond_json(stream, &answer)
}

/// Args may be JSON values or form strings (`blocks` as a JSON text).
fn arg_bool(args: &Value, name: &str, default: bool) -> bool {
    match &args[name] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true" || s == "1",
        _ => default,
    }
}

fn post(state: &mut State, method: &str, args: &Value) -> Result<Value, &'static str> {
    let channel = args["channel"]
        .as_str()
        .ok_or("channel_not_found")?
        .to_owned();
    if channel.is_empty() {
        return Err("channel_not_found");
    }
    let blocks = match &args["blocks"] {
        Value::String(text) => serde_json::from_str(text).map_err(|_| "invalid_blocks")?,
        other => other.clone(),
    };
    let mut text = args["text"].as_str().unwrap_or_default().to_owned();
    let mut buttons = Vec::new();
    let mut links = Vec::new();
    if let Value::Array(blocks) = &blocks {
        for block in blocks {
            match block["type"].as_str() {
                Some("section") => {
                    if let Some(t) = block["text"]["text"].as_str() {
                        text = t.to_owned();
                    }
                }
                Some("actions") => {
                    for element in block["elements"].as_array().into_iter().flatten() {
                        let label = element["text"]["text"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if let Some(url) = element["url"].as_str() {
                            links.push((label, url.to_owned()));
                        } else if let Some(value) = element["value"].as_str() {
                            buttons.push((label, value.to_owned()));
                        }
                    }
                }
                _ => return Err("invalid_blocks"),
            }
        }
    } else if !blocks.is_null() {
        return Err("invalid_blocks");
    }
    if text.is_empty() {
        return Err("no_text");
    }
    if text.chars().count() > 40_000 {
        return Err("msg_too_long");
    }
    let mrkdwn = arg_bool(args, "mrkdwn", true);
    let unfurl_links = arg_bool(args, "unfurl_links", true);
    let (id, edit, ephemeral_to) = match method {
        "chat.update" => {
            let ts = args["ts"].as_str().ok_or("message_not_found")?.to_owned();
            if !state
                .sent
                .iter()
                .any(|s| s.id == ts && s.chat == channel && !s.edit)
            {
                return Err("message_not_found");
            }
            (ts, true, None)
        }
        "chat.postEphemeral" => {
            let user = args["user"]
                .as_str()
                .ok_or("user_not_in_channel")?
                .to_owned();
            (State::next_ts_of(state), false, Some(user))
        }
        _ => (State::next_ts_of(state), false, None),
    };
    let thread = args["thread_ts"].as_str().map(str::to_owned);
    state.sent.push(Sent {
        chat: channel.clone(),
        id: id.clone(),
        thread: thread.clone(),
        text: text.clone(),
        buttons,
        links,
        edit,
        ephemeral_to: ephemeral_to.clone(),
        mrkdwn,
        unfurl_links,
    });
    if ephemeral_to.is_some() {
        return Ok(json!({"ok": true, "message_ts": id}));
    }
    // Slack tells the app about its own messages too: they carry `bot_id`.
    let mut echo = json!({
        "type": "message", "channel": channel, "user": BOT_USER, "bot_id": BOT_ID,
        "text": text, "ts": id, "event_ts": id,
        "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
    });
    if edit {
        echo = json!({
            "type": "message", "subtype": "message_changed", "channel": channel,
            "hidden": true, "ts": State::next_ts_of(state), "message": echo,
        });
    } else if let Some(thread) = thread {
        echo["thread_ts"] = json!(thread);
    }
    event_envelope(state, echo, None);
    Ok(json!({"ok": true, "channel": channel, "ts": id, "message": {"text": text}}))
}

impl State {
    fn next_ts_of(state: &mut Self) -> String {
        Fake::next_ts(state)
    }
}

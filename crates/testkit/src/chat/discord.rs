//! A fake Discord: REST v10 under `/api/v10` (`GET /gateway/bot`, create and edit channel
//! messages, `POST /users/@me/channels`, interaction callbacks, attachment downloads) and a
//! Gateway websocket on a port of its own (HELLO, heartbeat ACKs, IDENTIFY → READY, RESUME
//! with replay of what was missed, `MESSAGE_CREATE`, `INTERACTION_CREATE`).
//!
//! Ids are snowflakes as text. Every message the bot posts also comes back through the
//! Gateway as `MESSAGE_CREATE`, as on Discord. [`Sent::text`] is what Discord would show
//! (markdown escapes removed); the raw `content` is in [`Sent::body`].

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{RateLimits, Record, Request, Response, Sent};

/// The bot's user id.
pub const BOT_ID: &str = "1000";
/// The guild every non-direct channel belongs to.
pub const GUILD_ID: &str = "500";
/// The heartbeat interval the Gateway asks for.
pub const HEARTBEAT_MS: u64 = 1000;

#[derive(Default)]
struct State {
    next_id: u64,
    /// Dispatches of the current session: (seq, payload).
    events: Vec<(u64, Value)>,
    session: Option<String>,
    identifies: u32,
    resumes: u32,
    heartbeats: u32,
    /// user → DM channel.
    dms: HashMap<String, String>,
    /// message id → (channel, raw content, button data).
    messages: HashMap<String, (String, String, Vec<String>)>,
    /// interaction id → (token, channel, message id).
    interactions: HashMap<String, (String, String, String)>,
    /// Interaction callbacks: (interaction id, type, shown text).
    answers: Vec<(String, u64, String)>,
    /// attachment path → contents.
    files: HashMap<String, Vec<u8>>,
}

impl State {
    fn snowflake(&mut self) -> String {
        self.next_id += 1;
        (100_000 + self.next_id).to_string()
    }

    fn dispatch(&mut self, name: &str, data: Value) -> u64 {
        let seq = self.events.last().map_or(1, |(s, _)| s + 1);
        self.events
            .push((seq, json!({"op": 0, "t": name, "s": seq, "d": data})));
        seq
    }

    fn dm(&mut self, user: &str) -> String {
        if let Some(id) = self.dms.get(user) {
            return id.clone();
        }
        let id = self.snowflake();
        self.dms.insert(user.to_owned(), id.clone());
        id
    }
}

struct Inner {
    token: String,
    http_port: u16,
    ws_port: u16,
    state: Mutex<State>,
    record: Record,
    limits: RateLimits,
    /// Bumped by `drop_connection`: connections of an older generation close.
    generation: AtomicU64,
    /// Connections closed that way.
    dropped: AtomicU64,
}

/// A running fake.
pub struct Fake {
    inner: Arc<Inner>,
}

impl Fake {
    /// Starts a fake that accepts `token`, on 127.0.0.1.
    #[must_use]
    pub fn start(token: &str) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").unwrap();
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            http_port: http.local_addr().unwrap().port(),
            ws_port: ws.local_addr().unwrap().port(),
            state: Mutex::new(State::default()),
            record: Record::default(),
            limits: RateLimits::default(),
            generation: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let handler = Arc::clone(&inner);
        super::serve_http(http, Arc::new(move |request| handler.handle(&request)));
        let gateway = Arc::clone(&inner);
        std::thread::spawn(move || {
            for stream in ws.incoming().flatten() {
                let gateway = Arc::clone(&gateway);
                std::thread::spawn(move || gateway.connection(stream));
            }
        });
        Self { inner }
    }

    /// The API base to configure as `base_url`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.inner.http_port)
    }

    /// User `user` writes `text` in guild channel `chat`; returns the message id.
    pub fn say(&self, chat: &str, user: &str, text: &str) -> String {
        self.message(chat, user, text, true, Vec::new())
    }

    /// User `user` writes `text` to the bot directly.
    pub fn say_direct(&self, user: &str, text: &str) -> String {
        let chat = self.inner.state.lock().unwrap().dm(user);
        self.message(&chat, user, text, false, Vec::new())
    }

    /// Another bot writes in `chat` (the connector must ignore it).
    pub fn say_as_bot(&self, chat: &str, bot: &str, text: &str) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let id = state.snowflake();
        let _ = state.dispatch(
            "MESSAGE_CREATE",
            json!({
                "id": id, "channel_id": chat, "guild_id": GUILD_ID, "type": 0,
                "author": {"id": bot, "username": "otherbot", "bot": true},
                "content": text, "attachments": [],
            }),
        );
        id
    }

    /// User `user` sends a file directly, with `text`.
    pub fn send_attachment(
        &self,
        user: &str,
        name: &str,
        media_type: &str,
        contents: &[u8],
        text: &str,
    ) -> String {
        let (chat, attachment) = {
            let mut state = self.inner.state.lock().unwrap();
            let chat = state.dm(user);
            let id = state.snowflake();
            let path = format!("attachments/{id}/{name}");
            state.files.insert(path.clone(), contents.to_vec());
            (
                chat,
                json!({
                    "id": id, "filename": name, "content_type": media_type,
                    "size": contents.len(),
                    "url": format!("http://127.0.0.1:{}/{path}", self.inner.http_port),
                    "proxy_url": format!("http://127.0.0.1:{}/{path}", self.inner.http_port),
                }),
            )
        };
        self.message(&chat, user, text, false, vec![attachment])
    }

    fn message(
        &self,
        chat: &str,
        user: &str,
        text: &str,
        guild: bool,
        attachments: Vec<Value>,
    ) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let id = state.snowflake();
        let mut data = json!({
            "id": id, "channel_id": chat, "type": 0,
            "author": {"id": user, "username": format!("user{user}"), "global_name": format!("User {user}")},
            "content": text, "attachments": attachments, "mentions": [],
        });
        if guild {
            data["guild_id"] = json!(GUILD_ID);
            data["member"] = json!({"roles": []});
        }
        let _ = state.dispatch("MESSAGE_CREATE", data);
        id
    }

    /// User `user` presses the button with `data` on the last message that carries one;
    /// returns the interaction id.
    pub fn press(&self, user: &str, data: &str) -> String {
        let found = self
            .inner
            .record
            .all()
            .into_iter()
            .rev()
            .find(|s| s.buttons.iter().any(|(_, d)| d == data))
            .unwrap_or_else(|| panic!("no message carries a button with data `{data}`"));
        self.press_on(user, &found.id, data)
    }

    /// User `user` presses a button with `data` on message `message_id` (the data is whatever
    /// the test says: a forged press).
    pub fn press_on(&self, user: &str, message_id: &str, data: &str) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let (chat, content, _) = state
            .messages
            .get(message_id)
            .cloned()
            .unwrap_or_else(|| panic!("no message {message_id}"));
        let id = state.snowflake();
        let token = format!("itoken-{id}");
        state.interactions.insert(
            id.clone(),
            (token.clone(), chat.clone(), message_id.to_owned()),
        );
        let _ = state.dispatch(
            "INTERACTION_CREATE",
            json!({
                "id": id, "application_id": BOT_ID, "type": 3, "token": token, "version": 1,
                "channel_id": chat,
                "user": {"id": user, "username": format!("user{user}")},
                "message": {"id": message_id, "channel_id": chat, "content": content},
                "data": {"custom_id": data, "component_type": 2},
            }),
        );
        id
    }

    /// Every message the bot posted or edited, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.inner.record.all()
    }

    /// Waits for a sent message matching `pred`; panics after `timeout`.
    pub fn wait_sent(&self, pred: impl Fn(&Sent) -> bool, timeout: Duration) -> Sent {
        self.inner.record.wait(pred, timeout)
    }

    /// The next `n` message posts or edits get a 429 asking to wait `retry_after`.
    pub fn rate_limit_next(&self, n: u32, retry_after: Duration) {
        self.inner.limits.set(n, retry_after);
    }

    /// Closes the Gateway connection abruptly (returning once it is closed, or after 5 s when
    /// there was none): the connector must reconnect and resume.
    pub fn drop_connection(&self) {
        let before = self.inner.dropped.load(Ordering::SeqCst);
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while self.inner.dropped.load(Ordering::SeqCst) == before && std::time::Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many times the connector identified (started a session).
    #[must_use]
    pub fn identifies(&self) -> u32 {
        self.inner.state.lock().unwrap().identifies
    }

    /// How many times the connector resumed its session.
    #[must_use]
    pub fn resumes(&self) -> u32 {
        self.inner.state.lock().unwrap().resumes
    }

    /// Interaction callbacks: (interaction id, callback type, shown text).
    #[must_use]
    pub fn answers(&self) -> Vec<(String, u64, String)> {
        self.inner.state.lock().unwrap().answers.clone()
    }

    /// How many heartbeats the connector sent.
    #[must_use]
    pub fn heartbeats(&self) -> u32 {
        self.inner.state.lock().unwrap().heartbeats
    }

    /// Ends the session on Discord's side: the next RESUME gets INVALID_SESSION (not
    /// resumable), and the connector must identify again.
    pub fn end_session(&self) {
        self.inner.state.lock().unwrap().session = None;
    }

    /// Waits until the connector has started or resumed `n` sessions in all.
    pub fn wait_sessions(&self, n: u32, timeout: Duration) {
        let end = std::time::Instant::now() + timeout;
        while self.identifies() + self.resumes() < n {
            assert!(
                std::time::Instant::now() < end,
                "the connector did not connect"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The DM channel of `user` (made on first use).
    pub fn dm_channel(&self, user: &str) -> String {
        self.inner.state.lock().unwrap().dm(user)
    }
}

/// What Discord shows for a raw `content`: markdown escapes removed.
#[must_use]
pub fn shown(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut chars = content.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && next.is_ascii_punctuation()
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[allow(
    clippy::type_complexity,
    reason = "two lists of pairs, named at the call"
)]
fn components_of(body: &Value) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let mut buttons = Vec::new();
    let mut links = Vec::new();
    for row in body["components"].as_array().cloned().unwrap_or_default() {
        for b in row["components"].as_array().cloned().unwrap_or_default() {
            let label = b["label"].as_str().unwrap_or("").to_owned();
            if let Some(id) = b["custom_id"].as_str() {
                buttons.push((label, id.to_owned()));
            } else if let Some(url) = b["url"].as_str() {
                links.push((label, url.to_owned()));
            }
        }
    }
    (buttons, links)
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"message": message, "code": 0}))
}

impl Inner {
    fn handle(&self, request: &Request) -> Response {
        let Some(path) = request.path.strip_prefix("/api/v10/") else {
            // The CDN: attachments, no token needed.
            let path = request.path.trim_start_matches('/');
            return match self.state.lock().unwrap().files.get(path) {
                Some(bytes) => Response::bytes(bytes.clone()),
                None => error(404, "404: Not Found"),
            };
        };
        let parts: Vec<&str> = path.split('/').collect();
        // Interaction callbacks are authorised by the interaction's token.
        if let ["interactions", id, token, "callback"] = parts.as_slice() {
            return self.callback(id, token, &request.json());
        }
        if request.header("authorization") != Some(&format!("Bot {}", self.token)) {
            return error(401, "401: Unauthorized");
        }
        let body = request.json();
        match (request.method.as_str(), parts.as_slice()) {
            ("GET", ["gateway", "bot"]) => Response::json(
                200,
                &json!({
                    "url": format!("ws://127.0.0.1:{}", self.ws_port),
                    "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
                }),
            ),
            ("POST", ["users", "@me", "channels"]) => {
                let user = body["recipient_id"].as_str().unwrap_or("").to_owned();
                let id = self.state.lock().unwrap().dm(&user);
                Response::json(
                    200,
                    &json!({"id": id, "type": 1, "recipients": [{"id": user}]}),
                )
            }
            ("POST", ["channels", channel, "messages"]) => self.post(channel, None, &body),
            ("PATCH", ["channels", channel, "messages", id]) => self.post(channel, Some(id), &body),
            _ => error(404, "404: Not Found"),
        }
    }

    fn post(&self, channel: &str, edit: Option<&str>, body: &Value) -> Response {
        if let Some(wait) = self.limits.take() {
            let mut response = Response::json(
                429,
                &json!({"message": "You are being rate limited.", "retry_after": wait.as_secs_f64(), "global": false}),
            );
            response
                .headers
                .push(("retry-after".to_owned(), wait.as_secs().max(1).to_string()));
            return response;
        }
        let content = body["content"].as_str().unwrap_or("").to_owned();
        if content.is_empty() || content.chars().count() > 2000 {
            return error(400, "Invalid Form Body");
        }
        let (buttons, links) = components_of(body);
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = match edit {
                Some(id) => {
                    if !state.messages.contains_key(id) {
                        return error(404, "Unknown Message");
                    }
                    id.to_owned()
                }
                None => state.snowflake(),
            };
            state.messages.insert(
                id.clone(),
                (
                    channel.to_owned(),
                    content.clone(),
                    buttons.iter().map(|(_, d)| d.clone()).collect(),
                ),
            );
            if edit.is_none() {
                // Discord echoes the bot's own message through the Gateway.
                let _ = state.dispatch(
                    "MESSAGE_CREATE",
                    json!({
                        "id": id, "channel_id": channel, "type": 0,
                        "author": {"id": BOT_ID, "username": "p3ak", "bot": true},
                        "content": content, "attachments": [],
                    }),
                );
            }
            id
        };
        self.record.push(Sent {
            chat: channel.to_owned(),
            id: id.clone(),
            text: shown(&content),
            edit: edit.is_some(),
            buttons,
            links,
            body: body.clone(),
        });
        Response::json(
            200,
            &json!({"id": id, "channel_id": channel, "content": content, "author": {"id": BOT_ID, "bot": true}}),
        )
    }

    fn callback(&self, id: &str, token: &str, body: &Value) -> Response {
        let mut state = self.state.lock().unwrap();
        let Some((expected, channel, message)) = state.interactions.get(id).cloned() else {
            return error(404, "Unknown interaction");
        };
        if expected != token {
            return error(401, "Invalid interaction token");
        }
        let kind = body["type"].as_u64().unwrap_or(0);
        let content = body["data"]["content"].as_str().unwrap_or("").to_owned();
        state.answers.push((id.to_owned(), kind, shown(&content)));
        if kind == 7 {
            let (buttons, links) = components_of(&body["data"]);
            state.messages.insert(
                message.clone(),
                (
                    channel.clone(),
                    content.clone(),
                    buttons.iter().map(|(_, d)| d.clone()).collect(),
                ),
            );
            drop(state);
            self.record.push(Sent {
                chat: channel,
                id: message,
                text: shown(&content),
                edit: true,
                buttons,
                links,
                body: body.clone(),
            });
        }
        Response::empty(204)
    }

    /// One Gateway connection.
    fn connection(&self, stream: TcpStream) {
        let generation = self.generation.load(Ordering::SeqCst);
        let Ok(mut ws) = tungstenite::accept(stream) else {
            return;
        };
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let send = |ws: &mut tungstenite::WebSocket<TcpStream>, v: &Value| {
            ws.send(WsMessage::text(v.to_string())).is_ok()
        };
        if !send(
            &mut ws,
            &json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}}),
        ) {
            return;
        }
        // The last sequence number this connection has sent; None before READY/RESUME.
        let mut sent: Option<u64> = None;
        loop {
            if self.generation.load(Ordering::SeqCst) != generation {
                let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
                self.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            match ws.read() {
                Ok(WsMessage::Text(text)) => {
                    let payload: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    match payload["op"].as_u64() {
                        Some(1) => {
                            self.state.lock().unwrap().heartbeats += 1;
                            if !send(&mut ws, &json!({"op": 11})) {
                                return;
                            }
                        }
                        Some(2) => {
                            if payload["d"]["token"] != self.token.as_str() {
                                let _ = ws.close(Some(CloseFrame {
                                    code: CloseCode::from(4004),
                                    reason: "Authentication failed.".into(),
                                }));
                                let _ = ws.flush();
                                return;
                            }
                            let mut state = self.state.lock().unwrap();
                            state.identifies += 1;
                            let session = format!("session-{}", state.identifies);
                            state.session = Some(session.clone());
                            let resume = format!("ws://127.0.0.1:{}", self.ws_port);
                            let ready = state.dispatch(
                                "READY",
                                json!({
                                    "v": 10, "session_id": session, "resume_gateway_url": resume,
                                    "user": {"id": BOT_ID, "username": "p3ak", "bot": true},
                                    "guilds": [], "application": {"id": BOT_ID},
                                }),
                            );
                            // A new session starts at its READY: nothing older is sent.
                            sent = Some(ready - 1);
                        }
                        Some(6) => {
                            let state = self.state.lock().unwrap();
                            let ok = payload["d"]["token"] == self.token.as_str()
                                && state.session.as_deref() == payload["d"]["session_id"].as_str();
                            drop(state);
                            if ok {
                                self.state.lock().unwrap().resumes += 1;
                                sent = Some(payload["d"]["seq"].as_u64().unwrap_or(0));
                            } else if !send(&mut ws, &json!({"op": 9, "d": false})) {
                                return;
                            }
                        }
                        _ => {}
                    }
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
            if let Some(last) = sent {
                let pending: Vec<(u64, Value)> = self
                    .state
                    .lock()
                    .unwrap()
                    .events
                    .iter()
                    .filter(|(s, _)| *s > last)
                    .cloned()
                    .collect();
                for (seq, payload) in pending {
                    if !send(&mut ws, &payload) {
                        return;
                    }
                    sent = Some(seq);
                }
            }
        }
    }
}

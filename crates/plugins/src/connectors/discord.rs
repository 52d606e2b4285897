//! `discord`: a connector on Discord's Gateway (websocket) and REST API v10.
//!
//! The Gateway (`GET /gateway/bot`, then `?v=10&encoding=json`): HELLO, heartbeats every
//! `heartbeat_interval` (the first after a random part of it), IDENTIFY with the intents for
//! guild and direct messages and message content, READY (`session_id`,
//! `resume_gateway_url`), then `MESSAGE_CREATE` (messages) and `INTERACTION_CREATE` (button
//! presses: `custom_id` = the button's data). A dropped connection RESUMEs with the session
//! and the last sequence number, so nothing is missed; an INVALID_SESSION that cannot be
//! resumed identifies again. Message ids already delivered are not delivered again.
//!
//! REST: messages are posted and edited with `allowed_mentions: {"parse": []}`, markdown
//! escaped and embeds suppressed, so a text shows literally and pings nobody; approvals go to
//! a DM channel (`POST /users/@me/channels`) with button components; a press is answered with
//! an interaction callback (type 7 updates the message, type 4 answers the presser alone).
//! A 429's `retry_after` is honoured.
//!
//! The websocket runs over rustls (ring, the platform's roots); plain `ws://` only to a
//! loopback host (the fakes in tests).
//!
//! Config: `base_url` (default `https://discord.com/api/v10`), `max_message_bytes`,
//! `max_attachment_bytes`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use p3ak_proto::{Credential, ErrorKind};
use p3ak_sdk::connector::{
    Attachment, Button, Connector, Event, Incoming, Log, Platform, Posted, Poster, Pressed, Setup,
};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::Client;
use serde::Deserialize;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{Common, MAX_API_BYTES};
use crate::PluginError;

/// The real API.
pub const DEFAULT_BASE_URL: &str = "https://discord.com/api/v10";
/// The longest text this connector hands one message, in characters: half Discord's 2000,
/// since escaping markdown may double it.
pub const TEXT_LIMIT: usize = 1000;
/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
/// How long one read of the websocket waits before heartbeats are looked at again.
const READ_SLICE: Duration = Duration::from_millis(200);
/// Message ids remembered to drop a redelivery.
const SEEN: usize = 1024;
/// Message flags: SUPPRESS_EMBEDS.
const SUPPRESS_EMBEDS: u64 = 1 << 2;
/// Message flags: EPHEMERAL.
const EPHEMERAL: u64 = 1 << 6;

/// `[plugins.NAME] config` of a Discord connector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    max_message_bytes: Option<usize>,
    #[serde(default)]
    max_attachment_bytes: Option<u64>,
}

/// Builds the connector from its `welcome` and token.
///
/// # Errors
///
/// An invalid config or token.
pub fn connector(setup: Setup<'_>) -> Result<Connector, PluginError> {
    let config: Config = p3ak_sdk::parse_config(&setup.welcome.config)?;
    let common = Common::new(
        config.base_url.as_deref(),
        DEFAULT_BASE_URL,
        config.max_message_bytes,
        config.max_attachment_bytes,
    )?;
    let token = setup.token.expose().trim();
    if token.is_empty() || token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(PluginError::Key(
            "the Discord bot token is empty or malformed".to_owned(),
        ));
    }
    let rest = Arc::new(Rest {
        client: super::client(Duration::from_secs(30))?,
        base: common.base,
        token: Credential::new(token.to_owned()),
        log: setup.log.clone(),
        max_attachment_bytes: common.max_attachment_bytes,
        dm_channels: Mutex::new(HashMap::new()),
    });
    Ok(Connector {
        platform: Box::new(Gateway {
            rest: Arc::clone(&rest),
            log: setup.log,
            socket: None,
            gateway_url: None,
            session: None,
            seq: None,
            bot_id: None,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }),
        poster: rest,
        max_message_bytes: common.max_message_bytes,
    })
}

/// The REST API, as this connector calls it.
struct Rest {
    client: Client,
    base: reqwest::Url,
    token: Credential,
    log: Log,
    max_attachment_bytes: u64,
    /// User id → DM channel id.
    dm_channels: Mutex<HashMap<String, String>>,
}

impl Rest {
    /// `method` on `path` (under the base) with `body`; the answer's JSON (`null` when empty).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ToolFailure> {
        let url = self
            .base
            .join(path)
            .map_err(|_| ToolFailure::permanent("discord: cannot build the request URL"))?;
        let mut request = self
            .client
            .request(method, url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bot {}", self.token.expose()),
            )
            .header(
                reqwest::header::USER_AGENT,
                concat!(
                    "DiscordBot (https://example.invalid/p3ak, ",
                    env!("CARGO_PKG_VERSION"),
                    ")"
                ),
            );
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| ToolFailure::permanent(format!("discord: {e}")))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let response = request
            .send()
            .map_err(|e| super::network_failure("discord", e))?;
        let status = response.status().as_u16();
        let header_wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let bytes = super::read_capped(response, MAX_API_BYTES)
            .map_err(|e| ToolFailure::transient(format!("discord {path}: {e}")))?
            .ok_or_else(|| {
                ToolFailure::transient(format!("discord {path}: the answer is too long"))
            })?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let detail = self
            .log
            .redact(value.get("message").and_then(Value::as_str).unwrap_or(""));
        let message = format!("discord: HTTP {status} {detail}");
        Err(match status {
            429 => ToolFailure::rate_limited(
                message,
                value
                    .get("retry_after")
                    .and_then(Value::as_f64)
                    .or(header_wait)
                    .map(super::seconds_to_ms),
            ),
            401 => ToolFailure::new(ErrorKind::Auth, message),
            400 | 404 => ToolFailure::invalid(message),
            403 => ToolFailure::permanent(message),
            _ => ToolFailure::transient(message),
        })
    }

    fn post_message(
        &self,
        channel: &str,
        content: &str,
        components: Value,
    ) -> Result<String, ToolFailure> {
        let message = self.call(
            reqwest::Method::POST,
            &format!("channels/{}/messages", segment(channel)?),
            Some(&json!({
                "content": escape_markdown(content),
                "allowed_mentions": {"parse": []},
                "flags": SUPPRESS_EMBEDS,
                "components": components,
            })),
        )?;
        message
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ToolFailure::transient("discord: the posted message has no id"))
    }

    /// The DM channel with `user`.
    fn dm_channel(&self, user: &str) -> Result<String, ToolFailure> {
        if let Some(id) = self
            .dm_channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user)
        {
            return Ok(id.clone());
        }
        let channel = self.call(
            reqwest::Method::POST,
            "users/@me/channels",
            Some(&json!({ "recipient_id": user })),
        )?;
        let id = channel
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolFailure::transient("discord: the DM channel has no id"))?
            .to_owned();
        self.dm_channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.to_owned(), id.clone());
        Ok(id)
    }

    /// Downloads an attachment when it is within the limit (never sending the token: the
    /// CDN needs none).
    fn download(&self, url: &str, size: u64) -> Option<String> {
        if size > self.max_attachment_bytes {
            return None;
        }
        let url = reqwest::Url::parse(url).ok()?;
        if !(url.scheme() == "https" || (url.scheme() == "http" && super::is_loopback(&url))) {
            return None;
        }
        let response = match self.client.get(url).send() {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                self.log.line(&format!(
                    "cannot download an attachment: HTTP {}",
                    r.status().as_u16()
                ));
                return None;
            }
            Err(e) => {
                self.log.line(&format!(
                    "cannot download an attachment: {}",
                    super::network_failure("discord", e).message
                ));
                return None;
            }
        };
        match super::read_capped(response, self.max_attachment_bytes) {
            Ok(Some(bytes)) => Some(BASE64.encode(&bytes)),
            _ => None,
        }
    }
}

/// A snowflake as a path segment: digits only.
fn segment(id: &str) -> Result<&str, ToolFailure> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(ToolFailure::invalid(format!("`{id}` is no Discord id")))
    }
}

/// `text` with Discord's markdown (and mention syntax) escaped, so that it shows literally.
#[must_use]
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '~'
                | '`'
                | '|'
                | '>'
                | '<'
                | '#'
                | '-'
                | '['
                | ']'
                | '('
                | ')'
                | '@'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Poster for Rest {
    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn send(&self, chat: &str, text: &str) -> Result<String, ToolFailure> {
        self.post_message(chat, text, json!([]))
    }

    fn edit(&self, chat: &str, message_id: &str, text: &str) -> Result<(), ToolFailure> {
        self.call(
            reqwest::Method::PATCH,
            &format!(
                "channels/{}/messages/{}",
                segment(chat)?,
                segment(message_id)?
            ),
            Some(&json!({
                "content": escape_markdown(text),
                "allowed_mentions": {"parse": []},
                "flags": SUPPRESS_EMBEDS,
                "components": [],
            })),
        )
        .map(drop)
    }

    fn announce(
        &self,
        user: &str,
        text: &str,
        buttons: &[Button],
        link: Option<&str>,
    ) -> Result<Posted, ToolFailure> {
        let channel = self.dm_channel(segment(user)?)?;
        let mut all: Vec<Value> = buttons
            .iter()
            .enumerate()
            .map(|(n, b)| {
                json!({
                    "type": 2,
                    // The first (approve) primary, the others secondary.
                    "style": if n == 0 { 1 } else { 2 },
                    "label": b.label,
                    "custom_id": b.data,
                })
            })
            .collect();
        if let Some(link) = link {
            all.push(json!({"type": 2, "style": 5, "label": "Open the console", "url": link}));
        }
        let rows: Vec<Value> = all
            .chunks(5)
            .map(|row| json!({"type": 1, "components": row}))
            .collect();
        let message_id = self.post_message(&channel, text, Value::Array(rows))?;
        Ok(Posted {
            chat: channel,
            message_id,
        })
    }

    fn answer_press(
        &self,
        press: &Pressed,
        message: &str,
        edit: Option<&str>,
    ) -> Result<(), ToolFailure> {
        let (id, token) = press
            .handle
            .split_once(':')
            .ok_or_else(|| ToolFailure::invalid("discord: malformed interaction handle"))?;
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(ToolFailure::invalid("discord: malformed interaction token"));
        }
        let body = match edit {
            Some(text) => json!({
                "type": 7,
                "data": {
                    "content": escape_markdown(text),
                    "allowed_mentions": {"parse": []},
                    "components": [],
                },
            }),
            None => json!({
                "type": 4,
                "data": {
                    "content": escape_markdown(message),
                    "allowed_mentions": {"parse": []},
                    "flags": EPHEMERAL,
                },
            }),
        };
        match self.call(
            reqwest::Method::POST,
            &format!("interactions/{}/{token}/callback", segment(id)?),
            Some(&body),
        ) {
            Ok(_) => Ok(()),
            // Too late (an interaction must be answered within 3 s): the message is still
            // updated, through the channel.
            Err(f) if f.kind == ErrorKind::Invalid => match edit {
                Some(text) if !press.chat.is_empty() && !press.message_id.is_empty() => {
                    self.log.line(&format!(
                        "interaction answer refused ({}); editing instead",
                        f.message
                    ));
                    self.edit(&press.chat, &press.message_id, text)
                }
                _ => Err(f),
            },
            Err(f) => Err(f),
        }
    }
}

/// A websocket stream: TLS, or plain to loopback.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

type Ws = tungstenite::WebSocket<Stream>;

/// One live Gateway connection.
struct Socket {
    ws: Ws,
    interval: Duration,
    next_heartbeat: Instant,
    /// Whether the last heartbeat was acknowledged.
    acked: bool,
}

/// A resumable session.
struct Session {
    id: String,
    resume_url: String,
}

/// The receiving half: the Gateway.
struct Gateway {
    rest: Arc<Rest>,
    log: Log,
    socket: Option<Socket>,
    gateway_url: Option<String>,
    session: Option<Session>,
    seq: Option<u64>,
    bot_id: Option<String>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

fn transient(text: impl Into<String>) -> ToolFailure {
    ToolFailure::transient(text)
}

fn ws_failure(e: &tungstenite::Error) -> ToolFailure {
    match e {
        tungstenite::Error::Io(io) => transient(format!("discord gateway: {io}")),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            transient("discord gateway: the connection closed")
        }
        other => transient(format!("discord gateway: {other}")),
    }
}

fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

impl Gateway {
    /// Connects, says hello and identifies or resumes.
    fn connect(&mut self) -> Result<(), ToolFailure> {
        let base = match (&self.session, &self.gateway_url) {
            (Some(session), _) => session.resume_url.clone(),
            (None, Some(url)) => url.clone(),
            (None, None) => {
                let answer = self.rest.call(reqwest::Method::GET, "gateway/bot", None)?;
                let url = answer
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| transient("discord: /gateway/bot gave no url"))?
                    .to_owned();
                self.gateway_url = Some(url.clone());
                url
            }
        };
        let mut url = reqwest::Url::parse(&base)
            .map_err(|_| ToolFailure::permanent(format!("discord: bad gateway url `{base}`")))?;
        url.set_query(Some("v=10&encoding=json"));
        let host = url
            .host_str()
            .ok_or_else(|| ToolFailure::permanent("discord: the gateway url has no host"))?
            .to_owned();
        let stream = match url.scheme() {
            "wss" => {
                let tcp = tcp_connect(&host, url.port().unwrap_or(443))?;
                super::install_crypto();
                let config = tls_config()?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| ToolFailure::permanent(format!("discord: bad host `{host}`")))?;
                let connection = rustls::ClientConnection::new(Arc::new(config), name)
                    .map_err(|e| transient(format!("discord gateway: tls: {e}")))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
            }
            "ws" if super::is_loopback(&url) => {
                Stream::Plain(tcp_connect(&host, url.port().unwrap_or(80))?)
            }
            _ => {
                return Err(ToolFailure::permanent(format!(
                    "discord: the gateway url `{base}` must be wss (plain ws only to loopback)"
                )));
            }
        };
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => ws_failure(&e),
            tungstenite::HandshakeError::Interrupted(_) => {
                transient("discord gateway: the handshake timed out")
            }
        })?;
        // HELLO.
        let hello = read_json(&mut ws, Duration::from_secs(20))?;
        if hello.get("op").and_then(Value::as_u64) != Some(10) {
            return Err(transient("discord gateway: expected HELLO"));
        }
        let interval = hello
            .pointer("/d/heartbeat_interval")
            .and_then(Value::as_u64)
            .filter(|&ms| ms > 0)
            .ok_or_else(|| transient("discord gateway: HELLO without heartbeat_interval"))?;
        let interval = Duration::from_millis(interval);
        let first = interval.mul_f64(p3ak_sdk::connector::random_fraction());
        let token = self.rest.token.expose();
        let greeting = match (&self.session, self.seq) {
            (Some(session), Some(seq)) => json!({
                "op": 6,
                "d": {"token": token, "session_id": session.id, "seq": seq},
            }),
            _ => {
                self.session = None;
                json!({
                    "op": 2,
                    "d": {
                        "token": token,
                        "intents": INTENTS,
                        "properties": {"os": "linux", "browser": "p3ak", "device": "p3ak"},
                    },
                })
            }
        };
        send_json(&mut ws, &greeting)?;
        self.socket = Some(Socket {
            ws,
            interval,
            next_heartbeat: Instant::now() + first,
            acked: true,
        });
        Ok(())
    }

    fn drop_socket(&mut self, code: Option<u16>) {
        if let Some(mut socket) = self.socket.take() {
            let frame = code.map(|c| CloseFrame {
                code: CloseCode::from(c),
                reason: "".into(),
            });
            let _ = socket.ws.close(frame);
            let _ = socket.ws.flush();
            let _ = socket.ws.get_ref().tcp().shutdown(std::net::Shutdown::Both);
        }
    }

    /// Handles one Gateway payload; adds the event it stands for to `events`.
    fn payload(&mut self, payload: &Value, events: &mut Vec<Event>) -> Result<(), ToolFailure> {
        if let Some(s) = payload.get("s").and_then(Value::as_u64) {
            self.seq = Some(s);
        }
        match payload.get("op").and_then(Value::as_u64) {
            Some(0) => {
                let data = payload.get("d").unwrap_or(&Value::Null);
                match payload.get("t").and_then(Value::as_str) {
                    Some("READY") => {
                        let id = data.get("session_id").and_then(Value::as_str);
                        let url = data.get("resume_gateway_url").and_then(Value::as_str);
                        if let (Some(id), Some(url)) = (id, url) {
                            self.session = Some(Session {
                                id: id.to_owned(),
                                resume_url: url.to_owned(),
                            });
                        }
                        self.bot_id = data
                            .pointer("/user/id")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                    }
                    Some("MESSAGE_CREATE") => {
                        if let Some(event) = self.message(data) {
                            events.push(event);
                        }
                    }
                    Some("INTERACTION_CREATE") => {
                        if let Some(event) = interaction(data) {
                            events.push(event);
                        }
                    }
                    _ => {}
                }
            }
            // The Gateway asks for a heartbeat now.
            Some(1) => {
                if let Some(socket) = &mut self.socket {
                    socket.next_heartbeat = Instant::now();
                }
            }
            // RECONNECT: resume on a new connection.
            Some(7) => {
                self.drop_socket(Some(4000));
                return Err(transient("discord gateway: asked to reconnect"));
            }
            // INVALID_SESSION: `d` says whether it may be resumed.
            Some(9) => {
                if payload.get("d").and_then(Value::as_bool) != Some(true) {
                    self.session = None;
                    self.seq = None;
                }
                self.drop_socket(Some(4000));
                return Err(ToolFailure {
                    // Discord asks for 1–5 s before identifying again.
                    retry_after_ms: Some(
                        1000 + (p3ak_sdk::connector::random_fraction() * 4000.0) as u64,
                    ),
                    ..transient("discord gateway: invalid session")
                });
            }
            Some(11) => {
                if let Some(socket) = &mut self.socket {
                    socket.acked = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn message(&mut self, data: &Value) -> Option<Event> {
        let author = data.get("author")?;
        let user = author.get("id").and_then(Value::as_str)?;
        if author.get("bot").and_then(Value::as_bool).unwrap_or(false)
            || self.bot_id.as_deref() == Some(user)
        {
            return None;
        }
        // Ordinary messages and replies only (no joins, pins, …).
        if !matches!(
            data.get("type").and_then(Value::as_u64),
            None | Some(0 | 19)
        ) {
            return None;
        }
        let id = data.get("id").and_then(Value::as_str)?.to_owned();
        if !self.first_time(&id) {
            return None;
        }
        let text = data
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let attachments: Vec<Attachment> = data
            .get("attachments")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|a| {
                let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
                let url = a.get("url").and_then(Value::as_str)?;
                Some(Attachment {
                    name: a
                        .get("filename")
                        .and_then(Value::as_str)
                        .unwrap_or("attachment")
                        .to_owned(),
                    media_type: a
                        .get("content_type")
                        .and_then(Value::as_str)
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    size,
                    data: self.rest.download(url, size),
                })
            })
            .collect();
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        Some(Event::Message(Incoming {
            chat: data.get("channel_id").and_then(Value::as_str)?.to_owned(),
            user: user.to_owned(),
            user_name: author
                .get("global_name")
                .and_then(Value::as_str)
                .or_else(|| author.get("username").and_then(Value::as_str))
                .map(str::to_owned),
            direct: data.get("guild_id").is_none_or(Value::is_null),
            receipt: id.clone(),
            message_id: id,
            text,
            attachments,
        }))
    }

    /// Whether message `id` is new; remembers it.
    fn first_time(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_owned()) {
            return false;
        }
        self.seen_order.push_back(id.to_owned());
        while self.seen_order.len() > SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Sends a heartbeat when one is due; a heartbeat still unacknowledged means a dead
    /// connection.
    fn heartbeat(&mut self) -> Result<(), ToolFailure> {
        let seq = self.seq;
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        if Instant::now() < socket.next_heartbeat {
            return Ok(());
        }
        if !socket.acked {
            self.drop_socket(Some(4000));
            return Err(transient("discord gateway: no heartbeat acknowledgement"));
        }
        socket.acked = false;
        socket.next_heartbeat = Instant::now() + socket.interval;
        let result = send_json(&mut socket.ws, &json!({"op": 1, "d": seq}));
        if result.is_err() {
            self.drop_socket(None);
        }
        result
    }
}

fn interaction(data: &Value) -> Option<Event> {
    // Component interactions (button presses) only.
    if data.get("type").and_then(Value::as_u64) != Some(3) {
        return None;
    }
    let user = data.pointer("/member/user").or_else(|| data.get("user"))?;
    if user.get("bot").and_then(Value::as_bool).unwrap_or(false) {
        return None;
    }
    let id = data.get("id").and_then(Value::as_str)?;
    let token = data.get("token").and_then(Value::as_str)?;
    let message = data.get("message");
    Some(Event::Press(Pressed {
        data: data
            .pointer("/data/custom_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        user: user.get("id").and_then(Value::as_str)?.to_owned(),
        chat: data
            .get("channel_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        message_id: message
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        text: message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .map(unescape_markdown),
        handle: format!("{id}:{token}"),
        receipt: id.to_owned(),
    }))
}

/// The text a message shows, from its escaped content.
fn unescape_markdown(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(next) = chars.next()
        {
            out.push(next);
            continue;
        }
        out.push(c);
    }
    out
}

fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, ToolFailure> {
    use std::net::ToSocketAddrs;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| transient(format!("discord gateway: cannot resolve `{host}`: {e}")))?;
    let mut last = None;
    for addr in addrs {
        // `connect`, not `connect_timeout`: std's timeout toggles O_NONBLOCK with an `ioctl`,
        // which the network class's seccomp profile does not allow. The OS bounds it.
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .map_err(|e| transient(format!("discord gateway: {e}")))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(transient(format!(
        "discord gateway: cannot connect to `{host}`{}",
        last.map(|e| format!(": {e}")).unwrap_or_default()
    )))
}

fn tls_config() -> Result<rustls::ClientConfig, ToolFailure> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ToolFailure::permanent(format!("discord gateway: tls: {e}")))?
        .with_platform_verifier()
        .map_err(|e| ToolFailure::permanent(format!("discord gateway: tls: {e}")))
        .map(|builder| builder.with_no_client_auth())
}

fn send_json(ws: &mut Ws, value: &Value) -> Result<(), ToolFailure> {
    ws.send(tungstenite::Message::text(value.to_string()))
        .map_err(|e| ws_failure(&e))
}

/// The next JSON payload, waiting up to `wait`.
fn read_json(ws: &mut Ws, wait: Duration) -> Result<Value, ToolFailure> {
    let end = Instant::now() + wait;
    ws.get_ref()
        .tcp()
        .set_read_timeout(Some(READ_SLICE))
        .map_err(|e| transient(format!("discord gateway: {e}")))?;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|_| transient("discord gateway: a payload that is not JSON"));
            }
            Ok(tungstenite::Message::Close(frame)) => return Err(close_failure(frame.as_ref())),
            Ok(_) => {}
            Err(e) if timed_out(&e) && Instant::now() < end => {}
            Err(e) => return Err(ws_failure(&e)),
        }
    }
}

/// What a close from the Gateway means: some codes are final.
fn close_failure(frame: Option<&CloseFrame>) -> ToolFailure {
    let code = frame.map_or(1000, |f| u16::from(f.code));
    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
    let message = format!("discord gateway closed: {code} {reason}");
    match code {
        4004 => ToolFailure::new(ErrorKind::Auth, message),
        4010..=4014 => ToolFailure::permanent(message),
        _ => transient(message),
    }
}

impl Platform for Gateway {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure> {
        if self.socket.is_none() {
            self.connect()?;
        }
        let end = Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            match self.step(end, &mut events) {
                Ok(true) => return Ok(events),
                Ok(false) => {}
                // The socket is gone and the next poll reconnects; what was read is handed
                // over first (its sequence numbers are past, a resume would not send it again).
                Err(_) if !events.is_empty() => return Ok(events),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Gateway {
    /// Reads one payload (or times out); true when the poll should return.
    fn step(&mut self, end: Instant, events: &mut Vec<Event>) -> Result<bool, ToolFailure> {
        {
            self.heartbeat()?;
            let Some(socket) = &mut self.socket else {
                return Err(transient("discord gateway: not connected"));
            };
            let read = socket.ws.read();
            match read {
                Ok(tungstenite::Message::Text(text)) => {
                    match serde_json::from_str::<Value>(text.as_str()) {
                        Ok(payload) => self.payload(&payload, events)?,
                        Err(_) => self.log.line("discord gateway: a payload that is not JSON"),
                    }
                    Ok(false)
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    let failure = close_failure(frame.as_ref());
                    self.drop_socket(None);
                    if failure.kind != ErrorKind::Transient {
                        self.session = None;
                    }
                    Err(failure)
                }
                Ok(_) => Ok(false),
                Err(e) if timed_out(&e) => Ok(!events.is_empty() || Instant::now() >= end),
                Err(e) => {
                    self.drop_socket(None);
                    Err(ws_failure(&e))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_mentions_are_escaped_and_read_back() {
        let text = "*bold* @everyone <@123> `code` [x](http://y) # h\\";
        let escaped = escape_markdown(text);
        assert!(!escaped.contains(" @everyone"));
        assert_eq!(unescape_markdown(&escaped), text);
    }
}

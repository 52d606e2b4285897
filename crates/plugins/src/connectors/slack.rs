//! Slack: Socket Mode for what people write and press, the Web API for what the bot posts.
//!
//! The credential holds two tokens separated by whitespace: the app-level token (`xapp-…`,
//! opens the Socket Mode connection) then the bot token (`xoxb-…`, every Web API call and
//! file download). Ids: `sender` = `NAME:<user id>`; `conversation` = `NAME:<channel id>`, or
//! `NAME:<channel id>:<thread_ts>` for a message in a thread (replies go to that thread);
//! `message_id` = `<channel id>:<ts>`; a DM (`channel_type: im`) is `direct`.
//!
//! Each Socket Mode envelope is acknowledged only once the kernel answered what it carried
//! (at-least-once, through the runtime's [`Platform::ack`]): an unacknowledged one comes
//! again, and is recognised by its envelope id or its message. A `disconnect` envelope or a
//! broken socket opens a new connection (`apps.connections.open` again); failures to connect
//! go back to the runtime, which retries with backoff. Text the bot posts is escaped (`&`, `<`, `>`) with `mrkdwn: false` and no
//! unfurling, so it shows literally; only sealed announcements carry buttons (Block Kit
//! `actions`, `action_id` and `value` = the button's data).

#![allow(
    clippy::indexing_slicing,
    reason = "only serde_json::Value indexed by key: a read of a missing key is Null, never a \
              panic, and writes go into JSON objects built here"
)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use p3ak_proto::ErrorKind;
use p3ak_sdk::connector::{
    Attachment, Button, Connector, Event, Incoming, Log, Platform, Posted, Poster, Pressed, Setup,
};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::Client;
use serde::Deserialize;
use serde_json::{Value, json};
use tungstenite::Message as WsMessage;
use zeroize::Zeroizing;

use crate::PluginError;

/// Slack's Web API.
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api/";
/// Longest text in one posted message, in characters before escaping (the runtime splits
/// longer texts). Slack advises 4 000 and truncates past 40 000: escaping (`&` → `&amp;`)
/// makes a piece at most five times longer, so it stays under the hard limit.
pub const MAX_POST_CHARS: usize = 4000;
/// Longest text in a Block Kit section.
const MAX_SECTION_CHARS: usize = 3000;
/// Envelopes remembered for deduplication.
const REMEMBERED: usize = 4096;
/// How long a socket read waits before the poll loop looks around.
const READ_SLICE: Duration = Duration::from_millis(50);

/// The config keys (`[plugins.NAME] config = {…}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Web API base (default Slack's; plain http only for loopback hosts).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Longer inbound texts are cut, and say so.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Larger attachments are listed without their content.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: u64,
    /// Longest wait for a Web API answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_max_message_bytes() -> usize {
    16 * 1024
}

fn default_max_attachment_bytes() -> u64 {
    2 * 1024 * 1024
}

fn default_timeout_secs() -> u64 {
    30
}

/// Why a Web API call or the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// 429: wait this long.
    #[error("slack: rate limited, retry after {0:?}")]
    RateLimited(Duration),
    /// A token was refused (`invalid_auth`, `not_authed`, …).
    #[error("slack: the token was refused ({0})")]
    Auth(String),
    /// Slack answered `ok: false` with this error code.
    #[error("slack: {method}: {error}")]
    Api { method: String, error: String },
    /// The network or the answer failed.
    #[error("slack: {0}")]
    Network(String),
}

impl SlackError {
    /// As the protocol's error.
    #[must_use]
    pub fn failure(&self) -> ToolFailure {
        match self {
            Self::RateLimited(wait) => ToolFailure::rate_limited(
                self.to_string(),
                Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ),
            Self::Auth(_) => ToolFailure::new(ErrorKind::Auth, self.to_string()),
            Self::Api { error, .. } if is_invalid(error) => ToolFailure::invalid(self.to_string()),
            Self::Api { .. } => ToolFailure::new(ErrorKind::Permanent, self.to_string()),
            Self::Network(_) => ToolFailure::transient(self.to_string()),
        }
    }
}

fn is_invalid(error: &str) -> bool {
    matches!(
        error,
        "channel_not_found"
            | "message_not_found"
            | "msg_too_long"
            | "no_text"
            | "invalid_blocks"
            | "not_in_channel"
            | "is_archived"
            | "cant_update_message"
            | "user_not_found"
    )
}

fn is_auth(error: &str) -> bool {
    matches!(
        error,
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
    )
}

/// The two tokens of the credential. Zeroized on drop; never printed.
struct Tokens {
    app: Zeroizing<String>,
    bot: Zeroizing<String>,
}

impl Tokens {
    fn parse(credential: &str) -> Result<Self, PluginError> {
        let mut parts = credential.split_whitespace();
        let (Some(app), Some(bot), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PluginError::Key(
                "the slack credential must hold the app token (xapp-…) then the bot token \
                 (xoxb-…), separated by a space"
                    .to_owned(),
            ));
        };
        if !app.starts_with("xapp-") || !bot.starts_with("xoxb-") {
            return Err(PluginError::Key(
                "the slack credential must hold the app token (xapp-…) first, then the bot \
                 token (xoxb-…)"
                    .to_owned(),
            ));
        }
        Ok(Self {
            app: Zeroizing::new(app.to_owned()),
            bot: Zeroizing::new(bot.to_owned()),
        })
    }
}

/// Which token a call uses.
#[derive(Clone, Copy)]
enum Token {
    App,
    Bot,
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when the process already chose a provider; that one is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The Web API client.
pub struct WebApi {
    client: Client,
    base: url::Url,
    tokens: Tokens,
}

impl WebApi {
    fn new(config: &Config, tokens: Tokens) -> Result<Self, PluginError> {
        let text = config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let mut base = url::Url::parse(text)
            .map_err(|e| PluginError::Config(format!("`base_url` `{text}`: {e}")))?;
        let secure = base.scheme() == "https" || (base.scheme() == "http" && is_loopback(&base));
        if !secure || base.host_str().is_none() {
            return Err(PluginError::Config(format!(
                "`base_url` `{text}` must be an https URL (plain http only to a loopback host)"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        install_crypto_provider();
        let client = Client::builder()
            .user_agent(crate::SOFTWARE.replace(' ', "/"))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(30)))
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| PluginError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            tokens,
        })
    }

    fn token(&self, which: Token) -> &str {
        match which {
            Token::App => &self.tokens.app,
            Token::Bot => &self.tokens.bot,
        }
    }

    /// Calls `method` with `args` (JSON), once. `Ok` is the answer of an `ok: true` call.
    fn call(&self, method: &str, token: Token, args: Option<&Value>) -> Result<Value, SlackError> {
        let url = self
            .base
            .join(method)
            .map_err(|e| SlackError::Network(format!("bad url for {method}: {e}")))?;
        let mut request = self
            .client
            .post(url)
            .bearer_auth(self.token(token))
            .header(reqwest::header::ACCEPT, "application/json");
        request = match args {
            Some(args) => request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(args.to_string()),
            None => request.header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            ),
        };
        let response = request
            .send()
            .map_err(|e| SlackError::Network(format!("{method}: {}", crate::http::chain(&e))))?;
        let status = response.status();
        if status.as_u16() == 429 {
            let secs = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Err(SlackError::RateLimited(Duration::from_secs(secs)));
        }
        let mut bytes = Vec::new();
        response
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| SlackError::Network(format!("{method}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(SlackError::Network(format!("{method}: HTTP {status}")));
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|_| SlackError::Network(format!("{method}: the answer is not JSON")))?;
        if answer["ok"].as_bool() == Some(true) {
            return Ok(answer);
        }
        let error = answer["error"]
            .as_str()
            .unwrap_or("unknown_error")
            .to_owned();
        if is_auth(&error) {
            return Err(SlackError::Auth(error));
        }
        if error == "ratelimited" {
            return Err(SlackError::RateLimited(Duration::from_secs(1)));
        }
        Err(SlackError::Api {
            method: method.to_owned(),
            error,
        })
    }

    /// The bot's user id (`auth.test`): also checks the bot token.
    fn whoami(&self) -> Result<String, SlackError> {
        let answer = self.call("auth.test", Token::Bot, Some(&json!({})))?;
        Ok(answer["user_id"].as_str().unwrap_or_default().to_owned())
    }

    /// A fresh Socket Mode URL (`apps.connections.open`, app token).
    fn socket_url(&self) -> Result<String, SlackError> {
        let answer = self.call("apps.connections.open", Token::App, None)?;
        answer["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SlackError::Network("apps.connections.open: no url".to_owned()))
    }

    /// The DM channel with `user` (`conversations.open`).
    fn open_dm(&self, user: &str) -> Result<String, SlackError> {
        let answer = self.call(
            "conversations.open",
            Token::Bot,
            Some(&json!({"users": user})),
        )?;
        answer["channel"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SlackError::Network("conversations.open: no channel".to_owned()))
    }

    /// Downloads a file at `url` (a `url_private` on the API's host), at most `cap` bytes:
    /// `None` when it is larger.
    fn download(&self, url: &str, cap: u64) -> Result<Option<Vec<u8>>, SlackError> {
        let url =
            url::Url::parse(url).map_err(|_| SlackError::Network("bad file url".to_owned()))?;
        let secure = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
        if !secure {
            return Err(SlackError::Network(
                "refusing to send the bot token to a file url over plain http".to_owned(),
            ));
        }
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token(Token::Bot))
            .send()
            .map_err(|e| SlackError::Network(format!("file: {}", crate::http::chain(&e))))?;
        if !response.status().is_success() {
            return Err(SlackError::Network(format!(
                "file: HTTP {}",
                response.status()
            )));
        }
        let mut bytes = Vec::new();
        response
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| SlackError::Network(format!("file: {e}")))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > cap {
            return Ok(None);
        }
        Ok(Some(bytes))
    }
}

// ---- Socket Mode ----

/// A TCP stream, with TLS for `wss`.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
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

type Socket = tungstenite::WebSocket<Stream>;

/// Opens the websocket at `url`: `wss`, or `ws` to a loopback host only.
fn open_socket(url: &str) -> Result<Socket, SlackError> {
    let parsed = url::Url::parse(url)
        .map_err(|_| SlackError::Network("the socket url is not a URL".to_owned()))?;
    let tls = match parsed.scheme() {
        "wss" => true,
        "ws" if is_loopback(&parsed) => false,
        _ => {
            return Err(SlackError::Network(
                "the socket url must be wss (plain ws only to a loopback host)".to_owned(),
            ));
        }
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| SlackError::Network("the socket url has no host".to_owned()))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let address = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| SlackError::Network(format!("cannot resolve the socket host: {e}")))?
        .next()
        .ok_or_else(|| SlackError::Network("the socket host has no address".to_owned()))?;
    // `connect`, not `connect_timeout`: std's timeout toggles O_NONBLOCK with an `ioctl`,
    // which the network class's seccomp profile does not allow. The OS bounds the connect.
    let tcp = TcpStream::connect(address)
        .map_err(|e| SlackError::Network(format!("cannot connect the socket: {e}")))?;
    let setup = |tcp: &TcpStream, timeout: Duration| {
        tcp.set_read_timeout(Some(timeout))
            .and_then(|()| tcp.set_write_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| SlackError::Network(format!("socket: {e}")))
    };
    setup(&tcp, Duration::from_secs(10))?;
    let _ = tcp.set_nodelay(true);
    let stream = if tls {
        install_crypto_provider();
        let config = <rustls::ClientConfig as rustls_platform_verifier::ConfigVerifierExt>::with_platform_verifier()
            .map_err(|e: rustls::Error| SlackError::Network(format!("tls: {e}")))?;
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| SlackError::Network("tls: bad host name".to_owned()))?;
        let connection = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| SlackError::Network(format!("tls: {e}")))?;
        Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    let (socket, _) = tungstenite::client(url, stream)
        .map_err(|e| SlackError::Network(format!("websocket handshake: {}", short(&e))))?;
    setup(socket.get_ref().tcp(), READ_SLICE)?;
    Ok(socket)
}

fn short(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    text.chars().take(200).collect()
}

/// The Socket Mode side: receives envelopes, hands out events, acknowledges them.
pub struct Listener {
    config: Config,
    api: Arc<WebApi>,
    log: Log,
    socket: Option<Socket>,
    connected_at: Instant,
    /// The bot's user id, to ignore its own messages.
    me: String,
    /// Events handed out and not yet acknowledged: receipt → envelope ids that carried it.
    in_flight: HashMap<String, Vec<String>>,
    /// Receipts and envelope ids already acknowledged (bounded).
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

impl Platform for Listener {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            if self.socket.is_none() {
                // Failures go back to the runtime, which waits with backoff and jitter.
                self.connect().map_err(|e| e.failure())?;
            }
            match self.read_one() {
                Ok(Some(text)) => {
                    if let Some(event) = self.envelope(&text) {
                        events.push(event);
                    }
                    // Take what arrived together; the next read waits at most a slice.
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.socket = None;
                    if self.connected_at.elapsed() < Duration::from_secs(2) {
                        return Err(ToolFailure::transient(format!(
                            "the socket closed right after it opened ({e})"
                        )));
                    }
                    self.log
                        .line(&format!("the socket broke ({e}); reconnecting"));
                }
            }
            if !events.is_empty() || Instant::now() >= deadline {
                return Ok(events);
            }
        }
    }

    fn ack(&mut self, event: &Event) -> Result<(), ToolFailure> {
        let receipt = event.receipt().to_owned();
        let envelopes = self.in_flight.remove(&receipt).unwrap_or_default();
        let mut result = Ok(());
        for envelope in &envelopes {
            if let Err(e) = self.send_ack(envelope) {
                result = Err(e.failure());
            }
            self.remember(envelope.clone());
        }
        self.remember(receipt);
        result
    }
}

impl Listener {
    fn connect(&mut self) -> Result<(), SlackError> {
        if self.me.is_empty() {
            self.me = self.api.whoami()?;
        }
        let url = self.api.socket_url()?;
        self.socket = Some(open_socket(&url)?);
        self.connected_at = Instant::now();
        Ok(())
    }

    /// One text frame, `None` when none came within [`READ_SLICE`].
    fn read_one(&mut self) -> Result<Option<String>, SlackError> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok(None);
        };
        match socket.read() {
            Ok(WsMessage::Text(text)) => Ok(Some(text.as_str().to_owned())),
            Ok(WsMessage::Close(_)) => Err(SlackError::Network("closed by slack".to_owned())),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(SlackError::Network(short(&e))),
        }
    }

    /// Acknowledges one envelope; when that fails the socket is dropped (Slack delivers the
    /// envelope again on the next one, and it is recognised then).
    fn send_ack(&mut self, envelope_id: &str) -> Result<(), SlackError> {
        let frame = json!({ "envelope_id": envelope_id }).to_string();
        let Some(socket) = self.socket.as_mut() else {
            return Err(SlackError::Network(
                "no connection to acknowledge on; it will come again".to_owned(),
            ));
        };
        socket.send(WsMessage::text(frame)).map_err(|e| {
            self.socket = None;
            SlackError::Network(format!(
                "cannot acknowledge ({}); it will come again",
                short(&e)
            ))
        })
    }

    fn remember(&mut self, key: String) {
        if self.done.insert(key.clone()) {
            self.done_order.push_back(key);
            if self.done_order.len() > REMEMBERED
                && let Some(old) = self.done_order.pop_front()
            {
                self.done.remove(&old);
            }
        }
    }

    /// Reads one frame: `hello`, `disconnect` or an envelope. Returns the event to hand out.
    fn envelope(&mut self, text: &str) -> Option<Event> {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        match frame["type"].as_str() {
            Some("hello") => return None,
            Some("disconnect") => {
                // Slack is about to close this connection: the next poll opens a new one.
                if let Some(mut socket) = self.socket.take() {
                    let _ = socket.close(None);
                    let _ = socket.flush();
                }
                return None;
            }
            _ => {}
        }
        let envelope_id = frame["envelope_id"].as_str()?.to_owned();
        if self.done.contains(&envelope_id) {
            // Our acknowledgement was lost: say it again.
            let _ = self.send_ack(&envelope_id);
            return None;
        }
        let event = match frame["type"].as_str() {
            Some("events_api") => self.message(&frame["payload"]["event"]),
            Some("interactive") => press(&frame["payload"]),
            _ => None,
        };
        let Some(event) = event else {
            // Nothing for the kernel (the bot's own message, an edit, a slash command): done.
            let _ = self.send_ack(&envelope_id);
            self.remember(envelope_id);
            return None;
        };
        let receipt = event.receipt().to_owned();
        if self.done.contains(&receipt) {
            let _ = self.send_ack(&envelope_id);
            self.remember(envelope_id);
            return None;
        }
        if let Some(envelopes) = self.in_flight.get_mut(&receipt) {
            // Delivered again while the kernel has it: acknowledged with the first.
            if !envelopes.contains(&envelope_id) {
                envelopes.push(envelope_id);
            }
            return None;
        }
        self.in_flight.insert(receipt, vec![envelope_id]);
        Some(event)
    }

    /// A `message` event from a person; anything else → `None`.
    fn message(&self, event: &Value) -> Option<Event> {
        if event["type"].as_str() != Some("message") {
            return None;
        }
        // Subtypes are edits, joins, bot posts…; a file share is a person's message.
        if let Some(subtype) = event["subtype"].as_str()
            && subtype != "file_share"
            && subtype != "thread_broadcast"
        {
            return None;
        }
        if event.get("bot_id").is_some_and(|b| !b.is_null()) {
            return None;
        }
        let user = event["user"].as_str()?;
        if user == self.me {
            return None;
        }
        let channel = event["channel"].as_str()?;
        let ts = event["ts"].as_str()?;
        if !is_id(user) || !is_id(channel) || !is_id(ts) {
            return None;
        }
        let chat = match event["thread_ts"].as_str() {
            Some(thread) if thread != ts && is_id(thread) => format!("{channel}:{thread}"),
            _ => channel.to_owned(),
        };
        let message_id = format!("{channel}:{ts}");
        Some(Event::Message(Incoming {
            chat,
            user: user.to_owned(),
            user_name: event["user_profile"]["display_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            receipt: message_id.clone(),
            message_id,
            text: unescape(event["text"].as_str().unwrap_or_default()),
            direct: event["channel_type"].as_str() == Some("im"),
            attachments: event["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|file| self.attachment(file))
                .collect(),
        }))
    }

    fn attachment(&self, file: &Value) -> Attachment {
        let name = file["name"].as_str().unwrap_or("file").to_owned();
        let media_type = file["mimetype"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let size = file["size"].as_u64().unwrap_or(0);
        let cap = self.config.max_attachment_bytes;
        let url = file["url_private_download"]
            .as_str()
            .or_else(|| file["url_private"].as_str());
        let data = match url {
            Some(url) if size <= cap => match self.api.download(url, cap) {
                Ok(bytes) => bytes.map(|b| BASE64.encode(&b)),
                Err(e) => {
                    self.log.line(&format!("attachment `{name}`: {e}"));
                    None
                }
            },
            _ => None,
        };
        Attachment {
            name,
            media_type,
            size,
            data,
        }
    }
}

/// A `block_actions` payload → the first button's press.
fn press(payload: &Value) -> Option<Event> {
    if payload["type"].as_str() != Some("block_actions") {
        return None;
    }
    let action = payload["actions"].as_array()?.first()?;
    let data = action["value"]
        .as_str()
        .or_else(|| action["action_id"].as_str())?
        .to_owned();
    let user = payload["user"]["id"].as_str()?.to_owned();
    let chat = payload["container"]["channel_id"]
        .as_str()
        .or_else(|| payload["channel"]["id"].as_str())?
        .to_owned();
    let message_id = payload["container"]["message_ts"]
        .as_str()
        .or_else(|| payload["message"]["ts"].as_str())?
        .to_owned();
    if !is_id(&user) || !is_id(&chat) || !is_id(&message_id) {
        return None;
    }
    let text = payload["message"]["blocks"]
        .as_array()
        .and_then(|blocks| {
            blocks
                .iter()
                .find(|b| b["type"].as_str() == Some("section"))
        })
        .and_then(|b| b["text"]["text"].as_str())
        .map(str::to_owned);
    let receipt = format!(
        "press:{user}:{}",
        action["action_ts"].as_str().unwrap_or(&message_id)
    );
    Some(Event::Press(Pressed {
        data,
        user,
        chat,
        message_id,
        text,
        handle: String::new(),
        receipt,
    }))
}

/// Slack ids and timestamps: letters, digits, `.`, `-`, `_`; short.
fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Slack's escapes in message text, undone.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Slack's escapes: `&`, `<`, `>` (the only characters Slack reads as markup control).
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

// ---- Posting ----

/// The Web API side: posts, edits, announcements, answers to presses.
pub struct SlackPoster {
    api: Arc<WebApi>,
}

/// A chat the runtime hands over: `<channel>` or `<channel>:<thread_ts>`.
fn channel_of(chat: &str) -> Result<(&str, Option<&str>), ToolFailure> {
    let (channel, thread) = match chat.split_once(':') {
        Some((channel, thread)) => (channel, Some(thread)),
        None => (chat, None),
    };
    if !is_id(channel) || thread.is_some_and(|t| !is_id(t)) {
        return Err(ToolFailure::invalid(format!(
            "`{chat}` is not a slack channel"
        )));
    }
    Ok((channel, thread))
}

/// A post's arguments that make Slack show `text` literally.
fn plain_message(channel: &str, text: &str) -> Value {
    json!({
        "channel": channel,
        "text": escape(text),
        "mrkdwn": false,
        "parse": "none",
        "link_names": false,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Block Kit for an announcement: its text as plain text, then its buttons and link.
fn card(text: &str, buttons: &[Button], link: Option<&str>) -> Value {
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "plain_text", "text": clip(text, MAX_SECTION_CHARS), "emoji": false},
    })];
    let mut elements: Vec<Value> = buttons
        .iter()
        .map(|button| {
            json!({
                "type": "button",
                "text": {"type": "plain_text", "text": clip(&button.label, 75), "emoji": false},
                "action_id": clip(&button.data, 255),
                "value": clip(&button.data, 2000),
            })
        })
        .collect();
    if let Some(link) = link {
        elements.push(json!({
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in the console", "emoji": false},
            "action_id": "p3ak-link",
            "url": clip(link, 3000),
        }));
    }
    if !elements.is_empty() {
        blocks.push(json!({"type": "actions", "block_id": "p3ak", "elements": elements}));
    }
    Value::Array(blocks)
}

impl Poster for SlackPoster {
    fn text_limit(&self) -> usize {
        MAX_POST_CHARS
    }

    fn send(&self, chat: &str, text: &str) -> Result<String, ToolFailure> {
        let (channel, thread) = channel_of(chat)?;
        let mut args = plain_message(channel, text);
        if let Some(thread) = thread {
            args["thread_ts"] = json!(thread);
        }
        let answer = self
            .api
            .call("chat.postMessage", Token::Bot, Some(&args))
            .map_err(|e| e.failure())?;
        answer["ts"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ToolFailure::transient("slack: chat.postMessage answered no ts"))
    }

    fn edit(&self, chat: &str, message_id: &str, text: &str) -> Result<(), ToolFailure> {
        let (channel, _) = channel_of(chat)?;
        if !is_id(message_id) {
            return Err(ToolFailure::invalid(format!(
                "`{message_id}` is not a slack message id"
            )));
        }
        let mut args = plain_message(channel, text);
        args["ts"] = json!(message_id);
        // No blocks: the buttons of an announcement go.
        args["blocks"] = json!([]);
        self.api
            .call("chat.update", Token::Bot, Some(&args))
            .map(|_| ())
            .map_err(|e| e.failure())
    }

    fn announce(
        &self,
        user: &str,
        text: &str,
        buttons: &[Button],
        link: Option<&str>,
    ) -> Result<Posted, ToolFailure> {
        if !is_id(user) {
            return Err(ToolFailure::invalid(format!(
                "`{user}` is not a slack user id"
            )));
        }
        let channel = self.api.open_dm(user).map_err(|e| e.failure())?;
        let mut args = plain_message(&channel, &clip(text, MAX_POST_CHARS));
        args["blocks"] = card(text, buttons, link);
        let answer = self
            .api
            .call("chat.postMessage", Token::Bot, Some(&args))
            .map_err(|e| e.failure())?;
        let message_id = answer["ts"]
            .as_str()
            .ok_or_else(|| ToolFailure::transient("slack: chat.postMessage answered no ts"))?
            .to_owned();
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
        if let Some(text) = edit {
            // The card itself says what became of it.
            return self.edit(&press.chat, &press.message_id, text);
        }
        let (channel, _) = channel_of(&press.chat)?;
        let mut args = plain_message(channel, message);
        args["user"] = json!(press.user);
        self.api
            .call("chat.postEphemeral", Token::Bot, Some(&args))
            .map(|_| ())
            .map_err(|e| e.failure())
    }
}

/// The Slack connector from the runtime's [`Setup`]: its config and the two tokens.
///
/// # Errors
///
/// A config or credential that cannot work.
pub fn build(setup: Setup<'_>) -> Result<Connector, PluginError> {
    let config: Config = p3ak_sdk::parse_config(&setup.welcome.config)?;
    p3ak_sdk::check_setting(
        "max_message_bytes",
        config.max_message_bytes,
        1 << 20,
        " bytes",
    )?;
    if config.max_message_bytes < 128 {
        return Err(PluginError::Config(
            "`max_message_bytes` must be at least 128".to_owned(),
        ));
    }
    p3ak_sdk::check_setting(
        "max_attachment_bytes",
        config.max_attachment_bytes,
        64 << 20,
        " bytes",
    )?;
    p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, 600, " s")?;
    let tokens = Tokens::parse(setup.token.expose())?;
    let api = Arc::new(WebApi::new(&config, tokens)?);
    let max_message_bytes = config.max_message_bytes;
    let listener = Listener {
        config,
        api: Arc::clone(&api),
        log: setup.log,
        socket: None,
        connected_at: Instant::now(),
        me: String::new(),
        in_flight: HashMap::new(),
        done: HashSet::new(),
        done_order: VecDeque::new(),
    };
    Ok(Connector {
        platform: Box::new(listener),
        poster: Arc::new(SlackPoster { api }),
        max_message_bytes,
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_slack_and_back() {
        let text = "<!channel> & <@U1> *b* <http://x|y>";
        assert_eq!(
            escape(text),
            "&lt;!channel&gt; &amp; &lt;@U1&gt; *b* &lt;http://x|y&gt;"
        );
        assert_eq!(unescape(&escape(text)), text);
    }

    #[test]
    fn a_chat_is_a_channel_and_maybe_a_thread() {
        assert_eq!(channel_of("C1").unwrap(), ("C1", None));
        assert_eq!(channel_of("C1:17.5").unwrap(), ("C1", Some("17.5")));
        assert!(channel_of("C 1").is_err());
        assert!(channel_of("C1:1:2").is_err());
    }

    #[test]
    fn the_credential_needs_both_tokens_in_order() {
        assert!(Tokens::parse("xapp-1 xoxb-2").is_ok());
        assert!(Tokens::parse("xoxb-2 xapp-1").is_err());
        assert!(Tokens::parse("xapp-1").is_err());
        assert!(Tokens::parse("xapp-1 xoxb-2 x").is_err());
    }

    #[test]
    fn an_announcement_card_carries_its_buttons_and_link() {
        let buttons = [Button {
            label: "Approve".to_owned(),
            data: "p3ak:t1".to_owned(),
        }];
        let blocks = card("do <it>", &buttons, Some("https://console/x"));
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["elements"][0]["value"], "p3ak:t1");
        assert_eq!(blocks[1]["elements"][1]["url"], "https://console/x");
        assert_eq!(card("x", &[], None).as_array().unwrap().len(), 1);
    }
}

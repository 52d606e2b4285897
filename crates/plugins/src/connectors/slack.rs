//! Slack: Socket Mode for what people write and press, the Web API for what the bot posts.
//!
//! The credential holds two tokens separated by whitespace: the app-level token (`xapp-…`,
//! opens the Socket Mode connection) then the bot token (`xoxb-…`, every Web API call and
//! file download). Ids: `sender` = `NAME:<user id>`; `conversation` = `NAME:<channel id>`, or
//! `NAME:<channel id>:<thread_ts>` for a message in a thread (replies go to that thread);
//! `message_id` = `<channel id>:<ts>`; a DM (`channel_type: im`) is `direct`.
//!
//! Each Socket Mode envelope is acknowledged only once the kernel answered what it carried
//! (at-least-once): an unacknowledged one comes again, and is recognised by its envelope id or
//! its message. Text the bot posts is escaped (`&`, `<`, `>`) with `mrkdwn: false` and no
//! unfurling, so it shows literally; only sealed announcements carry buttons (Block Kit
//! `actions`, `action_id` and `value` = the button's data).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant, SystemTime};

use data_encoding::BASE64;
use p3ak_proto::{Attachment, ErrorKind, Inbound, Outbound};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::Client;
use serde::Deserialize;
use serde_json::{Value, json};
use tungstenite::Message as WsMessage;
use zeroize::Zeroizing;

use crate::PluginError;

/// Slack's Web API.
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api/";
/// Longest text in one posted message (characters, after escaping); longer texts are split.
/// Slack truncates past 40 000 and advises 4 000.
pub const MAX_POST_CHARS: usize = 4000;
/// Longest text in a Block Kit section.
const MAX_SECTION_CHARS: usize = 3000;
/// How often a streamed reply may be edited at most.
const PARTIAL_EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// Retries of a rate-limited post or edit, and the longest wait accepted for one.
const MAX_RATE_RETRIES: u32 = 3;
const MAX_RATE_WAIT: Duration = Duration::from_secs(30);
/// Reconnection backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
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
        let error = answer["error"].as_str().unwrap_or("unknown_error").to_owned();
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

    /// Calls `method`, waiting out up to [`MAX_RATE_RETRIES`] rate limits of at most
    /// [`MAX_RATE_WAIT`] each.
    fn call_patiently(&self, method: &str, args: &Value) -> Result<Value, SlackError> {
        let mut retries = 0;
        loop {
            match self.call(method, Token::Bot, Some(args)) {
                Err(SlackError::RateLimited(wait))
                    if retries < MAX_RATE_RETRIES && wait <= MAX_RATE_WAIT =>
                {
                    retries += 1;
                    std::thread::sleep(wait);
                }
                other => return other,
            }
        }
    }

    /// The bot's user id and bot id (`auth.test`).
    fn whoami(&self) -> Result<(String, String), SlackError> {
        let answer = self.call("auth.test", Token::Bot, Some(&json!({})))?;
        Ok((
            answer["user_id"].as_str().unwrap_or_default().to_owned(),
            answer["bot_id"].as_str().unwrap_or_default().to_owned(),
        ))
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
        let answer = self.call_patiently("conversations.open", &json!({"users": user}))?;
        answer["channel"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SlackError::Network("conversations.open: no channel".to_owned()))
    }

    /// Downloads a file at `url` (a `url_private` on the API's host), at most `cap` bytes:
    /// `None` when it is larger.
    fn download(&self, url: &str, cap: u64) -> Result<Option<Vec<u8>>, SlackError> {
        let url = url::Url::parse(url).map_err(|_| SlackError::Network("bad file url".to_owned()))?;
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
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(10))
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
        let config = rustls_platform_verifier::ConfigVerifierExt::with_platform_verifier()
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

/// Something a person did on Slack, for the kernel.
#[derive(Debug)]
pub enum SlackEvent {
    /// A message: becomes `inbound`.
    Message(Inbound),
    /// A button press (`block_actions`).
    Press(Press),
}

/// A pressed button.
#[derive(Debug, Clone)]
pub struct Press {
    /// The button's data (`value`).
    pub data: String,
    /// The Slack user id that pressed it.
    pub presser: String,
    /// The message carrying the button.
    pub channel: String,
    pub ts: String,
}

/// An event and what acknowledges it.
#[derive(Debug)]
pub struct Delivery {
    pub event: SlackEvent,
    /// Its envelope, to acknowledge once the kernel answered.
    pub ack: AckToken,
}

/// What to acknowledge: the envelope ids that carried one event.
#[derive(Debug, Clone)]
pub struct AckToken {
    key: String,
}

/// The Socket Mode side: receives envelopes, hands out events, acknowledges them.
pub struct Listener {
    name: String,
    config: Config,
    api: Arc<WebApi>,
    socket: Option<Socket>,
    /// The bot's user id and bot id, to ignore its own messages.
    me: (String, String),
    backoff: Duration,
    next_attempt: Instant,
    /// Events handed out and not yet acknowledged: key → envelope ids that carried it.
    in_flight: HashMap<String, Vec<String>>,
    /// Keys and envelope ids already acknowledged (bounded).
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

impl Listener {
    /// Waits up to `wait` for events; connects (with backoff) when there is no connection.
    ///
    /// # Errors
    ///
    /// A refused token (`invalid_auth`): retrying cannot help.
    pub fn poll(&mut self, wait: Duration) -> Result<Vec<Delivery>, SlackError> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            if self.socket.is_none() {
                let now = Instant::now();
                if now < self.next_attempt {
                    let until = self.next_attempt.min(deadline);
                    std::thread::sleep(until.saturating_duration_since(now));
                    if Instant::now() < self.next_attempt {
                        return Ok(events);
                    }
                }
                match self.connect() {
                    Ok(()) => {}
                    Err(SlackError::Auth(e)) => return Err(SlackError::Auth(e)),
                    Err(e) => {
                        eprintln!("{}: {e}; reconnecting in {:?}", self.name, self.backoff);
                        self.schedule_reconnect();
                        continue;
                    }
                }
            }
            match self.read_one() {
                Ok(Some(text)) => {
                    if let Some(delivery) = self.envelope(&text) {
                        events.push(delivery);
                    }
                    // Hand out what arrived together; the next poll reads on.
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("{}: the socket broke ({e}); reconnecting", self.name);
                    self.socket = None;
                    self.schedule_reconnect();
                }
            }
            if !events.is_empty() || Instant::now() >= deadline {
                return Ok(events);
            }
        }
    }

    fn connect(&mut self) -> Result<(), SlackError> {
        if self.me.0.is_empty() {
            self.me = self.api.whoami()?;
        }
        let url = self.api.socket_url()?;
        self.socket = Some(open_socket(&url)?);
        Ok(())
    }

    fn schedule_reconnect(&mut self) {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Up to a quarter more, so that many clients do not come back at once.
        let jitter = self.backoff.mul_f64(f64::from(nanos % 1000) / 4000.0);
        self.next_attempt = Instant::now() + self.backoff + jitter;
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
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

    fn send_ack(&mut self, envelope_id: &str) {
        let frame = json!({ "envelope_id": envelope_id }).to_string();
        if let Some(socket) = self.socket.as_mut()
            && let Err(e) = socket.send(WsMessage::text(frame))
        {
            // Slack delivers it again; the kernel drops the duplicate.
            eprintln!("{}: cannot acknowledge ({}); it will come again", self.name, short(&e));
            self.socket = None;
            self.schedule_reconnect();
        }
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

    /// Acknowledges the envelope(s) that carried an event the kernel answered.
    pub fn ack(&mut self, token: &AckToken) {
        let envelopes = self.in_flight.remove(&token.key).unwrap_or_default();
        for envelope in &envelopes {
            self.send_ack(envelope);
            self.remember(envelope.clone());
        }
        self.remember(token.key.clone());
    }

    /// Reads one frame: `hello`, `disconnect` or an envelope. Returns the event to hand out.
    fn envelope(&mut self, text: &str) -> Option<Delivery> {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        match frame["type"].as_str() {
            Some("hello") => {
                self.backoff = BACKOFF_FIRST;
                return None;
            }
            Some("disconnect") => {
                // Slack is about to close this connection: open a new one now.
                if let Some(mut socket) = self.socket.take() {
                    let _ = socket.close(None);
                    let _ = socket.flush();
                }
                self.next_attempt = Instant::now();
                return None;
            }
            _ => {}
        }
        let envelope_id = frame["envelope_id"].as_str()?.to_owned();
        if self.done.contains(&envelope_id) {
            // Our acknowledgement was lost: say it again.
            self.send_ack(&envelope_id);
            return None;
        }
        let event = match frame["type"].as_str() {
            Some("events_api") => self.message(&frame["payload"]["event"]),
            Some("interactive") => press(&frame["payload"]),
            _ => None,
        };
        let Some((key, event)) = event else {
            // Nothing for the kernel (the bot's own message, an edit, a slash command): done.
            self.send_ack(&envelope_id);
            self.remember(envelope_id);
            return None;
        };
        if self.done.contains(&key) {
            self.send_ack(&envelope_id);
            self.remember(envelope_id);
            return None;
        }
        if let Some(envelopes) = self.in_flight.get_mut(&key) {
            // Delivered again while the kernel has it: acknowledged with the first.
            if !envelopes.contains(&envelope_id) {
                envelopes.push(envelope_id);
            }
            return None;
        }
        self.in_flight.insert(key.clone(), vec![envelope_id]);
        Some(Delivery {
            event,
            ack: AckToken { key },
        })
    }

    /// A `message` event from a person → `inbound`; anything else → `None`.
    fn message(&self, event: &Value) -> Option<(String, SlackEvent)> {
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
        if event.get("bot_id").is_some_and(|b| !b.is_null())
            || event["user"].as_str().is_none_or(|u| u == self.me.0)
        {
            return None;
        }
        let user = event["user"].as_str()?;
        let channel = event["channel"].as_str()?;
        let ts = event["ts"].as_str()?;
        if !is_id(user) || !is_id(channel) || !is_id(ts) {
            return None;
        }
        let direct = event["channel_type"].as_str() == Some("im");
        let conversation = match event["thread_ts"].as_str() {
            Some(thread) if thread != ts && is_id(thread) => {
                format!("{}:{channel}:{thread}", self.name)
            }
            _ => format!("{}:{channel}", self.name),
        };
        let mut text = unescape(event["text"].as_str().unwrap_or_default());
        cut(&mut text, self.config.max_message_bytes);
        let attachments = event["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|file| self.attachment(file))
            .collect();
        let message_id = format!("{channel}:{ts}");
        let mut inbound = Inbound::new(conversation, format!("{}:{user}", self.name), text);
        inbound.message_id = Some(message_id.clone());
        inbound.direct = direct;
        inbound.attachments = attachments;
        if let Some(name) = event["user_profile"]["display_name"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            inbound.sender_name = Some(name.to_owned());
        }
        Some((message_id, SlackEvent::Message(inbound)))
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
                    eprintln!("{}: attachment `{name}`: {e}", self.name);
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
fn press(payload: &Value) -> Option<(String, SlackEvent)> {
    if payload["type"].as_str() != Some("block_actions") {
        return None;
    }
    let action = payload["actions"].as_array()?.first()?;
    let data = action["value"]
        .as_str()
        .or_else(|| action["action_id"].as_str())?
        .to_owned();
    let presser = payload["user"]["id"].as_str()?.to_owned();
    let channel = payload["container"]["channel_id"]
        .as_str()
        .or_else(|| payload["channel"]["id"].as_str())?
        .to_owned();
    let ts = payload["container"]["message_ts"]
        .as_str()
        .or_else(|| payload["message"]["ts"].as_str())?
        .to_owned();
    let key = format!(
        "press:{}:{}",
        presser,
        action["action_ts"].as_str().unwrap_or(&ts)
    );
    Some((
        key,
        SlackEvent::Press(Press {
            data,
            presser,
            channel,
            ts,
        }),
    ))
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

/// Cuts `text` to at most `max` bytes (on a character boundary), saying so.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let note = format!("\n[cut: the message was longer than {max} bytes]");
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&note);
}

/// Splits `text` into pieces whose escaped form has at most `max` characters, preferring to
/// cut after a newline, else after a space.
#[must_use]
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut length = 0;
        let mut end = rest.len();
        let mut last_newline = None;
        let mut last_space = None;
        for (at, c) in rest.char_indices() {
            let width = match c {
                '&' => 5,
                '<' | '>' => 4,
                _ => 1,
            };
            if length + width > max {
                end = at;
                break;
            }
            length += width;
            if c == '\n' {
                last_newline = Some(at + 1);
            } else if c == ' ' {
                last_space = Some(at + 1);
            }
        }
        if end < rest.len() {
            end = last_newline.or(last_space).filter(|&e| e > 0).unwrap_or(end);
        }
        let (piece, tail) = rest.split_at(end.max(rest.chars().next().map_or(1, char::len_utf8)));
        pieces.push(escape(piece));
        rest = tail;
    }
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    pieces
}

// ---- Posting ----

/// Where a conversation posts: the channel, and the thread if any.
fn target<'a>(name: &str, conversation: &'a str) -> Result<(&'a str, Option<&'a str>), ToolFailure> {
    let rest = conversation
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| {
            ToolFailure::invalid(format!("conversation `{conversation}` is not {name}'s"))
        })?;
    let (channel, thread) = match rest.split_once(':') {
        Some((channel, thread)) => (channel, Some(thread)),
        None => (rest, None),
    };
    if !is_id(channel) || thread.is_some_and(|t| !is_id(t)) {
        return Err(ToolFailure::invalid(format!(
            "conversation `{conversation}` is not a slack channel"
        )));
    }
    Ok((channel, thread))
}

/// The Web API side: posts, edits, announcements.
pub struct Poster {
    name: String,
    api: Arc<WebApi>,
    /// When each message was last edited (for coalescing partial edits).
    edited: Mutex<HashMap<String, Instant>>,
    /// Each approval's messages: (channel, ts, text).
    announced: Mutex<HashMap<String, Vec<(String, String, String)>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Poster {
    /// Posts `outbound` (or edits with it); returns the id of the last message.
    ///
    /// # Errors
    ///
    /// A conversation that is not this connector's, or what Slack refused.
    pub fn post(&self, outbound: &Outbound) -> Result<String, ToolFailure> {
        let (channel, thread) = target(&self.name, &outbound.conversation)?;
        let pieces = split(&outbound.text, MAX_POST_CHARS);
        let mut last = None;
        let mut rest = pieces.iter();
        if let Some(edit) = &outbound.edit {
            if !is_id(edit) {
                return Err(ToolFailure::invalid(format!("`{edit}` is not a slack message id")));
            }
            let key = format!("{channel}:{edit}");
            if outbound.partial {
                let recent = lock(&self.edited)
                    .get(&key)
                    .is_some_and(|at| at.elapsed() < PARTIAL_EDIT_INTERVAL);
                if recent {
                    return Ok(edit.clone());
                }
            }
            let first = rest.next().map_or("", String::as_str);
            let args = json!({
                "channel": channel, "ts": edit, "text": first,
                "mrkdwn": false, "parse": "none", "link_names": false, "blocks": [],
            });
            let result = if outbound.partial {
                self.api.call("chat.update", Token::Bot, Some(&args))
            } else {
                self.api.call_patiently("chat.update", &args)
            };
            match result {
                Ok(_) => {}
                // A skipped intermediate state is fine: a later edit carries more.
                Err(SlackError::RateLimited(_)) if outbound.partial => return Ok(edit.clone()),
                Err(e) => return Err(e.failure()),
            }
            lock(&self.edited).insert(key, Instant::now());
            last = Some(edit.clone());
        }
        for piece in rest {
            let mut args = plain_message(channel, piece);
            if let Some(thread) = thread {
                args["thread_ts"] = json!(thread);
            }
            let answer = self
                .api
                .call_patiently("chat.postMessage", &args)
                .map_err(|e| e.failure())?;
            last = answer["ts"].as_str().map(str::to_owned);
        }
        last.ok_or_else(|| ToolFailure::new(ErrorKind::Permanent, "slack: no message id"))
    }

    /// Shows an approval announcement: `Pending`/`Undo` post `text` with its buttons to each
    /// recipient's DM; `Settled` edits those messages to `text`, without buttons. Returns the
    /// number of messages posted or edited.
    ///
    /// # Errors
    ///
    /// What Slack refused.
    pub fn announce(
        &self,
        announcement: &p3ak_approval::chat::Announcement,
    ) -> Result<usize, ToolFailure> {
        use p3ak_approval::chat::AnnouncementKind;
        if announcement.kind == AnnouncementKind::Settled {
            let messages = lock(&self.announced)
                .remove(&announcement.approval)
                .unwrap_or_default();
            let mut edited = 0;
            for (channel, ts, _) in &messages {
                self.edit_card(channel, ts, &announcement.text)?;
                edited += 1;
            }
            return Ok(edited);
        }
        let blocks = card(
            &announcement.text,
            &announcement.buttons,
            announcement.link.as_deref(),
        );
        let mut posted = Vec::new();
        for user in &announcement.recipients {
            if !is_id(user) {
                return Err(ToolFailure::invalid(format!("`{user}` is not a slack user id")));
            }
            let channel = self.api.open_dm(user).map_err(|e| e.failure())?;
            let mut args = plain_message(&channel, &escape(&clip(&announcement.text, MAX_POST_CHARS)));
            args["blocks"] = blocks.clone();
            let answer = self
                .api
                .call_patiently("chat.postMessage", &args)
                .map_err(|e| e.failure())?;
            if let Some(ts) = answer["ts"].as_str() {
                posted.push((channel, ts.to_owned(), announcement.text.clone()));
            }
        }
        let count = posted.len();
        lock(&self.announced)
            .entry(announcement.approval.clone())
            .or_default()
            .extend(posted);
        Ok(count)
    }

    /// Answers a press: the presser sees `message`; the announcement (when known) shows its
    /// text and the outcome line, without buttons.
    ///
    /// # Errors
    ///
    /// What Slack refused.
    pub fn answer_press(
        &self,
        press: &Press,
        answer: Option<&p3ak_approval::chat::PressAnswer>,
        message: &str,
    ) -> Result<(), ToolFailure> {
        let Some(answer) = answer else {
            return self.tell(press, message);
        };
        let known = answer.approval.as_ref().and_then(|approval| {
            lock(&self.announced).get(approval).and_then(|messages| {
                messages
                    .iter()
                    .find(|(c, t, _)| *c == press.channel && *t == press.ts)
                    .cloned()
            })
        });
        match known {
            Some((channel, ts, text)) => {
                use p3ak_approval::chat::PressOutcome;
                let text = format!("{text}\n\n{}", answer.message);
                self.edit_card(&channel, &ts, &text)?;
                if answer.outcome != PressOutcome::Refused
                    && let Some(approval) = &answer.approval
                    && let Some(messages) = lock(&self.announced).get_mut(approval)
                {
                    for entry in messages.iter_mut().filter(|(c, t, _)| *c == channel && *t == ts) {
                        entry.2.clone_from(&text);
                    }
                }
                Ok(())
            }
            None => self.tell(press, &answer.message),
        }
    }

    /// An ephemeral line for the presser, under the pressed message.
    fn tell(&self, press: &Press, message: &str) -> Result<(), ToolFailure> {
        let mut args = plain_message(&press.channel, &escape(&clip(message, MAX_POST_CHARS)));
        args["user"] = json!(press.presser);
        self.api
            .call_patiently("chat.postEphemeral", &args)
            .map(|_| ())
            .map_err(|e| e.failure())
    }

    fn edit_card(&self, channel: &str, ts: &str, text: &str) -> Result<(), ToolFailure> {
        let mut args = plain_message(channel, &escape(&clip(text, MAX_POST_CHARS)));
        args["ts"] = json!(ts);
        args["blocks"] = card(text, &[], None);
        self.api
            .call_patiently("chat.update", &args)
            .map(|_| ())
            .map_err(|e| e.failure())
    }
}

/// A post's arguments that make Slack show `text` (already escaped) literally.
fn plain_message(channel: &str, text: &str) -> Value {
    json!({
        "channel": channel,
        "text": text,
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
fn card(text: &str, buttons: &[p3ak_approval::chat::Button], link: Option<&str>) -> Value {
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
            "text": {"type": "plain_text", "text": "Open the console", "emoji": false},
            "action_id": "p3ak-link",
            "url": clip(link, 3000),
        }));
    }
    if !elements.is_empty() {
        blocks.push(json!({"type": "actions", "block_id": "p3ak", "elements": elements}));
    }
    Value::Array(blocks)
}

/// The Slack connector, from its config and credential: the listening half and the posting
/// half, which the runtime drives from two threads.
///
/// # Errors
///
/// A config or credential that cannot work.
pub fn from_config(
    name: &str,
    config: &Value,
    credential: Option<&str>,
) -> Result<(Listener, Arc<Poster>), PluginError> {
    let config: Config = p3ak_sdk::parse_config(config)?;
    p3ak_sdk::check_setting("max_message_bytes", config.max_message_bytes, 1 << 20, " bytes")?;
    p3ak_sdk::check_setting("max_attachment_bytes", config.max_attachment_bytes, 64 << 20, " bytes")?;
    p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, 600, " s")?;
    if config.max_message_bytes < 128 {
        return Err(PluginError::Config(
            "`max_message_bytes` must be at least 128".to_owned(),
        ));
    }
    let credential = credential.ok_or_else(|| {
        PluginError::Key("the slack connector needs a credential (the app and bot tokens)".to_owned())
    })?;
    let tokens = Tokens::parse(credential)?;
    let api = Arc::new(WebApi::new(&config, tokens)?);
    let poster = Arc::new(Poster {
        name: name.to_owned(),
        api: Arc::clone(&api),
        edited: Mutex::new(HashMap::new()),
        announced: Mutex::new(HashMap::new()),
    });
    let listener = Listener {
        name: name.to_owned(),
        config,
        api,
        socket: None,
        me: (String::new(), String::new()),
        backoff: BACKOFF_FIRST,
        next_attempt: Instant::now(),
        in_flight: HashMap::new(),
        done: HashSet::new(),
        done_order: VecDeque::new(),
    };
    Ok((listener, poster))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a failed step should fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_escaped_pieces_within_the_limit_and_loses_nothing() {
        let text = "a <b> & c\n".repeat(50);
        let pieces = split(&text, 40);
        assert!(pieces.iter().all(|p| p.chars().count() <= 40), "{pieces:?}");
        assert_eq!(unescape(&pieces.concat()), text);
        assert_eq!(split("", 10), vec![String::new()]);
        assert_eq!(split("héllo", 2).concat(), "héllo");
    }

    #[test]
    fn cut_says_so_and_stays_within_the_limit() {
        let mut text = "é".repeat(200);
        cut(&mut text, 128);
        assert!(text.len() <= 128);
        assert!(text.ends_with("longer than 128 bytes]"));
    }

    #[test]
    fn a_conversation_names_this_connectors_channel_and_thread() {
        assert_eq!(target("sl", "sl:C1").unwrap(), ("C1", None));
        assert_eq!(target("sl", "sl:C1:17.5").unwrap(), ("C1", Some("17.5")));
        assert!(target("sl", "other:C1").is_err());
        assert!(target("sl", "slx:C1").is_err());
        assert!(target("sl", "sl:C 1").is_err());
    }

    #[test]
    fn the_credential_needs_both_tokens_in_order() {
        assert!(Tokens::parse("xapp-1 xoxb-2").is_ok());
        assert!(Tokens::parse("xoxb-2 xapp-1").is_err());
        assert!(Tokens::parse("xapp-1").is_err());
        assert!(Tokens::parse("xapp-1 xoxb-2 x").is_err());
    }
}

//! The protocol loop of a chat connector: what carries people's messages between a chat
//! platform (Telegram, Slack, Discord, …) and the kernel, for first-party and third-party
//! connectors alike.
//!
//! A connector is written as two halves the runtime drives at once:
//!
//! - a [`Platform`] (owned by one thread) that waits for the platform's [`Event`]s — people's
//!   messages and button presses — and acknowledges each to the platform once it is handled;
//! - a [`Poster`] (shared) that posts, edits and answers on the platform.
//!
//! [`serve`] does the handshake as [`crate::runtime::serve`] does (registering `kind:
//! connector`, no actions), hands the platform token from `welcome.key` to the builder, reads
//! the approval key from [`APPROVAL_KEY_ENV`] (optional) and then runs:
//!
//! - the calling thread reads the kernel's frames: it answers `ping`, routes the kernel's
//!   answers to the requests this side made, passes `outbound` and `approval` to a worker, and
//!   stops at `shutdown` or the end of the connection;
//! - the worker posts `outbound` texts (split to the platform's limit, partial edits coalesced
//!   to one a second per message, 429s waited out) and shows `approval` announcements to their
//!   recipients, with their buttons;
//! - the platform thread polls: a message becomes an `inbound` request, acknowledged to the
//!   platform only after the kernel accepted it (at-least-once; the kernel drops a redelivered
//!   `message_id`); a press of a [`BUTTON_PREFIX`] button is sealed into an `approval_press`,
//!   and the daemon's sealed answer is shown to the presser and on the announcement. Any other
//!   button is answered "unknown button" and never reaches the kernel.
//!
//! Ids are the platform's own, without the connector's name: the runtime prefixes `NAME:` to
//! chats (`conversation`) and users (`sender`), and strips it from `outbound` conversations
//! (refusing another connector's). Texts are plain: a [`Poster`] makes its platform render
//! them literally.
//!
//! Logs go to standard error through [`Log`], which replaces the token by `[redacted]`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use p3ak_sdk::connector::{self, Button, Connector, Event, Platform, Posted, Poster, Pressed};
//! use p3ak_sdk::{Launch, PluginError, ToolFailure};
//!
//! struct Inbox; // would long-poll the platform
//! struct Outbox; // would call its REST API
//!
//! impl Platform for Inbox {
//!     fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure> {
//!         std::thread::sleep(wait);
//!         Ok(Vec::new())
//!     }
//! }
//!
//! impl Poster for Outbox {
//!     fn text_limit(&self) -> usize {
//!         2000
//!     }
//!     fn send(&self, _chat: &str, _text: &str) -> Result<String, ToolFailure> {
//!         Ok("1".to_owned())
//!     }
//!     fn edit(&self, _chat: &str, _id: &str, _text: &str) -> Result<(), ToolFailure> {
//!         Ok(())
//!     }
//!     fn announce(
//!         &self,
//!         user: &str,
//!         _text: &str,
//!         _buttons: &[Button],
//!         _link: Option<&str>,
//!     ) -> Result<Posted, ToolFailure> {
//!         Ok(Posted { chat: user.to_owned(), message_id: "2".to_owned() })
//!     }
//!     fn answer_press(&self, _: &Pressed, _: &str, _: Option<&str>) -> Result<(), ToolFailure> {
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> Result<(), PluginError> {
//!     let launch = Launch::from_env()?;
//!     let stream = p3ak_sdk::connect()?;
//!     connector::serve(stream, &launch.plugin, "my-chat 0.1", launch.max_frame, |setup| {
//!         let _token = setup.token; // the platform token from `welcome.key`
//!         Ok(Connector {
//!             platform: Box::new(Inbox),
//!             poster: Arc::new(Outbox),
//!             max_message_bytes: connector::DEFAULT_MAX_MESSAGE_BYTES,
//!         })
//!     })
//! }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use p3ak_approval::chat::{
    Announcement, AnnouncementKind, ChatKey, Press, PressAnswer, PressOutcome, Purpose,
};
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{
    Approval, ApprovalPress, Credential, Envelope, ErrorKind, ErrorMessage, Hello, Inbound,
    Message, Outbound, PROTOCOL_VERSION, PluginKind, Pong, ProtoError, Register,
    SUPPORTED_VERSIONS, ToolResult, Welcome,
};

pub use p3ak_approval::chat::{APPROVAL_KEY_ENV, BUTTON_PREFIX, Button};
pub use p3ak_proto::Attachment;

use crate::PluginError;
use crate::runtime::ToolFailure;

/// Default for `max_message_bytes`: longer inbound texts are cut, and say so.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Default for `max_attachment_bytes`: larger attachments are listed without their data.
pub const DEFAULT_MAX_ATTACHMENT_BYTES: u64 = 2 * 1024 * 1024;
/// The longest conversation id the kernel accepts.
pub const MAX_CONVERSATION: usize = 128;

/// How long the platform thread asks [`Platform::poll`] to wait at most.
const POLL_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for the kernel's answer to a request.
const KERNEL_ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Longest reconnect backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A non-partial post is retried this many times after a 429…
const MAX_RATE_RETRIES: u32 = 3;
/// …as long as the platform asks to wait at most this long.
const MAX_RATE_WAIT: Duration = Duration::from_secs(30);
/// Partial edits of one message: at most one per this interval.
const PARTIAL_EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// Split messages and announcements remembered (oldest forgotten first).
const MAX_REMEMBERED: usize = 1024;

/// Something that happened on the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A person wrote a message.
    Message(Incoming),
    /// A person pressed a button under one of the connector's messages.
    Press(Pressed),
}

impl Event {
    /// The platform's receipt for the event (see [`Incoming::receipt`]).
    #[must_use]
    pub fn receipt(&self) -> &str {
        match self {
            Self::Message(m) => &m.receipt,
            Self::Press(p) => &p.receipt,
        }
    }
}

/// A person's message, as the platform authenticated it. Ids are the platform's, without the
/// connector's name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Incoming {
    /// The chat it was written in (`-1001234`, a channel id; Slack: `C1:1700000000.1` for a
    /// thread). Allowed characters: `A-Za-z0-9_.:-`.
    pub chat: String,
    /// Who wrote it.
    pub user: String,
    /// Their display name (shown to people, never trusted).
    pub user_name: Option<String>,
    /// The platform's id of the message: a redelivery carries the same.
    pub message_id: String,
    /// The text, as written.
    pub text: String,
    /// A one-to-one chat between the person and the connector's account.
    pub direct: bool,
    /// Files that came with it (over the size limit: without `data`).
    pub attachments: Vec<Attachment>,
    /// What [`Platform::ack`] gets back once the kernel has the message (Telegram: the
    /// `update_id`).
    pub receipt: String,
}

/// A button press.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pressed {
    /// The button's data, as the platform handed it back.
    pub data: String,
    /// Who pressed it.
    pub user: String,
    /// The chat of the message that carries the button.
    pub chat: String,
    /// That message's id.
    pub message_id: String,
    /// That message's text, when the platform says (to edit it when the id is not remembered).
    pub text: Option<String>,
    /// What the platform needs to answer this press (Telegram: the callback query id; Discord:
    /// the interaction's id and token). Never logged.
    pub handle: String,
    /// What [`Platform::ack`] gets back once the press is handled.
    pub receipt: String,
}

/// Where a message was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The chat (platform id).
    pub chat: String,
    /// The message's id.
    pub message_id: String,
}

/// The receiving half of a platform: owned by the platform thread.
pub trait Platform: Send {
    /// Waits up to about `wait` for events (returning none when nothing happened), connecting
    /// or reconnecting as needed. Events are handled in order before the next call.
    ///
    /// # Errors
    ///
    /// A [`ToolFailure`]: [`ErrorKind::Auth`] or [`ErrorKind::Permanent`] stop the connector
    /// (a refused token); anything else is retried with backoff (`retry_after_ms` when
    /// given).
    fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure>;

    /// The kernel has `event` (or refused it for good): the platform may forget it. Events
    /// are acknowledged in the order [`Platform::poll`] returned them.
    ///
    /// # Errors
    ///
    /// Logged; the event may then come again.
    fn ack(&mut self, event: &Event) -> Result<(), ToolFailure> {
        let _ = event;
        Ok(())
    }
}

/// The sending half of a platform: shared by the threads. Every text is plain: the poster
/// makes the platform show it literally (no markup, mentions, previews or buttons of its own).
/// A rate limit is [`ToolFailure::rate_limited`] with the platform's `retry_after_ms`; the
/// runtime waits and retries.
pub trait Poster: Send + Sync {
    /// The longest text one message may carry, in characters (Telegram 4096, Discord 2000):
    /// longer texts are split by the runtime.
    fn text_limit(&self) -> usize;

    /// Posts `text` (within [`Poster::text_limit`]) in `chat`; returns the message's id.
    ///
    /// # Errors
    ///
    /// The platform's failure.
    fn send(&self, chat: &str, text: &str) -> Result<String, ToolFailure>;

    /// Replaces message `message_id`'s text in `chat` by `text`, removing any buttons.
    ///
    /// # Errors
    ///
    /// The platform's failure.
    fn edit(&self, chat: &str, message_id: &str, text: &str) -> Result<(), ToolFailure>;

    /// Posts `text` with `buttons` (and `link` as a link button) directly to the platform user
    /// `user` (a DM); returns where it went.
    ///
    /// # Errors
    ///
    /// The platform's failure.
    fn announce(
        &self,
        user: &str,
        text: &str,
        buttons: &[Button],
        link: Option<&str>,
    ) -> Result<Posted, ToolFailure>;

    /// Answers `press` with `message` for the presser and, when `edit` is given, replaces the
    /// pressed message's text by it, without buttons.
    ///
    /// # Errors
    ///
    /// The platform's failure.
    fn answer_press(
        &self,
        press: &Pressed,
        message: &str,
        edit: Option<&str>,
    ) -> Result<(), ToolFailure>;
}

/// Writes log lines to standard error, `[redacted]` in place of the token. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

struct LogInner {
    plugin: String,
    secrets: Vec<zeroize::Zeroizing<String>>,
}

impl Log {
    /// A log for `plugin` that hides `secret` (and each of its whitespace-separated parts).
    #[must_use]
    pub fn new(plugin: &str, secret: Option<&str>) -> Self {
        let mut secrets: Vec<zeroize::Zeroizing<String>> = Vec::new();
        if let Some(secret) = secret {
            for part in std::iter::once(secret.trim()).chain(secret.split_whitespace()) {
                if part.len() >= 4 && !secrets.iter().any(|s| s.as_str() == part) {
                    secrets.push(zeroize::Zeroizing::new(part.to_owned()));
                }
            }
        }
        // Longest first, so a part never leaves pieces of the whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            inner: Arc::new(LogInner {
                plugin: plugin.to_owned(),
                secrets,
            }),
        }
    }

    /// `text` with the secrets replaced.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.inner.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }

    /// Writes one line.
    pub fn line(&self, text: &str) {
        let line = self.redact(text).replace(['\n', '\r'], " ");
        let _ = writeln!(std::io::stderr().lock(), "{}: {line}", self.inner.plugin);
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("plugin", &self.inner.plugin)
            .finish_non_exhaustive()
    }
}

/// What the builder passed to [`serve`] gets.
pub struct Setup<'a> {
    /// The `welcome` message (its `config` holds the connector's settings).
    pub welcome: &'a Welcome,
    /// The platform token(s), from `welcome.key`.
    pub token: Credential,
    /// The plugin's configured name (`P3AK_PLUGIN_NAME`).
    pub plugin: &'a str,
    /// The connector's log.
    pub log: Log,
}

/// What the builder passed to [`serve`] returns.
pub struct Connector {
    /// The receiving half.
    pub platform: Box<dyn Platform>,
    /// The sending half.
    pub poster: Arc<dyn Poster>,
    /// Inbound texts longer than this (bytes) are cut and say so
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
}

/// Runs a connector over `stream` as `plugin`: the handshake, with `build` making the
/// [`Connector`] from the `welcome` config and the token, then the loop until `shutdown` or
/// the end of the connection. The approval key comes from [`APPROVAL_KEY_ENV`] when set.
///
/// # Errors
///
/// As [`crate::runtime::serve`]; a `welcome` without a key (the token) or an unreadable
/// approval key is refused as an invalid config; a platform that refuses the token
/// ([`ErrorKind::Auth`] or [`ErrorKind::Permanent`] from [`Platform::poll`]) ends it.
pub fn serve<F>(
    stream: UnixStream,
    plugin: &str,
    software: &str,
    max_frame: usize,
    build: F,
) -> Result<(), PluginError>
where
    F: FnOnce(Setup<'_>) -> Result<Connector, PluginError>,
{
    let key = match std::env::var(APPROVAL_KEY_ENV) {
        Ok(hex) if !hex.trim().is_empty() => Some(hex),
        _ => None,
    };
    let key = key.map(zeroize::Zeroizing::new);
    serve_with_key(
        stream,
        plugin,
        software,
        max_frame,
        key.as_ref().map(|k| k.as_str()),
        build,
    )
}

/// [`serve`] with the approval key (hex) given instead of read from the environment.
///
/// # Errors
///
/// As [`serve`].
pub fn serve_with_key<F>(
    stream: UnixStream,
    plugin: &str,
    software: &str,
    max_frame: usize,
    approval_key: Option<&str>,
    build: F,
) -> Result<(), PluginError>
where
    F: FnOnce(Setup<'_>) -> Result<Connector, PluginError>,
{
    let mut reader = stream.try_clone().map_err(|source| PluginError::Io {
        context: "cannot clone the connection",
        source,
    })?;
    let writer = Arc::new(Writer {
        stream: Mutex::new(stream),
        version: AtomicU64::new(u64::from(PROTOCOL_VERSION)),
        max: max_frame,
    });
    writer.send(
        0,
        Message::Hello(Hello {
            plugin: plugin.to_owned(),
            versions: SUPPORTED_VERSIONS.to_vec(),
            software: Some(software.to_owned()),
        }),
    )?;
    let welcome = match handshake_message(&mut reader, &writer, "welcome")? {
        Message::Welcome(welcome) => welcome,
        other => {
            return Err(PluginError::Handshake(format!(
                "expected `welcome`, got `{}`",
                other.type_name()
            )));
        }
    };
    if !SUPPORTED_VERSIONS.contains(&welcome.version) {
        return Err(PluginError::Handshake(format!(
            "the kernel chose protocol version {}, which this plugin does not speak",
            welcome.version
        )));
    }
    writer
        .version
        .store(u64::from(welcome.version), Ordering::SeqCst);
    let refuse = |e: PluginError| {
        let _ = writer.send(0, error_message(ErrorKind::Invalid, e.to_string()));
        e
    };
    let Some(token) = welcome.key.clone() else {
        return Err(refuse(PluginError::Key(
            "no platform token: set the connector's `credential`".to_owned(),
        )));
    };
    let log = Log::new(plugin, Some(token.expose()));
    let chat_key = match approval_key {
        Some(hex) => Some(ChatKey::from_hex(hex, plugin).map_err(|e| {
            refuse(PluginError::BadEnv {
                name: APPROVAL_KEY_ENV,
                reason: e.to_string(),
            })
        })?),
        None => None,
    };
    let connector = build(Setup {
        welcome: &welcome,
        token,
        plugin,
        log: log.clone(),
    })
    .map_err(refuse)?;
    writer.send(
        0,
        Message::Register(Register {
            kind: PluginKind::Connector,
            actions: Vec::new(),
        }),
    )?;
    match handshake_message(&mut reader, &writer, "registered")? {
        Message::Registered(_) => {}
        other => {
            return Err(PluginError::Handshake(format!(
                "expected `registered`, got `{}`",
                other.type_name()
            )));
        }
    }
    let shared = Arc::new(Shared {
        plugin: plugin.to_owned(),
        writer,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        failure: Mutex::new(None),
        key: chat_key,
        poster: connector.poster,
        log,
        max_message_bytes: connector.max_message_bytes,
        memory: Mutex::new(Memory::default()),
    });
    run(&mut reader, &shared, connector.platform)
}

/// The writing half of the connection: whole frames, one at a time.
struct Writer {
    stream: Mutex<UnixStream>,
    version: AtomicU64,
    max: usize,
}

impl Writer {
    fn send(&self, id: u64, message: Message) -> Result<(), ProtoError> {
        let envelope = Envelope {
            v: u32::try_from(self.version.load(Ordering::SeqCst)).unwrap_or(PROTOCOL_VERSION),
            id,
            message,
        };
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_message(&mut *stream, &envelope, self.max)
    }
}

fn error_message(kind: ErrorKind, message: impl Into<String>) -> Message {
    Message::Error(ErrorMessage {
        kind,
        message: message.into(),
        retry_after_ms: None,
    })
}

fn failure_message(f: ToolFailure) -> Message {
    Message::Error(ErrorMessage {
        kind: f.kind,
        message: f.message,
        retry_after_ms: f.retry_after_ms,
    })
}

/// The next handshake message, answering pings on the way; an `error` is a refusal.
fn handshake_message(
    reader: &mut UnixStream,
    writer: &Writer,
    expected: &str,
) -> Result<Message, PluginError> {
    loop {
        let Some(envelope) = read_message(reader, writer.max)? else {
            return Err(PluginError::Handshake(format!(
                "the kernel closed the connection before `{expected}`"
            )));
        };
        match envelope.message {
            Message::Ping(_) => writer.send(envelope.id, Message::Pong(Pong {}))?,
            Message::Error(e) => {
                return Err(PluginError::Refused {
                    kind: e.kind,
                    message: e.message,
                });
            }
            other => return Ok(other),
        }
    }
}

/// What the runtime remembers of its own messages.
#[derive(Default)]
struct Memory {
    /// The last message id of a split text → all its message ids, in order.
    groups: HashMap<String, Vec<String>>,
    group_order: VecDeque<String>,
    /// When each message was last edited by a partial update.
    partial_edits: HashMap<String, Instant>,
    /// An approval → its announcement's text and where it was posted.
    announcements: HashMap<String, (String, Vec<Posted>)>,
    announcement_order: VecDeque<String>,
}

impl Memory {
    fn remember_group(&mut self, key: String, ids: Vec<String>) {
        if ids.len() > 1 {
            self.group_order.push_back(key.clone());
            self.groups.insert(key, ids);
        }
        while self.group_order.len() > MAX_REMEMBERED {
            if let Some(old) = self.group_order.pop_front() {
                self.groups.remove(&old);
            }
        }
        if self.partial_edits.len() > MAX_REMEMBERED {
            let now = Instant::now();
            self.partial_edits
                .retain(|_, at| now.duration_since(*at) < PARTIAL_EDIT_INTERVAL);
        }
    }

    fn remember_announcement(&mut self, approval: &str, text: &str, posted: Vec<Posted>) {
        if let Some((old_text, list)) = self.announcements.get_mut(approval) {
            text.clone_into(old_text);
            list.extend(posted);
            return;
        }
        self.announcement_order.push_back(approval.to_owned());
        self.announcements
            .insert(approval.to_owned(), (text.to_owned(), posted));
        while self.announcement_order.len() > MAX_REMEMBERED {
            if let Some(old) = self.announcement_order.pop_front() {
                self.announcements.remove(&old);
            }
        }
    }
}

/// What the threads share.
struct Shared {
    plugin: String,
    writer: Arc<Writer>,
    /// This side's open requests → where their answer goes.
    pending: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Why the platform thread stopped the connector, if it did.
    failure: Mutex<Option<PluginError>>,
    key: Option<ChatKey>,
    poster: Arc<dyn Poster>,
    log: Log,
    max_message_bytes: usize,
    memory: Mutex<Memory>,
}

impl Shared {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sends a request to the kernel and waits for its answer; `None` when the connection
    /// ended or no answer came in time.
    fn request(&self, message: Message) -> Option<Message> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (sender, receiver) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, sender);
        let answer = match self.writer.send(id, message) {
            Ok(()) => receiver.recv_timeout(KERNEL_ANSWER_WAIT).ok(),
            Err(e) => {
                self.log.line(&format!("cannot write to the kernel: {e}"));
                None
            }
        };
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        answer
    }

    /// Sleeps `wait` in short steps; false when the connector is stopping.
    fn sleep(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(100)));
        }
        false
    }

    fn conversation(&self, chat: &str) -> String {
        format!("{}:{chat}", self.plugin)
    }
}

fn run(
    reader: &mut UnixStream,
    shared: &Arc<Shared>,
    platform: Box<dyn Platform>,
) -> Result<(), PluginError> {
    let (requests, receiver) = mpsc::channel::<(u64, Message)>();
    let worker = {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("p3ak-connector-post".to_owned())
            .spawn(move || {
                for (id, message) in receiver {
                    let reply = handle_request(&shared, message);
                    if shared.writer.send(id, reply).is_err() {
                        return;
                    }
                }
            })
            .map_err(|source| PluginError::Io {
                context: "cannot start the worker thread",
                source,
            })?
    };
    {
        let shared = Arc::clone(shared);
        // Not joined: a poll may be waiting on the platform when the kernel says `shutdown`;
        // it sees `stopping` when it returns, and the process exits anyway.
        std::thread::Builder::new()
            .name("p3ak-connector-poll".to_owned())
            .spawn(move || platform_loop(&shared, platform))
            .map_err(|source| PluginError::Io {
                context: "cannot start the platform thread",
                source,
            })?;
    }
    let outcome = read_loop(reader, shared, &requests);
    shared.stopping.store(true, Ordering::SeqCst);
    // Whoever waits for an answer learns that none will come.
    shared
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    drop(requests);
    let _ = worker.join();
    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match failure {
        Some(e) => Err(e),
        None => outcome,
    }
}

/// Reads the kernel's frames until `shutdown`, the end of the connection, or the platform
/// thread's failure (which shuts the socket down).
fn read_loop(
    reader: &mut UnixStream,
    shared: &Shared,
    requests: &mpsc::Sender<(u64, Message)>,
) -> Result<(), PluginError> {
    let writer = &shared.writer;
    loop {
        let envelope = match read_message(reader, writer.max) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return Ok(()),
            Err(e @ (ProtoError::Json(_) | ProtoError::Invalid(_) | ProtoError::Version(_))) => {
                writer.send(
                    0,
                    error_message(ErrorKind::Invalid, format!("malformed message: {e}")),
                )?;
                continue;
            }
            Err(_) if shared.stopping() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let id = envelope.id;
        match envelope.message {
            Message::Ping(_) => writer.send(id, Message::Pong(Pong {}))?,
            Message::Shutdown(_) => return Ok(()),
            Message::Pong(_) => {}
            message @ (Message::Result(_) | Message::Error(_)) => {
                let waiting = shared
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
                // An answer nobody waits for (late, or an error about a malformed frame).
                if let Some(waiting) = waiting {
                    let _ = waiting.send(message);
                }
            }
            message @ (Message::Outbound(_) | Message::Approval(_)) => {
                if requests.send((id, message)).is_err() {
                    return Ok(());
                }
            }
            other => writer.send(
                id,
                error_message(
                    ErrorKind::Invalid,
                    format!(
                        "this plugin is a connector: it does not answer `{}`",
                        other.type_name()
                    ),
                ),
            )?,
        }
    }
}

fn handle_request(shared: &Shared, message: Message) -> Message {
    let outcome = match message {
        Message::Outbound(outbound) => {
            post_outbound(shared, &outbound).map(|id| serde_json::json!({ "message_id": id }))
        }
        Message::Approval(approval) => {
            show_approval(shared, &approval).map(|n| serde_json::json!({ "posted": n }))
        }
        other => Err(ToolFailure::invalid(format!(
            "unexpected `{}`",
            other.type_name()
        ))),
    };
    match outcome {
        Ok(output) => Message::Result(ToolResult { output }),
        Err(f) => {
            shared.log.line(&format!("request failed: {}", f.message));
            failure_message(f)
        }
    }
}

/// Calls `call` again after each rate limit the platform asks to wait out (within bounds).
fn with_retries<T>(
    shared: &Shared,
    mut call: impl FnMut() -> Result<T, ToolFailure>,
) -> Result<T, ToolFailure> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(f) if f.kind == ErrorKind::RateLimited && attempt < MAX_RATE_RETRIES => {
                let wait = Duration::from_millis(f.retry_after_ms.unwrap_or(1000));
                if wait > MAX_RATE_WAIT || !shared.sleep(wait) {
                    return Err(f);
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The platform chat of a conversation of this connector.
fn chat_of<'a>(shared: &Shared, conversation: &'a str) -> Result<&'a str, ToolFailure> {
    conversation
        .strip_prefix(shared.plugin.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|chat| !chat.is_empty())
        .ok_or_else(|| {
            ToolFailure::invalid(format!(
                "conversation `{conversation}` is not one of connector `{}`",
                shared.plugin
            ))
        })
}

fn post_outbound(shared: &Shared, outbound: &Outbound) -> Result<String, ToolFailure> {
    let chat = chat_of(shared, &outbound.conversation)?;
    if outbound.text.trim().is_empty() {
        return Err(ToolFailure::invalid("nothing to post: the text is empty"));
    }
    let poster = &shared.poster;
    let chunks = split_text(&outbound.text, poster.text_limit());
    let Some(edit) = &outbound.edit else {
        let mut ids = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            ids.push(with_retries(shared, || poster.send(chat, chunk))?);
        }
        let last = ids.last().cloned().unwrap_or_default();
        shared.memory().remember_group(last.clone(), ids);
        return Ok(last);
    };
    if outbound.partial {
        let mut memory = shared.memory();
        let now = Instant::now();
        if memory
            .partial_edits
            .get(edit)
            .is_some_and(|at| now.duration_since(*at) < PARTIAL_EDIT_INTERVAL)
        {
            // Coalesced: a later edit carries the whole text.
            return Ok(edit.clone());
        }
        memory.partial_edits.insert(edit.clone(), now);
    }
    let existing = shared
        .memory()
        .groups
        .remove(edit)
        .unwrap_or_else(|| vec![edit.clone()]);
    let mut ids = Vec::with_capacity(chunks.len());
    for (n, chunk) in chunks.iter().enumerate() {
        let step = match existing.get(n) {
            Some(id) => call_for_edit(shared, outbound.partial, || poster.edit(chat, id, chunk))
                .map(|()| id.clone()),
            None => call_for_edit(shared, outbound.partial, || poster.send(chat, chunk)),
        };
        match step {
            Ok(id) => ids.push(id),
            Err(f) => {
                shared.memory().remember_group(edit.clone(), existing);
                // A partial update may be dropped: a later edit carries the whole text.
                if outbound.partial && f.kind == ErrorKind::RateLimited {
                    return Ok(edit.clone());
                }
                return Err(f);
            }
        }
    }
    // A shorter text than before leaves surplus messages: they are emptied, and stay in the
    // group so that a longer text later fills them again.
    let surplus: Vec<String> = existing.iter().skip(chunks.len()).cloned().collect();
    for id in &surplus {
        let _ = call_for_edit(shared, outbound.partial, || poster.edit(chat, id, "…"));
    }
    let last = ids.last().cloned().unwrap_or_else(|| edit.clone());
    ids.extend(surplus);
    shared.memory().remember_group(last.clone(), ids);
    Ok(last)
}

/// A partial update is tried once; others wait out rate limits.
fn call_for_edit<T>(
    shared: &Shared,
    partial: bool,
    call: impl FnMut() -> Result<T, ToolFailure>,
) -> Result<T, ToolFailure> {
    if partial {
        let mut call = call;
        call()
    } else {
        with_retries(shared, call)
    }
}

fn show_approval(shared: &Shared, approval: &Approval) -> Result<usize, ToolFailure> {
    let Some(key) = &shared.key else {
        return Err(ToolFailure::new(ErrorKind::Auth, "no approval key"));
    };
    let announcement: Announcement = key
        .open(Purpose::Announce, &approval.sealed)
        .map_err(|e| ToolFailure::invalid(format!("approval: {e}")))?;
    let poster = &shared.poster;
    let text = fit(&announcement.text, poster.text_limit());
    match announcement.kind {
        AnnouncementKind::Pending | AnnouncementKind::Undo => {
            let mut posted = Vec::new();
            let mut last_failure = None;
            for user in &announcement.recipients {
                match with_retries(shared, || {
                    poster.announce(
                        user,
                        &text,
                        &announcement.buttons,
                        announcement.link.as_deref(),
                    )
                }) {
                    Ok(p) => posted.push(p),
                    Err(f) => {
                        shared.log.line(&format!(
                            "cannot show approval {} to user {user}: {}",
                            announcement.approval, f.message
                        ));
                        last_failure = Some(f);
                    }
                }
            }
            let n = posted.len();
            if n == 0
                && let Some(f) = last_failure
            {
                return Err(f);
            }
            shared.memory().remember_announcement(
                &announcement.approval,
                &announcement.text,
                posted,
            );
            Ok(n)
        }
        AnnouncementKind::Settled => {
            let posted = shared
                .memory()
                .announcements
                .remove(&announcement.approval)
                .map(|(_, posted)| posted)
                .unwrap_or_default();
            let mut n = 0;
            for p in &posted {
                match with_retries(shared, || poster.edit(&p.chat, &p.message_id, &text)) {
                    Ok(()) => n += 1,
                    Err(f) => shared.log.line(&format!(
                        "cannot settle approval {}: {}",
                        announcement.approval, f.message
                    )),
                }
            }
            Ok(n)
        }
    }
}

/// Polls the platform and hands each event to the kernel, in order, until the connector
/// stops. A refused token stops the whole connector.
fn platform_loop(shared: &Shared, mut platform: Box<dyn Platform>) {
    let mut failures = 0u32;
    while !shared.stopping() {
        let events = match platform.poll(POLL_WAIT) {
            Ok(events) => {
                failures = 0;
                events
            }
            Err(f) if matches!(f.kind, ErrorKind::Auth | ErrorKind::Permanent) => {
                shared.log.line(&format!(
                    "the platform refused the connector: {}",
                    f.message
                ));
                stop_connector(shared, PluginError::Platform(shared.log.redact(&f.message)));
                return;
            }
            Err(f) => {
                let wait = f
                    .retry_after_ms
                    .map_or_else(|| backoff(failures), Duration::from_millis);
                shared.log.line(&format!(
                    "platform: {} (again in {} ms)",
                    f.message,
                    wait.as_millis()
                ));
                failures = failures.saturating_add(1);
                if !shared.sleep(wait) {
                    return;
                }
                continue;
            }
        };
        for event in events {
            if !deliver(shared, &event) {
                return;
            }
            if let Err(f) = platform.ack(&event) {
                shared
                    .log
                    .line(&format!("cannot acknowledge: {}", f.message));
            }
        }
    }
}

/// Stops the connector from the platform thread: the reading thread sees the socket shut.
fn stop_connector(shared: &Shared, error: PluginError) {
    *shared
        .failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    shared.stopping.store(true, Ordering::SeqCst);
    let stream = shared
        .writer
        .stream
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32.checked_shl(failures.min(8)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    // Between half and the whole of `base`.
    base.mul_f64(0.5 + random_fraction() / 2.0)
}

/// A random number from 0 to 1, for jitter.
#[must_use]
pub fn random_fraction() -> f64 {
    let bytes: [u8; 4] = p3ak_crypto::random_array().unwrap_or([0; 4]);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

/// Hands one event to the kernel, retrying until it is taken or refused for good; false when
/// the connector is stopping.
fn deliver(shared: &Shared, event: &Event) -> bool {
    match event {
        Event::Message(incoming) => deliver_message(shared, incoming),
        Event::Press(pressed) => {
            handle_press(shared, pressed);
            !shared.stopping()
        }
    }
}

fn deliver_message(shared: &Shared, incoming: &Incoming) -> bool {
    let conversation = shared.conversation(&incoming.chat);
    if !valid_conversation(&conversation) {
        shared.log.line(&format!(
            "dropped message {}: chat id `{}` cannot be a conversation",
            incoming.message_id, incoming.chat
        ));
        return true;
    }
    let inbound = Inbound {
        conversation,
        sender: shared.conversation(&incoming.user),
        text: cut_text(&incoming.text, shared.max_message_bytes),
        agent: None,
        message_id: Some(incoming.message_id.clone()),
        sender_name: incoming.user_name.clone(),
        direct: incoming.direct,
        attachments: incoming.attachments.clone(),
    };
    let mut failures = 0u32;
    loop {
        if shared.stopping() {
            return false;
        }
        let wait = match shared.request(Message::Inbound(inbound.clone())) {
            Some(Message::Result(_)) => return true,
            Some(Message::Error(e)) if e.kind == ErrorKind::RateLimited => {
                Duration::from_millis(e.retry_after_ms.unwrap_or(1000))
            }
            Some(Message::Error(e)) if matches!(e.kind, ErrorKind::Transient) => backoff(failures),
            Some(Message::Error(e)) => {
                // Refused for good (`invalid`, `rejected`, …): acknowledged, never retried.
                shared.log.line(&format!(
                    "the kernel refused message {}: {}",
                    incoming.message_id, e.message
                ));
                return true;
            }
            _ if shared.stopping() => return false,
            _ => backoff(failures),
        };
        failures = failures.saturating_add(1);
        if !shared.sleep(wait) {
            return false;
        }
    }
}

fn handle_press(shared: &Shared, pressed: &Pressed) {
    let poster = &shared.poster;
    let answer = |message: &str, edit: Option<&str>| {
        if let Err(f) = with_retries(shared, || poster.answer_press(pressed, message, edit)) {
            shared
                .log
                .line(&format!("cannot answer a button press: {}", f.message));
        }
    };
    if !pressed.data.starts_with(BUTTON_PREFIX) {
        answer("unknown button", None);
        return;
    }
    let Some(key) = &shared.key else {
        answer("approvals are not set up for this connector", None);
        return;
    };
    let press = Press {
        data: pressed.data.clone(),
        presser: pressed.user.clone(),
        at_ms: now_ms(),
    };
    let sealed = match key.seal(Purpose::Press, &press) {
        Ok(sealed) => sealed,
        Err(e) => {
            shared.log.line(&format!("cannot seal a press: {e}"));
            answer("the press could not be sent", None);
            return;
        }
    };
    let reply = shared.request(Message::ApprovalPress(ApprovalPress { sealed }));
    let opened = match reply {
        Some(Message::Result(result)) => result
            .output
            .get("sealed")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| "the answer carries no `sealed`".to_owned())
            .and_then(|s| {
                key.open::<PressAnswer>(Purpose::Answer, s)
                    .map_err(|e| e.to_string())
            }),
        Some(Message::Error(e)) => Err(format!("the kernel answered {:?}: {}", e.kind, e.message)),
        _ => Err("no answer from the kernel".to_owned()),
    };
    let answered = match opened {
        Ok(answered) => answered,
        Err(why) => {
            shared.log.line(&format!("button press: {why}"));
            answer("the press could not be handled; try again", None);
            return;
        }
    };
    if answered.outcome == PressOutcome::Refused {
        answer(&answered.message, None);
        return;
    }
    let remembered = answered
        .approval
        .as_ref()
        .and_then(|a| shared.memory().announcements.get(a).cloned());
    let base = remembered
        .as_ref()
        .map(|(text, _)| text.clone())
        .or_else(|| pressed.text.clone())
        .unwrap_or_default();
    let settled = if base.is_empty() {
        answered.message.clone()
    } else {
        format!("{base}\n\n{}", answered.message)
    };
    let settled = fit(&settled, poster.text_limit());
    answer(&answered.message, Some(&settled));
    for p in remembered.map(|(_, posted)| posted).unwrap_or_default() {
        if p.chat == pressed.chat && p.message_id == pressed.message_id {
            continue;
        }
        if let Err(f) = with_retries(shared, || poster.edit(&p.chat, &p.message_id, &settled)) {
            shared
                .log
                .line(&format!("cannot update an announcement: {}", f.message));
        }
    }
}

/// Milliseconds since the epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether the kernel accepts `conversation` as a conversation id: `A-Za-z0-9_.:-`, at most
/// [`MAX_CONVERSATION`] characters.
#[must_use]
pub fn valid_conversation(conversation: &str) -> bool {
    !conversation.is_empty()
        && conversation.len() <= MAX_CONVERSATION
        && conversation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `text` cut to at most `max` bytes (on a character boundary), saying so when it was.
#[must_use]
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let note = format!(
        "\n[cut: the message was {} bytes, over the limit of {max}]",
        text.len()
    );
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", text.get(..end).unwrap_or_default())
}

/// `text` cut to at most `limit` characters, ending in `…` when it was cut.
#[must_use]
pub fn fit(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Splits `text` into pieces of at most `limit` characters, at a line break or space when one
/// is near the end of a piece. A `limit` of 0 counts as 1.
#[must_use]
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > limit {
        // The byte offset after `limit` characters.
        let hard = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let head = rest.get(..hard).unwrap_or(rest);
        // Prefer a break in the last fifth of the piece.
        let floor = head
            .char_indices()
            .nth(limit - limit / 5)
            .map_or(0, |(i, _)| i);
        let cut = head
            .rfind('\n')
            .filter(|&i| i >= floor && i > 0)
            .or_else(|| head.rfind(' ').filter(|&i| i >= floor && i > 0))
            .map_or(hard, |i| i + 1);
        pieces.push(rest.get(..cut).unwrap_or(rest).to_owned());
        rest = rest.get(cut..).unwrap_or_default();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn texts_split_at_breaks_within_the_limit() {
        let text = format!("{}\n{}", "a".repeat(90), "b".repeat(50));
        let pieces = split_text(&text, 100);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0], format!("{}\n", "a".repeat(90)));
        assert_eq!(pieces.concat(), text);
        let long = "é".repeat(250);
        let pieces = split_text(&long, 100);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= 100));
        assert_eq!(pieces.concat(), long);
        assert_eq!(split_text("short", 100), vec!["short".to_owned()]);
    }

    #[test]
    fn long_inbound_texts_are_cut_and_say_so() {
        let cut = cut_text(&"ü".repeat(1000), 200);
        assert!(cut.len() <= 200, "{}", cut.len());
        assert!(cut.ends_with("over the limit of 200]"), "{cut}");
        assert_eq!(cut_text("hi", 200), "hi");
    }

    #[test]
    fn conversations_are_checked() {
        assert!(valid_conversation("telegram:-1001:2.5_x"));
        assert!(!valid_conversation("telegram:a b"));
        assert!(!valid_conversation(&"x".repeat(129)));
    }

    #[test]
    fn the_log_hides_the_token() {
        let log = Log::new("slack", Some("xapp-1-secret xoxb-2-secret"));
        assert_eq!(
            log.redact("bad xoxb-2-secret and xapp-1-secret xoxb-2-secret"),
            "bad [redacted] and [redacted]"
        );
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        assert!(backoff(0) <= Duration::from_millis(500));
        assert!(backoff(20) <= MAX_BACKOFF && backoff(20) >= MAX_BACKOFF / 2);
    }
}

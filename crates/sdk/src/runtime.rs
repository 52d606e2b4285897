//! The protocol loop of a blocking plugin, reusable by any tool or provider.
//!
//! [`serve`] says `hello`, waits for `welcome`, builds the plugin from its config, sends
//! `register`, waits for `registered`, then serves until `shutdown` or the end of the
//! connection. The connection is read on the calling thread, which answers `ping` at once
//! (even while a long request runs); requests are handled one at a time, in order, on a
//! worker thread — or, for a [`SharedTool`] or a [`SharedProvider`], by several worker
//! threads at once, replies (and a provider's stream chunks) then coming back in the order
//! they are sent. Each reply and each chunk carries its request's `id`:
//!
//! - `invoke` → `result {output}` or `error {kind, message}` (tools);
//! - `inference_request` → `stream_chunk`s if asked, then `inference_response` or `error`
//!   (providers);
//! - anything else the kernel should not send → `error {kind: invalid}`. Incoming `error`
//!   and `pong` are ignored (answering them could loop), and a frame that is well formed
//!   but not a valid message gets `error {kind: invalid}` with id 0, since its id is unknown.
//!
//! A reply too large for a frame becomes `error {kind: permanent}` saying so.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{
    ActionSpec, Envelope, ErrorKind, ErrorMessage, Hello, InferenceRequest, InferenceResponse,
    Message, PROTOCOL_VERSION, PluginKind, Pong, ProtoError, Register, SUPPORTED_VERSIONS,
    StreamChunk, ToolResult, Welcome,
};

use crate::PluginError;

/// A failed request: its kind and one line for a human (lowercase, no trailing period).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolFailure {
    /// What kind of failure, as the protocol names it.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// For [`ErrorKind::RateLimited`]: when the kernel may try again.
    pub retry_after_ms: Option<u64>,
}

impl ToolFailure {
    /// A failure of `kind`.
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Rate limited: try again after `retry_after_ms` (when known).
    #[must_use]
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        Self {
            retry_after_ms,
            ..Self::new(ErrorKind::RateLimited, message)
        }
    }

    /// The request was malformed (bad arguments, a path outside the workspace).
    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// Worth retrying (a network failure, a busy vault).
    #[must_use]
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// Will fail again (permissions, a damaged store).
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
}

/// A plugin that offers actions.
pub trait Tool: Send {
    /// The actions to register, with their argument schemas and recommended tiers.
    fn actions(&self) -> Vec<ActionSpec>;

    /// Runs `action` for `agent`. Arguments come from a model through the kernel: check
    /// every one, and fail with [`ToolFailure::invalid`] rather than trusting them.
    ///
    /// # Errors
    ///
    /// A [`ToolFailure`], sent back as `error {kind, message}`.
    fn invoke(
        &mut self,
        agent: &str,
        action: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ToolFailure>;
}

/// A tool whose actions may run at the same time: [`Handler::Shared`] calls
/// [`SharedTool::invoke`] from several worker threads, so the tool guards whatever must not be
/// done twice at once (a write, say) itself.
pub trait SharedTool: Send + Sync {
    /// The actions to register, with their argument schemas and recommended tiers.
    fn actions(&self) -> Vec<ActionSpec>;

    /// Runs `action` for `agent`, as [`Tool::invoke`], possibly beside other calls.
    ///
    /// # Errors
    ///
    /// A [`ToolFailure`], sent back as `error {kind, message}`.
    fn invoke(
        &self,
        agent: &str,
        action: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ToolFailure>;
}

/// A plugin that runs a language model.
pub trait Provider: Send {
    /// Answers one request. When `request.stream` is set, text may be sent ahead through
    /// `stream`; the response still carries the whole content.
    ///
    /// # Errors
    ///
    /// A [`ToolFailure`], sent back as `error {kind, message}`.
    fn infer(
        &mut self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure>;
}

/// A provider that may answer several requests at the same time: [`Handler::SharedProvider`]
/// calls [`SharedProvider::infer`] from several worker threads, so five agents asking one
/// provider plugin wait for the model, not for each other. Its state is what every request
/// reads (settings, an HTTP client); whatever must change per request lives in the call.
pub trait SharedProvider: Send + Sync {
    /// Answers one request, as [`Provider::infer`], possibly beside other requests. Chunks
    /// sent through `stream` carry this request's id.
    ///
    /// # Errors
    ///
    /// A [`ToolFailure`], sent back as `error {kind, message}`.
    fn infer(
        &self,
        request: &InferenceRequest,
        stream: &mut StreamSink<'_>,
    ) -> Result<InferenceResponse, ToolFailure>;
}

/// What [`serve`] runs, built from the `welcome` config.
pub enum Handler {
    /// Registers as `tool` and answers `invoke`.
    Tool(Box<dyn Tool>),
    /// Registers as `provider` and answers `inference_request`.
    Provider(Box<dyn Provider>),
    /// Registers as `tool` and answers up to `workers` `invoke`s at once (at least one).
    Shared {
        /// The tool.
        tool: Box<dyn SharedTool>,
        /// How many calls may run at the same time.
        workers: usize,
    },
    /// Registers as `provider` and answers up to `workers` `inference_request`s at once (at
    /// least one). Keep [`Handler::Provider`] for a provider whose answers depend on the
    /// order of the requests.
    SharedProvider {
        /// The provider.
        provider: Box<dyn SharedProvider>,
        /// How many requests may be answered at the same time.
        workers: usize,
    },
}

impl Handler {
    fn register(&self) -> Register {
        match self {
            Self::Tool(tool) => Register {
                kind: PluginKind::Tool,
                actions: tool.actions(),
            },
            Self::Shared { tool, .. } => Register {
                kind: PluginKind::Tool,
                actions: tool.actions(),
            },
            Self::Provider(_) | Self::SharedProvider { .. } => Register {
                kind: PluginKind::Provider,
                actions: Vec::new(),
            },
        }
    }
}

/// What several workers serve at once.
enum Concurrent {
    Tool(Box<dyn SharedTool>),
    Provider(Box<dyn SharedProvider>),
}

/// The shared writing half of the connection: whole frames, one at a time.
struct Writer {
    stream: Mutex<UnixStream>,
    version: u32,
    max: usize,
}

impl Writer {
    fn send(&self, id: u64, message: Message) -> Result<(), ProtoError> {
        let envelope = Envelope {
            v: self.version,
            id,
            message,
        };
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_message(&mut *stream, &envelope, self.max)
    }

    /// Sends a reply; one too large for a frame is replaced by an error saying so.
    fn reply(&self, id: u64, message: Message) -> Result<(), ProtoError> {
        match self.send(id, message) {
            Err(ProtoError::FrameTooLarge { size, max }) => self.send(
                id,
                error_message(
                    ErrorKind::Permanent,
                    format!("the reply is {size} bytes, over the frame limit of {max} bytes"),
                ),
            ),
            other => other,
        }
    }
}

fn error_message(kind: ErrorKind, message: impl Into<String>) -> Message {
    Message::Error(ErrorMessage {
        kind,
        message: message.into(),
        retry_after_ms: None,
    })
}

/// Sends `stream_chunk`s for the request being answered.
pub struct StreamSink<'a> {
    writer: &'a Writer,
    id: u64,
}

impl StreamSink<'_> {
    /// Sends one chunk of text.
    ///
    /// # Errors
    ///
    /// A transient [`ToolFailure`] when the connection fails.
    pub fn send(&mut self, text: &str) -> Result<(), ToolFailure> {
        self.writer
            .send(
                self.id,
                Message::StreamChunk(StreamChunk {
                    text: text.to_owned(),
                }),
            )
            .map_err(|e| ToolFailure::transient(format!("cannot send a stream chunk: {e}")))
    }
}

/// One request for the worker.
struct Request {
    id: u64,
    message: Message,
}

/// Runs the protocol over `stream` as `plugin`: the handshake, with `build` turning the
/// `welcome` config into the [`Handler`], then requests until `shutdown` or the end of the
/// connection. `software` is what `hello` says the plugin is (`my-tool 1.2`); `max_frame`
/// bounds frames both ways.
///
/// # Errors
///
/// A broken or closed connection during the handshake, a `welcome` or `registered` that does
/// not come, an `error` from the kernel instead ([`PluginError::Refused`]), whatever `build`
/// returns (it is also sent to the kernel as `error {kind: invalid}`), or a connection that
/// fails while serving (a frame over the limit, a stream ending mid-frame).
pub fn serve<F>(
    stream: UnixStream,
    plugin: &str,
    software: &str,
    max_frame: usize,
    build: F,
) -> Result<(), PluginError>
where
    F: FnOnce(&Welcome) -> Result<Handler, PluginError>,
{
    let mut reader = stream.try_clone().map_err(|source| PluginError::Io {
        context: "cannot clone the connection",
        source,
    })?;
    let mut writer = Writer {
        stream: Mutex::new(stream),
        version: PROTOCOL_VERSION,
        max: max_frame,
    };
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
    writer.version = welcome.version;
    let handler = match build(&welcome) {
        Ok(handler) => handler,
        Err(e) => {
            let _ = writer.send(0, error_message(ErrorKind::Invalid, e.to_string()));
            return Err(e);
        }
    };
    writer.send(0, Message::Register(handler.register()))?;
    match handshake_message(&mut reader, &writer, "registered")? {
        Message::Registered(_) => {}
        other => {
            return Err(PluginError::Handshake(format!(
                "expected `registered`, got `{}`",
                other.type_name()
            )));
        }
    }
    serve_requests(&mut reader, &writer, handler)
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

fn serve_requests(
    reader: &mut UnixStream,
    writer: &Writer,
    handler: Handler,
) -> Result<(), PluginError> {
    let stopping = AtomicBool::new(false);
    let (sender, receiver) = mpsc::channel::<Request>();
    let receiver = Mutex::new(receiver);
    let (shared, single) = match handler {
        Handler::Shared { tool, workers } => (Some((Concurrent::Tool(tool), workers.max(1))), None),
        Handler::SharedProvider { provider, workers } => {
            (Some((Concurrent::Provider(provider), workers.max(1))), None)
        }
        handler => (None, Some(handler)),
    };
    std::thread::scope(|scope| {
        let stopping = &stopping;
        let receiver = &receiver;
        let mut workers = Vec::new();
        let spawned = match (&shared, single) {
            (Some((concurrent, n)), _) => (0..*n).try_for_each(|i| {
                let worker = std::thread::Builder::new()
                    .name(format!("p3ak-plugin-worker-{i}"))
                    .spawn_scoped(scope, move || {
                        work_shared(receiver, writer, concurrent, stopping);
                    })?;
                workers.push(worker);
                Ok(())
            }),
            (None, Some(handler)) => std::thread::Builder::new()
                .name("p3ak-plugin-worker".to_owned())
                .spawn_scoped(scope, move || work(receiver, writer, handler, stopping))
                .map(|worker| workers.push(worker)),
            (None, None) => Ok(()),
        };
        let outcome = spawned
            .map_err(|source| PluginError::Io {
                context: "cannot start the worker thread",
                source,
            })
            .and_then(|()| read_loop(reader, writer, &sender));
        stopping.store(true, Ordering::SeqCst);
        drop(sender);
        for worker in workers {
            let _ = worker.join();
        }
        outcome
    })
}

/// Reads until `shutdown` or the end of the connection, passing requests to the worker.
fn read_loop(
    reader: &mut UnixStream,
    writer: &Writer,
    requests: &mpsc::Sender<Request>,
) -> Result<(), PluginError> {
    loop {
        let envelope = match read_message(reader, writer.max) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return Ok(()),
            // The whole frame was read: the stream is still in step, so say so and go on.
            Err(e @ (ProtoError::Json(_) | ProtoError::Invalid(_) | ProtoError::Version(_))) => {
                writer.send(
                    0,
                    error_message(ErrorKind::Invalid, format!("malformed message: {e}")),
                )?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let id = envelope.id;
        match envelope.message {
            Message::Ping(_) => writer.send(id, Message::Pong(Pong {}))?,
            Message::Shutdown(_) => return Ok(()),
            Message::Error(_) | Message::Pong(_) => {}
            message @ (Message::Invoke(_) | Message::InferenceRequest(_)) => {
                if requests.send(Request { id, message }).is_err() {
                    // The worker stopped: its connection failed.
                    return Ok(());
                }
            }
            other => writer.send(
                id,
                error_message(
                    ErrorKind::Invalid,
                    format!("unexpected message `{}`", other.type_name()),
                ),
            )?,
        }
    }
}

/// Takes the next request, or `None` once the reader stopped. The lock is held only to
/// take it, never while it runs.
fn next_request(requests: &Mutex<mpsc::Receiver<Request>>) -> Option<Request> {
    requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .recv()
        .ok()
}

/// Handles requests one at a time until the reader stops.
fn work(
    requests: &Mutex<mpsc::Receiver<Request>>,
    writer: &Writer,
    mut handler: Handler,
    stopping: &AtomicBool,
) {
    while let Some(Request { id, message }) = next_request(requests) {
        let reply = if stopping.load(Ordering::SeqCst) {
            error_message(ErrorKind::Transient, "the plugin is shutting down")
        } else {
            handle(&mut handler, writer, id, message)
        };
        if writer.reply(id, reply).is_err() {
            return;
        }
    }
}

/// Handles requests beside the other workers until the reader stops.
fn work_shared(
    requests: &Mutex<mpsc::Receiver<Request>>,
    writer: &Writer,
    concurrent: &Concurrent,
    stopping: &AtomicBool,
) {
    while let Some(Request { id, message }) = next_request(requests) {
        let reply = if stopping.load(Ordering::SeqCst) {
            error_message(ErrorKind::Transient, "the plugin is shutting down")
        } else {
            match concurrent {
                Concurrent::Tool(tool) => handle_shared(&**tool, message),
                Concurrent::Provider(provider) => {
                    handle_shared_provider(&**provider, writer, id, message)
                }
            }
        };
        if writer.reply(id, reply).is_err() {
            return;
        }
    }
}

fn handle_shared(tool: &dyn SharedTool, message: Message) -> Message {
    match message {
        Message::Invoke(invoke) => match tool.invoke(&invoke.agent, &invoke.action, invoke.args) {
            Ok(output) => Message::Result(ToolResult { output }),
            Err(f) => Message::Error(ErrorMessage {
                kind: f.kind,
                message: f.message,
                retry_after_ms: f.retry_after_ms,
            }),
        },
        other => error_message(
            ErrorKind::Invalid,
            format!(
                "this plugin is a tool: it does not answer `{}`",
                other.type_name()
            ),
        ),
    }
}

fn handle_shared_provider(
    provider: &dyn SharedProvider,
    writer: &Writer,
    id: u64,
    message: Message,
) -> Message {
    match message {
        Message::InferenceRequest(request) => {
            let mut sink = StreamSink { writer, id };
            match provider.infer(&request, &mut sink) {
                Ok(response) => Message::InferenceResponse(response),
                Err(f) => failed(f),
            }
        }
        other => not_a_provider(&other),
    }
}

fn failed(f: ToolFailure) -> Message {
    Message::Error(ErrorMessage {
        kind: f.kind,
        message: f.message,
        retry_after_ms: f.retry_after_ms,
    })
}

fn not_a_provider(other: &Message) -> Message {
    error_message(
        ErrorKind::Invalid,
        format!(
            "this plugin is a provider: it does not answer `{}`",
            other.type_name()
        ),
    )
}

fn handle(handler: &mut Handler, writer: &Writer, id: u64, message: Message) -> Message {
    match (handler, message) {
        (Handler::Shared { tool, .. }, message) => handle_shared(&**tool, message),
        (Handler::SharedProvider { provider, .. }, message) => {
            handle_shared_provider(&**provider, writer, id, message)
        }
        (Handler::Tool(tool), Message::Invoke(invoke)) => {
            match tool.invoke(&invoke.agent, &invoke.action, invoke.args) {
                Ok(output) => Message::Result(ToolResult { output }),
                Err(f) => failed(f),
            }
        }
        (Handler::Provider(provider), Message::InferenceRequest(request)) => {
            let mut sink = StreamSink { writer, id };
            match provider.infer(&request, &mut sink) {
                Ok(response) => Message::InferenceResponse(response),
                Err(f) => failed(f),
            }
        }
        (Handler::Tool(_), other) => error_message(
            ErrorKind::Invalid,
            format!(
                "this plugin is a tool: it does not answer `{}`",
                other.type_name()
            ),
        ),
        (Handler::Provider(_), other) => not_a_provider(&other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use p3ak_proto::{Invoke, Ping, Registered, Shutdown, Tier, Welcome};

    struct Echo;

    impl Tool for Echo {
        fn actions(&self) -> Vec<ActionSpec> {
            vec![ActionSpec {
                name: "echo".to_owned(),
                description: "says it back".to_owned(),
                parameters: serde_json::json!({"type": "object"}),
                tier: Tier::Observe,
            }]
        }

        fn invoke(
            &mut self,
            agent: &str,
            action: &str,
            args: serde_json::Value,
        ) -> Result<serde_json::Value, ToolFailure> {
            match action {
                "echo" => Ok(serde_json::json!({"agent": agent, "args": args})),
                "big" => Ok(serde_json::json!({"text": "x".repeat(10_000)})),
                _ => Err(ToolFailure::invalid(format!("unknown action `{action}`"))),
            }
        }
    }

    fn recv(stream: &mut UnixStream) -> Envelope {
        read_message(stream, 8192).unwrap().unwrap()
    }

    fn send(stream: &mut UnixStream, id: u64, message: Message) {
        write_message(stream, &Envelope::new(id, message), 8192).unwrap();
    }

    #[test]
    fn handshake_then_requests_in_order() {
        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(plugin, "echo", "echo-test 1", 8192, |_| {
                Ok(Handler::Tool(Box::new(Echo)))
            })
        });
        let Message::Hello(hello) = recv(&mut kernel).message else {
            panic!("no hello")
        };
        assert_eq!(hello.plugin, "echo");
        send(
            &mut kernel,
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: serde_json::Value::Null,
                key: None,
            }),
        );
        let Message::Register(register) = recv(&mut kernel).message else {
            panic!("no register")
        };
        assert_eq!(register.kind, PluginKind::Tool);
        send(&mut kernel, 0, Message::Registered(Registered {}));
        send(&mut kernel, 5, Message::Ping(Ping {}));
        let pong = recv(&mut kernel);
        assert!(matches!(pong.message, Message::Pong(_)) && pong.id == 5);
        send(
            &mut kernel,
            6,
            Message::Invoke(Invoke {
                agent: "a".to_owned(),
                action: "echo".to_owned(),
                args: serde_json::json!({"x": 1}),
                deadline_ms: None,
            }),
        );
        let reply = recv(&mut kernel);
        assert_eq!(reply.id, 6);
        let Message::Result(result) = reply.message else {
            panic!("{reply:?}")
        };
        assert_eq!(result.output["args"]["x"], 1);
        // Too big for the frame: an error saying so, not a dead connection.
        send(
            &mut kernel,
            7,
            Message::Invoke(Invoke {
                agent: "a".to_owned(),
                action: "big".to_owned(),
                args: serde_json::json!({}),
                deadline_ms: None,
            }),
        );
        let reply = recv(&mut kernel);
        assert!(
            matches!(&reply.message, Message::Error(e) if e.kind == ErrorKind::Permanent && e.message.contains("frame limit")),
            "{reply:?}"
        );
        // Unexpected message types.
        send(&mut kernel, 8, Message::Registered(Registered {}));
        let reply = recv(&mut kernel);
        assert!(matches!(&reply.message, Message::Error(e) if e.kind == ErrorKind::Invalid));
        assert_eq!(reply.id, 8);
        // A frame that is JSON but not a message.
        let frame =
            p3ak_proto::encode_payload(br#"{"v":1,"id":3,"type":"teleport"}"#, 8192).unwrap();
        std::io::Write::write_all(&mut kernel, &frame).unwrap();
        let reply = recv(&mut kernel);
        assert!(matches!(&reply.message, Message::Error(e) if e.kind == ErrorKind::Invalid));
        send(&mut kernel, 9, Message::Shutdown(Shutdown {}));
        thread.join().unwrap().unwrap();
    }

    /// Each `meet` waits (up to 5 s) until `expected` calls are inside at once.
    struct Meeting {
        inside: std::sync::Mutex<usize>,
        arrived: std::sync::Condvar,
        expected: usize,
    }

    impl SharedTool for Meeting {
        fn actions(&self) -> Vec<ActionSpec> {
            Vec::new()
        }

        fn invoke(
            &self,
            _agent: &str,
            _action: &str,
            _args: serde_json::Value,
        ) -> Result<serde_json::Value, ToolFailure> {
            let mut inside = self.inside.lock().unwrap();
            *inside += 1;
            self.arrived.notify_all();
            let (mut inside, timeout) = self
                .arrived
                .wait_timeout_while(inside, std::time::Duration::from_secs(5), |n| {
                    *n < self.expected
                })
                .unwrap();
            let met = *inside;
            if timeout.timed_out() {
                // It leaves: a later call finds the room without it.
                *inside -= 1;
                return Err(ToolFailure::transient(format!("alone: {met}")));
            }
            Ok(serde_json::json!({"met": met}))
        }
    }

    /// The answers to `n` `meet` calls sent at once to a tool served by `workers` workers.
    fn meet(workers: usize, n: usize) -> Vec<Message> {
        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(plugin, "meet", "meet-test 1", 8192, |_| {
                Ok(Handler::Shared {
                    tool: Box::new(Meeting {
                        inside: std::sync::Mutex::new(0),
                        arrived: std::sync::Condvar::new(),
                        expected: n,
                    }),
                    workers,
                })
            })
        });
        recv(&mut kernel);
        send(
            &mut kernel,
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: serde_json::Value::Null,
                key: None,
            }),
        );
        recv(&mut kernel);
        send(&mut kernel, 0, Message::Registered(Registered {}));
        for id in 1..=n as u64 {
            send(
                &mut kernel,
                id,
                Message::Invoke(Invoke {
                    agent: "a".to_owned(),
                    action: "meet".to_owned(),
                    args: serde_json::json!({}),
                    deadline_ms: None,
                }),
            );
        }
        let mut replies: Vec<Envelope> = (0..n).map(|_| recv(&mut kernel)).collect();
        replies.sort_by_key(|r| r.id);
        assert_eq!(
            replies.iter().map(|r| r.id).collect::<Vec<_>>(),
            (1..=n as u64).collect::<Vec<_>>(),
            "one reply per request, each with its id"
        );
        send(&mut kernel, 99, Message::Shutdown(Shutdown {}));
        thread.join().unwrap().unwrap();
        replies.into_iter().map(|r| r.message).collect()
    }

    #[test]
    fn a_shared_tool_runs_calls_at_the_same_time() {
        for reply in meet(3, 3) {
            assert!(
                matches!(&reply, Message::Result(r) if r.output["met"] == 3),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_shared_tool_with_one_worker_runs_one_call_at_a_time() {
        let replies = meet(1, 2);
        assert!(
            replies
                .iter()
                .all(|r| matches!(r, Message::Error(e) if e.message.starts_with("alone"))),
            "{replies:?}"
        );
    }

    /// A provider whose requests wait (up to 5 s) until `expected` are being answered at once,
    /// streaming one chunk named after the request before and one after.
    struct Gathering {
        inside: std::sync::Mutex<usize>,
        arrived: std::sync::Condvar,
        expected: usize,
    }

    impl SharedProvider for Gathering {
        fn infer(
            &self,
            request: &InferenceRequest,
            stream: &mut StreamSink<'_>,
        ) -> Result<InferenceResponse, ToolFailure> {
            let name = request.system.clone();
            stream.send(&format!("{name}: arrived"))?;
            let mut inside = self.inside.lock().unwrap();
            *inside += 1;
            self.arrived.notify_all();
            let (inside, timeout) = self
                .arrived
                .wait_timeout_while(inside, std::time::Duration::from_secs(5), |n| {
                    *n < self.expected
                })
                .unwrap();
            let met = *inside;
            drop(inside);
            if timeout.timed_out() {
                return Err(ToolFailure::transient(format!("alone: {met}")));
            }
            stream.send(&format!("{name}: met"))?;
            Ok(InferenceResponse {
                content: format!("{name} met {met}"),
                tool_calls: Vec::new(),
                stop: p3ak_proto::StopReason::EndTurn,
                usage: p3ak_proto::Usage::default(),
            })
        }
    }

    #[test]
    fn a_shared_provider_answers_requests_at_the_same_time_with_their_own_chunks() {
        const N: usize = 4;
        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(plugin, "gather", "gather-test 1", 8192, |_| {
                Ok(Handler::SharedProvider {
                    provider: Box::new(Gathering {
                        inside: std::sync::Mutex::new(0),
                        arrived: std::sync::Condvar::new(),
                        expected: N,
                    }),
                    workers: N,
                })
            })
        });
        recv(&mut kernel);
        send(
            &mut kernel,
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: serde_json::Value::Null,
                key: None,
            }),
        );
        let Message::Register(register) = recv(&mut kernel).message else {
            panic!("no register")
        };
        assert_eq!(register.kind, PluginKind::Provider);
        send(&mut kernel, 0, Message::Registered(Registered {}));
        for id in 1..=N as u64 {
            send(
                &mut kernel,
                id,
                Message::InferenceRequest(InferenceRequest {
                    model: None,
                    system: format!("request-{id}"),
                    messages: Vec::new(),
                    tools: Vec::new(),
                    stream: true,
                    credential: None,
                }),
            );
        }
        // Every request's chunks and answer, by the id they came with.
        let mut chunks: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        let mut answers = std::collections::BTreeMap::new();
        while answers.len() < N {
            let reply = recv(&mut kernel);
            match reply.message {
                Message::StreamChunk(chunk) => chunks.entry(reply.id).or_default().push(chunk.text),
                Message::InferenceResponse(response) => {
                    assert!(answers.insert(reply.id, response.content).is_none());
                }
                other => panic!("request {}: {other:?}", reply.id),
            }
        }
        for id in 1..=N as u64 {
            assert_eq!(answers[&id], format!("request-{id} met {N}"));
            assert_eq!(
                chunks[&id],
                [
                    format!("request-{id}: arrived"),
                    format!("request-{id}: met")
                ]
            );
        }
        // A tool's message is refused, as by any provider.
        send(
            &mut kernel,
            9,
            Message::Invoke(Invoke {
                agent: "a".to_owned(),
                action: "x".to_owned(),
                args: serde_json::json!({}),
                deadline_ms: None,
            }),
        );
        let reply = recv(&mut kernel);
        assert!(
            matches!(&reply.message, Message::Error(e) if e.kind == ErrorKind::Invalid && e.message.contains("is a provider")),
            "{reply:?}"
        );
        send(&mut kernel, 99, Message::Shutdown(Shutdown {}));
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn refusal_and_bad_config_are_errors() {
        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(plugin, "echo", "echo-test 1", 8192, |_| {
                Ok(Handler::Tool(Box::new(Echo)))
            })
        });
        let _ = recv(&mut kernel);
        send(
            &mut kernel,
            0,
            error_message(ErrorKind::Invalid, "wrong plugin name"),
        );
        let err = thread.join().unwrap().err().unwrap();
        assert!(matches!(err, PluginError::Refused { .. }), "{err}");

        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(plugin, "echo", "echo-test 1", 8192, |_| {
                Err(PluginError::Config("missing field `x`".to_owned()))
            })
        });
        let _ = recv(&mut kernel);
        send(
            &mut kernel,
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: serde_json::json!({}),
                key: None,
            }),
        );
        let reply = recv(&mut kernel);
        assert!(matches!(&reply.message, Message::Error(e) if e.message.contains("missing field")));
        assert!(matches!(
            thread.join().unwrap(),
            Err(PluginError::Config(_))
        ));

        let (plugin, kernel) = UnixStream::pair().unwrap();
        drop(kernel);
        assert!(
            serve(plugin, "echo", "echo-test 1", 8192, |_| Ok(Handler::Tool(
                Box::new(Echo)
            )))
            .is_err()
        );
    }
}

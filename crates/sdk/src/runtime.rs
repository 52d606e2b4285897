//! The protocol loop of a blocking plugin, reusable by any tool or provider.
//!
//! [`serve`] says `hello`, waits for `welcome`, builds the plugin from its config, sends
//! `register`, waits for `registered`, then serves until `shutdown` or the end of the
//! connection. One thread reads the connection at a time and answers `ping` at once (even
//! while long requests run); requests are handled one at a time, in order — or, for a
//! [`SharedTool`] or a [`SharedProvider`], up to its `workers` at once, replies (and a
//! provider's stream chunks) then coming back in the order they are sent. The thread that
//! reads a request answers it while another takes over reading, so a call is not handed from
//! thread to thread on its way. Each reply and each chunk carries its request's `id`:
//!
//! - `invoke` → `result {output}` or `error {kind, message}` (tools);
//! - `inference_request` → `stream_chunk`s if asked, then `inference_response` or `error`
//!   (providers);
//! - anything else the kernel should not send → `error {kind: invalid}`. Incoming `error`
//!   and `pong` are ignored (answering them could loop), and a frame that is well formed
//!   but not a valid message gets `error {kind: invalid}` with id 0, since its id is unknown.
//!
//! A reply too large for a frame becomes `error {kind: permanent}` saying so.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex};

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
    let reader = stream.try_clone().map_err(|source| PluginError::Io {
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
    let welcome = match handshake_message(&reader, &writer, "welcome")? {
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
    match handshake_message(&reader, &writer, "registered")? {
        Message::Registered(_) => {}
        other => {
            return Err(PluginError::Handshake(format!(
                "expected `registered`, got `{}`",
                other.type_name()
            )));
        }
    }
    serve_requests(&reader, &writer, handler)
}

/// The next handshake message, answering pings on the way; an `error` is a refusal.
fn handshake_message(
    mut reader: &UnixStream,
    writer: &Writer,
    expected: &str,
) -> Result<Message, PluginError> {
    loop {
        let Some(envelope) = read_message(&mut reader, writer.max)? else {
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

/// What answers requests: one handler, one request at a time, or a shared one.
enum Work {
    Exclusive(Mutex<Handler>),
    Shared(Concurrent),
}

impl Work {
    fn answer(&self, writer: &Writer, id: u64, message: Message) -> Message {
        match self {
            Self::Exclusive(handler) => {
                let mut handler = handler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                handle(&mut handler, writer, id, message)
            }
            Self::Shared(Concurrent::Tool(tool)) => handle_shared(&**tool, message),
            Self::Shared(Concurrent::Provider(provider)) => {
                handle_shared_provider(&**provider, writer, id, message)
            }
        }
    }
}

/// The threads serving a connection: `capacity` requests may be answered at once, and one
/// more thread is always there to read, so `ping` and `shutdown` are read while requests run.
///
/// The thread that reads a request answers it itself and an idle thread takes over reading
/// (leader and followers): a request is not handed from thread to thread on its way, which on
/// a virtual machine costs a wake-up (tens of microseconds) per call.
struct Pool<'a> {
    state: Mutex<PoolState>,
    changed: Condvar,
    capacity: usize,
    work: Work,
    writer: &'a Writer,
    reader: &'a UnixStream,
}

#[derive(Default)]
struct PoolState {
    /// A thread is reading the connection.
    reading: bool,
    /// Requests read while `capacity` were being answered, in order.
    queue: VecDeque<Request>,
    /// Requests being answered.
    running: usize,
    /// The connection ended (`shutdown`, its end, a failure): nothing more is read.
    ended: Option<Result<(), PluginError>>,
}

/// What reading the connection gave: a request to answer, or its end.
enum Read {
    Request(Request),
    End(Result<(), PluginError>),
}

impl Pool<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One thread's part: read while nobody does, answer what was read, until the connection
    /// has ended and nothing is left to answer.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            if !state.reading && state.ended.is_none() {
                state.reading = true;
                drop(state);
                let read = self.read();
                state = self.lock();
                state.reading = false;
                match read {
                    Read::Request(request)
                        if state.running < self.capacity && state.queue.is_empty() =>
                    {
                        // Another thread reads on; this one answers.
                        state.running += 1;
                        self.changed.notify_one();
                        drop(state);
                        state = self.answered(request);
                    }
                    Read::Request(request) => state.queue.push_back(request),
                    Read::End(result) => {
                        state.ended = Some(result);
                        self.changed.notify_all();
                    }
                }
            } else if state.running < self.capacity
                && let Some(request) = state.queue.pop_front()
            {
                state.running += 1;
                drop(state);
                state = self.answered(request);
            } else if state.ended.is_some() && state.queue.is_empty() {
                return;
            } else {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }

    /// Answers a request counted as running, then counts it out; once the connection has
    /// ended, wakes the threads waiting to see that nothing is left.
    fn answered(&self, request: Request) -> std::sync::MutexGuard<'_, PoolState> {
        self.answer(request);
        let mut state = self.lock();
        state.running -= 1;
        if state.ended.is_some() {
            self.changed.notify_all();
        }
        state
    }

    /// Answers one request; once the connection has ended, says the plugin is shutting down.
    fn answer(&self, Request { id, message }: Request) {
        let reply = if self.lock().ended.is_some() {
            error_message(ErrorKind::Transient, "the plugin is shutting down")
        } else {
            self.work.answer(self.writer, id, message)
        };
        if let Err(e) = self.writer.reply(id, reply) {
            // The connection failed: stop reading it (the reader sees it too) and answering.
            let mut state = self.lock();
            if state.ended.is_none() {
                state.ended = Some(Err(e.into()));
            }
            self.changed.notify_all();
        }
    }

    /// Reads until a request or the connection's end, answering what needs no handler.
    fn read(&self) -> Read {
        let mut reader = self.reader;
        loop {
            let envelope = match read_message(&mut reader, self.writer.max) {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return Read::End(Ok(())),
                // The whole frame was read: the stream is still in step, so say so and go on.
                Err(
                    e @ (ProtoError::Json(_) | ProtoError::Invalid(_) | ProtoError::Version(_)),
                ) => {
                    let said = self.writer.send(
                        0,
                        error_message(ErrorKind::Invalid, format!("malformed message: {e}")),
                    );
                    if let Err(e) = said {
                        return Read::End(Err(e.into()));
                    }
                    continue;
                }
                Err(e) => return Read::End(Err(e.into())),
            };
            let id = envelope.id;
            let said = match envelope.message {
                Message::Ping(_) => self.writer.send(id, Message::Pong(Pong {})),
                Message::Shutdown(_) => return Read::End(Ok(())),
                Message::Error(_) | Message::Pong(_) => Ok(()),
                message @ (Message::Invoke(_) | Message::InferenceRequest(_)) => {
                    return Read::Request(Request { id, message });
                }
                other => self.writer.send(
                    id,
                    error_message(
                        ErrorKind::Invalid,
                        format!("unexpected message `{}`", other.type_name()),
                    ),
                ),
            };
            if let Err(e) = said {
                return Read::End(Err(e.into()));
            }
        }
    }
}

fn serve_requests(
    reader: &UnixStream,
    writer: &Writer,
    handler: Handler,
) -> Result<(), PluginError> {
    let (work, capacity) = match handler {
        Handler::Shared { tool, workers } => (Work::Shared(Concurrent::Tool(tool)), workers),
        Handler::SharedProvider { provider, workers } => {
            (Work::Shared(Concurrent::Provider(provider)), workers)
        }
        handler => (Work::Exclusive(Mutex::new(handler)), 1),
    };
    let pool = Pool {
        state: Mutex::new(PoolState::default()),
        changed: Condvar::new(),
        capacity: capacity.max(1),
        work,
        writer,
        reader,
    };
    std::thread::scope(|scope| {
        let pool = &pool;
        // `capacity` threads beside this one: one more than may answer at once.
        let spawned = (0..pool.capacity).try_for_each(|i| {
            std::thread::Builder::new()
                .name(format!("p3ak-plugin-worker-{i}"))
                .spawn_scoped(scope, move || pool.run())
                .map(drop)
        });
        if let Err(source) = spawned {
            let mut state = pool.lock();
            state.ended = Some(Err(PluginError::Io {
                context: "cannot start the worker threads",
                source,
            }));
            pool.changed.notify_all();
        }
        pool.run();
    });
    pool.state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .ended
        .unwrap_or(Ok(()))
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

    /// A tool whose `hold` calls wait until the test lets them go, one release each.
    struct Held {
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Tool for Held {
        fn actions(&self) -> Vec<ActionSpec> {
            Vec::new()
        }

        fn invoke(
            &mut self,
            _agent: &str,
            action: &str,
            _args: serde_json::Value,
        ) -> Result<serde_json::Value, ToolFailure> {
            if action == "hold" {
                self.release
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .map_err(|_| ToolFailure::transient("never released"))?;
            }
            Ok(serde_json::json!({ "action": action }))
        }
    }

    /// A plugin serving `handler` after the handshake, and the kernel's end of it.
    fn started(
        handler: impl FnOnce() -> Handler + Send + 'static,
    ) -> (UnixStream, std::thread::JoinHandle<Result<(), PluginError>>) {
        let (plugin, mut kernel) = UnixStream::pair().unwrap();
        let thread =
            std::thread::spawn(move || serve(plugin, "test", "test 1", 8192, |_| Ok(handler())));
        recv(&mut kernel);
        let welcome = Welcome {
            version: 1,
            config: serde_json::Value::Null,
            key: None,
        };
        send(&mut kernel, 0, Message::Welcome(welcome));
        recv(&mut kernel);
        send(&mut kernel, 0, Message::Registered(Registered {}));
        (kernel, thread)
    }

    fn invoke(action: &str) -> Message {
        Message::Invoke(Invoke {
            agent: "a".to_owned(),
            action: action.to_owned(),
            args: serde_json::json!({}),
            deadline_ms: None,
        })
    }

    /// A plugin serving [`Held`], the kernel's end, and the sender that lets a held call go.
    fn held() -> (
        std::sync::mpsc::Sender<()>,
        UnixStream,
        std::thread::JoinHandle<Result<(), PluginError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel();
        let (kernel, thread) = started(move || Handler::Tool(Box::new(Held { release: held })));
        (release, kernel, thread)
    }

    #[test]
    fn pings_are_answered_while_a_request_runs_and_later_requests_wait_their_turn() {
        let (release, mut kernel, thread) = held();
        send(&mut kernel, 1, invoke("hold"));
        send(&mut kernel, 2, invoke("next"));
        for id in 3..6 {
            send(&mut kernel, id, Message::Ping(Ping {}));
            let pong = recv(&mut kernel);
            assert!(matches!(pong.message, Message::Pong(_)), "{pong:?}");
            assert_eq!(pong.id, id, "the held call answers nothing yet");
        }
        release.send(()).unwrap();
        let first = recv(&mut kernel);
        let second = recv(&mut kernel);
        assert_eq!((first.id, second.id), (1, 2), "one at a time, in order");
        assert!(matches!(second.message, Message::Result(r) if r.output["action"] == "next"));
        // The same thread-to-thread path, again and again: nothing is lost or answered twice.
        for id in 10..200 {
            send(&mut kernel, id, invoke("echo"));
            assert_eq!(recv(&mut kernel).id, id);
        }
        send(&mut kernel, 99, Message::Shutdown(Shutdown {}));
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_shutdown_lets_the_running_request_finish_and_refuses_the_queued_ones() {
        let (release, mut kernel, thread) = held();
        send(&mut kernel, 1, invoke("hold"));
        send(&mut kernel, 2, invoke("next"));
        // Read once the first call runs and the second waits: a ping answered proves it.
        send(&mut kernel, 3, Message::Ping(Ping {}));
        assert_eq!(recv(&mut kernel).id, 3);
        send(&mut kernel, 4, Message::Shutdown(Shutdown {}));
        // The plugin stops reading, but the running call ends and is answered.
        std::thread::sleep(std::time::Duration::from_millis(50));
        release.send(()).unwrap();
        let first = recv(&mut kernel);
        assert!(
            matches!(&first.message, Message::Result(r) if r.output["action"] == "hold"),
            "{first:?}"
        );
        let second = recv(&mut kernel);
        assert_eq!(second.id, 2);
        assert!(
            matches!(&second.message, Message::Error(e) if e.kind == ErrorKind::Transient && e.message.contains("shutting down")),
            "{second:?}"
        );
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_shared_tool_at_capacity_still_answers_pings() {
        const WORKERS: usize = 2;
        let (mut kernel, thread) = started(|| Handler::Shared {
            tool: Box::new(Meeting {
                inside: std::sync::Mutex::new(0),
                arrived: std::sync::Condvar::new(),
                expected: WORKERS + 1,
            }),
            workers: WORKERS,
        });
        // Both workers wait for a third call that can only come when one of them is free.
        for id in 1..=WORKERS as u64 {
            send(&mut kernel, id, invoke("meet"));
        }
        send(&mut kernel, 10, Message::Ping(Ping {}));
        let pong = recv(&mut kernel);
        assert!(
            matches!(pong.message, Message::Pong(_)) && pong.id == 10,
            "{pong:?}"
        );
        for _ in 0..WORKERS {
            let reply = recv(&mut kernel);
            assert!(
                matches!(&reply.message, Message::Error(e) if e.message.starts_with("alone")),
                "{reply:?}"
            );
        }
        send(&mut kernel, 99, Message::Shutdown(Shutdown {}));
        thread.join().unwrap().unwrap();
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

//! A live connection to a registered plugin: requests out, answers matched back to them by id,
//! streamed chunks forwarded (within bounds), and a plugin that floods the kernel cut off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p3ak_proto::{Envelope, ErrorKind, ErrorMessage, Message, PluginKind, ProtoError};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::registration::Registration;

/// Most frames a plugin may send in one second that answer no request (late replies to
/// timed-out requests are legitimate, a stream of them is a flood): past this it is cut off.
pub const MAX_UNSOLICITED_PER_SECOND: u32 = 256;

/// Most streamed bytes one request may receive (a reply's text, chunk by chunk): 16 MiB, far
/// more than any model writes in a turn.
pub const MAX_STREAM_BYTES: usize = 16 << 20;

/// Most stream chunks one request may receive.
pub const MAX_STREAM_CHUNKS: u32 = 1 << 16;

/// Chunks waiting for the turn to forward them; past this they are dropped from the live view
/// (the full text still arrives in the final answer).
pub const CHUNK_QUEUE: usize = 1024;

/// Requests from connectors waiting for the kernel's router; past this a connector hears
/// `rate_limited` and sends again later.
pub const CONNECTOR_QUEUE: usize = 256;

/// What a plugin asked of the kernel on its own (a connector's `inbound`, `approval_press`),
/// or that a connector came up; handed to the kernel's router.
pub enum PluginEvent {
    /// A request to answer with [`Connection::reply`].
    Request {
        /// Who asked.
        connection: std::sync::Arc<Connection>,
        /// The request's id, which the answer repeats.
        id: u64,
        /// The request.
        message: Message,
    },
    /// A connector registered (again): anything it should show can be sent now.
    Up(std::sync::Arc<Connection>),
}

/// A bounded queue for a request's stream chunks (see [`Connection::request`]).
#[must_use]
pub fn chunk_queue() -> (mpsc::Sender<String>, mpsc::Receiver<String>) {
    mpsc::channel(CHUNK_QUEUE)
}

/// Why a request to a plugin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// It is not running (starting, restarting, failed, unknown).
    #[error("plugin `{0}` is not running")]
    NotRunning(String),
    /// No answer in time.
    #[error("plugin `{0}` did not answer in time")]
    Timeout(String),
    /// The connection went away before the answer.
    #[error("plugin `{0}` disconnected")]
    Disconnected(String),
    /// It answered with an error.
    #[error("{}: {}", kind_name(.0.kind), .0.message)]
    Plugin(ErrorMessage),
    /// It answered with something else than the request calls for.
    #[error("plugin `{0}` answered with an unexpected `{1}`")]
    Unexpected(String, &'static str),
    /// The request could not be encoded (too large).
    #[error("request to plugin `{0}` could not be sent: {1}")]
    Encode(String, String),
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => "transient error",
        ErrorKind::Permanent => "permanent error",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Auth => "authentication error",
        ErrorKind::Invalid => "invalid request",
        ErrorKind::Rejected => "rejected",
    }
}

/// How a plugin broke the protocol on a live connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// More unsolicited frames than [`MAX_UNSOLICITED_PER_SECOND`].
    #[error(
        "flooded the kernel with more than {MAX_UNSOLICITED_PER_SECOND} unsolicited frames in a second"
    )]
    Flood,
    /// A request's stream went past [`MAX_STREAM_BYTES`] or [`MAX_STREAM_CHUNKS`].
    #[error(
        "streamed more than {MAX_STREAM_BYTES} bytes or {MAX_STREAM_CHUNKS} chunks for one request"
    )]
    StreamTooLong,
    /// A frame that is not a message (too large, not JSON, not valid).
    #[error("{0}")]
    Frame(String),
}

impl From<ProtoError> for Violation {
    fn from(e: ProtoError) -> Self {
        Self::Frame(e.to_string())
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<Message, HostError>>,
    chunks: Option<mpsc::Sender<String>>,
    streamed_bytes: usize,
    streamed_chunks: u32,
}

/// A live connection to a registered plugin.
pub struct Connection {
    name: String,
    frames: mpsc::Sender<Zeroizing<Vec<u8>>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    max_frame: usize,
    /// Unsolicited frames in the current one-second window.
    unsolicited: Mutex<(Instant, u32)>,
    /// Where a connector's own requests go (none for other kinds: they may not ask).
    requests: Option<mpsc::Sender<PluginEvent>>,
    /// Itself, to hand along with its requests.
    this: std::sync::Weak<Connection>,
    /// What it registered.
    pub registration: Registration,
}

impl Connection {
    pub(super) fn new(
        name: String,
        frames: mpsc::Sender<Zeroizing<Vec<u8>>>,
        max_frame: usize,
        registration: Registration,
        requests: Option<mpsc::Sender<PluginEvent>>,
    ) -> std::sync::Arc<Self> {
        let requests = requests.filter(|_| registration.kind == PluginKind::Connector);
        std::sync::Arc::new_cyclic(|this| Self {
            name,
            frames,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            max_frame,
            unsolicited: Mutex::new((Instant::now(), 0)),
            requests,
            this: this.clone(),
            registration,
        })
    }

    /// Answers a request the plugin made (its `id`).
    pub async fn reply(&self, id: u64, message: Message) {
        let envelope = Envelope::new(id, message);
        match p3ak_proto::encode(&envelope, self.max_frame) {
            Ok(frame) => {
                let _ = self.frames.send(Zeroizing::new(frame)).await;
            }
            Err(e) => tracing::warn!(plugin = %self.name, "answer not sent: {e}"),
        }
    }

    /// Whether `envelope` is a connector's own request, which [`Connection::route_request`]
    /// takes. Other kinds (and other messages) make no requests the kernel serves.
    fn is_request(&self, envelope: &Envelope) -> bool {
        self.requests.is_some()
            && matches!(
                envelope.message,
                Message::Inbound(_) | Message::ApprovalPress(_)
            )
    }

    /// A connector's own request: handed to the router, or refused as `rate_limited` when the
    /// router is behind.
    fn route_request(&self, envelope: Envelope) {
        let (Some(requests), Some(connection)) = (&self.requests, self.this.upgrade()) else {
            return;
        };
        let id = envelope.id;
        let event = PluginEvent::Request {
            connection,
            id,
            message: envelope.message,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = requests.try_send(event) {
            let busy = Envelope::new(
                id,
                Message::Error(ErrorMessage {
                    kind: ErrorKind::RateLimited,
                    message: "the kernel is busy".to_owned(),
                    retry_after_ms: Some(1000),
                }),
            );
            if let Ok(frame) = p3ak_proto::encode(&busy, self.max_frame) {
                let _ = self.frames.try_send(Zeroizing::new(frame));
            }
        }
    }

    /// The plugin's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> PluginKind {
        self.registration.kind
    }

    /// Sends a request and waits for its answer. Stream chunks, if any, go to `chunks` (a
    /// bounded queue: a turn that cannot keep up loses chunks of the live view, not memory).
    pub async fn request(
        &self,
        message: Message,
        timeout: Duration,
        chunks: Option<mpsc::Sender<String>>,
    ) -> Result<Message, HostError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut envelope = Envelope::new(id, message);
        let frame = p3ak_proto::encode(&envelope, self.max_frame)
            .map(Zeroizing::new)
            .map_err(|e| HostError::Encode(self.name.clone(), e.to_string()));
        // Invoke arguments carry injected secrets: wipe them once they are in the frame.
        if let Message::Invoke(invoke) = &mut envelope.message {
            crate::broker::zeroize_value(&mut invoke.args);
        }
        let frame = frame?;
        let (reply, answer) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(
                id,
                Waiter {
                    reply,
                    chunks,
                    streamed_bytes: 0,
                    streamed_chunks: 0,
                },
            );
        }
        if self.frames.send(frame).await.is_err() {
            self.forget(id);
            return Err(HostError::Disconnected(self.name.clone()));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(HostError::Disconnected(self.name.clone())),
            Err(_) => {
                self.forget(id);
                Err(HostError::Timeout(self.name.clone()))
            }
        }
    }

    /// Sends a frame that expects no answer (`shutdown`).
    pub(super) async fn send_frame(&self, frame: Zeroizing<Vec<u8>>) {
        let _ = self.frames.send(frame).await;
    }

    /// No request is waiting for an answer. A busy plugin is not pinged: each request has its
    /// own timeout, and a plugin that hangs is caught by the next ping once it is idle.
    pub(super) fn idle(&self) -> bool {
        self.waiters.lock().is_ok_and(|w| w.is_empty())
    }

    fn forget(&self, id: u64) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&id);
        }
    }

    /// Hands a frame to the request it answers. A plugin that floods the kernel with frames
    /// answering nothing, or streams without end, breaks the protocol.
    pub(super) fn deliver(&self, envelope: Envelope) -> Result<(), Violation> {
        if self.is_request(&envelope) {
            self.route_request(envelope);
            return Ok(());
        }
        let Ok(mut waiters) = self.waiters.lock() else {
            return Ok(());
        };
        let solicited = if let Message::StreamChunk(chunk) = &envelope.message {
            match waiters.get_mut(&envelope.id) {
                Some(waiter) => {
                    waiter.streamed_bytes = waiter.streamed_bytes.saturating_add(chunk.text.len());
                    waiter.streamed_chunks = waiter.streamed_chunks.saturating_add(1);
                    if waiter.streamed_bytes > MAX_STREAM_BYTES
                        || waiter.streamed_chunks > MAX_STREAM_CHUNKS
                    {
                        return Err(Violation::StreamTooLong);
                    }
                    if let Some(sink) = &waiter.chunks {
                        // Full: the live view misses this piece; the answer still has it.
                        let _ = sink.try_send(chunk.text.clone());
                    }
                    true
                }
                None => false,
            }
        } else if let Some(waiter) = waiters.remove(&envelope.id) {
            let result = match envelope.message {
                Message::Error(e) => Err(HostError::Plugin(e)),
                other => Ok(other),
            };
            let _ = waiter.reply.send(result);
            true
        } else {
            // A reply whose request timed out is dropped.
            false
        };
        drop(waiters);
        if solicited {
            return Ok(());
        }
        let Ok(mut window) = self.unsolicited.lock() else {
            return Ok(());
        };
        if window.0.elapsed() > Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 > MAX_UNSOLICITED_PER_SECOND {
            return Err(Violation::Flood);
        }
        Ok(())
    }

    /// Every waiting request hears that the plugin went away.
    pub(super) fn fail_all(&self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            for (_, waiter) in waiters.drain() {
                let _ = waiter
                    .reply
                    .send(Err(HostError::Disconnected(self.name.clone())));
            }
        }
    }
}

/// Reads frames from a plugin; an oversized, malformed or cut-off one is an error (and the end).
pub(super) type FrameReader = p3ak_proto::tokio_io::FrameReader<OwnedReadHalf>;

#[cfg(test)]
mod tests {
    use super::*;
    use p3ak_proto::StreamChunk;

    fn connection() -> (
        std::sync::Arc<Connection>,
        mpsc::Receiver<Zeroizing<Vec<u8>>>,
    ) {
        let (frames, outgoing) = mpsc::channel(8);
        let registration = Registration {
            kind: PluginKind::Provider,
            actions: Vec::new(),
        };
        (
            Connection::new("model".into(), frames, 1 << 20, registration, None),
            outgoing,
        )
    }

    fn chunk(id: u64, text: &str) -> Envelope {
        Envelope::new(
            id,
            Message::StreamChunk(StreamChunk {
                text: text.to_owned(),
            }),
        )
    }

    #[tokio::test]
    async fn a_stream_without_end_is_cut_off_and_the_view_is_bounded() {
        let (connection, _outgoing) = connection();
        let connection = std::sync::Arc::new(connection);
        let (sink, mut view) = mpsc::channel(CHUNK_QUEUE);
        let asker = std::sync::Arc::clone(&connection);
        let request = tokio::spawn(async move {
            asker
                .request(
                    Message::Ping(p3ak_proto::Ping {}),
                    Duration::from_secs(5),
                    Some(sink),
                )
                .await
        });
        while connection.idle() {
            tokio::task::yield_now().await;
        }
        let piece = "x".repeat(64 * 1024);
        let mut sent = 0usize;
        let outcome = loop {
            match connection.deliver(chunk(1, &piece)) {
                Ok(()) => sent += piece.len(),
                Err(e) => break e,
            }
            assert!(sent <= MAX_STREAM_BYTES, "not cut off at {sent} bytes");
        };
        assert_eq!(outcome, Violation::StreamTooLong);
        // Nobody read the view: it holds at most its queue, not the whole stream.
        let mut queued = 0;
        while view.try_recv().is_ok() {
            queued += 1;
        }
        assert!(queued <= CHUNK_QUEUE, "{queued}");
        connection.fail_all();
        assert!(matches!(
            request.await.unwrap(),
            Err(HostError::Disconnected(_))
        ));
    }

    #[tokio::test]
    async fn unsolicited_frames_past_the_limit_are_a_flood() {
        let (connection, _outgoing) = connection();
        let mut result = Ok(());
        for _ in 0..=MAX_UNSOLICITED_PER_SECOND {
            result = connection.deliver(chunk(99, "late"));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::Flood));
    }
}

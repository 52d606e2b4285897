//! Loopback fakes of chat platforms (feature `chat`): each follows its platform's documented
//! wire format closely enough that the real connector runs against it unchanged (its
//! `base_url` pointed at [`telegram::Fake::base_url`] or [`discord::Fake::base_url`]).
//!
//! Each fake plays the people (`say`, `say_direct`, `press`) and records what the bot did
//! ([`Sent`], in order). Requests with a wrong token get the platform's auth error.

pub mod discord;
pub mod slack;
pub mod telegram;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A message the bot posted, or an edit of one, as the platform saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The chat (channel) id.
    pub chat: String,
    /// The message id (the platform's, as the fake gave it).
    pub id: String,
    /// The text.
    pub text: String,
    /// Whether this replaced an earlier message's text.
    pub edit: bool,
    /// Buttons with data: `(label, data)`.
    pub buttons: Vec<(String, String)>,
    /// Link buttons: `(label, url)`.
    pub links: Vec<(String, String)>,
    /// The request's JSON body, for what the fields above do not show.
    pub body: Value,
}

/// What a fake records, with a way to wait for more.
#[derive(Default)]
pub(crate) struct Record {
    sent: Mutex<Vec<Sent>>,
    changed: Condvar,
}

impl Record {
    pub(crate) fn push(&self, sent: Sent) {
        self.sent.lock().unwrap().push(sent);
        self.changed.notify_all();
    }

    pub(crate) fn all(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Waits until a message matching `pred` was sent; panics after `timeout`.
    pub(crate) fn wait(&self, pred: impl Fn(&Sent) -> bool, timeout: Duration) -> Sent {
        let end = Instant::now() + timeout;
        let mut sent = self.sent.lock().unwrap();
        loop {
            if let Some(found) = sent.iter().find(|s| pred(s)) {
                return found.clone();
            }
            let now = Instant::now();
            assert!(
                now < end,
                "nothing matching was sent within {timeout:?}; sent: {sent:#?}"
            );
            sent = self.changed.wait_timeout(sent, end - now).unwrap().0;
        }
    }
}

/// One HTTP request as a fake sees it.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One HTTP response.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    pub(crate) fn bytes(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            content_type: "application/octet-stream",
            body,
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: Vec::new(),
        }
    }
}

/// Serves HTTP/1.1 on `listener` (keep-alive, a thread per connection) with `handle`.
pub(crate) fn serve_http(
    listener: TcpListener,
    handle: Arc<dyn Fn(Request) -> Response + Send + Sync>,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = Arc::clone(&handle);
            std::thread::spawn(move || connection(stream, &*handle));
        }
    });
}

fn connection(mut stream: TcpStream, handle: &(dyn Fn(Request) -> Response + Send + Sync)) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer) else {
            return;
        };
        let response = handle(request);
        let reason = match response.status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Status",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
            response.status,
            response.content_type,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&response.body).is_err() {
            return;
        }
    }
}

fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = parsed.parse(buffer) {
            let method = parsed.method?.to_owned();
            let path = parsed.path?.to_owned();
            let headers: HashMap<String, String> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buffer.len() < head_len + length {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = buffer[head_len..head_len + length].to_vec();
            buffer.drain(..head_len + length);
            return Some(Request {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Rate limits to hand out: the next `n` posting requests get a 429 asking to wait
/// `retry_after`.
#[derive(Default)]
pub(crate) struct RateLimits {
    left: Mutex<(u32, Duration)>,
}

impl RateLimits {
    pub(crate) fn set(&self, n: u32, retry_after: Duration) {
        *self.left.lock().unwrap() = (n, retry_after);
    }

    /// Whether this request is limited, and for how long.
    pub(crate) fn take(&self) -> Option<Duration> {
        let mut left = self.left.lock().unwrap();
        if left.0 == 0 {
            return None;
        }
        left.0 -= 1;
        Some(left.1)
    }
}

/// The kernel's end of a connector's connection, played by a test: the handshake done, then
/// requests from the connector read one at a time (each read bounded by 20 s).
pub struct ConnectorKernel<E> {
    pub kernel: crate::plugin::FakeKernel<E>,
    next_id: u64,
}

impl<E: std::fmt::Debug + Send + 'static> ConnectorKernel<E> {
    /// Runs `serve` as connector `name` with `config` and the platform `token`.
    pub fn start(
        name: &str,
        config: Value,
        token: &str,
        serve: impl FnOnce(std::os::unix::net::UnixStream) -> Result<(), E> + Send + 'static,
    ) -> Self {
        let kernel = crate::plugin::FakeKernel::start(
            name,
            config,
            Some(p3ak_proto::Credential::new(token.to_owned())),
            serve,
        );
        assert_eq!(kernel.register.kind, p3ak_proto::PluginKind::Connector);
        assert!(kernel.register.actions.is_empty());
        kernel
            .stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            kernel,
            next_id: 1000,
        }
    }

    /// The connector's next request (its id and message).
    pub fn next_request(&mut self) -> (u64, p3ak_proto::Message) {
        let envelope = self.kernel.recv();
        (envelope.id, envelope.message)
    }

    /// The next request, which must be an `inbound`.
    pub fn inbound(&mut self) -> (u64, p3ak_proto::Inbound) {
        match self.next_request() {
            (id, p3ak_proto::Message::Inbound(inbound)) => (id, inbound),
            other => panic!("expected inbound, got {other:?}"),
        }
    }

    /// Answers request `id` with `result {output}`.
    pub fn answer(&mut self, id: u64, output: Value) {
        self.kernel.send(
            id,
            p3ak_proto::Message::Result(p3ak_proto::ToolResult { output }),
        );
    }

    /// Accepts inbound `id`.
    pub fn accept(&mut self, id: u64) {
        self.answer(id, serde_json::json!({"accepted": true}));
    }

    /// Sends a request and returns its answer (`result`'s output, or the error).
    pub fn request(
        &mut self,
        message: p3ak_proto::Message,
    ) -> Result<Value, p3ak_proto::ErrorMessage> {
        self.next_id += 1;
        let id = self.next_id;
        self.kernel.send(id, message);
        let reply = self.kernel.recv();
        assert_eq!(reply.id, id, "{reply:?}");
        match reply.message {
            p3ak_proto::Message::Result(result) => Ok(result.output),
            p3ak_proto::Message::Error(error) => Err(error),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Posts `text` in `conversation` (or edits `edit`); returns the message id.
    pub fn outbound(
        &mut self,
        conversation: &str,
        text: &str,
        edit: Option<&str>,
        partial: bool,
    ) -> Result<String, p3ak_proto::ErrorMessage> {
        self.request(p3ak_proto::Message::Outbound(p3ak_proto::Outbound {
            conversation: conversation.to_owned(),
            text: text.to_owned(),
            edit: edit.map(str::to_owned),
            partial,
        }))
        .map(|output| output["message_id"].as_str().unwrap().to_owned())
    }

    /// Relays a sealed approval announcement; returns how many were posted.
    pub fn approval(&mut self, sealed: &str) -> Result<u64, p3ak_proto::ErrorMessage> {
        self.request(p3ak_proto::Message::Approval(p3ak_proto::Approval {
            sealed: sealed.to_owned(),
        }))
        .map(|output| output["posted"].as_u64().unwrap())
    }

    /// Sends `shutdown`; the connector must end cleanly.
    pub fn shutdown(self) {
        self.kernel.shutdown();
    }
}

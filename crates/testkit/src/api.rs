//! A small HTTP/1.1 client (hyper) for the kernel's API, over its Unix socket or TCP.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where the API is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `run/api.sock`.
    Unix(PathBuf),
    /// `127.0.0.1:PORT`.
    Tcp(std::net::SocketAddr),
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A request to send.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Vec<u8>,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn delete(path: &'a str) -> Self {
        Self {
            method: "DELETE",
            ..Self::get(path)
        }
    }

    /// A POST of JSON.
    pub fn post(path: &'a str, body: &serde_json::Value) -> Self {
        Self {
            method: "POST",
            path,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A POST of raw bytes with a content type.
    pub fn post_raw(path: &'a str, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            method: "POST",
            path,
            headers: vec![("content-type", content_type.to_owned())],
            body,
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
}

/// Sends `call` on a fresh connection and reads the whole answer.
pub fn send(target: &Target, call: Call<'_>) -> Answer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut builder = hyper::Request::builder()
            .method(call.method)
            .uri(call.path)
            .header("host", "localhost");
        for (name, value) in &call.headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(Full::new(Bytes::from(call.body))).unwrap();
        let response = match target {
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.unwrap();
                exchange(stream, request).await
            }
            Target::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                exchange(stream, request).await
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    })
}

/// Sends `request` over `stream` (one HTTP/1.1 connection) and returns the response head;
/// the body is read by the caller, so a stream of events can be followed.
pub async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// The API socket of a home.
pub fn socket(home: &Path) -> Target {
    Target::Unix(home.join("run/api.sock"))
}

/// Server-sent events of a body: (event, data) pairs.
pub fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((
                name,
                serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            ));
        }
    }
    out
}

/// A loopback port free a moment ago, for a kernel's `[api] listen`.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until the API's socket exists (at most 30 s; the kernel's log in the failure).
pub fn wait_for_socket(target: &Target, kernel: &crate::Kernel) {
    let Target::Unix(path) = target else { return };
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the API did not come up:\n{}",
            kernel.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `p3ak tokens create --scope <scopes> <extra>…`: the token.
pub fn token(kernel: &crate::Kernel, scopes: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "tokens", "create", "--name", "test", "--scope", scopes, "--json",
    ];
    args.extend_from_slice(extra);
    let out: serde_json::Value = serde_json::from_str(&kernel.ok(&args)).unwrap();
    out["token"].as_str().unwrap().to_owned()
}

/// The OpenAPI document checked in (`docs/openapi.json`).
pub fn openapi() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks `answer` against the schema `doc` gives for `method path` and its status (`path`
/// as in the document, with `{id}`).
pub fn conforms(doc: &serde_json::Value, method: &str, path: &str, answer: &Answer) {
    let responses = &doc["paths"][path][method]["responses"];
    let status = answer.status.to_string();
    assert!(
        responses.get(&status).is_some(),
        "{method} {path}: status {status} is not documented ({})",
        answer.text()
    );
    let schema = &responses[&status]["content"]["application/json"]["schema"];
    if schema.is_null() {
        return;
    }
    let mut root = schema.clone();
    root.as_object_mut()
        .unwrap()
        .insert("components".to_owned(), doc["components"].clone());
    let validator = jsonschema::validator_for(&root).unwrap();
    let body = answer.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the answer does not fit the document: {errors:?}\n{body}"
    );
}

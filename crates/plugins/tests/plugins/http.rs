//! `http`: against a tiny HTTP/1.1 server on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use p3ak_proto::ErrorKind;
use serde_json::json;

use crate::kernel::{Kernel, start};

/// What the server received.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves forever on a fresh port; each request is reported on the channel.
fn server() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap();
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let response: Vec<u8> = match path.as_str() {
                "/redirect" => b"HTTP/1.1 302 Found\r\nlocation: /target\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                "/big" => {
                    let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n".to_vec();
                    r.extend(std::iter::repeat_n(b'z', 5000));
                    r
                }
                "/binary" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\na\xffb".to_vec(),
                _ => b"HTTP/1.1 201 Created\r\nx-test: yes\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_vec(),
            };
            let mut stream = stream;
            let _ = stream.write_all(&response);
            let _ = send.send(Received {
                method,
                path,
                headers,
                body,
            });
        }
    });
    (port, receive)
}

fn setup(config: serde_json::Value) -> (u16, mpsc::Receiver<Received>, Kernel) {
    let (port, received) = server();
    (port, received, start("http", config))
}

#[test]
fn get_with_headers() {
    let (port, received, mut kernel) = setup(json!({}));
    assert_eq!(kernel.register.actions[0].name, "request");
    assert_eq!(kernel.register.actions[0].tier, p3ak_proto::Tier::Act);
    let out = kernel.ok(
        "alice",
        "request",
        json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/hello?x=1"),
               "headers": {"Authorization": "Bearer s3cret", "x-custom": "1"}}),
    );
    assert_eq!(out["status"], 201);
    assert_eq!(out["body"], "hello");
    assert_eq!(out["truncated"], false);
    assert_eq!(out["headers"]["x-test"], "yes");
    assert_eq!(out["headers"]["set-cookie"], "a=1, b=2");
    let got = received.recv().unwrap();
    assert_eq!(got.method, "GET");
    assert_eq!(got.path, "/hello?x=1");
    assert_eq!(got.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(got.header("x-custom"), Some("1"));
    assert!(got.body.is_empty());
    kernel.shutdown();
}

#[test]
fn bodies_and_methods() {
    let (port, received, mut kernel) = setup(json!({}));
    let url = format!("http://127.0.0.1:{port}/echo");
    kernel.ok(
        "a",
        "request",
        json!({"method": "POST", "url": url, "json": {"to": "x", "n": [1, 2]}}),
    );
    let got = received.recv().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, json!({"to": "x", "n": [1, 2]}));

    kernel.ok(
        "a",
        "request",
        json!({"method": "PUT", "url": url, "body": "plain text", "headers": {"content-type": "text/plain"}}),
    );
    let got = received.recv().unwrap();
    assert_eq!(
        (got.method.as_str(), got.body.as_slice()),
        ("PUT", &b"plain text"[..])
    );
    assert_eq!(got.header("content-type"), Some("text/plain"));

    for method in ["PATCH", "DELETE"] {
        kernel.ok("a", "request", json!({"method": method, "url": url}));
        assert_eq!(received.recv().unwrap().method, method);
    }
    let out = kernel.ok("a", "request", json!({"method": "HEAD", "url": url}));
    assert_eq!(out["body"], "");
    assert_eq!(received.recv().unwrap().method, "HEAD");
    kernel.shutdown();
}

#[test]
fn redirects_are_not_followed() {
    let (port, received, mut kernel) = setup(json!({}));
    let out = kernel.ok(
        "a",
        "request",
        json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/redirect")}),
    );
    assert_eq!(out["status"], 302);
    assert_eq!(out["headers"]["location"], "/target");
    assert_eq!(received.recv().unwrap().path, "/redirect");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(received.try_recv().is_err(), "the redirect was followed");
    kernel.shutdown();
}

#[test]
fn bodies_are_capped_and_lossy() {
    let (port, _received, mut kernel) = setup(json!({"max_body": 1000}));
    let out = kernel.ok(
        "a",
        "request",
        json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/big")}),
    );
    assert_eq!(out["body"].as_str().unwrap().len(), 1000);
    assert_eq!(out["truncated"], true);
    let out = kernel.ok(
        "a",
        "request",
        json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/binary")}),
    );
    assert_eq!(out["body"], "a\u{fffd}b");
    kernel.shutdown();
}

#[test]
fn failures() {
    let (port, _received, mut kernel) = setup(json!({"timeout_secs": 2}));
    for args in [
        json!({"method": "GET"}),
        json!({"url": "http://127.0.0.1/"}),
        json!({"method": "get", "url": "http://127.0.0.1/"}),
        json!({"method": "TRACE", "url": "http://127.0.0.1/"}),
        json!({"method": "GET", "url": "ftp://127.0.0.1/"}),
        json!({"method": "GET", "url": "file:///etc/passwd"}),
        json!({"method": "GET", "url": "not a url"}),
        json!({"method": "GET", "url": "http://127.0.0.1/", "headers": {"bad name": "x"}}),
        json!({"method": "GET", "url": "http://127.0.0.1/", "headers": {"x": "line\nbreak"}}),
        json!({"method": "GET", "url": "http://127.0.0.1/", "headers": {"x": 1}}),
        json!({"method": "POST", "url": "http://127.0.0.1/", "body": "a", "json": {}}),
        json!({"method": "GET", "url": "http://127.0.0.1/", "follow": true}),
    ] {
        kernel.invalid("a", "request", args);
    }
    // Nothing listens on this port any more: transient, and the URL is not repeated.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = kernel
        .invoke(
            "a",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{closed}/?token=s3cret")}),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    assert!(!e.message.contains("s3cret"), "{e:?}");
    // A server that never answers: the request times out, transient.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let e = kernel
        .invoke(
            "a",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{silent_port}/")}),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    assert!(e.message.contains("timed out"), "{e:?}");
    drop(silent);
    // Still serving.
    kernel.ok(
        "a",
        "request",
        json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/")}),
    );
    kernel.shutdown();
}

//! Loopback HTTP services for tests: each request's header of interest is recorded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A service on 127.0.0.1 that records one request header and answers 200 with a body made
/// from that header's value. Serves at most `max` connections, on a thread of its own.
pub struct HeaderRecorder {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HeaderRecorder {
    /// Records `header` (case-insensitive; empty when absent) and answers `answer(value)`.
    pub fn start(
        header: &str,
        max: usize,
        answer: impl Fn(&str) -> String + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let values = Arc::clone(&seen);
        let prefix = format!("{}:", header.to_ascii_lowercase());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max).flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut value = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix(&prefix) {
                        value = line[line.len() - v.len()..].trim().to_owned();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = answer(&value);
                values.lock().unwrap().push(value);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, seen }
    }

    /// The recorded values, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

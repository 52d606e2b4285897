//! A fake model API on loopback: answers each connection with the next canned response
//! (HTTP/1.1, one request per connection) and records what it was sent. Streams go out in
//! chunked encoding one piece at a time, so a `drop` after some pieces is a real broken
//! connection, not a short body.

#![allow(
    dead_code,
    reason = "shared by several test crates, each using part of it"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One response.
pub enum Canned {
    /// A whole body with this status, content type `application/json`.
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// A 200 with `content_type`, sent in `pieces` `pause` apart; with `drop`, the
    /// connection closes after the pieces without ending the chunked body.
    Stream {
        content_type: &'static str,
        pieces: Vec<String>,
        drop: bool,
        pause: Duration,
    },
}

impl Canned {
    pub fn ok(body: &str) -> Self {
        Self::Json {
            status: 200,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub fn status(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> Self {
        Self::Json {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// An SSE fixture sent one event (up to a blank line) per piece.
    pub fn sse(text: &str) -> Self {
        Self::Stream {
            content_type: "text/event-stream",
            pieces: split_events(text),
            drop: false,
            pause: Duration::from_millis(2),
        }
    }

    /// Newline-delimited JSON sent one line per piece.
    pub fn ndjson(text: &str) -> Self {
        Self::Stream {
            content_type: "application/x-ndjson",
            pieces: text.lines().map(|l| format!("{l}\n")).collect(),
            drop: false,
            pause: Duration::from_millis(2),
        }
    }

    /// The same stream, cut after `keep` pieces by closing the connection.
    pub fn dropped_after(self, keep: usize) -> Self {
        match self {
            Self::Stream {
                content_type,
                mut pieces,
                pause,
                ..
            } => {
                pieces.truncate(keep);
                Self::Stream {
                    content_type,
                    pieces,
                    drop: true,
                    pause,
                }
            }
            json => json,
        }
    }
}

fn split_events(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        current.push_str(line);
        if line.trim().is_empty() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
}

/// What the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeApi {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    room: Arc<Room>,
}

/// Requests being answered at once by a concurrent server: (now, most ever).
#[derive(Default)]
struct Room {
    inside: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl FakeApi {
    /// Serves `responses` in order on 127.0.0.1; later requests get a 500.
    pub fn start(responses: Vec<Canned>) -> Self {
        let mut responses = responses.into_iter();
        Self::start_with(move || responses.next())
    }

    /// Serves whatever `next` gives for each request (a 500 once it gives `None`).
    pub fn start_with(mut next: impl FnMut() -> Option<Canned> + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                // Each piece goes out at once, as a real server's flushed events do.
                let _ = stream.set_nodelay(true);
                let Some(recorded) = read_request(&mut stream) else {
                    continue;
                };
                seen.lock().unwrap().push(recorded);
                let response = next().unwrap_or_else(|| {
                    Canned::status(500, Vec::new(), r#"{"error": "no more canned responses"}"#)
                });
                let _ = respond(&mut stream, response);
            }
        });
        Self {
            base,
            requests,
            room: Arc::default(),
        }
    }

    /// Answers every connection on a thread of its own. Each request waits, up to `wait`, until
    /// `expected` requests are in flight at once, then gets `answer(met)`, `met` being the most
    /// that have been in flight at once so far ([`FakeApi::peak`]).
    pub fn start_concurrent(
        expected: usize,
        wait: Duration,
        answer: impl Fn(usize) -> Canned + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let room = Arc::new(Room::default());
        let (seen, inside) = (Arc::clone(&requests), Arc::clone(&room));
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (seen, room, answer) =
                    (Arc::clone(&seen), Arc::clone(&inside), Arc::clone(&answer));
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = stream.set_nodelay(true);
                    let Some(recorded) = read_request(&mut stream) else {
                        return;
                    };
                    seen.lock().unwrap().push(recorded);
                    let mut count = room.inside.lock().unwrap();
                    count.0 += 1;
                    count.1 = count.1.max(count.0);
                    room.changed.notify_all();
                    let (mut count, _) = room
                        .changed
                        .wait_timeout_while(count, wait, |c| c.0 < expected)
                        .unwrap();
                    let met = count.1;
                    // Out before the answer goes: the next request its client sends cannot
                    // find this one still in flight.
                    count.0 -= 1;
                    drop(count);
                    let _ = respond(&mut stream, answer(met));
                });
            }
        });
        Self {
            base,
            requests,
            room,
        }
    }

    /// The most requests a concurrent server had in flight at once.
    pub fn peak(&self) -> usize {
        self.room.inside.lock().unwrap().1
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = request.parse(&data).ok()? {
            let headers: Vec<(String, String)> = request
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
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let (method, path) = (request.method?.to_owned(), request.path?.to_owned());
            while data.len() < head + length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            let body = serde_json::from_slice(&data[head..head + length])
                .unwrap_or(serde_json::Value::Null);
            return Some(Recorded {
                method,
                path,
                headers,
                body,
            });
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn respond(stream: &mut TcpStream, response: Canned) -> std::io::Result<()> {
    match response {
        Canned::Json {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.as_bytes())?;
        }
        Canned::Stream {
            content_type,
            pieces,
            drop,
            pause,
        } => {
            stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\
                     transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
            for piece in pieces {
                stream.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
            if !drop {
                stream.write_all(b"0\r\n\r\n")?;
            }
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

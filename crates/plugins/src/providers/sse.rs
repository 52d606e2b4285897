//! Reading a streamed reply: server-sent events (Anthropic, OpenAI) or one JSON object per
//! line (Ollama), both bounded by [`MAX_RESPONSE_BYTES`].

use std::io::Read;

use reqwest::blocking::Response;
use sse_parse::{Event, SseParser};

use super::{Endpoint, MAX_RESPONSE_BYTES};
use p3ak_sdk::runtime::ToolFailure;

/// Pulls bytes from a response body, at most [`MAX_RESPONSE_BYTES`] in all.
struct Body<'a> {
    response: Response,
    endpoint: &'a Endpoint,
    total: usize,
    buf: Vec<u8>,
}

impl<'a> Body<'a> {
    fn new(response: Response, endpoint: &'a Endpoint) -> Self {
        Self {
            response,
            endpoint,
            total: 0,
            buf: vec![0; 16 << 10],
        }
    }

    /// The next bytes; empty at the end of the body.
    fn read(&mut self) -> Result<&[u8], ToolFailure> {
        let n = self.response.read(&mut self.buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ToolFailure::transient(format!("{}: the stream went silent", self.endpoint.api()))
            } else {
                ToolFailure::transient(format!(
                    "{}: the connection broke while streaming",
                    self.endpoint.api()
                ))
            }
        })?;
        self.total = self.total.saturating_add(n);
        if self.total > MAX_RESPONSE_BYTES {
            return Err(self.endpoint.too_large());
        }
        Ok(self.buf.get(..n).unwrap_or_default())
    }
}

/// Server-sent events of a response, in order.
pub(crate) struct Events<'a> {
    body: Body<'a>,
    parser: SseParser,
    ended: bool,
}

impl<'a> Events<'a> {
    pub(crate) fn new(response: Response, endpoint: &'a Endpoint) -> Self {
        Self {
            body: Body::new(response, endpoint),
            parser: SseParser::new().max_buffer(MAX_RESPONSE_BYTES),
            ended: false,
        }
    }

    /// The next event, or `None` at the end of the body.
    pub(crate) fn next(&mut self) -> Result<Option<Event>, ToolFailure> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let bytes = self.body.read()?;
            if bytes.is_empty() {
                self.ended = true;
                self.parser.finish();
            } else {
                self.parser.feed(bytes);
            }
        }
    }
}

/// Newline-delimited JSON values of a response, in order.
pub(crate) struct JsonLines<'a> {
    body: Body<'a>,
    pending: Vec<u8>,
    ended: bool,
}

impl<'a> JsonLines<'a> {
    pub(crate) fn new(response: Response, endpoint: &'a Endpoint) -> Self {
        Self {
            body: Body::new(response, endpoint),
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The next non-blank line parsed as JSON, or `None` at the end of the body.
    pub(crate) fn next(&mut self) -> Result<Option<serde_json::Value>, ToolFailure> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                if let Some(value) = self.parse(&line)? {
                    return Ok(Some(value));
                }
                continue;
            }
            if self.ended {
                let line = std::mem::take(&mut self.pending);
                return self.parse(&line);
            }
            let bytes = self.body.read()?;
            if bytes.is_empty() {
                self.ended = true;
            } else {
                self.pending.extend_from_slice(bytes);
            }
        }
    }

    fn parse(&self, line: &[u8]) -> Result<Option<serde_json::Value>, ToolFailure> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(line).map(Some).map_err(|e| {
            ToolFailure::permanent(format!(
                "{}: malformed line in the stream: {e}",
                self.body.endpoint.api()
            ))
        })
    }
}

/// Parses an event's `data` as JSON.
pub(crate) fn data_json(
    event: &Event,
    endpoint: &Endpoint,
) -> Result<serde_json::Value, ToolFailure> {
    serde_json::from_str(&event.data).map_err(|e| {
        ToolFailure::permanent(format!(
            "{}: malformed `{}` event: {e}",
            endpoint.api(),
            event.event
        ))
    })
}

//! Loopback stand-ins for what `p3ak sandbox trace` makes plugins talk to: a web server for
//! `http` and the model APIs for the providers. Hand-written on purpose: a few fixed answers on
//! loopback, where a server framework would add nothing but system calls to the trace.
#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing: reads give Null"
)]

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

/// A loopback HTTP service answering a few requests, for the `http` plugin's trace.
pub(super) fn loopback_http() -> std::io::Result<(std::thread::JoinHandle<()>, u16)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\
                  connection: close\r\n\r\nok",
            );
        }
    });
    Ok((handle, port))
}

/// A loopback model API for the providers' traces: for each of four connections, the reply
/// the path asks for (Anthropic's `/v1/messages`, OpenAI's `/chat/completions`, Ollama's
/// `/api/chat`), streamed when the request says so; the third connection gets a 429.
pub(super) fn loopback_model_api() -> std::io::Result<(std::thread::JoinHandle<()>, u16)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(4).enumerate() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 16384];
            // Head and body: the body is small and ends with the JSON's closing brace.
            while !request.ends_with(b"}") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(buf.get(..k).unwrap_or_default()),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let streamed = text.contains("\"stream\":true");
            let reply = if n == 2 {
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-type: \
                 application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                    .to_owned()
            } else {
                let (kind, body) = model_reply(&text, streamed);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Ok((handle, port))
}

/// The body each API would send: a text and one tool call.
fn model_reply(request: &str, streamed: bool) -> (&'static str, String) {
    if request.starts_with("POST /v1/messages") {
        if !streamed {
            return (
                "application/json",
                json!({"type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "ok"},
                            {"type": "tool_use", "id": "t1", "name": "files__list", "input": {}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 2}})
                .to_string(),
            );
        }
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 3}}}),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "ok"}}),
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "t1", "name": "files__list"}}),
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                   "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ];
        let body = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
            .collect();
        return ("text/event-stream", body);
    }
    if request.starts_with("POST /v1/chat/completions") {
        let call = json!([{"index": 0, "id": "c1", "type": "function",
                           "function": {"name": "files__list", "arguments": "{}"}}]);
        if !streamed {
            return ("application/json", json!({"object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": "ok", "tool_calls": call}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
                .to_string());
        }
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"content": "ok"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": call}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ];
        let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        return ("text/event-stream", body);
    }
    let message = json!({"role": "assistant", "content": "ok",
                         "tool_calls": [{"function": {"name": "files__list", "arguments": {}}}]});
    let last = json!({"message": {"role": "assistant", "content": ""}, "done": true,
                      "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2});
    if !streamed {
        let mut whole = last;
        whole["message"] = message;
        return ("application/json", whole.to_string());
    }
    let first = json!({"message": message, "done": false});
    ("application/x-ndjson", format!("{first}\n{last}\n"))
}

//! [`RemoteBackend`]: the [`Backend`] of a kernel running elsewhere, reached through its REST
//! API over its Unix socket (`$P3AK_HOME/run/api.sock`). `p3ak mcp` serves MCP on stdio with it.
//!
//! The kernel identifies a socket caller by its peer uid (the owner needs no token) or by a
//! bearer token, and applies that caller's scopes, the policy and the audit log itself: the
//! [`Caller`] passed in here is not sent, it only decides what the MCP server lists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::backend::{Backend, BackendError, Caller};
use crate::model::{
    Accepted, ChatReply, ChatRequest, Deleted, DocumentList, DocumentText, ErrorBody, NewNote,
    SearchQuery, SearchResults, Stored, Upload, WhoAmI,
};
use crate::waiting::WAITING_RETRY_SECS;

/// The environment variable holding an API token for the socket, when the caller is not the
/// kernel's owner.
pub const TOKEN_ENV: &str = "P3AK_API_TOKEN";

/// The largest answer read (a document's text is capped by the kernel well below).
const MAX_ANSWER: usize = 32 << 20;

/// What a path segment or query value keeps unescaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The REST API of a kernel, over its Unix socket.
pub struct RemoteBackend {
    socket: PathBuf,
    token: Option<Zeroizing<String>>,
    timeout: Duration,
    chat_timeout: Duration,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("socket", &self.socket)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("chat_timeout", &self.chat_timeout)
            .finish()
    }
}

impl RemoteBackend {
    /// The API on `socket`, without a token (the kernel knows the owner by uid).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            token: None,
            timeout: Duration::from_secs(120),
            chat_timeout: Duration::from_secs(900),
        }
    }

    /// Sends `token` as `Authorization: Bearer`.
    #[must_use]
    pub fn with_token(mut self, token: Zeroizing<String>) -> Self {
        self.token = Some(token);
        self
    }

    /// Takes the token from [`TOKEN_ENV`] when it is set and not empty.
    #[must_use]
    pub fn with_token_from_env(self) -> Self {
        match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => {
                self.with_token(Zeroizing::new(token.trim().to_owned()))
            }
            _ => self,
        }
    }

    /// How long a vault call and an agent's answer may take.
    #[must_use]
    pub fn with_timeouts(mut self, call: Duration, chat: Duration) -> Self {
        self.timeout = call;
        self.chat_timeout = chat;
        self
    }

    /// The socket.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Checks the kernel answers `/healthz`.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] saying why (no socket, refused, not healthy).
    pub async fn health(&self) -> Result<(), BackendError> {
        let (status, _, _) = self
            .send(Method::GET, "/healthz", None, Duration::from_secs(10))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!(
                "the kernel's API on {} is not healthy (HTTP {})",
                self.socket.display(),
                status.as_u16()
            )))
        }
    }

    /// Who the kernel takes this client for, with its scopes (`GET /v1/whoami`).
    ///
    /// # Errors
    /// A [`BackendError`]: the kernel is not running, or does not accept this caller (a peer
    /// that is no operator without a token, a bad, expired or revoked token).
    pub async fn whoami(&self) -> Result<WhoAmI, BackendError> {
        self.json(Method::GET, "/v1/whoami", None, Duration::from_secs(10))
            .await
    }

    /// One request on a fresh connection: the status, the `Retry-After` seconds, the body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
    ) -> Result<(StatusCode, Option<u64>, Bytes), BackendError> {
        match tokio::time::timeout(timeout, self.exchange(method, path, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Unavailable(format!(
                "the kernel did not answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, Option<u64>, Bytes), BackendError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.broken(&e))?;
        let driver = tokio::spawn(async move {
            // The answer (or its absence) is what matters; a connection error shows there.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
                .map_err(|_| BackendError::Invalid(format!("{TOKEN_ENV} is not a valid token")))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                request = request.header(CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| BackendError::Invalid(format!("cannot build the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.broken(&e))?;
        let status = response.status();
        let retry = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| {
                BackendError::Unavailable(format!(
                    "the kernel's answer was cut off or over {MAX_ANSWER} bytes"
                ))
            })?
            .to_bytes();
        driver.abort();
        Ok((status, retry, body))
    }

    fn unreachable(&self, e: &std::io::Error) -> BackendError {
        let socket = self.socket.display();
        BackendError::Unavailable(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
                "the kernel is not running (nothing answers on {socket}); start it with `p3ak up`"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot open {socket}: permission denied")
            }
            _ => format!("cannot reach the kernel on {socket}: {e}"),
        })
    }

    fn broken(&self, e: &hyper::Error) -> BackendError {
        BackendError::Unavailable(format!(
            "the connection to the kernel on {} failed: {e}",
            self.socket.display()
        ))
    }

    /// A JSON call answered with `T` on 200/201.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, BackendError> {
        let body = body.map(|b| ("application/json", b));
        let (status, retry, bytes) = self.send(method, path, body, timeout).await?;
        if status.is_success() && status != StatusCode::ACCEPTED {
            return decode(&bytes);
        }
        Err(error_for(status, retry, &bytes))
    }

    /// A write: 201 stored, 202 waiting for approval.
    async fn written(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Stored, BackendError> {
        let (status, retry, bytes) = self
            .send(Method::POST, path, Some((content_type, body)), self.timeout)
            .await?;
        match status {
            StatusCode::ACCEPTED => {
                let accepted: Accepted = decode(&bytes)?;
                Err(BackendError::Pending {
                    approval: accepted.approval,
                    level: accepted.level,
                })
            }
            s if s.is_success() => decode(&bytes),
            s => Err(error_for(s, retry, &bytes)),
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, BackendError> {
    serde_json::to_vec(value).map_err(|e| BackendError::Internal(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    serde_json::from_slice(bytes)
        .map_err(|e| BackendError::Internal(format!("the kernel's answer is not understood: {e}")))
}

/// The [`BackendError`] for an error answer (an [`ErrorBody`], or anything else).
fn error_for(status: StatusCode, retry: Option<u64>, bytes: &[u8]) -> BackendError {
    let body: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
    let code = body.as_ref().map_or("", |b| b.error.as_str());
    let message = body.as_ref().map_or_else(
        || format!("the kernel answered HTTP {}", status.as_u16()),
        |b| b.message.clone(),
    );
    match status.as_u16() {
        400 | 409 | 415 | 422 => BackendError::Invalid(message),
        401 => BackendError::Invalid(format!(
            "the kernel did not accept this caller ({message}); run as the kernel's owner or \
             set {TOKEN_ENV}"
        )),
        403 if code == "not_permitted" => BackendError::NotPermitted,
        403 => match scope_in(&message) {
            Some(scope) => BackendError::Scope(scope),
            None => BackendError::Invalid(message),
        },
        404 => BackendError::NotFound(message),
        413 => BackendError::TooLarge(message),
        429 if code == "too_many_waiting" => BackendError::TooManyWaiting {
            message,
            retry_after: retry.unwrap_or(WAITING_RETRY_SECS),
        },
        429 => BackendError::RateLimited {
            message: match retry {
                Some(secs) if !message.contains("retry") => {
                    format!("{message}; retry in {secs} s")
                }
                Some(_) => message,
                None => format!("{message}; retry later"),
            },
            retry_after: retry.unwrap_or(1),
        },
        503 | 504 => BackendError::Unavailable(message),
        _ => BackendError::Internal(format!("HTTP {}: {message}", status.as_u16())),
    }
}

/// The scope in "this needs the `vault:write` scope".
fn scope_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (scope, _) = rest.split_once('`')?;
    Some(scope.to_owned())
}

fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// A `multipart/form-data` body with the `file` part and a `tags` part.
fn multipart(upload: &Upload) -> Result<(String, Vec<u8>), BackendError> {
    let tags = encode(&upload.tags)?;
    let mut n: u64 = u64::from(std::process::id());
    let boundary = loop {
        let candidate = format!("p3ak-{n:016x}-boundary");
        let bytes = candidate.as_bytes();
        let clash = upload.data.windows(bytes.len()).any(|w| w == bytes);
        if !clash {
            break candidate;
        }
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    };
    let name: String = upload
        .name
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let media = upload
        .media_type
        .as_deref()
        .filter(|m| m.is_ascii() && !m.contains(['\r', '\n']))
        .unwrap_or("application/octet-stream");
    let mut body = Vec::with_capacity(upload.data.len().saturating_add(512));
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {media}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&upload.data);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"tags\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&tags);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((format!("multipart/form-data; boundary={boundary}"), body))
}

impl Backend for RemoteBackend {
    async fn search(
        &self,
        _caller: &Caller,
        query: SearchQuery,
    ) -> Result<SearchResults, BackendError> {
        let body = encode(&query)?;
        self.json(Method::POST, "/v1/search", Some(body), self.timeout)
            .await
    }

    async fn read(&self, _caller: &Caller, id: String) -> Result<DocumentText, BackendError> {
        let path = format!("/v1/documents/{}", segment(&id));
        self.json(Method::GET, &path, None, self.timeout).await
    }

    async fn list(
        &self,
        _caller: &Caller,
        after: Option<String>,
        limit: u32,
    ) -> Result<DocumentList, BackendError> {
        let mut path = format!("/v1/documents?limit={limit}");
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(&segment(&after));
        }
        self.json(Method::GET, &path, None, self.timeout).await
    }

    async fn write(&self, _caller: &Caller, note: NewNote) -> Result<Stored, BackendError> {
        let body = encode(&note)?;
        self.written("/v1/documents", "application/json", body)
            .await
    }

    async fn delete(&self, _caller: &Caller, id: String) -> Result<Deleted, BackendError> {
        let path = format!("/v1/documents/{}", segment(&id));
        let (status, retry, bytes) = self.send(Method::DELETE, &path, None, self.timeout).await?;
        match status {
            StatusCode::ACCEPTED => {
                let accepted: Accepted = decode(&bytes)?;
                Err(BackendError::Pending {
                    approval: accepted.approval,
                    level: accepted.level,
                })
            }
            s if s.is_success() => decode(&bytes),
            s => Err(error_for(s, retry, &bytes)),
        }
    }

    async fn ingest(&self, _caller: &Caller, upload: Upload) -> Result<Stored, BackendError> {
        let (content_type, body) = multipart(&upload)?;
        self.written("/v1/documents/ingest", &content_type, body)
            .await
    }

    async fn ask(&self, _caller: &Caller, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let body = encode(&request)?;
        self.json(Method::POST, "/v1/chat", Some(body), self.chat_timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_become_the_matching_backend_error() {
        let body = |code: &str, message: &str| {
            serde_json::to_vec(&ErrorBody {
                error: code.into(),
                message: message.into(),
            })
            .unwrap_or_default()
        };
        let e = error_for(
            StatusCode::FORBIDDEN,
            None,
            &body("forbidden", "this needs the `vault:write` scope"),
        );
        assert!(
            matches!(e, BackendError::Scope(ref s) if s == "vault:write"),
            "{e:?}"
        );
        let e = error_for(
            StatusCode::FORBIDDEN,
            None,
            &body("not_permitted", "action not permitted"),
        );
        assert!(matches!(e, BackendError::NotPermitted), "{e:?}");
        let e = error_for(
            StatusCode::TOO_MANY_REQUESTS,
            Some(7),
            &body("rate_limited", "too many requests"),
        );
        assert_eq!(e.to_string(), "too many requests; retry in 7 s");
        let e = error_for(StatusCode::BAD_GATEWAY, None, b"<html>");
        assert!(matches!(e, BackendError::Internal(_)), "{e:?}");
    }

    #[test]
    fn multipart_bodies_carry_the_file_and_its_tags() {
        let upload = Upload {
            name: "a\"b.md".into(),
            media_type: Some("text/markdown".into()),
            data: b"# Hi".to_vec(),
            tags: [("k".to_owned(), "v".to_owned())].into(),
        };
        let (content_type, body) = multipart(&upload).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let boundary = content_type.rsplit('=').next().unwrap_or_default();
        assert!(text.contains("filename=\"a_b.md\""), "{text}");
        assert!(text.contains("\r\n\r\n# Hi\r\n"), "{text}");
        assert!(text.contains("{\"k\":\"v\"}"), "{text}");
        assert!(text.ends_with(&format!("--{boundary}--\r\n")), "{text}");
    }
}

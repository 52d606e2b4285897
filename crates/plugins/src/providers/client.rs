//! One blocking HTTP client per provider, with retries and typed failures.

use std::io::Read;
use std::sync::Once;
use std::time::Duration;

use p3ak_proto::ErrorKind;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Common, MAX_ERROR_BYTES, MAX_RESPONSE_BYTES};
use crate::PluginError;
use p3ak_sdk::runtime::ToolFailure;

/// Replaces the request's API key by `[redacted]` in whatever goes back to the kernel.
#[derive(Clone, Copy)]
pub(crate) struct Redactor<'a>(pub(crate) Option<&'a str>);

impl Redactor<'_> {
    pub(crate) fn clean(&self, text: &str) -> String {
        match self.0 {
            Some(key) if !key.is_empty() => text.replace(key, "[redacted]"),
            _ => text.to_owned(),
        }
    }

    pub(crate) fn failure(&self, mut failure: ToolFailure) -> ToolFailure {
        failure.message = self.clean(&failure.message);
        failure
    }
}

/// Where a provider sends its requests, and how it retries them.
pub(crate) struct Endpoint {
    client: Client,
    base: reqwest::Url,
    /// The provider's name for messages (`anthropic`, `openai`, `ollama`).
    api: &'static str,
    max_retries: u32,
    retry_base: Duration,
    max_retry_wait: Duration,
    timeout_secs: u64,
}

impl Endpoint {
    /// A client for `base_url` (or `default_base`) with `common`'s timeouts and retries.
    pub(crate) fn new(
        api: &'static str,
        common: &Common,
        default_base: &str,
    ) -> Result<Self, PluginError> {
        let text = common.base_url.as_deref().unwrap_or(default_base);
        let mut base = reqwest::Url::parse(text)
            .map_err(|e| PluginError::Config(format!("`base_url` `{text}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(PluginError::Config(format!(
                "`base_url` `{text}` must be an http or https URL with a host"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // Fails only when the process already chose a provider; reqwest then uses that one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = Client::builder()
            .user_agent(crate::SOFTWARE.replace(' ', "/"))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(common.timeout_secs.min(30)))
            // For the blocking client this bounds the wait for the head and each body read:
            // an idle limit, so a long stream that keeps talking is not cut.
            .timeout(common.timeout())
            .build()
            .map_err(|e| PluginError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            api,
            max_retries: common.max_retries,
            retry_base: Duration::from_millis(common.retry_base_ms),
            max_retry_wait: Duration::from_secs(common.max_retry_wait_secs),
            timeout_secs: common.timeout_secs,
        })
    }

    /// `path` under the base URL.
    fn url(&self, path: &str) -> Result<reqwest::Url, ToolFailure> {
        self.base
            .join(path)
            .map_err(|e| ToolFailure::permanent(format!("{}: bad url: {e}", self.api)))
    }

    /// Whether a credential may be sent to this endpoint: only over https, or to loopback.
    pub(crate) fn check_secure(&self, has_key: bool) -> Result<(), ToolFailure> {
        if !has_key || self.base.scheme() == "https" {
            return Ok(());
        }
        let loopback = match self.base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if loopback {
            Ok(())
        } else {
            Err(ToolFailure::permanent(format!(
                "{}: refusing to send the API key over plain http to `{}`; use https",
                self.api,
                self.base.host_str().unwrap_or_default()
            )))
        }
    }

    /// POSTs `body` as JSON to `path` with `headers`, retrying network failures, 408, 429 and
    /// 5xx (529 included) up to `max_retries` times. The delay is the server's
    /// `retry-after-ms` or `retry-after` when it sends one, else `retry_base_ms` doubling.
    /// Returns the successful response, its body unread.
    pub(crate) fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<Response, ToolFailure> {
        let url = self.url(path)?;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ToolFailure::permanent(format!("{}: cannot encode: {e}", self.api)))?;
        let mut attempt = 0u32;
        loop {
            let mut builder = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone());
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let (failure, retryable, wait) = match builder.send() {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(response.headers());
                    let failure = self.status_failure(status, wait, response);
                    (failure, retryable(status), wait)
                }
                Err(e) => (self.network_failure(&e), true, None),
            };
            if !retryable || attempt >= self.max_retries {
                return Err(failure);
            }
            let wait = wait.unwrap_or_else(|| self.backoff(attempt));
            if wait > self.max_retry_wait {
                return Err(failure);
            }
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.retry_base
            .saturating_mul(factor)
            .min(self.max_retry_wait)
    }

    fn status_failure(
        &self,
        status: StatusCode,
        wait: Option<Duration>,
        response: Response,
    ) -> ToolFailure {
        let mut text = String::new();
        let _ = response
            .take(MAX_ERROR_BYTES as u64)
            .read_to_string(&mut text);
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| error_detail(&v))
            .unwrap_or_else(|| shorten(text.trim()));
        let message = if detail.is_empty() {
            format!("{}: HTTP {status}", self.api)
        } else {
            format!("{}: HTTP {status}: {detail}", self.api)
        };
        match status.as_u16() {
            401 | 403 => ToolFailure::new(ErrorKind::Auth, message),
            429 => ToolFailure::rate_limited(
                message,
                wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
            ),
            400 | 404 | 413 | 422 => ToolFailure::invalid(message),
            s if s >= 500 || s == 408 => ToolFailure::transient(message),
            _ => ToolFailure::permanent(message),
        }
    }

    pub(crate) fn network_failure(&self, e: &reqwest::Error) -> ToolFailure {
        if e.is_timeout() {
            ToolFailure::transient(format!(
                "{}: no answer within {} s",
                self.api, self.timeout_secs
            ))
        } else if e.is_connect() {
            ToolFailure::transient(format!(
                "{}: cannot connect to `{}`",
                self.api,
                self.base.host_str().unwrap_or_default()
            ))
        } else if e.is_body() || e.is_decode() {
            ToolFailure::transient(format!(
                "{}: the connection broke while reading the reply",
                self.api
            ))
        } else {
            ToolFailure::transient(format!(
                "{}: the request failed: {}",
                self.api,
                crate::http::chain(e)
            ))
        }
    }

    /// Reads a whole JSON body, at most [`MAX_RESPONSE_BYTES`].
    pub(crate) fn read_json(&self, response: Response) -> Result<Value, ToolFailure> {
        let mut bytes = Vec::new();
        response
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| {
                ToolFailure::transient(format!(
                    "{}: the connection broke while reading the reply",
                    self.api
                ))
            })?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(self.too_large());
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ToolFailure::permanent(format!("{}: the reply is not valid JSON: {e}", self.api))
        })
    }

    pub(crate) fn too_large(&self) -> ToolFailure {
        ToolFailure::permanent(format!(
            "{}: the reply is over {MAX_RESPONSE_BYTES} bytes",
            self.api
        ))
    }

    /// A body that is JSON but not the shape the API documents.
    pub(crate) fn malformed(&self, what: &str) -> ToolFailure {
        ToolFailure::permanent(format!("{}: malformed reply: {what}", self.api))
    }

    /// The stream ended before the API's end marker.
    pub(crate) fn dropped(&self) -> ToolFailure {
        ToolFailure::transient(format!(
            "{}: the stream ended before the reply was complete",
            self.api
        ))
    }

    /// The provider's name, for messages.
    pub(crate) fn api(&self) -> &'static str {
        self.api
    }
}

/// 408, 429, 5xx (Anthropic's 529 "overloaded" included).
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error() || status.as_u16() == 529
}

/// `retry-after-ms` (OpenAI), else `retry-after` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let span = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(span).unwrap_or(Duration::ZERO))
}

/// The message of an error body, whichever API's shape it has: Anthropic's
/// `{"error": {"type", "message"}}`, OpenAI's `{"error": {"message", "type", "code"}}`, or
/// Ollama's `{"error": "text"}`.
pub(crate) fn error_detail(body: &Value) -> Option<String> {
    match body.get("error")? {
        Value::String(text) => Some(shorten(text)),
        Value::Object(error) => {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let kind = error
                .get("type")
                .or_else(|| error.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Some(shorten(
                match (kind.is_empty(), message.is_empty()) {
                    (false, false) => format!("{kind}: {message}"),
                    (false, true) => kind.to_owned(),
                    _ => message.to_owned(),
                }
                .as_str(),
            ))
        }
        _ => None,
    }
}

/// The kind an API's error type maps to, for errors inside a stream.
pub(crate) fn kind_of(error_type: &str) -> ErrorKind {
    match error_type {
        "rate_limit_error" | "rate_limit_exceeded" => ErrorKind::RateLimited,
        "authentication_error" | "permission_error" | "invalid_api_key" => ErrorKind::Auth,
        "invalid_request_error" | "not_found_error" | "request_too_large" => ErrorKind::Invalid,
        _ => ErrorKind::Transient,
    }
}

/// One line, at most 300 characters.
fn shorten(text: &str) -> String {
    let line = text.split(['\r', '\n']).find(|l| !l.trim().is_empty());
    let line = line.unwrap_or_default().trim();
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", line.get(..at).unwrap_or(line)),
        None => line.to_owned(),
    }
}

//! `http`: one HTTP request.
//!
//! Config: `timeout_secs` (the whole request, default 30, at most 600), `max_body` (bytes of
//! response body kept, default 1 MiB, at most 16 MiB; also kept under half the frame limit).
//!
//! Action `request {method, url, headers?, body?, json?}` (tier act): `method` is one of
//! `GET POST PUT PATCH DELETE HEAD`; `url` must be `http` or `https`; `headers` is an object
//! of names to string values; at most one of `body` (a string) and `json` (any JSON value,
//! sent with `content-type: application/json` unless a header says otherwise). Output:
//! `{status, headers, body, truncated}`, the body as text (invalid UTF-8 replaced), cut at
//! `max_body`. Headers with several values are joined with `, `.
//!
//! Redirects are never followed: the policy checked the URL's host, and a redirect would lead
//! elsewhere unchecked. A 3xx is returned as it is. Proxies from the environment are not used.
//! Network failures are `transient`; a malformed request is `invalid`. Messages never repeat
//! the URL (it may carry an injected credential).

use std::io::Read;
use std::sync::Once;
use std::time::Duration;

use p3ak_proto::{ActionSpec, Tier};
use reqwest::Method;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Longest timeout an operator may configure, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Largest `max_body` an operator may configure.
pub const MAX_BODY_LIMIT: usize = 16 << 20;
/// Most request headers a call may set.
pub const MAX_HEADERS: usize = 64;
/// The methods `request` accepts.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

fn default_timeout() -> u64 {
    30
}

fn default_max_body() -> usize {
    1 << 20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_body")]
    max_body: usize,
}

/// The `http` tool.
pub struct Http {
    client: Client,
    timeout_secs: u64,
    max_body: usize,
}

impl Http {
    /// Builds the tool (and its HTTP client) from its `welcome` config.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for limits out of range or a client that cannot be built.
    pub fn from_config(config: &Value, max_frame: usize) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(config)?;
        p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting("max_body", config.max_body, MAX_BODY_LIMIT, " bytes")?;
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // Fails only when the process already chose a provider; reqwest then uses that one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = Client::builder()
            .user_agent(crate::SOFTWARE.replace(' ', "/"))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| PluginError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            timeout_secs: config.timeout_secs,
            max_body: config.max_body.min(max_frame / 2).max(1),
        })
    }

    fn request(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new(
            "request",
            args,
            &["method", "url", "headers", "body", "json"],
        )?;
        let method_name = args.string("method")?;
        if !METHODS.contains(&method_name) {
            return Err(ToolFailure::invalid(format!(
                "`request`: method `{}` is not one of {}",
                shorten(method_name),
                METHODS.join(", ")
            )));
        }
        let method = Method::from_bytes(method_name.as_bytes())
            .map_err(|_| ToolFailure::invalid("`request`: invalid method"))?;
        let url = parse_url(args.string("url")?)?;
        let mut headers = HeaderMap::new();
        for (name, value) in args.opt_string_map("headers")?.unwrap_or_default() {
            if headers.len() >= MAX_HEADERS {
                return Err(ToolFailure::invalid(format!(
                    "`request`: more than {MAX_HEADERS} headers"
                )));
            }
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ToolFailure::invalid(format!(
                    "`request`: invalid header name `{}`",
                    shorten(name)
                ))
            })?;
            // The value is not repeated: it may be an injected credential.
            let value = HeaderValue::from_str(value).map_err(|_| {
                ToolFailure::invalid(format!(
                    "`request`: invalid value for header `{}`",
                    shorten(name)
                ))
            })?;
            headers.append(header, value);
        }
        let body = match (args.opt_string("body")?, args.opt_value("json")) {
            (Some(_), Some(_)) => {
                return Err(ToolFailure::invalid(
                    "`request`: give `body` or `json`, not both",
                ));
            }
            (Some(text), None) => Some(text.as_bytes().to_vec()),
            (None, Some(value)) => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(serde_json::to_vec(value).map_err(|e| {
                    ToolFailure::invalid(format!("`request`: cannot encode `json`: {e}"))
                })?)
            }
            (None, None) => None,
        };
        let mut request = self.client.request(method.clone(), url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().map_err(|e| self.failure(e))?;
        let status = response.status().as_u16();
        let mut header_map = serde_json::Map::new();
        for name in response.headers().keys() {
            let joined = response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            header_map.insert(name.as_str().to_owned(), Value::String(joined));
        }
        let mut bytes = Vec::new();
        if method != Method::HEAD {
            response
                .take(self.max_body as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    ToolFailure::transient(format!("reading the response: {}", chain(&e)))
                })?;
        }
        let truncated = bytes.len() > self.max_body;
        bytes.truncate(self.max_body);
        Ok(json!({
            "status": status,
            "headers": header_map,
            "body": String::from_utf8_lossy(&bytes),
            "truncated": truncated,
        }))
    }

    fn failure(&self, e: reqwest::Error) -> ToolFailure {
        let e = e.without_url();
        if e.is_builder() {
            ToolFailure::invalid(format!("`request`: {}", chain(&e)))
        } else if e.is_timeout() {
            ToolFailure::transient(format!(
                "the request timed out after {} s",
                self.timeout_secs
            ))
        } else if e.is_connect() {
            ToolFailure::transient(format!("cannot connect: {}", chain(&e)))
        } else {
            ToolFailure::transient(format!("the request failed: {}", chain(&e)))
        }
    }
}

/// Only absolute `http` and `https` URLs with a host. Messages leave the URL out.
fn parse_url(text: &str) -> Result<reqwest::Url, ToolFailure> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| ToolFailure::invalid(format!("`request`: invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ToolFailure::invalid(format!(
            "`request`: only http and https urls are allowed, not `{}`",
            shorten(url.scheme())
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ToolFailure::invalid("`request`: the url has no host"));
    }
    Ok(url)
}

/// An error and its causes on one line.
/// An error and its causes on one line (shared with the providers).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out.replace(['\n', '\r'], " ")
}

impl Tool for Http {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![ActionSpec {
            name: "request".to_owned(),
            description: "Make one HTTP request (redirects are not followed) and return the \
                status, headers and body as text."
                .to_owned(),
            parameters: schema(
                json!({
                    "method": {"type": "string", "enum": METHODS},
                    "url": {"type": "string", "minLength": 1, "description": "http or https"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"type": "string"},
                    "json": {"description": "a JSON body; not with `body`"},
                }),
                &["method", "url"],
            ),
            tier: Tier::Act,
        }]
    }

    fn invoke(&mut self, _agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "request" => self.request(args),
            other => Err(ToolFailure::invalid(format!(
                "unknown action `{}`",
                shorten(other)
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        parse_url("https://example.invalid/x?y=1").unwrap();
        parse_url("http://127.0.0.1:8080/").unwrap();
        for bad in [
            "ftp://example.invalid/",
            "file:///etc/passwd",
            "not a url",
            "/relative",
        ] {
            let e = parse_url(bad).err().unwrap();
            assert_eq!(e.kind, p3ak_proto::ErrorKind::Invalid, "{bad}");
            assert!(!e.message.contains("passwd"), "{}", e.message);
        }
    }
}

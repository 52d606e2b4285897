//! `webhook`: a push target (ntfy, or any service that takes a text in a POST). It only posts:
//! the kernel sends it short notices (an approval waits) named in the policy's `notify:`.
//!
//! Its secret (`credential`) is the URL — a push topic's URL is itself a secret, since anyone
//! who knows it can read the notices — optionally followed by whitespace and a bearer token.
//! The URL must be `https` (plain `http` only to a loopback host) and is never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p3ak_proto::ErrorKind;
use p3ak_sdk::connector::{
    Button, Connector, DEFAULT_MAX_MESSAGE_BYTES, Event, Log, Platform, Posted, Poster, Pressed,
    Setup,
};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::Client;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::PluginError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The notice's title (ntfy's `Title` header).
    #[serde(default)]
    title: Option<String>,
}

/// Builds the connector from its `welcome`.
///
/// # Errors
///
/// A config with unknown keys, or a secret that is not `URL [TOKEN]` with an acceptable URL.
pub fn connector(setup: Setup<'_>) -> Result<Connector, PluginError> {
    let config: Config = p3ak_sdk::parse_config(&setup.welcome.config)?;
    let mut parts = setup.token.expose().split_whitespace();
    let url = parts.next().unwrap_or_default();
    let bearer = parts.next().map(|t| Zeroizing::new(t.to_owned()));
    if parts.next().is_some() {
        return Err(PluginError::Key(
            "the webhook's secret is its URL, then optionally a bearer token".to_owned(),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| PluginError::Key("the webhook's secret is not a URL".to_owned()))?;
    let acceptable = match parsed.scheme() {
        "https" => parsed.host_str().is_some(),
        "http" => super::is_loopback(&parsed),
        _ => false,
    };
    if !acceptable {
        return Err(PluginError::Key(
            "the webhook's URL must be https (plain http only to a loopback host)".to_owned(),
        ));
    }
    Ok(Connector {
        platform: Box::new(Quiet),
        poster: Arc::new(Push {
            client: super::client(Duration::from_secs(15))?,
            url: parsed,
            bearer,
            title: config.title.unwrap_or_else(|| "P3AK".to_owned()),
            sent: AtomicU64::new(0),
            log: setup.log,
        }),
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
    })
}

/// Nobody writes to a push target.
struct Quiet;

impl Platform for Quiet {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure> {
        std::thread::sleep(wait);
        Ok(Vec::new())
    }
}

struct Push {
    client: Client,
    url: reqwest::Url,
    bearer: Option<Zeroizing<String>>,
    title: String,
    sent: AtomicU64,
    log: Log,
}

impl Poster for Push {
    fn text_limit(&self) -> usize {
        4096
    }

    fn send(&self, _chat: &str, text: &str) -> Result<String, ToolFailure> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Title", &self.title)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(text.to_owned());
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.as_str());
        }
        let response = request
            .send()
            .map_err(|e| super::network_failure("webhook", e))?;
        let status = response.status();
        if status.is_success() {
            let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
            return Ok(n.to_string());
        }
        if status.as_u16() == 429 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(1000, super::seconds_to_ms);
            return Err(ToolFailure::rate_limited(
                "the push service is busy",
                Some(wait),
            ));
        }
        self.log.line(&format!("push refused: HTTP {status}"));
        let kind = if matches!(status.as_u16(), 401 | 403) {
            ErrorKind::Auth
        } else if status.is_server_error() {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        Err(ToolFailure::new(
            kind,
            format!("the push service answered HTTP {status}"),
        ))
    }

    fn edit(&self, _chat: &str, _message_id: &str, _text: &str) -> Result<(), ToolFailure> {
        // A push cannot be changed once sent; a streamed edit is dropped.
        Ok(())
    }

    fn announce(
        &self,
        _user: &str,
        _text: &str,
        _buttons: &[Button],
        _link: Option<&str>,
    ) -> Result<Posted, ToolFailure> {
        Err(ToolFailure::permanent("a push target shows no approvals"))
    }

    fn answer_press(
        &self,
        _press: &Pressed,
        _message: &str,
        _edit: Option<&str>,
    ) -> Result<(), ToolFailure> {
        Err(ToolFailure::permanent("a push target has no buttons"))
    }
}

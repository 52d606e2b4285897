//! Chat connectors: `telegram` (Bot API, long polling), `discord` (Gateway websocket and
//! REST v10) and `slack` (Socket Mode and the Web API), each a [`p3ak_sdk::connector`] platform.
//!
//! What they share lives here: the settings every connector takes (`base_url`,
//! `max_message_bytes`, `max_attachment_bytes`), one blocking HTTP client on rustls, bounded
//! reads, and failures that never carry a URL (Telegram's holds the token).

pub mod discord;
pub mod slack;
pub mod telegram;
pub mod webhook;

use std::io::Read;
use std::sync::Once;
use std::time::Duration;

use p3ak_sdk::connector::{DEFAULT_MAX_ATTACHMENT_BYTES, DEFAULT_MAX_MESSAGE_BYTES};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::{Client, Response};

use crate::PluginError;

/// Largest API response read, in bytes.
pub(crate) const MAX_API_BYTES: u64 = 4 << 20;
/// Upper bound of `max_message_bytes`.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Upper bound of `max_attachment_bytes`.
pub const MAX_ATTACHMENT_BYTES: u64 = 20 << 20;

/// The settings every connector takes.
pub(crate) struct Common {
    pub(crate) base: reqwest::Url,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_attachment_bytes: u64,
}

impl Common {
    /// Checks the common settings; `base_url` defaults to `default_base`.
    pub(crate) fn new(
        base_url: Option<&str>,
        default_base: &str,
        max_message_bytes: Option<usize>,
        max_attachment_bytes: Option<u64>,
    ) -> Result<Self, PluginError> {
        let max_message_bytes = max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        p3ak_sdk::check_setting(
            "max_message_bytes",
            max_message_bytes,
            MAX_MESSAGE_BYTES,
            " bytes",
        )?;
        let max_attachment_bytes = max_attachment_bytes.unwrap_or(DEFAULT_MAX_ATTACHMENT_BYTES);
        p3ak_sdk::check_setting(
            "max_attachment_bytes",
            max_attachment_bytes,
            MAX_ATTACHMENT_BYTES,
            " bytes",
        )?;
        Ok(Self {
            base: base_url_of(base_url.unwrap_or(default_base))?,
            max_message_bytes,
            max_attachment_bytes,
        })
    }
}

/// A base URL: `https`, or `http` to a loopback host only (the token travels with every
/// request). Its path ends with `/`, so that methods join under it.
pub(crate) fn base_url_of(text: &str) -> Result<reqwest::Url, PluginError> {
    let mut base = reqwest::Url::parse(text)
        .map_err(|e| PluginError::Config(format!("`base_url` `{text}`: {e}")))?;
    match base.scheme() {
        "https" if base.host_str().is_some() => {}
        "http" if is_loopback(&base) => {}
        _ => {
            return Err(PluginError::Config(format!(
                "`base_url` `{text}` must be an https URL (plain http only to a loopback host)"
            )));
        }
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// Whether `url`'s host is this machine.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Installs the `ring` provider for rustls once per process.
pub(crate) fn install_crypto() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when the process already chose a provider; that one is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A blocking client: no redirects (the token must not travel elsewhere), no proxy, requests
/// bounded by `timeout`.
pub(crate) fn client(timeout: Duration) -> Result<Client, PluginError> {
    install_crypto();
    Client::builder()
        .user_agent(crate::SOFTWARE.replace(' ', "/"))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(15))
        .timeout(timeout)
        .build()
        .map_err(|e| PluginError::Config(format!("cannot build the HTTP client: {e}")))
}

/// A network failure, without the URL (it may hold the token).
pub(crate) fn network_failure(api: &str, e: reqwest::Error) -> ToolFailure {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    };
    ToolFailure::transient(format!("{api}: {what}"))
}

/// Reads at most `cap` bytes of `response`'s body; `None` when it is longer.
pub(crate) fn read_capped(response: Response, cap: u64) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    response
        .take(cap.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read the body: {e}"))?;
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > cap {
        return Ok(None);
    }
    Ok(Some(body))
}

/// Seconds (possibly fractional) as milliseconds, for `retry_after_ms`.
pub(crate) fn seconds_to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        Duration::try_from_secs_f64(secs).map_or(u64::MAX, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        })
    } else {
        0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(base_url_of("http://127.0.0.1:9/x").is_ok());
        assert!(base_url_of("https://api.telegram.org").is_ok());
        let e = base_url_of("http://api.telegram.org").unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert_eq!(
            base_url_of("http://localhost:1/api/v10").unwrap().path(),
            "/api/v10/"
        );
    }
}

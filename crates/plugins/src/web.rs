//! `web`: read a web page as text, search the web.
//!
//! Config: `timeout_secs` (each request, default 20, at most 600), `max_body` (bytes of a page
//! read, default 2 MiB, at most 16 MiB; also kept under half the frame limit), `max_results`
//! (default 10, at most 50), `search` = `{engine = "searxng", url = "https://searx.example/"}`
//! or `{engine = "brave"}` (Brave Search API; `url` overridable; its key is the plugin's
//! credential, `welcome.key`, sent as `X-Subscription-Token` and never shown).
//!
//! Actions (both observe):
//! - `fetch {url}`: one `GET` of an `http`/`https` URL. HTML becomes readable text
//!   (`p3ak-convert`), `text/*` and JSON are kept as text, anything else is described (type,
//!   size), not shown. Redirects are followed (at most [`MAX_REDIRECTS`]) only to the same
//!   scheme, host and port as the URL the policy checked; another target is returned as
//!   `{url, status, redirect}` without being fetched, so that fetching it is a new call the
//!   policy sees. Output `{url, status, title?, text, truncated}`.
//! - `search {query, limit?}` → `{results: [{title, url, snippet}]}`, markup stripped from the
//!   engine's text.
//!
//! Network failures are `transient`; a bad URL or query is `invalid`; a refused key is `auth`.

use std::io::Read;
use std::sync::Once;
use std::time::Duration;

use p3ak_proto::{ActionSpec, Credential, ErrorKind, Tier};
use reqwest::Url;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use crate::http::chain;
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};

/// Longest timeout an operator may configure, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Largest `max_body` an operator may configure.
pub const MAX_BODY_LIMIT: usize = 16 << 20;
/// Largest `max_results` an operator may configure.
pub const MAX_RESULTS_LIMIT: usize = 50;
/// Redirects followed within the checked origin.
pub const MAX_REDIRECTS: usize = 5;
/// Longest query, in characters.
pub const MAX_QUERY: usize = 400;
/// The Brave Search API's endpoint.
pub const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
/// Bytes of a search engine's answer read.
const MAX_SEARCH_ANSWER: usize = 4 << 20;

fn default_timeout() -> u64 {
    20
}

fn default_max_body() -> usize {
    2 << 20
}

fn default_max_results() -> usize {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_body")]
    max_body: usize,
    #[serde(default = "default_max_results")]
    max_results: usize,
    #[serde(default)]
    search: Option<SearchConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchConfig {
    engine: String,
    #[serde(default)]
    url: Option<String>,
}

enum Engine {
    SearxNg(Url),
    Brave(Url, Credential),
}

/// The `web` tool.
pub struct Web {
    client: Client,
    timeout_secs: u64,
    max_body: usize,
    max_results: usize,
    engine: Option<Engine>,
}

impl Web {
    /// Builds the tool from its `welcome`: config and, for Brave, the key.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for limits out of range, an unknown engine, a bad URL or a
    /// missing key.
    pub fn from_welcome(
        welcome: &p3ak_proto::Welcome,
        max_frame: usize,
    ) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(&welcome.config)?;
        p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting("max_body", config.max_body, MAX_BODY_LIMIT, " bytes")?;
        p3ak_sdk::check_setting("max_results", config.max_results, MAX_RESULTS_LIMIT, "")?;
        let engine = match config.search {
            None => None,
            Some(search) => {
                let url = |default: Option<&str>| -> Result<Url, PluginError> {
                    let text = search.url.as_deref().or(default).ok_or_else(|| {
                        PluginError::Config("`search.url` is needed for searxng".to_owned())
                    })?;
                    let url = Url::parse(text)
                        .map_err(|e| PluginError::Config(format!("`search.url`: {e}")))?;
                    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                        return Err(PluginError::Config(
                            "`search.url` must be an http or https URL".to_owned(),
                        ));
                    }
                    Ok(url)
                };
                match search.engine.as_str() {
                    "searxng" => Some(Engine::SearxNg(url(None)?)),
                    "brave" => {
                        let key = welcome.key.clone().ok_or_else(|| {
                            PluginError::Config(
                                "Brave search needs its API key: name a secret with \
                                 `credential` in the plugin's [plugins] entry"
                                    .to_owned(),
                            )
                        })?;
                        Some(Engine::Brave(url(Some(BRAVE_URL))?, key))
                    }
                    other => {
                        return Err(PluginError::Config(format!(
                            "`search.engine` must be `searxng` or `brave`, not `{}`",
                            shorten(other)
                        )));
                    }
                }
            }
        };
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
            max_results: config.max_results,
            engine,
        })
    }

    fn failure(&self, e: reqwest::Error) -> ToolFailure {
        let e = e.without_url();
        if e.is_timeout() {
            ToolFailure::transient(format!("no answer within {} s", self.timeout_secs))
        } else if e.is_connect() {
            ToolFailure::transient(format!("cannot connect: {}", chain(&e)))
        } else {
            ToolFailure::transient(format!("the request failed: {}", chain(&e)))
        }
    }

    fn fetch(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("fetch", args, &["url"])?;
        let checked = parse_url(args.string("url")?)?;
        let mut url = checked.clone();
        let mut redirects = 0;
        loop {
            let response = self
                .client
                .get(url.clone())
                .send()
                .map_err(|e| self.failure(e))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(LOCATION)
            {
                let target = location
                    .to_str()
                    .ok()
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| ToolFailure::permanent("the server sent an invalid redirect"))?;
                let same = target.scheme() == checked.scheme()
                    && target.host() == checked.host()
                    && target.port_or_known_default() == checked.port_or_known_default();
                if same && redirects < MAX_REDIRECTS {
                    redirects += 1;
                    url = target;
                    continue;
                }
                return Ok(json!({
                    "url": url.as_str(),
                    "status": status.as_u16(),
                    "redirect": target.as_str(),
                    "text": if same {
                        format!("more than {MAX_REDIRECTS} redirects; fetch the target to go on")
                    } else {
                        "a redirect to another site: fetch that URL to follow it".to_owned()
                    },
                    "truncated": false,
                }));
            }
            return self.page(&url, response);
        }
    }

    fn page(&self, url: &Url, response: Response) -> Result<Value, ToolFailure> {
        let status = response.status().as_u16();
        let mime = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let length = response.content_length();
        let (bytes, truncated) = read_capped(response, self.max_body)?;
        let html = matches!(mime.as_str(), "text/html" | "application/xhtml+xml")
            || (mime.is_empty() && looks_like_html(&bytes));
        let textual = mime.starts_with("text/")
            || mime == "application/json"
            || mime.ends_with("+json")
            || mime == "application/xml"
            || mime.ends_with("+xml")
            || (mime.is_empty() && std::str::from_utf8(&bytes).is_ok());
        let mut out = serde_json::Map::new();
        out.insert("url".to_owned(), json!(url.as_str()));
        out.insert("status".to_owned(), json!(status));
        out.insert("truncated".to_owned(), json!(truncated));
        if html {
            let (title, text) = html_text(&bytes);
            out.insert("title".to_owned(), json!(title));
            out.insert("text".to_owned(), json!(text));
        } else if textual {
            out.insert("text".to_owned(), json!(String::from_utf8_lossy(&bytes)));
        } else {
            let size = length.map_or_else(
                || {
                    if truncated {
                        format!("over {} bytes", self.max_body)
                    } else {
                        format!("{} bytes", bytes.len())
                    }
                },
                |l| format!("{l} bytes"),
            );
            let mime = if mime.is_empty() {
                "an unknown type".to_owned()
            } else {
                shorten(&mime)
            };
            out.insert(
                "text".to_owned(),
                json!(format!("(not text: {mime}, {size}; not shown)")),
            );
            out.insert("truncated".to_owned(), json!(false));
        }
        Ok(Value::Object(out))
    }

    fn search(&self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("search", args, &["query", "limit"])?;
        let query = args.string("query")?.trim();
        if query.is_empty() {
            return Err(ToolFailure::invalid("`search`: `query` is empty"));
        }
        if query.chars().count() > MAX_QUERY {
            return Err(ToolFailure::invalid(format!(
                "`search`: `query` is longer than {MAX_QUERY} characters"
            )));
        }
        let limit = args
            .opt_int("limit", 1, MAX_RESULTS_LIMIT as u64)?
            .map_or(self.max_results, |l| usize::try_from(l).unwrap_or(1))
            .min(self.max_results);
        let Some(engine) = &self.engine else {
            return Err(ToolFailure::permanent(
                "no search engine is configured (`search` in the web plugin's config)",
            ));
        };
        let (request, items, title_key, snippet_key): (_, Items, _, _) = match engine {
            Engine::SearxNg(base) => {
                let mut url = base.clone();
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                let mut url = url
                    .join("search")
                    .map_err(|_| ToolFailure::permanent("the search url is invalid"))?;
                url.query_pairs_mut()
                    .append_pair("q", query)
                    .append_pair("format", "json");
                (
                    self.client.get(url),
                    |v: &Value| v.get("results").and_then(Value::as_array),
                    "title",
                    "content",
                )
            }
            Engine::Brave(base, key) => {
                let mut url = base.clone();
                url.query_pairs_mut()
                    .append_pair("q", query)
                    .append_pair("count", &limit.min(20).to_string());
                (
                    self.client
                        .get(url)
                        .header("accept", "application/json")
                        .header("x-subscription-token", key.expose()),
                    |v: &Value| {
                        v.get("web")
                            .and_then(|w| w.get("results"))
                            .and_then(Value::as_array)
                    },
                    "title",
                    "description",
                )
            }
        };
        let response = request.send().map_err(|e| self.failure(e))?;
        let status = response.status();
        let (bytes, truncated) = read_capped(response, MAX_SEARCH_ANSWER)?;
        match status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                return Err(ToolFailure::new(
                    ErrorKind::Auth,
                    format!("the search engine refused the request ({status}): check its key"),
                ));
            }
            429 => {
                return Err(ToolFailure::rate_limited(
                    "the search engine's rate limit was reached",
                    None,
                ));
            }
            500..=599 => {
                return Err(ToolFailure::transient(format!(
                    "the search engine failed: {status}"
                )));
            }
            _ => {
                return Err(ToolFailure::permanent(format!(
                    "the search engine answered {status}"
                )));
            }
        }
        if truncated {
            return Err(ToolFailure::permanent(
                "the search engine's answer is too large",
            ));
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ToolFailure::permanent("the search engine's answer is not the JSON it documents")
        })?;
        let mut results = Vec::new();
        for item in items(&answer).into_iter().flatten() {
            if results.len() >= limit {
                break;
            }
            let Some(link) = item
                .get("url")
                .and_then(Value::as_str)
                .and_then(|u| Url::parse(u).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
            else {
                continue;
            };
            let field = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .map(|t| strip_markup(t, 1000))
                    .unwrap_or_default()
            };
            results.push(json!({
                "title": field(title_key),
                "url": link.as_str(),
                "snippet": field(snippet_key),
            }));
        }
        Ok(json!({ "results": results }))
    }
}

/// Where an engine's answer keeps its results.
type Items = fn(&Value) -> Option<&Vec<Value>>;

/// The body, at most `max` bytes, and whether there was more.
fn read_capped(response: Response, max: usize) -> Result<(Vec<u8>, bool), ToolFailure> {
    let mut bytes = Vec::new();
    response
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ToolFailure::transient(format!("reading the answer: {}", chain(&e))))?;
    let truncated = bytes.len() > max;
    bytes.truncate(max);
    Ok((bytes, truncated))
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(bytes.get(..512).unwrap_or(bytes)).to_ascii_lowercase();
    head.contains("<html") || head.contains("<!doctype html")
}

/// HTML to its title and readable text: headings on lines of their own, paragraphs apart.
fn html_text(bytes: &[u8]) -> (Option<String>, String) {
    let input = p3ak_convert::Input::new(bytes).with_format(p3ak_convert::Format::Html);
    let limits = p3ak_convert::Limits::default();
    let Ok(converted) = p3ak_convert::convert(&input, &limits) else {
        // Not readable as HTML: the markup stripped.
        return (
            None,
            strip_markup(&String::from_utf8_lossy(bytes), usize::MAX),
        );
    };
    let mut text = String::new();
    let mut heading: Vec<String> = Vec::new();
    for section in &converted.sections {
        if section.heading_path != heading {
            if let Some(last) = section.heading_path.last() {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&"#".repeat(section.heading_path.len().min(6)));
                text.push(' ');
                text.push_str(last);
            }
            heading.clone_from(&section.heading_path);
        }
        if !section.text.trim().is_empty() {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(section.text.trim());
        }
    }
    (converted.title, text)
}

/// Text from an engine's snippet: tags removed, the common entities decoded, whitespace
/// collapsed, at most `max` characters.
fn strip_markup(text: &str, max: usize) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let decoded = plain
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let collapsed = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    let collapsed = collapsed.replace(" ,", ",").replace(" .", ".");
    collapsed.chars().take(max).collect()
}

/// Only absolute `http` and `https` URLs with a host. Messages leave the URL out.
fn parse_url(text: &str) -> Result<Url, ToolFailure> {
    let url =
        Url::parse(text).map_err(|e| ToolFailure::invalid(format!("`fetch`: invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ToolFailure::invalid(format!(
            "`fetch`: only http and https urls are allowed, not `{}`",
            shorten(url.scheme())
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ToolFailure::invalid("`fetch`: the url has no host"));
    }
    Ok(url)
}

impl Tool for Web {
    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            ActionSpec {
                name: "fetch".to_owned(),
                description: "Read a web page (GET) as text. A redirect to another site is \
                    returned as `redirect`, not followed: fetch it to go on."
                    .to_owned(),
                parameters: schema(
                    json!({"url": {"type": "string", "minLength": 1, "description": "http or https"}}),
                    &["url"],
                ),
                tier: Tier::Observe,
            },
            ActionSpec {
                name: "search".to_owned(),
                description: "Search the web; returns titles, URLs and snippets.".to_owned(),
                parameters: schema(
                    json!({
                        "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS_LIMIT},
                    }),
                    &["query"],
                ),
                tier: Tier::Observe,
            },
        ]
    }

    fn invoke(&mut self, _agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "fetch" => self.fetch(args),
            "search" => self.search(args),
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
    fn markup_and_urls() {
        assert_eq!(
            strip_markup("<strong>Rust</strong> &amp; <em>safety</em>, fast", 100),
            "Rust & safety, fast"
        );
        assert_eq!(strip_markup("abcdef", 3), "abc");
        parse_url("https://example.org/a").unwrap();
        for bad in [
            "file:///etc/passwd",
            "ftp://x/",
            "nope",
            "data:text/plain,hi",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let (title, text) = html_text(
            b"<html><head><title>T</title><script>evil()</script></head><body><h1>Head</h1><p>Para one.</p><p>Two</p></body></html>",
        );
        assert_eq!(title.as_deref(), Some("T"));
        assert!(text.contains("# Head"), "{text}");
        assert!(text.contains("Para one."), "{text}");
        assert!(!text.contains("evil"), "{text}");
    }
}

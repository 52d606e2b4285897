//! `calendar`: the owner's calendars on a CalDAV server.
//!
//! Config: `url` (the server, a principal or the calendar home: `https://…`, or `http://` on a
//! loopback host only), `user`, optional `ca_file` (PEM roots to trust instead of the
//! platform's), `timeout_secs` (default 30, at most 600), `max_response` (bytes read from one
//! answer, default 4 MiB, at most 64 MiB). The password is the plugin's credential
//! (`welcome.key`), never config.
//!
//! Discovery: `PROPFIND` of `current-user-principal` and `calendar-home-set` on `url` (then on
//! the principal), then `PROPFIND Depth: 1` of the home for its calendars.
//!
//! Actions:
//! - `calendars {}` (observe) → `{calendars: [{id, name, components}]}`; `id` is the last
//!   segment of the calendar's path.
//! - `events {calendar, from, to}` (observe): a `calendar-query` `REPORT` with a time range;
//!   `from`/`to` RFC 3339 or `YYYY-MM-DD` → `{events: [{uid, summary, start, end, all_day,
//!   location, description, invitees, recurrence, etag}], truncated}` (at most
//!   [`MAX_EVENTS`]). All-day events show their last day as `end`.
//! - `create {calendar, summary, start, end, location?, description?, invitees?}` (act): a
//!   `PUT` of `<uid>.ics` with `If-None-Match: *` → `{uid, etag}`.
//! - `update {calendar, uid, etag?, summary?, start?, end?, location?, description?,
//!   invitees?}` (act): reads the event, changes the given fields and writes it back with
//!   `If-Match`; an `etag` from `events` that no longer matches, or a change on the server in
//!   between, is a `permanent` "changed on the server" error, never an overwrite.
//! - `move {calendar, uid, to, etag?}` (act): WebDAV `MOVE` into calendar `to`.
//! - `delete {calendar, uid, etag?}` (commit): `DELETE` with `If-Match`.
//!
//! A refused login is an `auth` failure; network failures are `transient`. Ids and uids with
//! `/`, `\`, `..` or control characters are refused. Messages never repeat the password.

mod xml;

pub mod ics;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use p3ak_proto::{ActionSpec, Credential, ErrorKind, Tier};
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PluginError;
use crate::http::chain;
use ics::{Fields, Time, When};
use p3ak_sdk::args::{Args, schema, shorten};
use p3ak_sdk::runtime::{Tool, ToolFailure};
use xml::{CALDAV, DAV, Element};

/// Longest timeout an operator may configure, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Largest `max_response` an operator may configure.
pub const MAX_RESPONSE_LIMIT: usize = 64 << 20;
/// Most events one `events` call returns.
pub const MAX_EVENTS: usize = 500;
/// Most invitees of one event.
pub const MAX_INVITEES: usize = 100;
/// Longest id, uid, summary, location (characters); descriptions get [`MAX_DESCRIPTION`].
pub const MAX_TEXT: usize = 1000;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 20_000;

fn default_timeout() -> u64 {
    30
}

fn default_max_response() -> usize {
    4 << 20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    user: String,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_response")]
    max_response: usize,
}

/// A calendar found on the server.
#[derive(Debug, Clone)]
struct Collection {
    id: String,
    url: Url,
    name: String,
    components: Vec<String>,
}

/// An event found on the server.
struct Found {
    url: Url,
    etag: String,
    data: String,
}

/// The `calendar` tool.
pub struct Calendar {
    client: Client,
    base: Url,
    user: String,
    password: Credential,
    timeout_secs: u64,
    max_response: usize,
    home: Option<Url>,
}

impl Calendar {
    /// Builds the tool from its `welcome`: config and the password in `key`.
    ///
    /// # Errors
    ///
    /// [`PluginError::Config`] for a bad URL, limits out of range, an unreadable `ca_file`,
    /// or no credential.
    pub fn from_welcome(
        welcome: &p3ak_proto::Welcome,
        _max_frame: usize,
    ) -> Result<Self, PluginError> {
        let config: Config = p3ak_sdk::parse_config(&welcome.config)?;
        p3ak_sdk::check_setting("timeout_secs", config.timeout_secs, MAX_TIMEOUT_SECS, "")?;
        p3ak_sdk::check_setting(
            "max_response",
            config.max_response,
            MAX_RESPONSE_LIMIT,
            " bytes",
        )?;
        let base = server_url(&config.url).map_err(PluginError::Config)?;
        if config.user.is_empty() || config.user.contains(':') || config.user.len() > 256 {
            return Err(PluginError::Config(
                "`user` must be a non-empty login without `:`".to_owned(),
            ));
        }
        let Some(password) = welcome.key.clone() else {
            return Err(PluginError::Config(
                "the calendar needs its password: name a secret with `credential` in its \
                 [plugins] entry"
                    .to_owned(),
            ));
        };
        install_provider();
        let timeout = Duration::from_secs(config.timeout_secs);
        let mut builder = Client::builder()
            .user_agent(crate::SOFTWARE.replace(' ', "/"))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                PluginError::Config(format!("cannot read `ca_file` {}: {e}", path.display()))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PluginError::Config(format!("`ca_file` {}: {e}", path.display())))?;
            builder = builder.tls_certs_only(certificates);
        }
        let client = builder
            .build()
            .map_err(|e| PluginError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            user: config.user,
            password,
            timeout_secs: config.timeout_secs,
            max_response: config.max_response,
            home: None,
        })
    }

    /// One WebDAV request: the status, the `ETag` and the body (at most `max_response`).
    fn dav(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&'static str, String)],
        body: Option<String>,
    ) -> Result<(StatusCode, Option<String>, String), ToolFailure> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ToolFailure::invalid("invalid method"))?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| ToolFailure::invalid(format!("invalid value for `{name}`")))?;
            map.insert(*name, value);
        }
        let mut request = self
            .client
            .request(method, url.clone())
            .basic_auth(&self.user, Some(self.password.expose()))
            .headers(map);
        if let Some(body) = body {
            // Its content type is among `headers`.
            request = request.body(body);
        }
        let response = request.send().map_err(|e| self.failure(e))?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        response
            .take(self.max_response as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ToolFailure::transient(format!("reading the answer: {}", chain(&e))))?;
        if bytes.len() > self.max_response {
            return Err(ToolFailure::permanent(format!(
                "the server's answer is over {} bytes (`max_response`)",
                self.max_response
            )));
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ToolFailure::new(
                ErrorKind::Auth,
                format!(
                    "the CalDAV server refused the login of `{}` (check the user and the password secret)",
                    shorten(&self.user)
                ),
            ));
        }
        if status.is_server_error() {
            return Err(ToolFailure::transient(format!(
                "the CalDAV server failed: {status}"
            )));
        }
        Ok((status, etag, String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn failure(&self, e: reqwest::Error) -> ToolFailure {
        let e = e.without_url();
        if e.is_timeout() {
            ToolFailure::transient(format!(
                "the CalDAV server did not answer within {} s",
                self.timeout_secs
            ))
        } else if e.is_connect() {
            ToolFailure::transient(format!(
                "cannot connect to the CalDAV server: {}",
                chain(&e)
            ))
        } else {
            ToolFailure::transient(format!("the CalDAV request failed: {}", chain(&e)))
        }
    }

    /// A `PROPFIND` answered with a multistatus.
    fn propfind(&self, url: &Url, depth: &str, props: &str) -> Result<Element, ToolFailure> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
             <d:propfind xmlns:d=\"DAV:\" xmlns:c=\"{CALDAV}\"><d:prop>{props}</d:prop></d:propfind>"
        );
        let (status, _, text) = self.dav(
            "PROPFIND",
            url,
            &[
                ("depth", depth.to_owned()),
                ("content-type", XML.to_owned()),
            ],
            Some(body),
        )?;
        multistatus(status, &text)
    }

    /// The calendar home, found once.
    fn home(&mut self) -> Result<Url, ToolFailure> {
        if let Some(home) = &self.home {
            return Ok(home.clone());
        }
        let base = self.base.clone();
        let answer = self.propfind(
            &base,
            "0",
            "<d:current-user-principal/><c:calendar-home-set/><d:resourcetype/>",
        )?;
        let home = if let Some(home) = href_in(&answer, CALDAV, "calendar-home-set") {
            self.join(&base, &home)?
        } else if let Some(principal) = href_in(&answer, DAV, "current-user-principal") {
            let principal = self.join(&base, &principal)?;
            let answer = self.propfind(&principal, "0", "<c:calendar-home-set/>")?;
            match href_in(&answer, CALDAV, "calendar-home-set") {
                Some(home) => self.join(&base, &home)?,
                None => principal,
            }
        } else {
            base
        };
        self.home = Some(home.clone());
        Ok(home)
    }

    /// `href` resolved against `base`, kept on the configured server.
    fn join(&self, base: &Url, href: &str) -> Result<Url, ToolFailure> {
        let url = base
            .join(href.trim())
            .map_err(|_| ToolFailure::permanent("the CalDAV server sent an invalid href"))?;
        if url.origin() != self.base.origin() {
            return Err(ToolFailure::permanent(
                "the CalDAV server pointed to another host, which is not followed",
            ));
        }
        Ok(url)
    }

    fn collections(&mut self) -> Result<Vec<Collection>, ToolFailure> {
        let home = self.home()?;
        let answer = self.propfind(
            &home,
            "1",
            "<d:resourcetype/><d:displayname/><c:supported-calendar-component-set/>",
        )?;
        let mut out = Vec::new();
        for response in answer.all(DAV, "response") {
            let Some(href) = response.child(DAV, "href") else {
                continue;
            };
            let Some(prop) = ok_prop(response) else {
                continue;
            };
            let is_calendar = prop
                .child(DAV, "resourcetype")
                .is_some_and(|t| t.child(CALDAV, "calendar").is_some());
            if !is_calendar {
                continue;
            }
            let url = self.join(&home, href.trimmed())?;
            let Some(id) = last_segment(&url) else {
                continue;
            };
            if check_id(&id).is_err() {
                continue;
            }
            let name = prop
                .child(DAV, "displayname")
                .map(|n| n.trimmed().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone());
            let components = prop
                .child(CALDAV, "supported-calendar-component-set")
                .map(|set| {
                    set.all(CALDAV, "comp")
                        .filter_map(|c| c.attribute("name"))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            out.push(Collection {
                id,
                url,
                name,
                components,
            });
        }
        Ok(out)
    }

    fn collection(&mut self, args: &Args, name: &str) -> Result<Collection, ToolFailure> {
        let id = args.string(name)?;
        check_id(id).map_err(|why| ToolFailure::invalid(format!("`{name}`: {why}")))?;
        self.collections()?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| {
                ToolFailure::invalid(format!(
                    "no calendar `{}` (the `calendars` action lists them)",
                    shorten(id)
                ))
            })
    }

    fn calendars(&mut self, args: Value) -> Result<Value, ToolFailure> {
        Args::new("calendars", args, &[])?;
        let list: Vec<Value> = self
            .collections()?
            .into_iter()
            .map(|c| json!({"id": c.id, "name": c.name, "components": c.components}))
            .collect();
        Ok(json!({ "calendars": list }))
    }

    /// A `calendar-query` `REPORT` for events, with a filter inside `VEVENT`.
    fn query(&self, calendar: &Url, filter: &str) -> Result<Vec<Found>, ToolFailure> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
             <c:calendar-query xmlns:d=\"DAV:\" xmlns:c=\"{CALDAV}\">\
             <d:prop><d:getetag/><c:calendar-data/></d:prop>\
             <c:filter><c:comp-filter name=\"VCALENDAR\"><c:comp-filter name=\"VEVENT\">{filter}\
             </c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"
        );
        let (status, _, text) = self.dav(
            "REPORT",
            calendar,
            &[("depth", "1".to_owned()), ("content-type", XML.to_owned())],
            Some(body),
        )?;
        let answer = multistatus(status, &text)?;
        let mut out = Vec::new();
        for response in answer.all(DAV, "response") {
            let (Some(href), Some(prop)) = (response.child(DAV, "href"), ok_prop(response)) else {
                continue;
            };
            let Some(data) = prop.child(CALDAV, "calendar-data") else {
                continue;
            };
            out.push(Found {
                url: self.join(calendar, href.trimmed())?,
                etag: prop
                    .child(DAV, "getetag")
                    .map(|e| e.trimmed().to_owned())
                    .unwrap_or_default(),
                data: data.text.clone(),
            });
        }
        Ok(out)
    }

    fn events(&mut self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("events", args, &["calendar", "from", "to"])?;
        let from = when(&args, "events", "from")?;
        let to = when(&args, "events", "to")?;
        let to_instant = match to {
            When::Day(d) => When::Day(d.tomorrow().unwrap_or(d)).instant(),
            When::At(t) => t,
        };
        if to_instant <= from.instant() {
            return Err(ToolFailure::invalid("`events`: `to` must be after `from`"));
        }
        let calendar = self.collection(&args, "calendar")?;
        let filter = format!(
            "<c:time-range start=\"{}\" end=\"{}\"/>",
            ics::utc(from.instant()),
            ics::utc(to_instant)
        );
        let found = self.query(&calendar.url, &filter)?;
        let mut events = Vec::new();
        for object in &found {
            // One broken object does not hide the others.
            if let Ok(shown) = ics::events(&object.data, &object.etag) {
                events.extend(shown);
            }
        }
        events.sort_by_key(|e| e.start.map(sort_key));
        let truncated = events.len() > MAX_EVENTS;
        let list: Vec<Value> = events
            .into_iter()
            .take(MAX_EVENTS)
            .map(|e| e.json)
            .collect();
        Ok(json!({"events": list, "truncated": truncated}))
    }

    /// The event `uid` in `calendar`.
    fn find(&self, calendar: &Collection, uid: &str) -> Result<Found, ToolFailure> {
        let filter = format!(
            "<c:prop-filter name=\"UID\"><c:text-match collation=\"i;octet\">{}</c:text-match></c:prop-filter>",
            xml::escape(uid)
        );
        self.query(&calendar.url, &filter)?
            .into_iter()
            .find(|found| {
                ics::events(&found.data, "").is_ok_and(|events| events.iter().any(|e| e.uid == uid))
            })
            .ok_or_else(|| {
                ToolFailure::invalid(format!(
                    "no event `{}` in calendar `{}`",
                    shorten(uid),
                    shorten(&calendar.id)
                ))
            })
    }

    fn create(&mut self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new(
            "create",
            args,
            &[
                "calendar",
                "summary",
                "start",
                "end",
                "location",
                "description",
                "invitees",
            ],
        )?;
        let summary = text(&args, "create", "summary", MAX_TEXT)?.unwrap_or_default();
        if summary.trim().is_empty() {
            return Err(ToolFailure::invalid("`create`: missing argument `summary`"));
        }
        let start = when(&args, "create", "start")?;
        let end = when(&args, "create", "end")?;
        check_order("create", start, end)?;
        let fields = Fields {
            summary: Some(summary),
            start: Some(start),
            end: Some(end),
            location: text(&args, "create", "location", MAX_TEXT)?,
            description: text(&args, "create", "description", MAX_DESCRIPTION)?,
            invitees: invitees(&args, "create")?,
        };
        let calendar = self.collection(&args, "calendar")?;
        let uid = uuid::Uuid::new_v4().to_string();
        let url = self.join(&calendar.url, &format!("{uid}.ics"))?;
        let body = ics::build(&uid, &fields, jiff::Timestamp::now());
        let (status, etag, _) = self.dav(
            "PUT",
            &url,
            &[
                ("if-none-match", "*".to_owned()),
                ("content-type", ICS.to_owned()),
            ],
            Some(body),
        )?;
        expect_success(status, "create the event")?;
        Ok(json!({"uid": uid, "etag": etag}))
    }

    fn update(&mut self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new(
            "update",
            args,
            &[
                "calendar",
                "uid",
                "etag",
                "summary",
                "start",
                "end",
                "location",
                "description",
                "invitees",
            ],
        )?;
        let uid = uid(&args, "update")?;
        let mut fields = Fields {
            summary: text(&args, "update", "summary", MAX_TEXT)?,
            start: opt_when(&args, "update", "start")?,
            end: opt_when(&args, "update", "end")?,
            location: text(&args, "update", "location", MAX_TEXT)?,
            description: text(&args, "update", "description", MAX_DESCRIPTION)?,
            invitees: invitees(&args, "update")?,
        };
        if fields.summary.as_ref().is_some_and(|s| s.trim().is_empty()) {
            return Err(ToolFailure::invalid("`update`: `summary` is empty"));
        }
        let expected = args.opt_string("etag")?;
        let calendar = self.collection(&args, "calendar")?;
        let found = self.find(&calendar, uid)?;
        if expected.is_some_and(|e| e != found.etag) {
            return Err(changed());
        }
        let shown = ics::events(&found.data, &found.etag)
            .map_err(ToolFailure::permanent)?
            .into_iter()
            .next()
            .ok_or_else(|| ToolFailure::permanent("the stored object has no event"))?;
        if fields.start.is_some() || fields.end.is_some() {
            let start = fields.start.or(shown.start.and_then(Time::when));
            let end = fields.end.or(match shown.end {
                Some(Time::Day(d)) => Some(When::Day(d.yesterday().unwrap_or(d))),
                other => other.and_then(Time::when),
            });
            let (Some(start), Some(end)) = (start, end) else {
                return Err(ToolFailure::invalid(
                    "`update`: the event's times are in a named zone: give both `start` and `end`",
                ));
            };
            check_order("update", start, end)?;
            fields.start = Some(start);
            fields.end = Some(end);
        }
        let body = ics::edit(&found.data, &fields, jiff::Timestamp::now())
            .map_err(ToolFailure::permanent)?;
        let (status, etag, _) = self.dav(
            "PUT",
            &found.url,
            &[
                ("if-match", found.etag.clone()),
                ("content-type", ICS.to_owned()),
            ],
            Some(body),
        )?;
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(changed());
        }
        expect_success(status, "update the event")?;
        Ok(json!({"uid": uid, "etag": etag}))
    }

    fn move_event(&mut self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("move", args, &["calendar", "uid", "to", "etag"])?;
        let uid = uid(&args, "move")?;
        let expected = args.opt_string("etag")?;
        let from = self.collection(&args, "calendar")?;
        let to = self.collection(&args, "to")?;
        if from.id == to.id {
            return Err(ToolFailure::invalid(
                "`move`: `to` is the calendar the event is in",
            ));
        }
        let found = self.find(&from, uid)?;
        if expected.is_some_and(|e| e != found.etag) {
            return Err(changed());
        }
        let file = last_segment(&found.url).unwrap_or_else(|| format!("{uid}.ics"));
        check_id(&file).map_err(|_| ToolFailure::permanent("the event's path is unusual"))?;
        let destination = self.join(&to.url, &percent(&file))?;
        let (status, _, _) = self.dav(
            "MOVE",
            &found.url,
            &[
                ("destination", destination.to_string()),
                ("overwrite", "F".to_owned()),
                ("if-match", found.etag.clone()),
            ],
            None,
        )?;
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(changed());
        }
        expect_success(status, "move the event")?;
        Ok(json!({"uid": uid, "calendar": to.id}))
    }

    fn delete(&mut self, args: Value) -> Result<Value, ToolFailure> {
        let args = Args::new("delete", args, &["calendar", "uid", "etag"])?;
        let uid = uid(&args, "delete")?;
        let expected = args.opt_string("etag")?;
        let calendar = self.collection(&args, "calendar")?;
        let found = self.find(&calendar, uid)?;
        if expected.is_some_and(|e| e != found.etag) {
            return Err(changed());
        }
        let (status, _, _) = self.dav(
            "DELETE",
            &found.url,
            &[("if-match", found.etag.clone())],
            None,
        )?;
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(changed());
        }
        expect_success(status, "delete the event")?;
        Ok(json!({"uid": uid, "deleted": true}))
    }
}

const XML: &str = "application/xml; charset=utf-8";
const ICS: &str = "text/calendar; charset=utf-8";

fn install_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when the process already chose a provider; reqwest then uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The configured server: `https`, or `http` on a loopback host.
fn server_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`url`: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("`url` has no host".to_owned()),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("`url` must be https (http only for a loopback host)".to_owned()),
        other => return Err(format!("`url` must be https, not `{}`", shorten(other))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`url` must not carry a login: use `user` and the credential".to_owned());
    }
    Ok(url)
}

fn multistatus(status: StatusCode, text: &str) -> Result<Element, ToolFailure> {
    if status == StatusCode::NOT_FOUND {
        return Err(ToolFailure::permanent(
            "the CalDAV server has no such collection (check `url`)",
        ));
    }
    if status == StatusCode::FORBIDDEN {
        return Err(ToolFailure::permanent("the CalDAV server refused access"));
    }
    if status.as_u16() != 207 {
        return Err(ToolFailure::permanent(format!(
            "the CalDAV server answered {status}, not a multistatus"
        )));
    }
    let root = xml::parse(text)
        .map_err(|e| ToolFailure::permanent(format!("the CalDAV server's answer: {e}")))?;
    if !root.is(DAV, "multistatus") {
        return Err(ToolFailure::permanent(
            "the CalDAV server's answer is not a multistatus",
        ));
    }
    Ok(root)
}

/// The `prop` of the `propstat` with status 200.
fn ok_prop(response: &Element) -> Option<&Element> {
    response
        .all(DAV, "propstat")
        .find(|p| {
            p.child(DAV, "status")
                .is_some_and(|s| s.trimmed().split_whitespace().nth(1) == Some("200"))
        })
        .and_then(|p| p.child(DAV, "prop"))
}

/// The `href` inside property `{ns}name` of the first response, when found.
fn href_in(answer: &Element, ns: &str, name: &str) -> Option<String> {
    let response = answer.child(DAV, "response")?;
    let prop = ok_prop(response)?;
    let href = prop.child(ns, name)?.child(DAV, "href")?;
    Some(href.trimmed().to_owned()).filter(|h| !h.is_empty())
}

/// The last non-empty path segment, percent-decoded.
fn last_segment(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    let bytes = percent_decode(segment);
    String::from_utf8(bytes).ok()
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Percent-encodes a path segment.
fn percent(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A calendar id or event uid that cannot climb out of its collection.
fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.chars().count() > MAX_TEXT {
        return Err("is too long");
    }
    if id == "." || id.contains("..") || id.contains(['/', '\\']) {
        return Err("must not contain `/`, `\\` or `..`");
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

fn uid<'a>(args: &'a Args, action: &str) -> Result<&'a str, ToolFailure> {
    let uid = args.string("uid")?;
    check_id(uid).map_err(|why| ToolFailure::invalid(format!("`{action}`: `uid` {why}")))?;
    Ok(uid)
}

fn when(args: &Args, action: &str, name: &str) -> Result<When, ToolFailure> {
    opt_when(args, action, name)?
        .ok_or_else(|| ToolFailure::invalid(format!("`{action}`: missing argument `{name}`")))
}

fn opt_when(args: &Args, action: &str, name: &str) -> Result<Option<When>, ToolFailure> {
    let Some(text) = args.opt_string(name)? else {
        return Ok(None);
    };
    When::parse(text).map(Some).ok_or_else(|| {
        ToolFailure::invalid(format!(
            "`{action}`: `{name}` is not RFC 3339 (2026-01-05T10:00:00+01:00) nor a date \
             (2026-01-05): `{}`",
            shorten(text)
        ))
    })
}

/// Both instants or both days, and the end after the start (a day may end on itself).
fn check_order(action: &str, start: When, end: When) -> Result<(), ToolFailure> {
    match (start, end) {
        (When::At(s), When::At(e)) if e > s => Ok(()),
        (When::Day(s), When::Day(e)) if e >= s => Ok(()),
        (When::At(_), When::At(_)) | (When::Day(_), When::Day(_)) => Err(ToolFailure::invalid(
            format!("`{action}`: `end` is before `start`"),
        )),
        _ => Err(ToolFailure::invalid(format!(
            "`{action}`: `start` and `end` must both be dates or both be times"
        ))),
    }
}

fn text(args: &Args, action: &str, name: &str, max: usize) -> Result<Option<String>, ToolFailure> {
    let Some(value) = args.opt_string(name)? else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(ToolFailure::invalid(format!(
            "`{action}`: `{name}` is longer than {max} characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

fn invitees(args: &Args, action: &str) -> Result<Option<Vec<String>>, ToolFailure> {
    let Some(value) = args.opt_value("invitees") else {
        return Ok(None);
    };
    let wrong =
        || ToolFailure::invalid(format!("`{action}`: `invitees` must be an array of emails"));
    let list = value.as_array().ok_or_else(wrong)?;
    if list.len() > MAX_INVITEES {
        return Err(ToolFailure::invalid(format!(
            "`{action}`: more than {MAX_INVITEES} invitees"
        )));
    }
    let mut out = Vec::new();
    for item in list {
        let email = item.as_str().ok_or_else(wrong)?.trim();
        if !is_email(email) {
            return Err(ToolFailure::invalid(format!(
                "`{action}`: `{}` is not an email address",
                shorten(email)
            )));
        }
        out.push(email.to_owned());
    }
    Ok(Some(out))
}

/// A plain `local@domain` address: nothing that could break out of an iCalendar line.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && text.len() <= 254
        && domain.contains('.')
        && !domain.contains('@')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ":;,\"<>()[]\\".contains(c))
}

fn expect_success(status: StatusCode, what: &str) -> Result<(), ToolFailure> {
    if status.is_success() {
        return Ok(());
    }
    match status.as_u16() {
        404 => Err(ToolFailure::invalid(format!(
            "cannot {what}: the server has no such item"
        ))),
        412 => Err(changed()),
        403 => Err(ToolFailure::permanent(format!(
            "cannot {what}: the server refused it"
        ))),
        _ => Err(ToolFailure::permanent(format!(
            "cannot {what}: the server answered {status}"
        ))),
    }
}

fn changed() -> ToolFailure {
    ToolFailure::permanent(
        "conflict: the event changed on the server since it was read; read it again with `events`",
    )
}

fn sort_key(time: Time) -> (i64, i64) {
    match time {
        Time::At(t) => (t.as_second(), 0),
        Time::Day(d) => (ics::When::Day(d).instant().as_second(), 0),
        Time::Local(dt) => (
            dt.to_zoned(jiff::tz::TimeZone::UTC)
                .map_or(0, |z| z.timestamp().as_second()),
            0,
        ),
    }
}

impl Tool for Calendar {
    fn actions(&self) -> Vec<ActionSpec> {
        let time = json!({"type": "string", "description": "RFC 3339 (2026-01-05T10:00:00+01:00) or a date (2026-01-05) for all-day"});
        let emails = json!({"type": "array", "items": {"type": "string"}, "maxItems": MAX_INVITEES, "description": "email addresses"});
        let id = json!({"type": "string", "minLength": 1, "description": "a calendar id from `calendars`"});
        let uid = json!({"type": "string", "minLength": 1});
        let etag = json!({"type": "string", "description": "the etag `events` showed: the change fails if the event changed since"});
        let spec = |name: &str, description: &str, properties: Value, required: &[&str], tier| {
            ActionSpec {
                name: name.to_owned(),
                description: description.to_owned(),
                parameters: schema(properties, required),
                tier,
            }
        };
        vec![
            spec(
                "calendars",
                "List the owner's calendars: id, name and what they hold.",
                json!({}),
                &[],
                Tier::Observe,
            ),
            spec(
                "events",
                "List the events of a calendar between two times.",
                json!({"calendar": id, "from": time, "to": time}),
                &["calendar", "from", "to"],
                Tier::Observe,
            ),
            spec(
                "create",
                "Create an event; invitees get an invitation from the server if it sends them.",
                json!({"calendar": id, "summary": {"type": "string", "minLength": 1}, "start": time,
                       "end": time, "location": {"type": "string"}, "description": {"type": "string"},
                       "invitees": emails}),
                &["calendar", "summary", "start", "end"],
                Tier::Act,
            ),
            spec(
                "update",
                "Change some fields of an event; the others are kept.",
                json!({"calendar": id, "uid": uid, "etag": etag, "summary": {"type": "string"},
                       "start": time, "end": time, "location": {"type": "string"},
                       "description": {"type": "string"}, "invitees": emails}),
                &["calendar", "uid"],
                Tier::Act,
            ),
            spec(
                "move",
                "Move an event to another calendar.",
                json!({"calendar": id, "uid": uid, "to": id, "etag": etag}),
                &["calendar", "uid", "to"],
                Tier::Act,
            ),
            spec(
                "delete",
                "Delete an event.",
                json!({"calendar": id, "uid": uid, "etag": etag}),
                &["calendar", "uid"],
                Tier::Commit,
            ),
        ]
    }

    fn invoke(&mut self, _agent: &str, action: &str, args: Value) -> Result<Value, ToolFailure> {
        match action {
            "calendars" => self.calendars(args),
            "events" => self.events(args),
            "create" => self.create(args),
            "update" => self.update(args),
            "move" => self.move_event(args),
            "delete" => self.delete(args),
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
    fn urls_ids_and_emails() {
        server_url("https://dav.example.com/").unwrap();
        server_url("http://127.0.0.1:5232/").unwrap();
        server_url("http://localhost/").unwrap();
        for bad in [
            "http://dav.example.com/",
            "ftp://x/",
            "https://u:p@dav.example.com/",
            "nope",
        ] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
        for bad in ["", "..", "a/b", "a\\b", "../x", "a\nb", "."] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        check_id("work").unwrap();
        check_id("3f1c-ab@host").unwrap();
        assert!(is_email("bob@example.com"));
        for bad in [
            "bob",
            "@x.org",
            "a@b",
            "a b@x.org",
            "a@x.org\r\nX:1",
            "a;b@x.org",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        let url = Url::parse("http://h/user/my%20cal/").unwrap();
        assert_eq!(last_segment(&url).unwrap(), "my cal");
        assert_eq!(percent("a b.ics"), "a%20b.ics");
    }
}

//! The web console: pending approvals with everything the operator needs to decide, approve
//! and deny with the factor each level asks for, the undo countdown with a pull-back button,
//! the history, and the keys page where passkeys are registered.
//!
//! It listens on a loopback address (`127.0.0.1:7325` by default, anything else only with
//! [`ConsoleSettings::allow_public`]) and is reached at its origin (`http://localhost:7325`:
//! WebAuthn refuses IP addresses). Every page is server-rendered and escaped; the one script
//! is `console.js`, served from the binary, which runs the WebAuthn ceremonies and ticks the
//! countdowns.
//!
//! - **Login** by a one-time link ([`LoginTokens`]): `/login?token=…` is used once, within
//!   [`LOGIN_TTL_MS`], and sets a session cookie (HttpOnly, SameSite=Strict) before sending the
//!   browser to `/`, so the token leaves the address bar. Sessions end after [`SESSION_IDLE_MS`]
//!   idle.
//! - **CSRF**: a per-session token in every form (and in a header for the WebAuthn fetches),
//!   checked on every POST; a POST whose `Origin` is not the console's is refused, and so is a
//!   request whose `Host` is not the console's (DNS rebinding).
//! - **Headers**: a strict Content-Security-Policy (no inline script or style), no framing, no
//!   sniffing, no referrer, no caching.
//! - **Factors**: the console turns what the operator gave into a [`Proof`] only after
//!   verifying it (a tap in a logged-in session, a PIN or TOTP code through the
//!   [`Service`], a WebAuthn assertion through [`crate::webauthn`]) and passes it to the desk,
//!   which refuses one too weak for the level.

mod pages;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use url::Url;
use zeroize::Zeroize;

use crate::binding::Binding;
use crate::daemon::{Answer, Service};
use crate::desk::Approved;
use crate::level::{Factor, Proof};
use crate::pin::Pin;
use crate::remember::{Remember, RememberError};
use crate::webauthn::Ceremonies;
use crate::{HitlError, WebauthnSetupError};

/// Where the console listens unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7325";
/// How long a login link is good for.
pub const LOGIN_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a session lives without being used.
pub const SESSION_IDLE_MS: i64 = 12 * 60 * 60 * 1000;
/// At most this many login links wait at once (oldest dropped first).
const MAX_TOKENS: usize = 16;
/// At most this many sessions live at once (least recently used dropped first).
const MAX_SESSIONS: usize = 32;
/// The session cookie.
const COOKIE: &str = "p3ak_console";
/// The header the WebAuthn fetches carry their CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";
/// Largest request body.
const MAX_BODY: usize = 64 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const PERMISSIONS: &str = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), publickey-credentials-get=(self), publickey-credentials-create=(self)";

const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Where the console listens and the origin browsers reach it at.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The listen address (`127.0.0.1:7325`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The origin (`http://localhost:7325`). A port of 0 is replaced by the bound port.
    pub origin: Url,
    /// Whether a non-loopback listen address is allowed (the operator configured it).
    pub allow_public: bool,
}

impl ConsoleSettings {
    /// Settings for `listen`, reached at `origin` (default `http://localhost:<port>`),
    /// loopback only.
    pub fn new(listen: SocketAddr, origin: Option<Url>) -> Result<Self, HitlError> {
        let origin = match origin {
            Some(origin) => origin,
            None => Url::parse(&format!("http://localhost:{}", listen.port()))
                .map_err(HitlError::ConsoleOrigin)?,
        };
        if !matches!(origin.scheme(), "http" | "https")
            || origin.host_str().is_none()
            || origin.path() != "/"
            || origin.query().is_some()
        {
            return Err(HitlError::ConsoleOriginForm { origin });
        }
        Ok(Self {
            listen,
            origin,
            allow_public: false,
        })
    }

    /// From the daemon's start frame: a listen address and an optional origin.
    pub fn from_start(listen: &str, origin: Option<&str>) -> Result<Self, HitlError> {
        let address: SocketAddr = listen
            .trim()
            .parse()
            .map_err(|_| HitlError::ConsoleAddress {
                listen: listen.to_owned(),
            })?;
        let origin = origin
            .map(|o| {
                Url::parse(o.trim()).map_err(|source| HitlError::ConsoleOriginUrl {
                    origin: o.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Self::new(address, origin)
    }
}

/// One-time login tokens (32 random bytes, hex). Clones share their tokens.
#[derive(Clone)]
pub struct LoginTokens {
    inner: Arc<Mutex<Tokens>>,
}

struct Tokens {
    origin: Url,
    live: Vec<([u8; 32], i64)>,
}

impl Drop for Tokens {
    fn drop(&mut self) {
        for (token, _) in &mut self.live {
            token.zeroize();
        }
    }
}

impl LoginTokens {
    /// No tokens yet; links point at `origin`.
    #[must_use]
    pub fn new(origin: Url) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tokens {
                origin,
                live: Vec::new(),
            })),
        }
    }

    fn tokens(&self) -> Result<MutexGuard<'_, Tokens>, HitlError> {
        self.inner.lock().map_err(|_| HitlError::Poisoned {
            what: "the console's login state",
        })
    }

    /// A fresh token (hex), good once within [`LOGIN_TTL_MS`].
    pub fn mint(&self) -> Result<String, HitlError> {
        let token: [u8; 32] = p3ak_crypto::random_array()?;
        let text = hex::encode(token);
        self.insert(token, crate::daemon::now_ms())?;
        Ok(text)
    }

    /// Accepts a token made elsewhere (the one `p3ak up` printed): 64 hex digits.
    pub fn add(&self, token: &str) -> Result<(), HitlError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(token.trim(), &mut bytes).map_err(|_| HitlError::LoginToken)?;
        self.insert(bytes, crate::daemon::now_ms())
    }

    fn insert(&self, token: [u8; 32], now_ms: i64) -> Result<(), HitlError> {
        let mut tokens = self.tokens()?;
        tokens.live.retain(|(_, expires)| *expires > now_ms);
        while tokens.live.len() >= MAX_TOKENS {
            tokens.live.remove(0);
        }
        tokens
            .live
            .push((token, now_ms.saturating_add(LOGIN_TTL_MS)));
        Ok(())
    }

    /// A fresh login link: `<origin>/login?token=…`.
    pub fn link(&self) -> Result<String, HitlError> {
        let token = self.mint()?;
        Ok(format!("{}/login?token={token}", self.origin()?))
    }

    /// The origin links point at (`http://localhost:7325`, no trailing slash).
    pub fn origin(&self) -> Result<String, HitlError> {
        Ok(self.tokens()?.origin.origin().ascii_serialization())
    }

    fn set_origin(&self, origin: Url) -> Result<(), HitlError> {
        self.tokens()?.origin = origin;
        Ok(())
    }

    /// Uses `token` up: true once for each live token, false for anything else.
    fn consume(&self, token: &str, now_ms: i64) -> bool {
        let mut given = [0u8; 32];
        if hex::decode_to_slice(token.trim(), &mut given).is_err() {
            return false;
        }
        let Ok(mut tokens) = self.tokens() else {
            return false;
        };
        tokens.live.retain(|(_, expires)| *expires > now_ms);
        // Compare against every live token, in constant time each.
        let mut found = None;
        for (index, (live, _)) in tokens.live.iter().enumerate() {
            if p3ak_crypto::constant_time_eq(live, &given) {
                found = Some(index);
            }
        }
        given.zeroize();
        match found {
            Some(index) => {
                let (mut used, _) = tokens.live.remove(index);
                used.zeroize();
                true
            }
            None => false,
        }
    }
}

/// A console bound to its address, not yet serving.
pub struct Console {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    origin: Url,
    ceremonies: Result<Ceremonies, Arc<WebauthnSetupError>>,
}

/// Binds the console's address. Refuses a non-loopback address unless
/// [`ConsoleSettings::allow_public`].
pub async fn bind(settings: ConsoleSettings) -> Result<Console, HitlError> {
    if !settings.listen.ip().is_loopback() && !settings.allow_public {
        return Err(HitlError::ConsolePublic {
            listen: settings.listen,
        });
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(HitlError::io(format!(
            "cannot listen on `{}` for the console",
            settings.listen
        )))?;
    let address = listener
        .local_addr()
        .map_err(HitlError::io("cannot read the console's address"))?;
    let mut origin = settings.origin;
    if origin.port() == Some(0) && origin.set_port(Some(address.port())).is_err() {
        return Err(HitlError::ConsolePort { origin });
    }
    let ceremonies = Ceremonies::new(&origin).map_err(Arc::new);
    if let Err(e) = &ceremonies {
        tracing::warn!("the console runs without WebAuthn: {e}");
    }
    Ok(Console {
        listener,
        address,
        origin,
        ceremonies,
    })
}

impl Console {
    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The origin browsers reach it at (with the bound port).
    #[must_use]
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// Serves until `shutdown` resolves. `login` holds the one-time links; its links are
    /// pointed at this console's origin.
    pub async fn serve(
        self,
        service: Arc<Service>,
        login: LoginTokens,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HitlError> {
        login.set_origin(self.origin.clone())?;
        let mut hosts = vec![self.address.to_string()];
        if let Some(host) = self.origin.host_str() {
            hosts.push(match self.origin.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            });
        }
        let app = Arc::new(App {
            service,
            login,
            sessions: Mutex::new(HashMap::new()),
            ceremonies: self.ceremonies,
            origin: self.origin.origin().ascii_serialization(),
            secure_cookie: self.origin.scheme() == "https",
            hosts,
        });
        axum::serve(self.listener, router(app))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HitlError::io("the console stopped"))
    }
}

/// Binds and serves in one go.
pub async fn serve(
    service: Arc<Service>,
    settings: ConsoleSettings,
    login: LoginTokens,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HitlError> {
    bind(settings).await?.serve(service, login, shutdown).await
}

struct App {
    service: Arc<Service>,
    login: LoginTokens,
    sessions: Mutex<HashMap<String, Session>>,
    ceremonies: Result<Ceremonies, Arc<WebauthnSetupError>>,
    /// `http://localhost:7325`.
    origin: String,
    secure_cookie: bool,
    /// `Host` headers accepted.
    hosts: Vec<String>,
}

struct Session {
    csrf: String,
    label: String,
    last_ms: i64,
    flash: Option<pages::Flash>,
}

/// A request's live session.
#[derive(Clone)]
struct Who {
    id: String,
    csrf: String,
    /// `console session 3fa2c1d0`: where proofs come from, in the audit log.
    channel: String,
}

type Shared = Arc<App>;

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(pending_page))
        .route("/history", get(history_page))
        .route("/keys", get(keys_page))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/approve", post(approve))
        .route("/deny", post(deny))
        .route("/pullback", post(pull_back))
        .route("/webauthn/register/start", post(register_start))
        .route("/webauthn/register/finish", post(register_finish))
        .route("/webauthn/approve/start", post(approve_start))
        .route("/webauthn/approve/finish", post(approve_finish))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Refuses a foreign `Host` and a cross-origin POST; puts the strict headers on every answer.
async fn guard(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)));
    // Under `Referrer-Policy: no-referrer` Chromium sends `Origin: null` with the console's
    // own form posts; that counts as no Origin (the CSRF token and Sec-Fetch-Site still hold).
    let origin_ok = request.method() != Method::POST
        || headers
            .get(header::ORIGIN)
            .is_none_or(|o| o.as_bytes() == app.origin.as_bytes() || o.as_bytes() == b"null");
    let fetch_ok = headers
        .get("sec-fetch-site")
        .is_none_or(|s| matches!(s.as_bytes(), b"same-origin" | b"none"));
    let mut response = if !host_ok {
        plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this is not the console's host name",
        )
    } else if !origin_ok || (request.method() == Method::POST && !fetch_ok) {
        plain(
            StatusCode::FORBIDDEN,
            "refused: this request did not come from the console's own pages",
        )
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", PERMISSIONS),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message_page("Not found", "There is no such page here.").into_string()),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn random_hex<const N: usize>() -> Result<String, HitlError> {
    Ok(hex::encode(p3ak_crypto::random_array::<N>()?))
}

impl App {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A poisoned map is still a map of sessions; nothing in it is half-written.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session the request's cookie names, if it lives (and marks it used).
    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        let id = session_cookie(headers)?;
        let now = self.service.now_ms();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| now.saturating_sub(s.last_ms) < SESSION_IDLE_MS);
        // Find by comparing every id in constant time.
        let key = sessions
            .keys()
            .filter(|k| p3ak_crypto::constant_time_eq(k.as_bytes(), id.as_bytes()))
            .last()
            .cloned()?;
        let session = sessions.get_mut(&key)?;
        session.last_ms = now;
        Some(Who {
            id: key,
            csrf: session.csrf.clone(),
            channel: format!("console session {}", session.label),
        })
    }

    fn new_session(&self) -> Result<String, HitlError> {
        let id = random_hex::<32>()?;
        let session = Session {
            csrf: random_hex::<32>()?,
            label: random_hex::<4>()?,
            last_ms: self.service.now_ms(),
            flash: None,
        };
        let mut sessions = self.sessions();
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        self.service.audit(
            "hitl.console.login",
            json!({"channel": format!("console session {}", session.label)}),
        );
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    fn flash(&self, who: &Who, ok: bool, text: impl Into<String>) {
        if let Some(session) = self.sessions().get_mut(&who.id) {
            session.flash = Some(pages::Flash {
                ok,
                text: text.into(),
            });
        }
    }

    fn take_flash(&self, who: &Who) -> Option<pages::Flash> {
        self.sessions()
            .get_mut(&who.id)
            .and_then(|s| s.flash.take())
    }

    fn cookie(&self, id: &str, max_age_secs: i64) -> String {
        cookie::Cookie::build((COOKIE, id))
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age_secs))
            .secure(self.secure_cookie)
            .build()
            .to_string()
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn csrf_ok(who: &Who, given: &str) -> bool {
    !given.is_empty() && p3ak_crypto::constant_time_eq(who.csrf.as_bytes(), given.as_bytes())
}

fn logged_out(status: StatusCode) -> Response {
    (status, Html(pages::logged_out().into_string())).into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(
            pages::message_page(
                "Refused",
                "The form's CSRF token is missing or wrong. Reload the console and try again.",
            )
            .into_string(),
        ),
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HitlError> + Send + 'static,
) -> Result<T, HitlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(HitlError::ConsoleTask)?
}

// ----- pages ---------------------------------------------------------------------------------

async fn pending_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return logged_out(StatusCode::UNAUTHORIZED);
    };
    let flash = app.take_flash(&who);
    let service = Arc::clone(&app.service);
    let loaded = blocking(move || {
        let (pin_set, totp) = service.with_factors(|f| Ok((f.pin_is_set(), f.totp_is_active())))?;
        let keys = service.with_factors(|f| Ok(f.passkeys().len()))?;
        Ok((service.list(), pin_set, totp, keys, service.now_ms()))
    })
    .await;
    let (items, pin_set, totp, keys, now, flash) = match loaded {
        Ok((items, pin_set, totp, keys, now)) => (items, pin_set, totp, keys, now, flash),
        Err(e) => (
            Vec::new(),
            false,
            false,
            0,
            app.service.now_ms(),
            Some(pages::Flash {
                ok: false,
                text: e.to_string(),
            }),
        ),
    };
    let webauthn_error = app.ceremonies.as_ref().err().map(ToString::to_string);
    let page = pages::pending(&pages::PendingPage {
        csrf: &who.csrf,
        flash,
        items: &items,
        now_ms: now,
        pin_set,
        totp_active: totp,
        keys,
        webauthn: webauthn_error.as_deref(),
    });
    Html(page.into_string()).into_response()
}

async fn history_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return logged_out(StatusCode::UNAUTHORIZED);
    };
    let flash = app.take_flash(&who);
    let service = Arc::clone(&app.service);
    let items = blocking(move || Ok(service.history()))
        .await
        .unwrap_or_default();
    Html(pages::history(&who.csrf, flash, &items).into_string()).into_response()
}

async fn keys_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return logged_out(StatusCode::UNAUTHORIZED);
    };
    let flash = app.take_flash(&who);
    let service = Arc::clone(&app.service);
    let loaded = blocking(move || {
        service.with_factors(|f| {
            Ok((
                f.passkeys()
                    .iter()
                    .map(|k| (k.name.clone(), k.added_ms))
                    .collect::<Vec<_>>(),
                f.pin_is_set(),
            ))
        })
    })
    .await;
    let (keys, pin_set, flash) = match loaded {
        Ok((keys, pin_set)) => (keys, pin_set, flash),
        Err(e) => (
            Vec::new(),
            false,
            Some(pages::Flash {
                ok: false,
                text: e.to_string(),
            }),
        ),
    };
    let webauthn_error = app.ceremonies.as_ref().err().map(ToString::to_string);
    let page = pages::keys(&who.csrf, flash, &keys, pin_set, webauthn_error.as_deref());
    Html(page.into_string()).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: String,
}

impl Drop for LoginQuery {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

async fn login(State(app): State<Shared>, Query(query): Query<LoginQuery>) -> Response {
    let now = app.service.now_ms();
    if !app.login.consume(&query.token, now) {
        app.service.audit(
            "hitl.console.login.refused",
            json!({"reason": "unknown, used or expired token"}),
        );
        return (
            StatusCode::FORBIDDEN,
            Html(
                pages::message_page(
                    "Login link not valid",
                    "This login link was used already, has expired, or is mistyped. Get a new one with `p3ak hitl login`.",
                )
                .into_string(),
            ),
        )
            .into_response();
    }
    match app.new_session() {
        Ok(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_owned()),
                (header::SET_COOKIE, app.cookie(&id, SESSION_IDLE_MS / 1000)),
            ],
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::message_page("Cannot log in", &e.to_string()).into_string()),
        )
            .into_response(),
    }
}

#[derive(Default)]
struct Form {
    csrf: String,
    id: String,
    binding: String,
    pin: String,
    totp: String,
    /// Argument paths ticked under "remember" (one field each).
    remember: Vec<String>,
    /// For how many days.
    remember_days: String,
}

impl Form {
    /// The owner's "remember this", when at least one argument (or the box for an action
    /// without arguments) was ticked.
    fn remember(&self) -> Result<Option<Remember>, HitlError> {
        if self.remember.is_empty() {
            return Ok(None);
        }
        let days: u64 = self
            .remember_days
            .trim()
            .parse()
            .map_err(|_| HitlError::Remember {
                id: self.id.clone(),
                source: RememberError::Duration { secs: 0 },
            })?;
        Ok(Some(Remember {
            // `*` is the box of an action without arguments: nothing to pin.
            args: self
                .remember
                .iter()
                .filter(|a| *a != "*")
                .cloned()
                .collect(),
            for_secs: days.saturating_mul(86_400),
        }))
    }
}

impl Drop for Form {
    fn drop(&mut self) {
        self.pin.zeroize();
        self.totp.zeroize();
    }
}

/// The session and the form of a POST, or the answer that refuses it.
fn posted(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(Who, Form), Box<Response>> {
    let who = app
        .who(headers)
        .ok_or_else(|| Box::new(logged_out(StatusCode::FORBIDDEN)))?;
    let form = parse_form(body);
    if !csrf_ok(&who, &form.csrf) {
        app.service
            .audit("hitl.console.csrf.refused", json!({"channel": who.channel}));
        return Err(Box::new(csrf_refused()));
    }
    Ok((who, form))
}

/// Parses an `application/x-www-form-urlencoded` body into the form.
fn parse_form(body: &[u8]) -> Form {
    let mut form = Form::default();
    for (name, value) in url::form_urlencoded::parse(body) {
        if name == "remember" {
            form.remember.push(value.into_owned());
            continue;
        }
        let slot = match name.as_ref() {
            "csrf" => &mut form.csrf,
            "id" => &mut form.id,
            "binding" => &mut form.binding,
            "pin" => &mut form.pin,
            "totp" => &mut form.totp,
            "remember_days" => &mut form.remember_days,
            _ => continue,
        };
        let mut value = value.into_owned();
        std::mem::swap(slot, &mut value);
        value.zeroize();
    }
    form
}

async fn logout(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, _form) = match posted(&app, &headers, &body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    app.sessions().remove(&who.id);
    app.service
        .audit("hitl.console.logout", json!({"channel": who.channel}));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, app.cookie("", 0)),
        ],
    )
        .into_response()
}

async fn approve(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, form) = match posted(&app, &headers, &body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    let service = Arc::clone(&app.service);
    let channel = who.channel.clone();
    let result = blocking(move || {
        let binding = Binding::from_hex(&form.binding).ok_or_else(|| HitlError::Mismatch {
            id: form.id.clone(),
        })?;
        let view = service.get(&form.id);
        let remember = form.remember()?;
        // Checked before the factor: a refused "remember" costs no PIN attempt.
        if let (Some(remember), Some(view)) = (&remember, &view) {
            remember
                .check(&view.request)
                .map_err(|source| HitlError::Remember {
                    id: form.id.clone(),
                    source,
                })?;
        }
        // The factor the operator gave: a PIN, a TOTP code, or (neither) the tap itself.
        let proof = if !form.pin.is_empty() {
            service.verify_pin(&Pin::new(form.pin.clone())?, &channel)?
        } else if !form.totp.is_empty() {
            service.verify_totp(form.totp.trim(), &channel)?
        } else {
            Proof::verified(Factor::ConsoleTap, channel.as_str())
        };
        let remembered = remember
            .as_ref()
            .map(|r| format!("; {r} once it runs"))
            .unwrap_or_default();
        let approved = service.approve_with(&form.id, &binding, proof, remember)?;
        let message = approved_message(&form.id, view.as_ref(), &approved, service.now_ms());
        Ok(format!("{message}{remembered}"))
    })
    .await;
    match result {
        Ok(text) => app.flash(&who, true, text),
        Err(e) => app.flash(&who, false, e.to_string()),
    }
    see_other("/")
}

fn approved_message(
    id: &str,
    view: Option<&crate::desk::View>,
    approved: &Approved,
    now_ms: i64,
) -> String {
    let what = view.map_or_else(String::new, |v| {
        format!(": {} for agent {}", v.request.action, v.request.agent)
    });
    match approved {
        Approved::NeedsAnother => {
            format!("confirmation 1 of 2 given for `{id}`{what}; confirm once more")
        }
        Approved::Approved { release_ms } if *release_ms > now_ms => format!(
            "approved `{id}`{what}; it runs in {} s unless you pull it back",
            (release_ms.saturating_sub(now_ms) + 999) / 1000
        ),
        Approved::Approved { .. } => format!("approved `{id}`{what}"),
    }
}

async fn deny(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&app, &headers, &body, Answer::Deny).await
}

async fn pull_back(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&app, &headers, &body, Answer::PullBack).await
}

async fn answer(app: &Shared, headers: &HeaderMap, body: &Bytes, answer: Answer) -> Response {
    let (who, form) = match posted(app, headers, body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    let service = Arc::clone(&app.service);
    let channel = who.channel.clone();
    let id = form.id.clone();
    match blocking(move || service.answer(answer, &id, &channel)).await {
        Ok(message) => app.flash(&who, true, message),
        Err(e) => app.flash(&who, false, e.to_string()),
    }
    see_other("/")
}

// ----- WebAuthn (JSON) -----------------------------------------------------------------------

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// The session of a JSON POST (CSRF token in its header), its body, and the ceremonies.
fn posted_json<T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Who, T), Box<Response>> {
    let who = app.who(headers).ok_or_else(|| {
        Box::new(json_error(
            StatusCode::FORBIDDEN,
            "not logged in: use the link `p3ak up` printed, or `p3ak hitl login`",
        ))
    })?;
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !csrf_ok(&who, given) {
        app.service
            .audit("hitl.console.csrf.refused", json!({"channel": who.channel}));
        return Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "the CSRF token is missing or wrong: reload the console",
        )));
    }
    if app.ceremonies.is_err() {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            app.ceremonies
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default(),
        )));
    }
    let value = serde_json::from_slice(body).map_err(|e| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            format!("not a valid request: {e}"),
        ))
    })?;
    Ok((who, value))
}

#[derive(Deserialize)]
struct RegisterStart {
    name: String,
    #[serde(default)]
    pin: Option<String>,
}

impl Drop for RegisterStart {
    fn drop(&mut self) {
        if let Some(pin) = &mut self.pin {
            pin.zeroize();
        }
    }
}

async fn register_start(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, request): (Who, RegisterStart) = match posted_json(&app, &headers, &body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    let shared = Arc::clone(&app);
    let session = who.id.clone();
    let channel = who.channel.clone();
    let result = blocking(move || {
        let pin = match request.pin.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(Pin::new(p.to_owned())?),
            None => None,
        };
        let ceremonies = ceremonies(&shared)?;
        ceremonies.start_registration(
            &shared.service,
            &session,
            &channel,
            &request.name,
            pin.as_ref(),
        )
    })
    .await;
    match result {
        Ok(challenge) => axum::Json(challenge).into_response(),
        Err(e) => {
            app.flash(&who, false, e.to_string());
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

fn ceremonies(app: &App) -> Result<&Ceremonies, HitlError> {
    app.ceremonies
        .as_ref()
        .map_err(|e| HitlError::WebauthnUnavailable(Arc::clone(e)))
}

async fn register_finish(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, credential): (Who, webauthn_rs::prelude::RegisterPublicKeyCredential) =
        match posted_json(&app, &headers, &body) {
            Ok(ok) => ok,
            Err(refused) => return *refused,
        };
    let shared = Arc::clone(&app);
    let (session, channel) = (who.id.clone(), who.channel.clone());
    let result = blocking(move || {
        ceremonies(&shared)?.finish_registration(&shared.service, &session, &channel, &credential)
    })
    .await;
    finish_answer(
        &app,
        &who,
        result.map(|name| format!("security key `{name}` added")),
    )
}

/// A finished ceremony: the message goes to the page (the script reloads it).
fn finish_answer(app: &App, who: &Who, result: Result<String, HitlError>) -> Response {
    match result {
        Ok(text) => {
            app.flash(who, true, text.clone());
            axum::Json(json!({"ok": true, "message": text})).into_response()
        }
        Err(e) => {
            app.flash(who, false, e.to_string());
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct ApproveStart {
    id: String,
    binding: String,
}

async fn approve_start(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, request): (Who, ApproveStart) = match posted_json(&app, &headers, &body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    let shared = Arc::clone(&app);
    let session = who.id.clone();
    let result = blocking(move || {
        let binding = Binding::from_hex(&request.binding).ok_or_else(|| HitlError::Mismatch {
            id: request.id.clone(),
        })?;
        ceremonies(&shared)?.start_approval(&shared.service, &session, &request.id, &binding)
    })
    .await;
    match result {
        Ok(challenge) => axum::Json(challenge).into_response(),
        Err(e) => {
            app.flash(&who, false, e.to_string());
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct ApproveFinish {
    id: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    #[serde(default)]
    pin: Option<String>,
}

impl Drop for ApproveFinish {
    fn drop(&mut self) {
        if let Some(pin) = &mut self.pin {
            pin.zeroize();
        }
    }
}

async fn approve_finish(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (who, request): (Who, ApproveFinish) = match posted_json(&app, &headers, &body) {
        Ok(ok) => ok,
        Err(refused) => return *refused,
    };
    let shared = Arc::clone(&app);
    let (session, channel) = (who.id.clone(), who.channel.clone());
    let result = blocking(move || {
        let pin = match request.pin.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(Pin::new(p.to_owned())?),
            None => None,
        };
        let view = shared.service.get(&request.id);
        let approved = ceremonies(&shared)?.finish_approval(
            &shared.service,
            &session,
            &channel,
            &request.id,
            &request.credential,
            pin.as_ref(),
        )?;
        Ok(approved_message(
            &request.id,
            view.as_ref(),
            &approved,
            shared.service.now_ms(),
        ))
    })
    .await;
    finish_answer(&app, &who, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remember_boxes_become_the_owners_choice() {
        let form = parse_form(b"id=e1&remember=to&remember=cc&remember_days=30&pin=1234");
        assert_eq!(
            form.remember().unwrap(),
            Some(Remember {
                args: vec!["to".to_owned(), "cc".to_owned()],
                for_secs: 30 * 86_400,
            })
        );
        assert_eq!(
            parse_form(b"id=e1&remember_days=30").remember().unwrap(),
            None
        );
        let bare = parse_form(b"id=e1&remember=*&remember_days=1");
        assert_eq!(bare.remember().unwrap().unwrap().args, Vec::<String>::new());
        assert!(
            parse_form(b"id=e1&remember=to&remember_days=x")
                .remember()
                .is_err()
        );
    }

    #[test]
    fn a_login_token_works_once_and_expires() {
        let tokens = LoginTokens::new(Url::parse("http://localhost:7325").unwrap());
        let token = tokens.mint().unwrap();
        let now = crate::daemon::now_ms();
        assert!(!tokens.consume("00", now));
        assert!(!tokens.consume(&"0".repeat(64), now));
        assert!(tokens.consume(&token, now));
        assert!(!tokens.consume(&token, now), "used twice");
        let late = tokens.mint().unwrap();
        assert!(!tokens.consume(&late, now + LOGIN_TTL_MS + 1), "expired");
        let link = tokens.link().unwrap();
        assert!(
            link.starts_with("http://localhost:7325/login?token="),
            "{link}"
        );
    }

    #[test]
    fn settings_default_to_localhost_and_refuse_odd_origins() {
        let s = ConsoleSettings::from_start("127.0.0.1:7325", None).unwrap();
        assert_eq!(s.origin.as_str(), "http://localhost:7325/");
        assert!(!s.allow_public);
        assert!(ConsoleSettings::from_start("localhost", None).is_err());
        assert!(ConsoleSettings::from_start("127.0.0.1:1", Some("ftp://x")).is_err());
        assert!(ConsoleSettings::from_start("127.0.0.1:1", Some("http://x/a")).is_err());
    }

    #[tokio::test]
    async fn a_public_address_is_refused_unless_allowed() {
        let s = ConsoleSettings::from_start("0.0.0.0:0", None).unwrap();
        let err = bind(s).await.err().unwrap().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        let id = "a".repeat(64);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}; y=2")).unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some(id));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("p3ak_console=short"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}

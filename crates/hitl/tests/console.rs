//! The web console, end to end: a real [`Service`] over a temporary spool and factor store,
//! the console on a loopback port, and headless Chromium driven over the DevTools protocol
//! (`p3ak_testkit::browser`), with Chrome's virtual WebAuthn authenticator for levels 4 and 5. The
//! CSRF and header checks use plain HTTP, since a browser would not send those requests.
//!
//! The browser test needs Chromium (`chromium` on the `PATH`, or `$CHROMIUM`) and is ignored
//! unless asked for; CI installs Debian's package.

#![cfg(test)]

use std::path::PathBuf;
use std::sync::Arc;

use p3ak_hitl::binding::Request;
use p3ak_hitl::console::{self, ConsoleSettings, LoginTokens};
use p3ak_hitl::daemon::{Service, ServiceOptions, now_ms};
use p3ak_hitl::desk::{Ending, Stage, View};
use p3ak_hitl::factors::Factors;
use p3ak_hitl::pin::Pin;
use p3ak_hitl::spool::{self, Spool, SpoolKey};
use p3ak_hitl::wire::ToKernel;
use p3ak_testkit::browser::{self as cdp, Browser};
use serde_json::json;

const PIN: &str = "246813";

/// A service with a PIN set, and its console on a free loopback port.
struct Harness {
    rt: tokio::runtime::Runtime,
    service: Arc<Service>,
    spool: Spool,
    key: SpoolKey,
    /// `http://localhost:PORT`
    origin: String,
    /// `127.0.0.1:PORT`
    address: String,
    login: LoginTokens,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    to_kernel: tokio::sync::mpsc::UnboundedReceiver<ToKernel>,
    _home: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        let home = tempfile::tempdir().unwrap();
        let spool = Spool::new(home.path().join("spool"));
        spool.prepare(&["write".into()], None).unwrap();
        let key = SpoolKey::generate().unwrap();
        let state_key = p3ak_crypto::Key::generate().unwrap();
        let cheap = p3ak_crypto::KdfParams {
            memory_kib: p3ak_crypto::KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        };
        let mut factors =
            Factors::open_with_kdf(&home.path().join("hitl"), &state_key, cheap).unwrap();
        factors
            .set_pin(&Pin::new(PIN.to_owned()).unwrap(), None, now_ms())
            .unwrap();
        let (service, to_kernel) = Service::new(ServiceOptions {
            spool: spool.clone(),
            spool_key: SpoolKey::from_hex(&key.to_hex()).unwrap(),
            factors,
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let settings = ConsoleSettings::from_start("127.0.0.1:0", None).unwrap();
        let console = rt.block_on(console::bind(settings)).unwrap();
        let address = console.local_addr().to_string();
        let origin = console.origin().origin().ascii_serialization();
        assert!(origin.starts_with("http://localhost:"), "{origin}");
        let login = LoginTokens::new(console.origin().clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(
            console.serve(Arc::clone(&service), login.clone(), async move {
                let _ = stopped.await;
            }),
        );
        Harness {
            rt,
            service,
            spool,
            key,
            origin,
            address,
            login,
            stop: Some(stop),
            to_kernel,
            _home: home,
        }
    }

    /// Stages a request the real way (sealed into `staging/write/`) and admits it.
    fn stage(&self, id: &str, level: u8, crawfish_secs: u64) -> View {
        let now = now_ms();
        let request = Request {
            id: id.to_owned(),
            agent: "assistant".to_owned(),
            action: "files.write".to_owned(),
            args: json!({"path": format!("notes/{id}.txt"), "text": "hello <b>world</b> & \"friends\""}),
            level,
            rules: vec![format!("escalate.write.l{level}")],
            category: "write".to_owned(),
            asked_ms: now,
            expires_ms: now + 10 * 60 * 1000,
            crawfish_secs,
            confirm_twice: false,
            reasons: Vec::new(),
        };
        spool::write_staged(&self.spool, "write", id, &self.key.seal(&request).unwrap()).unwrap();
        self.service.admit_staged(id, "write").unwrap()
    }

    fn audit_events(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Ok(message) = self.to_kernel.try_recv() {
            if let ToKernel::Audit { event, .. } = message {
                events.push(event);
            }
        }
        events
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.rt;
    }
}

fn step(name: &str) {
    eprintln!("-- {name}");
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// The page's one-line message, or (when there is none) the whole page, for the failure.
fn flash(browser: &mut Browser) -> String {
    let said = browser
        .eval("(document.getElementById('flash') || {textContent: ''}).textContent")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if said.is_empty() {
        format!(
            "(no message; the page at {} says:)\n{}",
            browser.eval("location.href"),
            browser.text()
        )
    } else {
        said
    }
}

fn still_waiting(browser: &mut Browser, id: &str) -> bool {
    browser.exists(&format!("#item-{id}.waiting"))
}

#[test]
#[ignore = "needs chromium"]
fn console_in_headless_chromium() {
    let chromium = p3ak_testkit::need::chromium();
    let mut h = Harness::start();
    h.stage("tap-l2", 2, 60);
    h.stage("pin-l3", 3, 0);
    h.stage("key-l4", 4, 0);
    h.stage("key-l5", 5, 0);
    let mut b = Browser::launch(&chromium);
    let home = format!("{}/", h.origin);

    step("without a session every page says how to log in");
    b.goto(&home);
    let text = b.text();
    assert!(text.contains("p3ak hitl login"), "{text}");
    assert!(!text.contains("files.write"), "{text}");

    step("the one-time link logs in once, and leaves the address bar");
    let link = h.login.link().unwrap();
    assert!(
        link.starts_with(&format!("{}/login?token=", h.origin)),
        "{link}"
    );
    b.goto(&link);
    b.wait_for("location.pathname === '/'", "the redirect to /");
    assert_eq!(b.eval("location.search"), json!(""));
    let text = b.text();
    assert!(text.contains("Pending approvals"), "{text}");
    b.goto(&link);
    let text = b.text();
    assert!(
        text.contains("Login link not valid"),
        "a second use was accepted: {text}"
    );
    assert!(
        h.audit_events()
            .iter()
            .any(|e| e == "hitl.console.login.refused")
    );

    step("the pending page shows agent, action, arguments, level and rule");
    b.goto(&home);
    let text = b.text();
    for needle in [
        "assistant",
        "files.write",
        "notes/pin-l3.txt",
        r#"hello <b>world</b> & \"friends\""#,
        "escalate.write.l3",
        "L3: your PIN or a TOTP code",
        "L4: a security key",
        "Confirmation 1 of 2",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` missing from the page:\n{text}"
        );
    }
    // Arguments are text, not markup.
    assert_eq!(
        b.eval("document.querySelectorAll('pre.args b').length"),
        json!(0)
    );
    let short = h.service.get("pin-l3").unwrap().binding.short();
    assert!(text.contains(&short), "the binding `{short}` is not shown");

    step("level 2: a tap approves, and the undo window counts down");
    b.click_for_next_page("#item-tap-l2 form.approve button.approve");
    let said = flash(&mut b);
    assert!(said.contains("approved `tap-l2`"), "{said}");
    assert!(b.exists("#item-tap-l2.approved .countdown"));
    assert!(b.exists("#item-tap-l2 form.pullback button"));
    let first = b.eval("document.querySelector('#item-tap-l2 .countdown').textContent");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let later = b.eval("document.querySelector('#item-tap-l2 .countdown').textContent");
    assert_ne!(first, later, "the countdown does not tick");

    step("screenshot of the pending page");
    let shot = target_dir().join("hitl-console-pending.png");
    b.screenshot(&shot);
    println!("screenshot: {}", shot.display());

    step("level 3: a tap is refused, the PIN approves");
    b.click_for_next_page("#item-pin-l3 form.approve button.approve");
    let said = flash(&mut b);
    assert!(
        said.contains("`pin-l3` needs level 3") && said.contains("console tap is level 2"),
        "{said}"
    );
    assert!(still_waiting(&mut b, "pin-l3"));
    b.fill("#item-pin-l3 input[name=pin]", PIN);
    b.click_for_next_page("#item-pin-l3 form.approve button.approve");
    let said = flash(&mut b);
    assert!(said.contains("approved `pin-l3`"), "{said}");
    assert!(!b.exists("#item-pin-l3"));

    step("register a passkey on /keys with the virtual authenticator");
    let authenticator = b.add_virtual_authenticator();
    b.goto(&format!("{}/keys", h.origin));
    assert!(b.text().contains("No key is registered yet"));
    b.fill("#key-name", "virtual key");
    b.click_for_next_page("#register-key");
    let said = flash(&mut b);
    assert!(
        said.contains("needs your PIN"),
        "a key was added without the PIN: {said}"
    );
    b.fill("#key-name", "virtual key");
    b.fill("#key-pin", PIN);
    b.click_for_next_page("#register-key");
    let said = flash(&mut b);
    assert!(said.contains("security key `virtual key` added"), "{said}");
    assert!(b.text().contains("virtual key"));
    assert_eq!(b.virtual_credentials(&authenticator).len(), 1);
    assert!(h.audit_events().iter().any(|e| e == "hitl.passkey.added"));

    step("level 4: a PIN is refused");
    b.goto(&home);
    b.and_wait_for_next_page(&format!(
        "(() => {{
            const box = document.querySelector('#item-key-l4 .webauthn-approve');
            const form = document.createElement('form');
            form.method = 'post';
            form.action = '/approve';
            const add = (name, value) => {{
                const input = document.createElement('input');
                input.type = 'hidden'; input.name = name; input.value = value;
                form.appendChild(input);
            }};
            add('csrf', document.querySelector('meta[name=csrf]').content);
            add('id', box.dataset.id);
            add('binding', box.dataset.binding);
            add('pin', '{PIN}');
            document.body.appendChild(form);
            form.submit();
        }})()"
    ));
    let said = flash(&mut b);
    assert!(
        said.contains("`key-l4` needs level 4") && said.contains("PIN is level 3"),
        "{said}"
    );
    assert!(still_waiting(&mut b, "key-l4"));

    step("level 4: the security key approves");
    b.click_for_next_page("#item-key-l4 button.webauthn");
    let said = flash(&mut b);
    assert!(said.contains("approved `key-l4`"), "{said}");
    assert!(!b.exists("#item-key-l4"));
    let sign_count = b.virtual_credentials(&authenticator)[0]["signCount"]
        .as_u64()
        .unwrap();
    assert!(sign_count >= 1, "the authenticator was not used");

    step("level 5: the key alone is refused");
    b.click_for_next_page("#item-key-l5 button.webauthn");
    let said = flash(&mut b);
    assert!(
        said.contains("`key-l5` needs level 5") && said.contains("WebAuthn is level 4"),
        "{said}"
    );
    assert!(b.text().contains("Confirmation 1 of 2"));

    step("level 5: key + PIN, confirmation 1 of 2 (and its answer cannot be replayed)");
    // Keep a copy of the finish request in sessionStorage (it survives the reload).
    b.eval(
        "(() => {
            const original = window.fetch;
            window.fetch = (url, options) => {
                if (String(url).endsWith('/webauthn/approve/finish')) sessionStorage.setItem('finish', options.body);
                return original(url, options);
            };
        })()",
    );
    b.fill("#item-key-l5 input.webauthn-pin", PIN);
    b.click_for_next_page("#item-key-l5 button.webauthn");
    let said = flash(&mut b);
    assert!(
        said.contains("confirmation 1 of 2 given for `key-l5`"),
        "{said}"
    );
    assert!(b.text().contains("Confirmation 2 of 2"));
    let replay = b.eval(
        "fetch('/webauthn/approve/finish', {method: 'POST', headers: {'content-type': 'application/json',
            'x-csrf-token': document.querySelector('meta[name=csrf]').content}, body: sessionStorage.getItem('finish')})
            .then(r => r.json().then(j => r.status + ' ' + (j.error || 'ok')))",
    );
    let replay = replay.as_str().unwrap();
    assert!(
        replay.starts_with("400 ") && replay.contains("no security key check is in progress"),
        "{replay}"
    );
    b.goto(&home);
    assert!(
        b.text().contains("Confirmation 2 of 2"),
        "the replay changed the item"
    );

    step("level 5: key + PIN again approves, with no undo window");
    b.fill("#item-key-l5 input.webauthn-pin", PIN);
    b.click_for_next_page("#item-key-l5 button.webauthn");
    let said = flash(&mut b);
    assert!(said.contains("approved `key-l5`"), "{said}");
    assert!(!b.exists("#item-key-l5"));

    step("pull back in the undo window moves the action to rejected/");
    assert!(h.spool.outbox().join("tap-l2").exists());
    b.click_for_next_page("#item-tap-l2 form.pullback button.pullback");
    let said = flash(&mut b);
    assert!(said.contains("pulled back `tap-l2`"), "{said}");
    assert!(!b.exists("#item-tap-l2"));
    assert!(h.spool.rejected().join("tap-l2").exists());
    assert!(!h.spool.outbox().join("tap-l2").exists());

    step("history shows every ending with its factors");
    b.goto(&format!("{}/history", h.origin));
    let row = |b: &mut Browser, id: &str| {
        b.eval(&format!(
            "(document.getElementById('history-{id}') || {{innerText: ''}}).innerText"
        ))
        .as_str()
        .unwrap()
        .to_owned()
    };
    let tap = row(&mut b, "tap-l2");
    assert!(
        tap.contains("pulled back") && tap.contains("console tap"),
        "{tap}"
    );
    let pin = row(&mut b, "pin-l3");
    assert!(pin.contains("released") && pin.contains("PIN"), "{pin}");
    let four = row(&mut b, "key-l4");
    assert!(
        four.contains("released") && four.contains("WebAuthn"),
        "{four}"
    );
    let five = row(&mut b, "key-l5");
    assert_eq!(five.matches("WebAuthn + PIN").count(), 2, "{five}");
    let history = h.service.history();
    let ending = |id: &str| {
        history
            .iter()
            .find(|d| d.request.id == id)
            .map(|d| d.ending)
    };
    assert_eq!(ending("tap-l2"), Some(Ending::PulledBack));
    assert_eq!(ending("key-l5"), Some(Ending::Released));
    assert!(h.service.list().is_empty());
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn assert_strict_headers(headers: &[(String, String)], what: &str) {
    let csp = header(headers, "content-security-policy").unwrap_or_default();
    assert_eq!(
        csp,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "{what}"
    );
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        assert_eq!(header(headers, name), Some(value), "{what}: {name}");
    }
    assert!(header(headers, "permissions-policy").is_some(), "{what}");
}

#[test]
fn csrf_origin_host_and_headers_are_enforced() {
    let h = Harness::start();
    let view = h.stage("csrf-l2", 2, 30);
    let host = h.origin.trim_start_matches("http://").to_owned();
    let get = |path: &str, cookie: &str| {
        cdp::http(
            &h.address,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let post = |path: &str, cookie: &str, extra: &str, body: &str| {
        cdp::http(
            &h.address,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };

    // Logged out: a page that says how to log in, with the headers.
    let (status, headers, body) = get("/", "");
    assert_eq!(status, 401);
    assert!(body.contains("p3ak hitl login"));
    assert_strict_headers(&headers, "GET / logged out");

    // Login: a cookie with the right attributes, a redirect to /, and once only.
    let token = h.login.mint().unwrap();
    let (status, headers, _) = get(&format!("/login?token={token}"), "");
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some("/"));
    assert_strict_headers(&headers, "the login redirect");
    let cookie = header(&headers, "set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let (status, _, _) = get(&format!("/login?token={token}"), "");
    assert_eq!(status, 403, "the token worked twice");

    let (status, headers, page) = get("/", &session);
    assert_eq!(status, 200);
    assert_strict_headers(&headers, "GET /");
    assert!(!page.contains("<script>"), "an inline script");
    assert!(!page.contains("style="), "an inline style");
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64);
    for path in ["/static/console.js", "/history", "/keys", "/nowhere"] {
        let (_, headers, _) = get(path, &session);
        assert_strict_headers(&headers, path);
    }

    let form = |csrf: &str| format!("csrf={csrf}&id=csrf-l2&binding={}", view.binding.to_hex());
    // No token, a wrong token: refused, and the item still waits.
    let (status, headers, body) = post(
        "/approve",
        &session,
        "",
        &format!("id=csrf-l2&binding={}", view.binding.to_hex()),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    assert_strict_headers(&headers, "a refused POST");
    let (status, _, _) = post("/approve", &session, "", &form(&"0".repeat(64)));
    assert_eq!(status, 403);
    // The right token from another origin: refused.
    let (status, _, _) = post(
        "/approve",
        &session,
        "Origin: http://evil.example\r\n",
        &form(&csrf),
    );
    assert_eq!(status, 403);
    // No session: refused.
    let (status, _, _) = post("/approve", "", "", &form(&csrf));
    assert_eq!(status, 403);
    assert!(matches!(
        h.service.get("csrf-l2").unwrap().stage,
        Stage::Waiting { confirmed: 0, .. }
    ));
    // A WebAuthn fetch without its header: refused.
    let (status, _, body) = cdp::http(
        &h.address,
        &format!(
            "POST /webauthn/approve/start HTTP/1.1\r\nHost: {host}\r\nCookie: {session}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    );
    assert_eq!(status, 403, "{body}");
    // Another Host (DNS rebinding): refused.
    let (status, _, _) = cdp::http(
        &h.address,
        &format!(
            "GET / HTTP/1.1\r\nHost: attacker.example:80\r\nCookie: {session}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 421);
    // The right token, the console's origin: approved.
    let (status, _, _) = post(
        "/approve",
        &session,
        &format!("Origin: {}\r\n", h.origin),
        &form(&csrf),
    );
    assert_eq!(status, 303);
    assert!(matches!(
        h.service.get("csrf-l2").unwrap().stage,
        Stage::Approved { .. }
    ));
}

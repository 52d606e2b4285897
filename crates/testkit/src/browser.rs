//! A small DevTools-protocol client (feature `browser`): starts headless Chromium with a fresh profile, attaches
//! to one page over the browser's WebSocket (`tungstenite`, JSON by `serde_json`), and offers
//! what the console tests need: navigate, evaluate, wait, click and wait for the next page,
//! the virtual WebAuthn authenticator, screenshots. Chromium is killed on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless Chromium with one attached page.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    events: VecDeque<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens a page.
    pub fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Chromium writes its port and the browser's WebSocket path once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromium did not start; its log: {}",
                std::fs::read_to_string(profile.path().join("chromium.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        let (ws, _) =
            tungstenite::client::client(format!("ws://127.0.0.1:{port}{path}"), stream).unwrap();
        let mut browser = Browser {
            child,
            ws,
            next_id: 0,
            session: String::new(),
            events: VecDeque::new(),
            _profile: profile,
        };
        let target = browser.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).unwrap();
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < CALL_TIMEOUT, "`{method}` got no answer");
            let text = match self.ws.read().unwrap() {
                Message::Text(text) => text,
                _ => continue,
            };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    return Err(error.clone());
                }
                return Ok(value["result"].clone());
            }
            if value.get("method").is_some() {
                self.events.push_back(value);
                if self.events.len() > 1000 {
                    self.events.pop_front();
                }
            }
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
            .unwrap_or_else(|e| panic!("`{method}` failed: {e}"))
    }

    /// A call on the page's session.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
            .unwrap_or_else(|e| panic!("`{method}` failed: {e}"))
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value, or the browser's
    /// error or exception details as it sent them.
    pub fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let session = self.session.clone();
        let result = self.send(
            Some(&session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.clone());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression`; panics on an exception.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("`{expression}` threw: {e}"))
    }

    /// The page's visible text.
    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `expression` is truthy (errors while a page changes count as not yet).
    pub fn wait_for(&mut self, expression: &str, what: &str) {
        let started = Instant::now();
        loop {
            if let Ok(value) = self.try_eval(expression)
                && value.as_bool() == Some(true)
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let text = self
                    .try_eval("document.body ? document.body.innerText : ''")
                    .unwrap_or_default();
                panic!("timed out waiting for {what} (`{expression}`); the page says:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Navigates and waits for the page to load.
    pub fn goto(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        assert!(
            result.get("errorText").is_none(),
            "cannot open {url}: {result}"
        );
        self.wait_for("document.readyState === 'complete'", "the page to load");
    }

    /// Runs `script` (which makes the page go somewhere: a click, a submit) and waits until
    /// the next page has loaded.
    pub fn and_wait_for_next_page(&mut self, script: &str) {
        self.eval(&format!("window.__p3akOld = true; {script}; true"));
        self.wait_for(
            "window.__p3akOld === undefined && document.readyState === 'complete'",
            "the next page",
        );
    }

    /// Clicks the element `selector` finds and waits for the next page.
    pub fn click_for_next_page(&mut self, selector: &str) {
        let selector = serde_json::to_string(selector).unwrap();
        self.and_wait_for_next_page(&format!(
            "(() => {{ const el = document.querySelector({selector}); if (!el) throw new Error('no ' + {selector}); el.click(); }})()"
        ));
    }

    /// Sets an input's value.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let (selector, value) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        self.eval(&format!(
            "(() => {{ const el = document.querySelector({selector}); if (!el) throw new Error('no ' + {selector}); el.value = {value}; }})()"
        ));
    }

    /// Whether `selector` finds something.
    pub fn exists(&mut self, selector: &str) -> bool {
        let selector = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({selector}) !== null"))
            .as_bool()
            .unwrap_or(false)
    }

    /// Chrome's virtual authenticator: CTAP2, internal (platform), resident keys, user
    /// verification that always succeeds, presence simulated.
    pub fn add_virtual_authenticator(&mut self) -> String {
        self.call("WebAuthn.enable", json!({"enableUI": false}));
        let added = self.call(
            "WebAuthn.addVirtualAuthenticator",
            json!({"options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "automaticPresenceSimulation": true,
            }}),
        );
        added["authenticatorId"].as_str().unwrap().to_owned()
    }

    /// The credentials the virtual authenticator holds.
    pub fn virtual_credentials(&mut self, authenticator: &str) -> Vec<Value> {
        let got = self.call(
            "WebAuthn.getCredentials",
            json!({"authenticatorId": authenticator}),
        );
        got["credentials"].as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.send(None, "Browser.close", json!({}));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange over a fresh connection, for what a browser would not send.
pub fn http(address: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let mut reader = BufReader::new(raw.as_slice());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    (status, headers, body)
}

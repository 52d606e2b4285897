//! `web` against small HTTP servers on 127.0.0.1 (pages, redirects, and fakes of SearXNG's
//! and Brave's documented JSON).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p3ak_proto::{ErrorKind, Tier};
use serde_json::{Value, json};

use crate::kernel::{Kernel, start, start_with_key};

/// A request as the site saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A site on a fresh loopback port; `answer` is called for each request.
struct Site {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Site {
    fn start(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                let answer = Arc::clone(&answer);
                std::thread::spawn(move || serve(stream, &log, &*answer));
            }
        });
        Self { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<Seen>>, answer: &dyn Fn(&Seen) -> Answer) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let seen = loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = request.parse(&buffer) {
            break Seen {
                method: request.method.unwrap_or_default().to_owned(),
                path: request.path.unwrap_or_default().to_owned(),
                headers: request
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
        }
    };
    log.lock().unwrap().push(seen.clone());
    let (status, headers, body) = answer(&seen);
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn html(body: &str) -> Answer {
    (
        200,
        vec![("content-type", "text/html; charset=utf-8".to_owned())],
        body.as_bytes().to_vec(),
    )
}

const PAGE: &str = "<!doctype html><html><head><title>Tide tables</title>\
    <script>stealCookies()</script><style>p{color:red}</style></head><body>\
    <nav><a href='/'>Home</a> | <a href='/x'>Menu</a></nav>\
    <h1>Tides in Brest</h1><p>High tide at <b>06:12</b>, low tide at 12:30.</p>\
    <ul><li>Monday: calm</li><li>Tuesday: windy</li></ul></body></html>";

fn pages() -> Site {
    Site::start(|seen| match seen.path.as_str() {
        "/page" => html(PAGE),
        "/big" => (
            200,
            vec![("content-type", "text/plain".to_owned())],
            vec![b'z'; 5000],
        ),
        "/json" => (
            200,
            vec![("content-type", "application/json".to_owned())],
            br#"{"tide": "high"}"#.to_vec(),
        ),
        "/image" => (
            200,
            vec![("content-type", "image/png".to_owned())],
            b"\x89PNG\r\n\x1a\nsecret-pixels".to_vec(),
        ),
        "/old" => (301, vec![("location", "/hop".to_owned())], Vec::new()),
        "/hop" => (302, vec![("location", "/page".to_owned())], Vec::new()),
        "/loop" => (302, vec![("location", "/loop".to_owned())], Vec::new()),
        "/away" => (
            302,
            vec![("location", "http://elsewhere.invalid/landing".to_owned())],
            Vec::new(),
        ),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            html("<p>late</p>")
        }
        _ => (404, Vec::new(), b"not found".to_vec()),
    })
}

fn fetch(kernel: &mut Kernel, url: &str) -> Value {
    kernel.ok("a", "fetch", json!({ "url": url }))
}

#[test]
fn an_html_page_becomes_readable_text() {
    let site = pages();
    let mut kernel = start("web", json!({}));
    let actions: Vec<_> = kernel
        .register
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.tier))
        .collect();
    assert_eq!(
        actions,
        [("fetch", Tier::Observe), ("search", Tier::Observe)]
    );
    let out = fetch(&mut kernel, &site.url("/page"));
    assert_eq!(out["status"], 200);
    assert_eq!(out["title"], "Tide tables");
    assert_eq!(out["truncated"], false);
    let text = out["text"].as_str().unwrap();
    assert!(text.contains("# Tides in Brest"), "{text}");
    assert!(
        text.contains("High tide at 06:12, low tide at 12:30."),
        "{text}"
    );
    assert!(text.contains("Tuesday: windy"), "{text}");
    for hidden in ["stealCookies", "color:red", "<b>", "Menu"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    let out = fetch(&mut kernel, &site.url("/json"));
    assert_eq!(out["text"], r#"{"tide": "high"}"#);
    let out = fetch(&mut kernel, &site.url("/image"));
    let text = out["text"].as_str().unwrap();
    assert!(
        text.contains("image/png") && text.contains("21 bytes"),
        "{text}"
    );
    assert!(!text.contains("secret-pixels"));
    let out = fetch(&mut kernel, &site.url("/missing"));
    assert_eq!(out["status"], 404);
    kernel.shutdown();
}

#[test]
fn pages_are_capped_and_slow_servers_time_out() {
    let site = pages();
    let mut kernel = start("web", json!({"max_body": 1000, "timeout_secs": 1}));
    let out = fetch(&mut kernel, &site.url("/big"));
    assert_eq!(out["text"].as_str().unwrap().len(), 1000);
    assert_eq!(out["truncated"], true);
    let started = std::time::Instant::now();
    let e = kernel
        .invoke("a", "fetch", json!({"url": site.url("/slow")}))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    assert!(e.message.contains("1 s"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    kernel.shutdown();
}

#[test]
fn redirects_stay_on_the_checked_site() {
    let site = pages();
    let other = pages();
    let mut kernel = start("web", json!({}));
    // Same scheme, host and port: followed.
    let out = fetch(&mut kernel, &site.url("/old"));
    assert_eq!(out["status"], 200);
    assert_eq!(out["url"], site.url("/page"));
    assert_eq!(out["title"], "Tide tables");
    // Another host: returned, not fetched.
    let out = fetch(&mut kernel, &site.url("/away"));
    assert_eq!(out["status"], 302);
    assert_eq!(out["redirect"], "http://elsewhere.invalid/landing");
    // Another port of the same host is another site too.
    let cross = Site::start({
        let target = other.url("/page");
        move |_| (302, vec![("location", target.clone())], Vec::new())
    });
    let out = fetch(&mut kernel, &cross.url("/"));
    assert_eq!(out["redirect"], other.url("/page"));
    assert!(
        other.seen().is_empty(),
        "the cross-site redirect was followed"
    );
    // A loop stops after five hops.
    let before = site.seen().len();
    let out = fetch(&mut kernel, &site.url("/loop"));
    assert_eq!(out["status"], 302);
    assert_eq!(site.seen().len() - before, 6);
    kernel.shutdown();
}

#[test]
fn only_get_of_http_urls() {
    let site = pages();
    let mut kernel = start("web", json!({}));
    for (args, expected) in [
        (json!({"url": "file:///etc/passwd"}), "only http and https"),
        (json!({"url": "ftp://127.0.0.1/"}), "only http and https"),
        (json!({"url": "not a url"}), "invalid url"),
        (
            json!({"url": site.url("/page"), "method": "POST"}),
            "method",
        ),
        (json!({"url": site.url("/page"), "body": "x"}), "body"),
        (json!({}), "url"),
    ] {
        let message = kernel.invalid("a", "fetch", args.clone());
        assert!(message.contains(expected), "{args}: {message}");
        assert!(!message.contains("passwd"), "{message}");
    }
    assert!(site.seen().is_empty());
    fetch(&mut kernel, &site.url("/page"));
    assert!(site.seen().iter().all(|s| s.method == "GET"));
    let e = kernel
        .invoke("a", "search", json!({"query": "tides"}))
        .unwrap_err();
    assert!(e.message.contains("no search engine"), "{e:?}");
    kernel.shutdown();
}

#[test]
fn search_through_searxng() {
    // SearXNG's documented JSON (`format=json`): `results[].title/url/content`.
    let engine = Site::start(|_| {
        let body = json!({
            "query": "tides brest",
            "number_of_results": 3,
            "results": [
                {"title": "Tides <b>Brest</b>", "url": "https://tides.example/brest",
                 "content": "High &amp; low <em>tides</em> today", "engine": "duckduckgo"},
                {"title": "Bad", "url": "javascript:alert(1)", "content": "x"},
                {"title": "Port", "url": "https://port.example/", "content": "Harbour news"},
                {"title": "Third", "url": "https://third.example/", "content": "more"},
            ],
            "answers": [], "suggestions": [],
        });
        (
            200,
            vec![("content-type", "application/json".to_owned())],
            body.to_string().into_bytes(),
        )
    });
    let mut kernel = start(
        "web",
        json!({"search": {"engine": "searxng", "url": engine.url("/searx")}}),
    );
    let out = kernel.ok("a", "search", json!({"query": "tides brest", "limit": 2}));
    assert_eq!(
        out,
        json!({"results": [
            {"title": "Tides Brest", "url": "https://tides.example/brest", "snippet": "High & low tides today"},
            {"title": "Port", "url": "https://port.example/", "snippet": "Harbour news"},
        ]})
    );
    let seen = &engine.seen()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/searx/search?q=tides+brest&format=json");
    let message = kernel.invalid("a", "search", json!({"query": " "}));
    assert!(message.contains("empty"), "{message}");
    kernel.shutdown();
}

#[test]
fn search_through_brave_keeps_the_key_in_the_header() {
    const KEY: &str = "BSA-very-secret-key";
    // Brave Search API's documented JSON: `web.results[].title/url/description`.
    let engine = Site::start(|seen| {
        if seen.header("x-subscription-token") != Some(KEY) {
            return (
                401,
                vec![("content-type", "application/json".to_owned())],
                br#"{"type":"ErrorResponse","error":{"code":"SUBSCRIPTION_TOKEN_INVALID","status":401}}"#.to_vec(),
            );
        }
        let body = json!({
            "type": "search",
            "query": {"original": "tides"},
            "web": {"type": "search", "results": [
                {"title": "Tide <strong>tables</strong>", "url": "https://tides.example/",
                 "description": "The <strong>tides</strong> for every port", "language": "en"},
            ]},
        });
        (
            200,
            vec![("content-type", "application/json".to_owned())],
            body.to_string().into_bytes(),
        )
    });
    let config = json!({"search": {"engine": "brave", "url": engine.url("/res/v1/web/search")}});
    let mut kernel = start_with_key("web", config.clone(), KEY);
    let out = kernel.ok("a", "search", json!({"query": "tides"}));
    assert_eq!(
        out,
        json!({"results": [{"title": "Tide tables", "url": "https://tides.example/",
                            "snippet": "The tides for every port"}]})
    );
    let seen = &engine.seen()[0];
    assert_eq!(seen.header("x-subscription-token"), Some(KEY));
    assert!(
        seen.path.starts_with("/res/v1/web/search?q=tides&count="),
        "{}",
        seen.path
    );
    assert!(!seen.path.contains(KEY));
    assert!(!out.to_string().contains(KEY));
    kernel.shutdown();

    let mut kernel = start_with_key("web", config, "a-wrong-key");
    let e = kernel
        .invoke("a", "search", json!({"query": "tides"}))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e:?}");
    assert!(!e.message.contains("a-wrong-key"), "{e:?}");
    kernel.shutdown();
}

#[test]
fn configs_that_cannot_work_are_refused() {
    for (config, expected) in [
        (json!({"search": {"engine": "brave"}}), "API key"),
        (json!({"search": {"engine": "google"}}), "searxng"),
        (json!({"search": {"engine": "searxng"}}), "search.url"),
        (json!({"max_body": 0}), "max_body"),
    ] {
        let (sent, _) =
            crate::kernel::start_failing("web", config.clone(), p3ak_plugins::Launch::new("web"));
        assert!(sent.message.contains(expected), "{config}: {sent:?}");
    }
    for (config, expected) in [
        (
            json!({"url": "http://dav.example.com/", "user": "me"}),
            "https",
        ),
        (json!({"url": "https://dav.example.com/"}), "user"),
        (
            json!({"url": "https://dav.example.com/", "user": "me"}),
            "password",
        ),
    ] {
        let (sent, _) = crate::kernel::start_failing(
            "calendar",
            config.clone(),
            p3ak_plugins::Launch::new("calendar"),
        );
        assert!(sent.message.contains(expected), "{config}: {sent:?}");
    }
}

//! Load test of the REST API: a real kernel (`p3ak up`) with the vault plugin and a scripted
//! (fake) model, and N concurrent clients over loopback TCP with bearer tokens mixing search,
//! document lists and reads, note writes and chats for a while. Prints p50/p99 per endpoint,
//! every status seen (anything but 2xx and the intended 429s is an error), and the kernel's
//! resident memory over time.
//!
//! `cargo bench -p p3ak --bench api_load` — 100 clients for 600 s by default;
//! `P3AK_LOAD_CLIENTS=20 P3AK_LOAD_SECS=60 cargo bench -p p3ak --bench api_load` for a short run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    reason = "a benchmark: a failed step should stop it loudly"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    /// Latencies in µs by endpoint.
    latency: BTreeMap<&'static str, Vec<u64>>,
    /// Counts by (endpoint, status).
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// Transport failures.
    broken: u64,
}

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn client(
    addr: SocketAddr,
    token: String,
    until: Instant,
    seed: u64,
    tally: Arc<Mutex<Tally>>,
    ids: Arc<Mutex<Vec<String>>>,
) {
    let mut sender = None;
    let mut n: u64 = seed;
    while Instant::now() < until {
        n = n
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pick = (n >> 33) % 100;
        let known = ids.lock().unwrap().last().cloned();
        let query = [
            "lease renewal",
            "invoice March",
            "meeting notes",
            "passport",
        ][(n % 4) as usize];
        let (name, method, path, body): (&'static str, &str, String, Option<Value>) = match pick {
            0..=49 => (
                "search",
                "POST",
                "/v1/search".to_owned(),
                Some(json!({"query": query, "k": 5})),
            ),
            50..=64 => ("list", "GET", "/v1/documents?limit=20".to_owned(), None),
            65..=79 => match known {
                Some(id) => ("read", "GET", format!("/v1/documents/{id}"), None),
                None => ("list", "GET", "/v1/documents?limit=20".to_owned(), None),
            },
            80..=91 => (
                "write",
                "POST",
                "/v1/documents".to_owned(),
                Some(
                    json!({"title": format!("note {n}"), "content": format!("Load test note {n}: the lease renewal is due in March; call the landlord.")}),
                ),
            ),
            _ => (
                "chat",
                "POST",
                "/v1/chat".to_owned(),
                Some(
                    json!({"text": "what is due in March?", "conversation": format!("load-{seed}")}),
                ),
            ),
        };
        if sender.is_none() {
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                tally.lock().unwrap().broken += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let started = Instant::now();
        let answer = match s.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.into_body().collect().await.map(|b| b.to_bytes());
                bytes.ok().map(|b| (status, b))
            }
            Err(_) => None,
        };
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (pause, reconnect) = {
            let mut t = tally.lock().unwrap();
            match answer {
                Some((status, bytes)) => {
                    t.latency.entry(name).or_default().push(elapsed);
                    *t.statuses.entry((name, status)).or_default() += 1;
                    if name == "write"
                        && status == 201
                        && let Some(id) = serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned))
                    {
                        let mut ids = ids.lock().unwrap();
                        ids.push(id);
                        if ids.len() > 1000 {
                            ids.remove(0);
                        }
                    }
                    (status == 429, false)
                }
                None => {
                    t.broken += 1;
                    (false, true)
                }
            }
        };
        if reconnect {
            sender = None;
        }
        if pause {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn main() {
    let clients = env_or("P3AK_LOAD_CLIENTS", 100);
    let secs = env_or("P3AK_LOAD_SECS", 600);
    let home = Home::init("api load passphrase");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    // The policy `p3ak init` writes: the API's own vault writes run without asking.
    home.write_scripted(p3ak_kernel::home::DEFAULT_POLICY, &json!({"responses": []}));
    // The owner's own load: limits well above it, so 429s are the exception they would be.
    let config = format!(
        "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 512\n\
         [api.rates]\n\"vault:read\" = {{ per_minute = 60000, burst = 2000 }}\n\
         \"vault:write\" = {{ per_minute = 12000, burst = 500 }}\n\
         chat = {{ per_minute = 6000, burst = 200 }}\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\nconfig = {{ script = \"script.json\" }}\n\n\
         [plugins.vault]\nbuiltin = \"vault\"\n",
        sandbox_setting(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let out: Value = serde_json::from_str(&kernel.ok(&[
        "tokens",
        "create",
        "--name",
        "load",
        "--scope",
        "vault:read,vault:write,chat,status",
        "--json",
    ]))
    .unwrap();
    let token = out["token"].as_str().unwrap().to_owned();
    let pid = kernel.status()["pid"].as_u64().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    println!("api load: {clients} clients for {secs} s against kernel pid {pid}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut rss = vec![(0u64, rss_kib(pid))];
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for seed in 0..clients {
            tasks.push(tokio::spawn(client(
                addr,
                token.clone(),
                until,
                seed + 1,
                Arc::clone(&tally),
                Arc::clone(&ids),
            )));
        }
        let step = Duration::from_secs((secs / 10).max(1));
        while Instant::now() < until {
            tokio::time::sleep(step).await;
            rss.push((started.elapsed().as_secs(), rss_kib(pid)));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    let t = tally.lock().unwrap();
    let total: u64 = t.statuses.values().sum();
    println!(
        "{total} requests in {:.0} s: {:.0}/s; broken connections {}",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64(),
        t.broken
    );
    println!("| endpoint | requests | p50 ms | p99 ms | statuses |");
    println!("|---|---:|---:|---:|---|");
    for (name, latencies) in &t.latency {
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let statuses: Vec<String> = t
            .statuses
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, s), c)| format!("{s}×{c}"))
            .collect();
        println!(
            "| {name} | {} | {:.2} | {:.2} | {} |",
            sorted.len(),
            percentile(&sorted, 0.50) as f64 / 1000.0,
            percentile(&sorted, 0.99) as f64 / 1000.0,
            statuses.join(" ")
        );
    }
    let errors: u64 = t
        .statuses
        .iter()
        .filter(|((_, s), _)| !(200..300).contains(s) && *s != 429)
        .map(|(_, c)| c)
        .sum();
    println!("errors (not 2xx, not 429): {errors}");
    println!(
        "kernel RSS (s: MiB): {}",
        rss.iter()
            .map(|(s, k)| format!("{s}: {:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(t);
    let metrics = runtime.block_on(fetch_metrics(addr, &token));
    println!("road, mean per call by step (the kernel's p3ak_road_step_seconds):");
    for step in ["decide", "commit", "approval_wait", "tool", "total"] {
        let sum = metric(&metrics, "p3ak_road_step_seconds_sum", step);
        let count = metric(&metrics, "p3ak_road_step_seconds_count", step);
        if count > 0.0 {
            println!("  {step}: {:.2} ms over {count:.0}", sum / count * 1000.0);
        }
    }
    kernel.kill();
}

/// The kernel's metrics, as `GET /metrics` answers them.
async fn fetch_metrics(addr: SocketAddr, token: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .uri("/metrics")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = s.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of `name{step="<step>"}` in an OpenMetrics text, 0 when absent.
fn metric(text: &str, name: &str, step: &str) -> f64 {
    let label = format!("step=\"{step}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

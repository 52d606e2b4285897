//! End-to-end tests of the REST API (`p3ak-server`) inside a real kernel (`p3ak up`): who may
//! call (the socket's peer uid, bearer tokens, scopes, expiry, revocation), rate limits, limits
//! on bad input, the audit routes, and every answer checked against `docs/openapi.json`.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use p3ak_testkit::api::{
    Call, Target, conforms, free_port, openapi, send, socket, token, wait_for_socket,
};
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};
use serde_json::{Value, json};

const PASS: &str = "api test passphrase";

/// A kernel with its API on the socket and on a loopback port; `extra` is more `[api]` lines.
fn api_kernel(extra: &str) -> (Kernel, Target, Target) {
    kernel_with(extra, "")
}

/// The same with more config (`plugins`).
fn kernel_with(extra: &str, plugins: &str) -> (Kernel, Target, Target) {
    let home = Home::init(PASS);
    let port = free_port();
    let config = format!(
        "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n{plugins}",
        sandbox_setting(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let unix = socket(&kernel.home());
    let tcp = Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    wait_for_socket(&unix, &kernel);
    (kernel, unix, tcp)
}

#[test]
fn health_needs_no_caller_and_an_operator_on_the_socket_has_every_scope() {
    let (kernel, unix, tcp) = api_kernel("");
    let doc = openapi();
    let health = send(&tcp, Call::get("/healthz"));
    assert_eq!(health.status, 200);
    conforms(&doc, "get", "/healthz", &health);
    let ready = send(&unix, Call::get("/readyz"));
    conforms(&doc, "get", "/readyz", &ready);

    let status = send(&unix, Call::get("/v1/status"));
    assert_eq!(status.status, 200, "{}", status.text());
    conforms(&doc, "get", "/v1/status", &status);
    let pid = kernel.status()["pid"].clone();
    assert_eq!(status.json()["pid"], pid);

    // The same over TCP needs a token.
    let refused = send(&tcp, Call::get("/v1/status"));
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"p3ak\"")
    );
    conforms(&doc, "get", "/v1/status", &refused);

    let approvals = send(&unix, Call::get("/v1/approvals"));
    assert_eq!(approvals.status, 200);
    conforms(&doc, "get", "/v1/approvals", &approvals);
    let vaults = send(&unix, Call::get("/v1/vaults"));
    assert_eq!(vaults.status, 200);
    conforms(&doc, "get", "/v1/vaults", &vaults);
    assert!(
        vaults
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "kernel")
    );
    assert_eq!(send(&unix, Call::get("/v1/vaults/nope")).status, 404);

    let served = send(&tcp, Call::get("/openapi.json"));
    assert_eq!(
        served.json(),
        doc,
        "the served document is the checked-in one"
    );
}

#[test]
fn a_token_is_limited_to_its_scopes_until_it_expires_or_is_revoked() {
    let (kernel, _unix, tcp) = api_kernel("");
    let doc = openapi();
    let reader = token(&kernel, "vault:read,audit:read", &[]);

    let forbidden = send(&tcp, Call::get("/v1/status").bearer(&reader));
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden.text().contains("`status` scope"),
        "{}",
        forbidden.text()
    );
    conforms(&doc, "get", "/v1/status", &forbidden);

    let audit = send(&tcp, Call::get("/v1/audit?limit=5").bearer(&reader));
    assert_eq!(audit.status, 200, "{}", audit.text());
    conforms(&doc, "get", "/v1/audit", &audit);

    let wrong = format!("{}x", &reader[..reader.len() - 1]);
    let bad = send(&tcp, Call::get("/v1/audit").bearer(&wrong));
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["message"], "the token is not valid");

    let short = token(&kernel, "status", &["--expires", "1s"]);
    assert_eq!(
        send(&tcp, Call::get("/v1/status").bearer(&short)).status,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));
    let expired = send(&tcp, Call::get("/v1/status").bearer(&short));
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json()["message"], "the token has expired");

    let list: Value = serde_json::from_str(&kernel.ok(&["tokens", "list", "--json"])).unwrap();
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scopes"] == json!(["audit:read", "vault:read"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    kernel.ok(&["tokens", "revoke", &id]);
    assert_eq!(
        send(&tcp, Call::get("/v1/audit").bearer(&reader)).status,
        401
    );

    // Refusals are audited; the secrets never are.
    let audit = kernel.audit();
    let text = serde_json::to_string(&audit).unwrap();
    for secret in [&reader, &short] {
        let tail = secret.rsplit_once('_').unwrap().1;
        assert!(!text.contains(tail), "a token's secret is in the audit log");
    }
    let kinds: Vec<&str> = audit.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"token.created") && kinds.contains(&"token.revoked"));
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "api.refused"
                && e["payload"]["reason"] == "missing scope `status`"),
        "{kinds:?}"
    );
}

#[test]
fn a_token_can_make_tokens_only_within_its_own_scopes() {
    let (kernel, _unix, tcp) = api_kernel("");
    let doc = openapi();
    let admin = token(&kernel, "tokens,status", &[]);
    let wider = send(
        &tcp,
        Call::post(
            "/v1/tokens",
            &json!({"name": "x", "scopes": ["vault:write"]}),
        )
        .bearer(&admin),
    );
    assert_eq!(wider.status, 403, "{}", wider.text());
    let made = send(
        &tcp,
        Call::post(
            "/v1/tokens",
            &json!({"name": "dash", "scopes": ["status"], "expires_in": 3600}),
        )
        .bearer(&admin),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    conforms(&doc, "post", "/v1/tokens", &made);
    let new = made.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&new)).status, 200);
    let listed = send(&tcp, Call::get("/v1/tokens").bearer(&admin));
    conforms(&doc, "get", "/v1/tokens", &listed);
    assert!(!listed.text().contains(new.rsplit_once('_').unwrap().1));
    let id = made.json()["info"]["id"].as_str().unwrap().to_owned();
    let revoked = send(
        &tcp,
        Call::delete(&format!("/v1/tokens/{id}")).bearer(&admin),
    );
    assert_eq!(revoked.status, 204);
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&new)).status, 401);
    let again = send(
        &tcp,
        Call::delete(&format!("/v1/tokens/{id}")).bearer(&admin),
    );
    assert_eq!(again.status, 404);
    conforms(&doc, "delete", "/v1/tokens/{id}", &again);
}

#[test]
fn a_caller_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let (kernel, unix, tcp) = api_kernel("[api.rates]\nstatus = { per_minute = 6, burst = 2 }\n");
    let doc = openapi();
    let one = token(&kernel, "status", &[]);
    let two = token(&kernel, "status", &[]);
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&one)).status, 200);
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&one)).status, 200);
    let limited = send(&tcp, Call::get("/v1/status").bearer(&one));
    assert_eq!(limited.status, 429);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    conforms(&doc, "get", "/v1/status", &limited);
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&one)).status, 429);
    assert_eq!(send(&tcp, Call::get("/v1/status").bearer(&two)).status, 200);
    assert_eq!(send(&unix, Call::get("/v1/status")).status, 200);
    // Counted every time in the metrics, by route template and status.
    let metrics = send(&unix, Call::get("/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    assert!(
        text.contains("p3ak_rate_limited_total{scope=\"status\"} 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("p3ak_http_requests_total{")
                && l.contains("route=\"/v1/status\"")
                && l.contains("status=\"429\"")
                && l.ends_with(" 2")),
        "{text}"
    );
    // Audited once, not once per refused request.
    let hits = kernel
        .audit()
        .iter()
        .filter(|e| e["kind"] == "api.rate_limited")
        .count();
    assert_eq!(hits, 1);
}

#[test]
fn bad_requests_get_one_clear_json_error_and_change_nothing() {
    let (kernel, unix, _tcp) = api_kernel("max_body_bytes = 2048\n");
    let doc = openapi();
    let before = kernel.audit().len();
    let cases: Vec<(Call<'_>, u16, &str, &str, &str)> = vec![
        (
            Call::post_raw("/v1/search", "application/json", b"{\"query\": ".to_vec()),
            400,
            "post",
            "/v1/search",
            "EOF",
        ),
        (
            Call::post_raw("/v1/search", "text/plain", b"{\"query\": \"x\"}".to_vec()),
            415,
            "post",
            "/v1/search",
            "Content-Type: application/json",
        ),
        (
            Call::post("/v1/search", &json!({"query": "x", "colour": "red"})),
            400,
            "post",
            "/v1/search",
            "unknown field `colour`",
        ),
        (
            Call::post("/v1/search", &json!({"query": "x".repeat(4000)})),
            413,
            "post",
            "/v1/search",
            "api.max_body_bytes",
        ),
        (
            Call::post("/v1/search", &json!({"query": "x", "k": 0})),
            400,
            "post",
            "/v1/search",
            "`k`",
        ),
        (
            Call::post("/v1/documents", &json!({"title": "t"})),
            400,
            "post",
            "/v1/documents",
            "missing field `content`",
        ),
        (
            Call::get("/v1/documents/..%2F..%2Fetc%2Fpasswd"),
            400,
            "get",
            "/v1/documents/{id}",
            "is not a document id",
        ),
        (
            Call::delete("/v1/documents/abc"),
            400,
            "delete",
            "/v1/documents/{id}",
            "is not a document id",
        ),
        (
            Call::get("/v1/documents?limit=9999"),
            400,
            "get",
            "/v1/documents",
            "`limit`",
        ),
        (
            Call::post_raw("/v1/documents/ingest", "application/json", b"{}".to_vec()),
            415,
            "post",
            "/v1/documents/ingest",
            "multipart/form-data",
        ),
        (
            Call::get("/v1/audit/notanumber/proof"),
            400,
            "get",
            "/v1/audit/{seq}/proof",
            "whole number",
        ),
        (
            Call::get("/v1/audit?limit=0"),
            400,
            "get",
            "/v1/audit",
            "`limit`",
        ),
    ];
    for (call, status, method, path, says) in cases {
        let shown = format!("{} {}", call.method, call.path);
        let answer = send(&unix, call);
        assert_eq!(answer.status, status, "{shown}: {}", answer.text());
        let body = answer.json();
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{shown}: {body}"
        );
        assert!(!body["message"].as_str().unwrap().contains('\n'));
        conforms(&doc, method, path, &answer);
    }
    let unknown = send(&unix, Call::get("/v2/nothing"));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "not_found");
    // Nothing reached the road: no proposal was made.
    let after = kernel.audit();
    assert!(
        after[before..].iter().all(|e| e["kind"] != "proposal"),
        "a bad request reached the road"
    );
}

#[test]
fn the_audit_routes_list_verify_and_prove_entries() {
    let (kernel, unix, _tcp) = api_kernel("");
    let doc = openapi();
    let page = send(&unix, Call::get("/v1/audit?from=0&limit=3"));
    assert_eq!(page.status, 200);
    conforms(&doc, "get", "/v1/audit", &page);
    let page = page.json();
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    assert_eq!(page["entries"][0]["seq"], 0);
    let len = page["len"].as_u64().unwrap();
    assert!(len >= 3);
    let tail = send(&unix, Call::get("/v1/audit?limit=2")).json();
    assert_eq!(tail["entries"][1]["seq"], tail["len"].as_u64().unwrap() - 1);

    let verified = send(&unix, Call::get("/v1/audit/verify"));
    assert_eq!(verified.status, 200);
    conforms(&doc, "get", "/v1/audit/verify", &verified);
    assert_eq!(verified.json()["ok"], true, "{}", verified.text());

    let proof = send(&unix, Call::get("/v1/audit/0/proof"));
    assert_eq!(proof.status, 200, "{}", proof.text());
    conforms(&doc, "get", "/v1/audit/{seq}/proof", &proof);
    let cli: Value = serde_json::from_str(&kernel.ok(&["audit", "prove", "0", "--json"])).unwrap();
    assert_eq!(proof.json()["leaf_hash"], cli["leaf_hash"]);
    let missing = send(&unix, Call::get("/v1/audit/99999999/proof"));
    assert_eq!(missing.status, 404);
    conforms(&doc, "get", "/v1/audit/{seq}/proof", &missing);
}

/// A multipart body with one file part and tags.
fn multipart(name: &str, media_type: &str, data: &[u8], tags: &Value) -> (String, Vec<u8>) {
    let boundary = "p3akTESTboundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {media_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\n{tags}\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn the_vault_through_the_api_takes_the_road_and_the_policy_decides() {
    let (kernel, unix, tcp) = kernel_with("", "[plugins.vault]\nbuiltin = \"vault\"\n");
    let doc = openapi();
    let note = json!({"title": "Lease", "content": "The lease renewal is due on 1 March; call Anna about the deposit.", "tags": {"project": "home"}});
    let stored = send(&unix, Call::post("/v1/documents", &note));
    assert_eq!(stored.status, 201, "{}\n{}", stored.text(), kernel.log());
    conforms(&doc, "post", "/v1/documents", &stored);
    let id = stored.json()["id"].as_str().unwrap().to_owned();

    let listed = send(&unix, Call::get("/v1/documents?limit=10"));
    assert_eq!(listed.status, 200, "{}", listed.text());
    conforms(&doc, "get", "/v1/documents", &listed);
    assert!(listed.text().contains(&id));

    let read = send(&unix, Call::get(&format!("/v1/documents/{id}")));
    assert_eq!(read.status, 200, "{}", read.text());
    conforms(&doc, "get", "/v1/documents/{id}", &read);
    assert!(
        read.json()["content"]
            .as_str()
            .unwrap()
            .contains("call Anna")
    );

    let (content_type, body) = multipart(
        "minutes.html",
        "text/html",
        b"<html><body><h1>Minutes</h1><p>The boiler inspection moves to Thursday.</p></body></html>",
        &json!({"project": "home"}),
    );
    let ingested = send(
        &unix,
        Call::post_raw("/v1/documents/ingest", &content_type, body),
    );
    assert_eq!(ingested.status, 201, "{}", ingested.text());
    conforms(&doc, "post", "/v1/documents/ingest", &ingested);

    for (query, wanted) in [
        ("lease renewal deposit", &id),
        (
            "boiler inspection",
            &ingested.json()["id"].as_str().unwrap().to_owned(),
        ),
    ] {
        let found = send(
            &unix,
            Call::post(
                "/v1/search",
                &json!({"query": query, "explain": true, "tags": {"project": "home"}}),
            ),
        );
        assert_eq!(found.status, 200, "{}", found.text());
        conforms(&doc, "post", "/v1/search", &found);
        let hits = found.json()["hits"].as_array().unwrap().clone();
        assert_eq!(
            hits[0]["id"].as_str().unwrap(),
            wanted.as_str(),
            "{query}: {hits:?}"
        );
        assert!(hits[0]["signals"].is_array());
    }
    let none = send(
        &unix,
        Call::post(
            "/v1/search",
            &json!({"query": "lease", "tags": {"project": "work"}}),
        ),
    );
    assert!(none.json()["hits"].as_array().unwrap().is_empty());

    // A token with vault:read only cannot write.
    let reader = token(&kernel, "vault:read", &[]);
    let refused = send(&tcp, Call::post("/v1/documents", &note).bearer(&reader));
    assert_eq!(refused.status, 403);

    // Delete is level 1 in the default policy: it waits for the owner.
    let waiting = send(&unix, Call::delete(&format!("/v1/documents/{id}")));
    assert_eq!(waiting.status, 202, "{}", waiting.text());
    conforms(&doc, "delete", "/v1/documents/{id}", &waiting);
    let approval = waiting.json()["approval"].as_str().unwrap().to_owned();
    let pending = send(&unix, Call::get("/v1/approvals")).json();
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == approval.as_str() && a["action"] == "vault.delete")
    );
    assert_eq!(
        send(&unix, Call::get(&format!("/v1/documents/{id}"))).status,
        200,
        "not deleted before approval"
    );

    // Each call is on the road as agent `api`, channel `api`, the caller as sender.
    let audit = kernel.audit();
    let proposals: Vec<&Value> = audit.iter().filter(|e| e["kind"] == "proposal").collect();
    assert!(proposals.len() >= 6, "{proposals:?}");
    for p in &proposals {
        assert_eq!(p["payload"]["agent"], "api");
        assert_eq!(p["payload"]["channel"], "api");
        assert!(
            p["payload"]["sender"].as_str().unwrap().starts_with("uid:")
                || p["payload"]["sender"]
                    .as_str()
                    .unwrap()
                    .starts_with("token:")
        );
    }
}

#[test]
fn a_chat_streams_its_reply_as_events_or_answers_once_as_json() {
    let home_plugins = "[plugins.model]\nbuiltin = \"scripted\"\n\
                        config = { script = \"script.json\", record = \"requests.jsonl\" }\n";
    let home = Home::init(PASS);
    home.write_scripted(
        "version: 1\n",
        &json!({"responses": [
            {"content": "The lease renewal is due on 1 March."},
            {"content": "Call Anna."}
        ]}),
    );
    let port = free_port();
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n{home_plugins}",
            sandbox_setting()
        ),
    )
    .unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let unix = socket(&kernel.home());
    wait_for_socket(&unix, &kernel);
    let doc = openapi();

    let streamed = send(
        &unix,
        Call::post(
            "/v1/chat",
            &json!({"text": "when is the lease due?", "conversation": "web-1"}),
        )
        .header("accept", "text/event-stream"),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = p3ak_testkit::api::events(&streamed.text());
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "reply", "{events:?}");
    assert_eq!(data["text"], "The lease renewal is due on 1 March.");
    assert_eq!(data["conversation"], "web-1");
    let chunks: String = events
        .iter()
        .filter(|(n, _)| n == "chunk")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(
        chunks.is_empty() || chunks == "The lease renewal is due on 1 March.",
        "{chunks}"
    );

    let once = send(
        &unix,
        Call::post(
            "/v1/chat",
            &json!({"text": "and then?", "conversation": "web-1"}),
        ),
    );
    assert_eq!(once.status, 200, "{}", once.text());
    conforms(&doc, "post", "/v1/chat", &once);
    assert_eq!(once.json()["text"], "Call Anna.");
    // The second turn saw the first: one conversation.
    let requests = kernel.requests();
    assert!(requests[1].to_string().contains("when is the lease due?"));
    // The turn is the API's: channel api, the caller as sender.
    let inbound: Vec<Value> = kernel
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 2);
    assert_eq!(inbound[0]["payload"]["channel"], "api");
    assert!(
        inbound[0]["payload"]["sender"]
            .as_str()
            .unwrap()
            .starts_with("uid:")
    );

    let unknown = send(
        &unix,
        Call::post("/v1/chat", &json!({"text": "hi", "agent": "nobody"})),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    conforms(&doc, "post", "/v1/chat", &unknown);
}

/// What another user sees: a request from uid 65534 (nobody) on the API socket, as a
/// standard-library Python client run under that uid; its status line.
fn as_nobody(socket_path: &Path, request: &str) -> String {
    use std::os::unix::process::CommandExt;
    let client = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(sys.argv[2].encode())\n\
                  data = b''\n\
                  while True:\n\
                  \x20   chunk = s.recv(65536)\n\
                  \x20   if not chunk: break\n\
                  \x20   data += chunk\n\
                  print(data.decode(errors='replace'))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", client, socket_path.to_str().unwrap(), request])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root"]
fn another_uid_on_the_socket_needs_a_token_and_gets_only_its_scopes() {
    p3ak_testkit::need::root();
    p3ak_testkit::need::python3();
    let (kernel, unix, _tcp) = api_kernel("");
    let Target::Unix(path) = &unix else {
        unreachable!()
    };
    // Let the other user reach the socket: the test's temporary directories pass through.
    for dir in path
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(std::env::temp_dir()))
    {
        if *dir == std::env::temp_dir() {
            break;
        }
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() | 0o011;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let plain = "GET /v1/status HTTP/1.1\r\nHost: p3ak\r\nConnection: close\r\n\r\n";
    let answer = as_nobody(path, plain);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("Bearer"), "{answer}");
    let token = token(&kernel, "status", &[]);
    let with_token = format!(
        "GET /v1/status HTTP/1.1\r\nHost: p3ak\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert!(as_nobody(path, &with_token).starts_with("HTTP/1.1 200"));
    let audit_route = format!(
        "GET /v1/audit HTTP/1.1\r\nHost: p3ak\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert!(as_nobody(path, &audit_route).starts_with("HTTP/1.1 403"));
    let refused = kernel.audit();
    assert!(
        refused
            .iter()
            .any(|e| e["kind"] == "api.refused" && e["payload"]["peer"] == "uid:65534"),
        "the refusal of uid 65534 is audited"
    );
}

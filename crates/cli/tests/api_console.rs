//! The API console (`/console/`) in headless Chromium against a real kernel: signing in with a
//! token, the status page, the audit viewer with an entry's proof checked in the browser and
//! the whole log verified, token management, the vault browser and search, and a streamed web
//! chat; and the pages' security headers.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use p3ak_testkit::browser::{self, Browser};
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

const PASS: &str = "console test passphrase";
const ALL: &str = "status,vault:read,vault:write,chat,audit:read,tokens";

struct Setup {
    kernel: Kernel,
    origin: String,
    address: String,
    token: String,
}

/// A kernel with the vault plugin, a scripted model answering `replies`, the API on a
/// loopback port, and a token with every scope.
fn setup(replies: &[&str]) -> Setup {
    let home = Home::init(PASS);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let script = json!({
        "responses": replies.iter().map(|r| json!({"content": r})).collect::<Vec<_>>()
    });
    home.write_scripted(
        "version: 1\nread:\n  vault.search: { level: 0 }\n  vault.read: { level: 0 }\n  vault.list: { level: 0 }\n\
         write:\n  vault.write: { level: 0 }\n",
        &script,
    );
    let config = format!(
        "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
         [plugins.vault]\nbuiltin = \"vault\"\n",
        sandbox_setting(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let out: Value = serde_json::from_str(&kernel.ok(&[
        "tokens", "create", "--name", "console", "--scope", ALL, "--json",
    ]))
    .unwrap();
    Setup {
        kernel,
        origin: format!("http://127.0.0.1:{port}"),
        address: format!("127.0.0.1:{port}"),
        token: out["token"].as_str().unwrap().to_owned(),
    }
}

fn signed_in(setup: &Setup) -> Browser {
    let mut page = Browser::launch(&need::chromium());
    page.goto(&format!("{}/console/", setup.origin));
    page.wait_for(
        "!document.getElementById('login').hidden",
        "the sign-in form",
    );
    page.fill("#token", &setup.token);
    page.eval("document.querySelector('#login-form button').click(); true");
    page.wait_for(
        "document.getElementById('plugins').children.length > 0",
        "the status page",
    );
    page
}

#[test]
#[ignore = "needs Chromium"]
fn the_console_signs_in_with_a_token_shows_status_and_keeps_its_headers() {
    let setup = setup(&[]);
    let (status, headers, _) = browser::http(
        &setup.address,
        "GET /console/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert!(!header("content-security-policy").contains("unsafe-inline"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-store");

    let mut page = signed_in(&setup);
    // The status page fills in parts as their requests answer: wait for the last of them.
    page.wait_for(
        "document.body.innerText.includes('nothing waits')",
        "the pending list on the status page",
    );
    let text = page.text();
    let pid = setup.kernel.status()["pid"].to_string();
    assert!(text.contains(&pid), "{text}");
    assert!(text.contains("model") && text.contains("vault"), "{text}");
    assert!(text.contains("nothing waits"), "{text}");
    // A bad token sends the owner back to the sign-in form.
    page.eval("sessionStorage.setItem('p3ak-api-token', 'p3ak_000000000000_' + 'A'.repeat(43)); location.hash = '#audit'; true");
    page.wait_for(
        "!document.getElementById('login').hidden",
        "the sign-in form again",
    );
}

#[test]
#[ignore = "needs Chromium"]
fn the_audit_viewer_checks_an_entrys_proof_in_the_browser_and_verifies_the_log() {
    let setup = setup(&[]);
    let mut page = signed_in(&setup);
    page.eval("location.hash = '#audit'; true");
    page.wait_for(
        "document.querySelectorAll('#entries tr').length > 2",
        "the audit entries",
    );
    // The oldest shown entry: its proof leads to the signed root.
    page.eval("document.querySelector('#entries tr:last-child').click(); true");
    page.wait_for(
        "!document.getElementById('entry').hidden",
        "the entry's detail",
    );
    page.eval("document.getElementById('prove').click(); true");
    page.wait_for(
        "document.getElementById('proof-result').textContent.startsWith('verified in this browser')",
        "the proof to check out",
    );
    page.eval("document.getElementById('verify').click(); true");
    page.wait_for(
        "document.getElementById('verify-result').textContent.startsWith('intact')",
        "the log to verify",
    );
    // A proof for another leaf than the one asked for does not check out.
    let forged = page.eval(
        "(async () => { const p = await (await fetch('/v1/audit/1/proof', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('p3ak-api-token')}})).json(); \
          return await inclusionHolds(0, p.tree_size, p.leaf_hash, p.proof, p.checkpoint.root); })()",
    );
    assert_eq!(forged, Value::Bool(false));
}

#[test]
#[ignore = "needs Chromium"]
fn tokens_are_made_shown_once_and_revoked_from_the_console() {
    let setup = setup(&[]);
    let mut page = signed_in(&setup);
    page.eval("location.hash = '#tokens'; true");
    page.wait_for(
        "document.querySelectorAll('#token-scopes input').length === 6",
        "the token form",
    );
    page.fill("#token-name", "grafana");
    page.fill("#token-days", "30");
    page.eval("document.querySelector('#token-scopes input[value=\"status\"]').checked = true; document.querySelector('#token-form button').click(); true");
    page.wait_for(
        "!document.getElementById('new-token').hidden",
        "the new token",
    );
    let shown = page
        .eval("document.getElementById('new-token').textContent")
        .as_str()
        .unwrap()
        .to_owned();
    let token = shown.rsplit(' ').next().unwrap().to_owned();
    assert!(token.starts_with("p3ak_"), "{shown}");
    let listed: Value =
        serde_json::from_str(&setup.kernel.ok(&["tokens", "list", "--json"])).unwrap();
    let made = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grafana")
        .unwrap()
        .clone();
    assert_eq!(made["scopes"], json!(["status"]));
    assert!(made["expires_at"].as_i64().is_some());
    page.wait_for(
        "[...document.querySelectorAll('#token-list tr')].some(r => r.textContent.includes('grafana'))",
        "the token in the list",
    );
    page.eval("[...document.querySelectorAll('#token-list tr')].find(r => r.textContent.includes('grafana')).querySelector('button').click(); true");
    page.wait_for(
        "![...document.querySelectorAll('#token-list tr')].some(r => r.textContent.includes('grafana'))",
        "the token to go",
    );
    let listed: Value =
        serde_json::from_str(&setup.kernel.ok(&["tokens", "list", "--json"])).unwrap();
    assert!(
        !listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "grafana")
    );
}

#[test]
#[ignore = "needs Chromium"]
fn the_vault_browser_searches_and_opens_documents_and_the_web_chat_streams() {
    let setup = setup(&["The lease renewal is due on 1 March."]);
    let socket = p3ak_testkit::api::socket(&setup.kernel.home());
    let stored = p3ak_testkit::api::send(
        &socket,
        p3ak_testkit::api::Call::post(
            "/v1/documents",
            &json!({"title": "Lease", "content": "The lease renewal is due on 1 March; call Anna about the <b>deposit</b>."}),
        ),
    );
    assert_eq!(stored.status, 201, "{}", stored.text());
    let mut page = signed_in(&setup);
    page.eval("location.hash = '#vault'; true");
    page.wait_for(
        "document.querySelectorAll('#documents tr').length === 1",
        "the document list",
    );
    page.fill("#query", "lease deposit");
    page.eval("document.getElementById('explain').checked = true; document.querySelector('#search-form button').click(); true");
    page.wait_for(
        "document.querySelectorAll('#hits li').length > 0",
        "a search hit",
    );
    let hit = page
        .eval("document.querySelector('#hits li').innerHTML")
        .as_str()
        .unwrap()
        .to_owned();
    // The document's markup is shown as text, and the query's words are marked.
    assert!(
        hit.contains("&lt;b&gt;deposit") || hit.contains("<mark>deposit"),
        "{hit}"
    );
    assert!(!hit.contains("<b>"), "{hit}");
    assert!(hit.contains("<mark>"), "{hit}");
    page.eval("document.querySelector('#hits li a').click(); true");
    page.wait_for(
        "document.getElementById('document-content').textContent.includes('call Anna')",
        "the document",
    );

    page.eval("location.hash = '#chat'; true");
    page.wait_for("!document.getElementById('chat').hidden", "the chat");
    page.fill("#message", "when is the lease due?");
    page.eval("document.querySelector('#chat-form button[type=submit]').click(); true");
    page.wait_for(
        "document.querySelector('#transcript .turn[data-done]') !== null",
        "the reply",
    );
    let reply = page
        .eval("document.querySelector('#transcript .reply').textContent")
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reply, "The lease renewal is due on 1 March.");
}

//! Search by meaning through the API: with the model installed in the home, the sandboxed
//! `vault` plugin embeds queries and the notes it stores, so a query that shares no word with
//! a note still finds it — and so does the memory recalled into an agent's prompt.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use std::time::{Duration, Instant};

use p3ak_testkit::api::{Call, send, socket, wait_for_socket};
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

#[test]
#[ignore = "needs the embedding model"]
fn the_api_searches_by_meaning_once_the_model_is_installed() {
    let model = need::model();
    let home = Home::init("api semantic passphrase");
    home.ok(&["models", "install", "--from", model.to_str().unwrap()]);
    let config = format!(
        "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.vault]\nbuiltin = \"vault\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n",
        sandbox_setting(),
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    std::fs::write(
        home.home().join("agents/assistant.toml"),
        "prompt = \"test agent\"\nprovider = \"model\"\ntools = []\nmemory = 1\n",
    )
    .unwrap();
    std::fs::write(
        home.home().join("script.json"),
        json!({"responses": [{"content": "on the windowsill"}]}).to_string(),
    )
    .unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let api = socket(&kernel.home());
    wait_for_socket(&api, &kernel);
    let mut ids = Vec::new();
    for (title, content) in [
        (
            "Felix",
            "Felix the cat naps on the warm windowsill every afternoon.",
        ),
        ("Taxes", "The quarterly tax return must be filed by April."),
        (
            "Bikes",
            "Pump the bicycle tyres before the Sunday ride to the coast.",
        ),
    ] {
        let stored = send(
            &api,
            Call::post(
                "/v1/documents",
                &json!({"title": title, "content": content}),
            ),
        );
        assert_eq!(stored.status, 201, "{}\n{}", stored.text(), kernel.log());
        ids.push(stored.json()["id"].as_str().unwrap().to_owned());
    }
    // No word in common with the note about Felix: only its meaning can find it.
    let query = "where does my kitten doze";
    let words = send(
        &api,
        Call::post("/v1/search", &json!({"query": query, "mode": "bm25"})),
    );
    assert!(
        words.json()["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != ids[0].as_str()),
        "{}",
        words.text()
    );
    // The plugin embeds its writes in the background: wait until all three are.
    let started = Instant::now();
    let found: Value = loop {
        let found = send(
            &api,
            Call::post(
                "/v1/search",
                &json!({"query": query, "mode": "semantic", "explain": true}),
            ),
        );
        assert_eq!(found.status, 200, "{}", found.text());
        let found = found.json();
        if found["embedded_chunks"] == 3 {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the notes were not embedded: {found}\n{}",
            kernel.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(found["mode"], "semantic", "{found}");
    assert_eq!(found["hits"][0]["id"], ids[0].as_str(), "{found}");
    assert!(
        found["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().contains("semantic ranking is off")),
        "{found}"
    );
    // Hybrid, the default, ranks it first too, with the semantic signal taking part.
    let hybrid = send(
        &api,
        Call::post("/v1/search", &json!({"query": query, "explain": true})),
    );
    let hybrid = hybrid.json();
    assert_eq!(hybrid["hits"][0]["id"], ids[0].as_str(), "{hybrid}");
    assert!(
        hybrid["hits"][0]["signals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["signal"] == "semantic"),
        "{hybrid}"
    );

    // An agent's turn recalls memory by the same hybrid search, through the plugin.
    let reply = kernel.ok(&["chat", "-m", query]);
    assert!(reply.contains("windowsill"), "{reply}");
    let system = kernel.requests()[0]["system"].as_str().unwrap().to_owned();
    assert!(system.contains("Felix the cat"), "{system}");
    let audit = kernel.audit();
    let recalled = audit
        .iter()
        .find(|e| e["kind"] == "memory.context")
        .unwrap();
    assert_eq!(recalled["payload"]["ranked"], "hybrid", "{recalled}");
    kernel.kill();
}

//! End-to-end tests of the scrubber and of credential host binding through a real kernel
//! (`p3ak init`, `p3ak up`, `p3ak secret set`, `p3ak chat`) with the scripted provider.

#![cfg(test)]

use p3ak_kernel::broker::Scrubber;
use p3ak_testkit::http::HeaderRecorder;
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};

const PASS: &str = "scrub test passphrase";

/// The scripted provider's own API key, which it then streams back.
const KEY: &str = "sk-live-4f9a8b7c6d5e";

/// A home set up by `p3ak init` with this policy, one agent `assistant` on the scripted
/// provider `model` (whose credential is the secret `model`), the `http` tool, and this
/// script.
fn kernel(policy: &str, script: &serde_json::Value) -> Kernel {
    let k = Home::init(PASS);
    k.write_scripted(policy, script);
    std::fs::write(
        k.home().join("config.toml"),
        format!(
            "[kernel]\n{}ping_interval = \"1s\"\ntool_timeout = \"3s\"\n\n\
             [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
             [plugins.http]\nbuiltin = \"http\"\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\ncredential = \"model\"\n\
             config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    Kernel::new(k)
}

/// Asserts that no form of [`KEY`] the scrubber knows, and none of the pieces it was streamed
/// in, is in `text`.
fn holds_no_form_of_the_key(what: &str, text: &str, pieces: &[&str]) {
    assert!(
        !Scrubber::new([KEY]).finds(text),
        "a form of the key reached the {what}:\n{text}"
    );
    let lower = text.to_lowercase();
    for piece in pieces {
        assert!(
            !lower.contains(&piece.to_lowercase()),
            "`{piece}` reached the {what}:\n{text}"
        );
    }
}

#[test]
fn invariant_i4_a_key_streamed_in_pieces_and_upper_cased_reaches_no_one() {
    // The provider streams its own key in two halves, then once upper-cased and cut
    // elsewhere; the next turn of the conversation carries the history back to it.
    let pieces = ["sk-live-4f", "9a8b7c6d5e", "SK-LIVE-4F9A8", "B7C6D5E"];
    let script = serde_json::json!({"responses": [
        {"chunks": [
            "Here is my key: sk-live-4f",
            "9a8b7c6d5e, and louder: SK-LIVE-4F9A8",
            "B7C6D5E. Done.",
        ]},
        {"chunks": ["Nothing ", "more."]},
    ]});
    let mut k = kernel("version: 1\n", &script);
    k.up();
    k.set_secret("model", &["--scope", "model.inference"], KEY);

    let out = k.ok(&["chat", "-m", "what is your key?"]);
    assert_eq!(
        out, "Here is my key: [redacted], and louder: [redacted]. Done.\n",
        "what `p3ak chat` printed"
    );
    let json = k.ok(&["chat", "--json", "-m", "anything else?"]);
    holds_no_form_of_the_key("JSON chat output", &json, &pieces);

    // The session history, as the provider got it back on the second turn.
    let requests = k.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let history = serde_json::to_string(&requests[1]["messages"]).unwrap();
    assert!(history.contains("[redacted]"), "{history}");
    holds_no_form_of_the_key("session history", &history, &pieces);

    let audit = k.audit();
    assert!(
        audit.iter().any(|e| e["kind"] == "reply"
            && e["payload"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("[redacted]"))),
        "{audit:?}"
    );
    let audit = serde_json::to_string(&audit).unwrap();
    holds_no_form_of_the_key("audit log", &audit, &pieces);
    k.kill();
    holds_no_form_of_the_key("kernel log", &k.log(), &pieces);
}

#[test]
fn invariant_i4_a_host_bound_credential_goes_only_to_its_hosts() {
    let server = HeaderRecorder::start("x-api-key", 8, |_| "ok".to_owned());
    let port = server.port;
    // The policy lets both loopback names through: the binding alone must stop the second.
    let policy = "version: 1
network:
  http.request:
    level: 0
    rules:
      - id: loopback-only
        when: { args.url: { host_not_in: ['127.0.0.1', 'localhost'] } }
        reject: true
credentials:
  api: [http.request]
";
    let call = |url: String| {
        serde_json::json!({"content": "", "tool_calls": [{"name": "http__request",
            "arguments": {"method": "POST", "url": url,
                "headers": {"x-api-key": {"$secret": "api"}}, "body": "hello"}}]})
    };
    let script = serde_json::json!({"responses": [
        call(format!("http://127.0.0.1:{port}/bound")),
        call(format!("http://localhost:{port}/elsewhere")),
        {"content": "done"},
    ]});
    let mut k = kernel(policy, &script);
    k.up();
    k.set_secret("model", &[], "sk-model-unused-0000");
    k.set_secret(
        "api",
        &["--scope", "http.request", "--host", "127.0.0.1"],
        "sk-bound-7e6d5c4b3a29",
    );
    let list = k.ok(&["secret", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("api") && l.contains("http.request") && l.contains("127.0.0.1")),
        "{list}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&k.ok(&["secret", "list", "--json"])).unwrap();
    let api = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert_eq!(api["hosts"], serde_json::json!(["127.0.0.1"]), "{listed}");

    k.ok(&["chat", "-m", "call the api twice"]);
    let audit = k.audit();
    assert_eq!(
        server.seen(),
        ["sk-bound-7e6d5c4b3a29"],
        "only the bound host got the key; audit: {audit:#?}"
    );
    let refused: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "credential.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{audit:?}");
    let error = refused[0]["payload"]["error"].as_str().unwrap();
    assert!(error.contains("localhost"), "{error}");
    // The model hears only that the action is not permitted (invariant I3).
    assert_eq!(k.tool_results(2).last().unwrap(), "action not permitted");
}

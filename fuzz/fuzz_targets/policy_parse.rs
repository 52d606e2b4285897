//! Any bytes as a policy file (and as a cases file): parsing and compiling must return a
//! policy or an error, never panic; a policy that compiles must decide a request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p3ak_policy::cases::Suite;
use p3ak_policy::{Policy, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::from_yaml(text) {
        let request = Request::new("amber", "vault_search")
            .with_args(serde_json::json!({ "amount": 9000, "url": "https://example.com" }));
        let _ = policy.decide(&request);
        let _ = policy.explain(&request);
        if let Ok(suite) = Suite::from_yaml(text) {
            let _ = suite.run(&policy);
        }
    }
    let _ = Suite::from_yaml(text);
});

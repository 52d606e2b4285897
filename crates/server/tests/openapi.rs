//! `docs/openapi.json` is the document the code generates: a change to a route or a type
//! that does not update it fails here. `P3AK_UPDATE_OPENAPI=1 cargo test -p p3ak-server
//! --test openapi` rewrites it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = format!("{}\n", p3ak_server::openapi::document());
    if std::env::var_os("P3AK_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run P3AK_UPDATE_OPENAPI=1 cargo test -p p3ak-server --test openapi"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_every_route_and_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&p3ak_server::openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/healthz",
        "/readyz",
        "/v1/status",
        "/v1/search",
        "/v1/documents",
        "/v1/documents/{id}",
        "/v1/documents/ingest",
        "/v1/chat",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/audit/{seq}/proof",
        "/v1/tokens",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

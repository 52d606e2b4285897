//! The OpenAPI 3.1 document, generated from the routes and the model's types. The checked-in
//! copy (`docs/openapi.json`) is compared with it by a test, and it is served at
//! `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::model;
use crate::routes;

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "P3AK API",
        description = "The REST API of a running P3AK kernel: the memory vault, agents, approvals (read-only), the audit log and API tokens. On the Unix socket `run/api.sock` an operator's uid holds every scope; elsewhere send `Authorization: Bearer <token>`. Every vault write, and every vault read, takes the kernel's road as channel `api`: the policy decides and the audit log records it.",
        license(name = "MIT"),
    ),
    paths(
        routes::healthz,
        routes::readyz,
        routes::whoami,
        routes::status,
        routes::metrics,
        routes::approvals,
        routes::vaults,
        routes::vault,
        routes::list_documents,
        routes::get_document,
        routes::put_document,
        routes::delete_document,
        routes::ingest,
        routes::search,
        routes::chat,
        routes::audit,
        routes::audit_verify,
        routes::audit_proof,
        routes::tokens,
        routes::create_token,
        routes::revoke_token,
    ),
    components(schemas(
        model::ErrorBody,
        model::SearchMode,
        model::SearchQuery,
        model::SearchResults,
        model::SearchHit,
        model::SignalPart,
    )),
    modifiers(&Bearer),
    tags(
        (name = "health", description = "liveness and readiness, without authentication"),
        (name = "status", description = "the kernel's state and approvals waiting (`status`)"),
        (name = "vault", description = "the memory vault (`vault:read`, `vault:write`)"),
        (name = "chat", description = "asking an agent (`chat`)"),
        (name = "audit", description = "the tamper-evident log (`audit:read`)"),
        (name = "tokens", description = "API tokens (`tokens`)"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a token from `p3ak tokens create`"))
                    .build(),
            ),
        );
        // What any authenticated route may answer, documented once here.
        let common = [
            ("401", "no or a bad token, or a peer that is no operator"),
            ("403", "the caller lacks the route's scope"),
            (
                "429",
                "over the rate limit (`rate_limited`), or, for a vault call, the caller has \
                 `api.max_waiting_approvals` calls waiting for a person (`too_many_waiting`); \
                 `Retry-After` says when to retry",
            ),
            ("504", "over `api.request_timeout`"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.put.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if operation.security.is_none() {
                    continue;
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
#[must_use]
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}

//! Extractors whose rejections are the API's JSON errors (axum's own answer in plain text).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: 415 without `Content-Type: application/json`, 413 over the body limit, 400
/// for bad JSON or a field that does not fit (unknown fields included), naming it.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::media_type("send the body as JSON with `Content-Type: application/json`")
        }
        JsonRejection::JsonDataError(e) => ApiError::bad_request(one_line(&e.body_text())),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(one_line(&e.body_text())),
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::too_large("the request body is over the limit (`api.max_body_bytes`)")
        }
        other => ApiError::bad_request(one_line(&other.body_text())),
    }
}

/// A query string: 400 naming what does not fit.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(one_line(&e.body_text())))
            }
            Err(other) => Err(ApiError::bad_request(one_line(&other.body_text()))),
        }
    }
}

/// Messages are one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A document id in a path: hex, 4 to 32 characters (a prefix is fine), nothing else — no
/// path separators, dots or encodings reach the vault.
pub fn document_id(raw: &str) -> Result<String, ApiError> {
    if (4..=32).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(format!(
            "`{}` is not a document id (4 to 32 hex characters)",
            raw.chars().take(80).collect::<String>()
        )))
    }
}

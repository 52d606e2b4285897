//! The API's errors: each one status code and one JSON body (`ErrorBody`), never a panic and
//! never an internal detail (those go to the kernel's log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::backend::BackendError;
use crate::model::ErrorBody;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no or a bad credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the caller lacks `scope`.
    pub fn scope(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the `{scope}` scope"),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 415.
    pub fn media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 429, with when to retry.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests: retry in {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 429 for a caller with too many calls waiting for a human's approval.
    pub fn too_many_waiting(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_waiting", message);
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 504: the kernel took too long.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// 500, its cause logged here and not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("api: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the kernel could not do this; its log says why",
        )
    }

    /// The status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Invalid(m) => Self::bad_request(m),
            BackendError::NotFound(m) => Self::not_found(m),
            BackendError::NotPermitted => Self::new(
                StatusCode::FORBIDDEN,
                "not_permitted",
                "action not permitted",
            ),
            BackendError::Scope(scope) => Self::scope(&scope),
            // Not an error: routes answer 202 themselves; this is a fallback.
            e @ BackendError::Pending { .. } => {
                Self::new(StatusCode::ACCEPTED, "pending", e.to_string())
            }
            BackendError::TooLarge(m) => Self::too_large(m),
            BackendError::RateLimited {
                message,
                retry_after,
            } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                e.retry_after = Some(retry_after);
                e
            }
            BackendError::TooManyWaiting {
                message,
                retry_after,
            } => Self::too_many_waiting(message, retry_after),
            BackendError::Unavailable(m) => Self::unavailable(m),
            BackendError::Internal(m) => Self::internal(&m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"p3ak\""),
            );
        }
        response
    }
}

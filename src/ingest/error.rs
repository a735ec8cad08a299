//! The error JSON of the v1 API:
//! `{"error": {"type": "...", "message": "...", "details": [{"url": "...", "reason": "..."}]}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// True when `error`, or an error it wraps, is a `T`: how a body's own
/// failure (its deadline, the memory budget) is told apart under axum's
/// rejection.
pub fn caused_by<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<T>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// One refused URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    /// Where it was in the body, e.g. `files[3]`.
    pub field: String,
    pub url: String,
    /// Machine-readable: `InvalidUrl`, `UrlTooLong`, `NoEndpointForHost`,
    /// `InvalidTag`.
    pub code: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            details: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", message)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send the body as JSON with Content-Type: application/json",
        )
    }
}

/// A query string that does not parse (`?wait=soon`, `?state=gone`): a
/// `400` that says why, as every handler taking a `Query` answers it.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", rejection.body_text()))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. }
            | StoreError::Busy { .. }
            | StoreError::Closed
            | StoreError::Fenced { .. }
            | StoreError::TimedOut { .. } => {
                // A timed-out intent says itself whether it was stored.
                let then = if matches!(error, StoreError::TimedOut { .. }) {
                    "; try again later"
                } else {
                    "; nothing was accepted, try again later"
                };
                Self {
                    retry_after_secs: Some(5),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "StoreUnavailable",
                        format!("{error}{then}"),
                    )
                }
            }
            StoreError::Internal { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal",
                error.to_string(),
            ),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    error_type: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::refused(self.error_type);
        // A bug is an error. A 503 is the daemon protecting itself (backlog
        // full, disk full): under a flood there is one per request, so they
        // are counted in purgeq_refused_requests_total and explained by
        // /readyz, not logged one by one.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        } else if self.status.is_server_error() {
            tracing::debug!(status = %self.status, error = %self.message, "request refused");
        }
        let envelope = Envelope {
            error: Body {
                error_type: self.error_type,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, Json(envelope)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

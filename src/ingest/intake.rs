//! Turning a client's URL lists into targets: all or nothing.
//!
//! Every URL is checked before anything is stored; if one is refused, the
//! whole request is refused with the reason for each bad URL, so a client
//! never has to work out which half of its request got in.

use axum::http::{HeaderMap, StatusCode};

use super::error::{ApiError, Detail};
use crate::config::Settings;
use crate::target::{PurgeTarget, Requested, TargetError};

/// A URL list and how its entries are classified.
pub struct UrlList<'a> {
    /// The body field, for error details (`files`, `Directories`…).
    pub field: &'a str,
    pub urls: &'a [String],
    pub requested: Requested,
}

/// Checks the media type of a body-carrying request.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// Normalizes, classifies and routes every URL, or explains every refusal.
pub fn targets(settings: &Settings, lists: &[UrlList<'_>]) -> Result<Vec<PurgeTarget>, ApiError> {
    let total: usize = lists.iter().map(|l| l.urls.len()).sum();
    if total == 0 {
        return Err(ApiError::bad_request("the request names no URL"));
    }
    let max = settings.ingest.max_urls_per_request;
    if total > max {
        return Err(ApiError::too_large(format!(
            "the request names {total} URLs, more than ingest.max_urls_per_request ({max}); split it"
        )));
    }
    let router = &settings.derived.router;
    let mut targets = Vec::with_capacity(total);
    let mut details = Vec::new();
    let mut all_unroutable = true;
    for list in lists {
        for (index, raw) in list.urls.iter().enumerate() {
            match router.target(raw, list.requested, settings.ingest.max_url_length) {
                Ok(target) => targets.push(target),
                Err(error) => {
                    all_unroutable &= matches!(error, TargetError::NoEndpointForHost(_));
                    details.push(Detail {
                        field: format!("{}[{index}]", list.field),
                        url: raw
                            .chars()
                            .take(settings.ingest.max_url_length.min(512))
                            .collect(),
                        code: error.code(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
    if details.is_empty() {
        return Ok(targets);
    }
    let (status, error_type) = if all_unroutable {
        (StatusCode::UNPROCESSABLE_ENTITY, "NoEndpointForHost")
    } else {
        (StatusCode::BAD_REQUEST, "InvalidUrl")
    };
    let first = &details[0];
    let message = format!(
        "{} of {total} URLs refused, nothing was accepted; first: {} {:?}: {}",
        details.len(),
        first.field,
        first.url,
        first.reason
    );
    Err(ApiError {
        details,
        ..ApiError::new(status, error_type, message)
    })
}

//! The checks the real service makes on every request, as pure functions.
//!
//! Each failed check becomes a [`Rejection`] carrying the documented
//! `ErrorInfo.Type`. The status codes are not documented; the ones here are
//! plausible and the client ignores them anyway (it classifies by body).

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use time::OffsetDateTime;

use super::config::{EmulatedEndpoint, EmulatorConfig};
use crate::cdn::signing;
use crate::cdn::wire::{CachePolicyBody, PurgeBody};

/// A refused request: status, documented type and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub error_type: String,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl Rejection {
    pub fn new(status: StatusCode, error_type: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type: error_type.to_owned(),
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad(error_type: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_type, message)
    }

    fn unauthorized(error_type: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error_type, message)
    }
}

/// Checks the date and `Authorization` headers, the key and the signature.
pub fn authenticate(
    config: &EmulatorConfig,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), Rejection> {
    let date = match headers.get(signing::DATE_HEADER) {
        None => {
            return Err(Rejection::bad(
                "MissingRequestDateHeader",
                "Missing request date header.",
            ));
        }
        Some(value) => value.to_str().unwrap_or_default(),
    };
    let Some(request_time) = signing::parse_request_date(date) else {
        return Err(Rejection::bad(
            "InvalidRequestDateHeader",
            format!("Invalid request date header {date:?}: expected yyyy-MM-dd HH:mm:ss (UTC)."),
        ));
    };

    let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(Rejection::unauthorized(
            "MissingAuthorizationHeader",
            "Missing authorization header.",
        ));
    };
    let Some((key_id, claimed)) = authorization
        .to_str()
        .ok()
        .and_then(signing::parse_authorization)
    else {
        return Err(Rejection::unauthorized(
            "InvalidAuthorizationHeader",
            "Invalid authorization header: expected 'AzureCDN {KeyId}:{Signature}'.",
        ));
    };
    if key_id != config.key_id {
        return Err(Rejection::unauthorized(
            "ApiKeyNotFound",
            format!("API key {key_id:?} not found."),
        ));
    }
    let to_sign = signing::string_to_sign_parts(method.as_str(), uri.path(), uri.query(), date);
    if !signing::verify_signature(&config.key_value, &to_sign, claimed) {
        return Err(Rejection::unauthorized(
            "WrongSignature",
            "Wrong signature.",
        ));
    }

    let skew = (OffsetDateTime::from(now) - request_time).unsigned_abs();
    if skew > config.max_clock_skew {
        return Err(Rejection::unauthorized(
            "AuthorizationHeaderExpired",
            format!(
                "Authorization header expired: request date {date} is {}s away from the server's clock.",
                skew.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Checks `apiVersion=1.0` is present.
pub fn api_version(uri: &Uri) -> Result<(), Rejection> {
    match crate::cdn::wire::api_version_problem(uri.query()) {
        None => Ok(()),
        Some((error_type, message)) => Err(Rejection::bad(error_type, message)),
    }
}

/// Checks the subscription in the path is the emulated one.
pub fn subscription(config: &EmulatorConfig, subscription_id: &str) -> Result<(), Rejection> {
    if subscription_id == config.subscription_id {
        Ok(())
    } else {
        Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("Subscription {subscription_id} does not exist."),
        ))
    }
}

/// Finds the endpoint and checks it belongs to the subscription and is active.
pub fn endpoint<'c>(
    config: &'c EmulatorConfig,
    endpoint_id: &str,
    inactive: &[String],
) -> Result<&'c EmulatedEndpoint, Rejection> {
    let Some(endpoint) = config.endpoints.iter().find(|e| e.id == endpoint_id) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("Endpoint {endpoint_id} does not exist."),
        ));
    };
    if endpoint.owner_subscription.is_some() {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "EndpointDoesNotBelongToSubscription",
            format!(
                "Endpoint {endpoint_id} does not belong to subscription {}.",
                config.subscription_id
            ),
        ));
    }
    if inactive.iter().any(|id| id == endpoint_id) {
        return Err(Rejection::new(
            StatusCode::CONFLICT,
            "EndpointNotInActiveState",
            format!("Endpoint {endpoint_id} is not in active state."),
        ));
    }
    Ok(endpoint)
}

/// Parses and checks a purge body against the endpoint's hosts.
pub fn purge_body(
    headers: &HeaderMap,
    body: &[u8],
    endpoint: &EmulatedEndpoint,
) -> Result<PurgeBody, Rejection> {
    json_media_type(headers)?;
    let purge: PurgeBody = serde_json::from_slice(body).map_err(|e| {
        Rejection::bad(
            "ParameterInvalid",
            format!(
                "The body is not of the form {{\"Files\": [...], \"Directories\": [...]}}: {e}."
            ),
        )
    })?;
    if purge.files.is_empty() && purge.directories.is_empty() {
        return Err(Rejection::bad(
            "ParameterMissing",
            "Parameter 'Files' or 'Directories' is missing.",
        ));
    }
    for (list, urls, is_directory) in [
        ("Files", &purge.files, false),
        ("Directories", &purge.directories, true),
    ] {
        for (index, raw) in urls.iter().enumerate() {
            check_item(raw, is_directory, endpoint).map_err(|(kind, why)| {
                Rejection::bad(kind, format!("{list}[{index}] {raw:?}: {why}."))
            })?;
        }
    }
    Ok(purge)
}

/// Parses and checks a `CachePolicy` body as the Swagger defines it.
pub fn cache_policy_body(headers: &HeaderMap, body: &[u8]) -> Result<CachePolicyBody, Rejection> {
    json_media_type(headers)?;
    // The switches are strings in the Swagger: a null is not "absent".
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) {
        for name in ["IgnoreCacheControl", "IgnoreQueryString", "IgnoreCookie"] {
            if fields.get(name).is_some_and(serde_json::Value::is_null) {
                return Err(Rejection::bad(
                    "ParameterInvalid",
                    format!("{name}: null is not \"true\" or \"false\"."),
                ));
            }
        }
    }
    let policy: CachePolicyBody = serde_json::from_slice(body).map_err(|e| {
        Rejection::bad(
            "ParameterInvalid",
            format!("The body is not a CachePolicy: {e}."),
        )
    })?;
    crate::cdn::cache_rules::CachePolicy::from_wire(&policy)
        .map_err(|e| Rejection::bad("ParameterInvalid", format!("{e}.")))?;
    Ok(policy)
}

/// Parses and checks a preload body (`{"Files": [...]}`, required, files
/// only) against the endpoint's hosts.
pub fn preload_body(
    headers: &HeaderMap,
    body: &[u8],
    endpoint: &EmulatedEndpoint,
) -> Result<Vec<String>, Rejection> {
    json_media_type(headers)?;
    let preload: crate::cdn::wire::PreloadBody = serde_json::from_slice(body).map_err(|e| {
        Rejection::bad(
            "ParameterInvalid",
            format!("The body is not of the form {{\"Files\": [...]}}: {e}."),
        )
    })?;
    let files = match preload.files {
        Some(files) if !files.is_empty() => files,
        _ => {
            return Err(Rejection::bad(
                "ParameterMissing",
                "Parameter 'Files' is missing.",
            ));
        }
    };
    for (index, raw) in files.iter().enumerate() {
        check_item(raw, false, endpoint).map_err(|(kind, why)| {
            Rejection::bad(kind, format!("Files[{index}] {raw:?}: {why}."))
        })?;
    }
    Ok(files)
}

fn json_media_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Rejection::bad(
            "ParameterInvalid",
            format!("Content-Type must be application/json, not {content_type:?}."),
        ))
    }
}

fn check_item(
    raw: &str,
    is_directory: bool,
    endpoint: &EmulatedEndpoint,
) -> Result<(), (&'static str, String)> {
    let invalid = |why: String| ("ParameterInvalid", why);
    // Checked on the raw text: URL parsing would resolve the `..` away.
    if has_dot_dot_segment(raw) {
        return Err((
            "MaliciousItemPathDetected",
            "malicious item path detected ('..' segment)".to_owned(),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("the URL has no host".to_owned()))?;
    if !endpoint.serves(host) {
        return Err(invalid(format!(
            "host {host:?} is not a domain of endpoint {}",
            endpoint.id
        )));
    }
    if is_directory && !url.path().ends_with('/') {
        return Err(invalid("a directory must end with '/'".to_owned()));
    }
    Ok(())
}

/// True when the path of `raw` has a `..` segment, plainly or
/// percent-encoded.
pub fn has_dot_dot_segment(raw: &str) -> bool {
    let after_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
    let path = &after_scheme[path_start..];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        let lower = segment.to_ascii_lowercase();
        matches!(lower.as_str(), ".." | "%2e%2e" | ".%2e" | "%2e.")
    })
}

/// Seconds until the rate limiter would let a call through, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dot_dot_segments() {
        assert!(has_dot_dot_segment("http://a.com/x/../y"));
        assert!(has_dot_dot_segment("http://a.com/x/%2E%2e/y"));
        assert!(has_dot_dot_segment("http://a.com/.."));
        assert!(!has_dot_dot_segment("http://a.com/x/..y/z"));
        assert!(!has_dot_dot_segment("http://a.com/x?q=/../"));
        assert!(!has_dot_dot_segment("http://a..com/x"));
    }
}

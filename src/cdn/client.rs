//! A typed client for the three calls purgeq makes.
//!
//! Each call is signed with the current time (corrected by a learned clock
//! offset), sent once, and its answer turned into either a typed value with
//! its correlation id or a [`CdnError`] that says how to handle it. The one
//! retry this layer does itself is for clock skew: the service's `Date`
//! header tells exactly how far off we are, so the fix is certain and cheap.
//! Every other retry decision belongs to the sender, which sees the
//! whole queue.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, DATE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use url::Url;

use super::cache_rules::CachePolicy;
use super::credentials::Credentials;
use super::error::{CdnError, ErrorClass, TransportFailure};
use super::signing;
use super::types::{Called, Endpoint, PurgeAccepted, PurgeProgress};
use super::wire;
use crate::clock::{self, SharedClock};

/// The service's current address.
pub const DEFAULT_BASE_URL: &str = "https://restapi.cdn.azure.cn";

/// Every path carries this query parameter (defined with the wire
/// format, which checks it too).
pub use super::wire::API_VERSION;

/// The correlation header name (HTTP header names are case-insensitive).
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// How much of an unexpected body to keep in an error.
const SNIPPET_CHARS: usize = 200;

/// Everything needed to build a [`CdnClient`].
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: Url,
    pub subscription_id: String,
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `purgeq/VERSION`, and the fleet node's name where there is one: the
    /// CDN's logs (and the emulator's journal) then say which host called.
    pub user_agent: String,
}

impl ClientSettings {
    pub fn new(
        base_url: Url,
        subscription_id: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        Self {
            base_url,
            subscription_id: subscription_id.into(),
            credentials,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            user_agent: concat!("purgeq/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Failed to build the HTTP client (bad TLS setup, for instance).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(String);

pub struct CdnClient {
    http: reqwest::Client,
    base_url: Url,
    subscription_id: String,
    credentials: Credentials,
    clock: SharedClock,
    /// Milliseconds to add to our clock to match the service's.
    clock_offset_ms: AtomicI64,
}

impl std::fmt::Debug for CdnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdnClient")
            .field("base_url", &self.base_url.as_str())
            .field("subscription_id", &self.subscription_id)
            .field("credentials", &self.credentials)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .finish()
    }
}

/// A failure plus the service's clock, when it told us.
struct Failure {
    error: CdnError,
    server_date: Option<SystemTime>,
}

impl CdnClient {
    pub fn new(settings: ClientSettings) -> Result<Self, ClientBuildError> {
        Self::with_clock(settings, clock::system())
    }

    pub fn with_clock(
        settings: ClientSettings,
        clock: SharedClock,
    ) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(settings.user_agent.as_str())
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            http,
            base_url: settings.base_url,
            subscription_id: settings.subscription_id,
            credentials: settings.credentials,
            clock,
            clock_offset_ms: AtomicI64::new(0),
        })
    }

    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    /// The correction currently applied to our clock.
    pub fn clock_offset(&self) -> time::Duration {
        time::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// `POST …/endpoints/{endpoint_id}/purges`.
    pub async fn add_purge(
        &self,
        endpoint_id: &str,
        files: &[String],
        directories: &[String],
    ) -> Result<Called<PurgeAccepted>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "purges"]);
        let body = wire::PurgeBody {
            files: files.to_vec(),
            directories: directories.to_vec(),
        };
        let called = self
            .call(Method::POST, url, Some(&body), StatusCode::ACCEPTED)
            .await?;
        accepted(called)
    }

    /// `POST …/endpoints/{endpoint_id}/preloads`: the body is exactly
    /// `{"Files": [...]}`, as documented.
    pub async fn add_preload(
        &self,
        endpoint_id: &str,
        files: &[String],
    ) -> Result<Called<PurgeAccepted>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "preloads"]);
        let body = wire::PreloadBody {
            files: Some(files.to_vec()),
        };
        let called = self
            .call(Method::POST, url, Some(&body), StatusCode::ACCEPTED)
            .await?;
        accepted(called)
    }

    /// `GET …/endpoints/{endpoint_id}/preloads/{task_track_id}`: files
    /// only; `Waiting` reads as not final.
    pub async fn query_preload(
        &self,
        endpoint_id: &str,
        task_track_id: &str,
    ) -> Result<Called<PurgeProgress>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "preloads", task_track_id]);
        let called: Called<wire::PreloadProgressBody> =
            self.call(Method::GET, url, NO_BODY, StatusCode::OK).await?;
        Ok(Called {
            value: called.value.into(),
            correlation_id: called.correlation_id,
        })
    }

    /// `GET …/endpoints/{endpoint_id}/purges/{task_track_id}`.
    pub async fn query_purge(
        &self,
        endpoint_id: &str,
        task_track_id: &str,
    ) -> Result<Called<PurgeProgress>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "purges", task_track_id]);
        let called = self.call(Method::GET, url, NO_BODY, StatusCode::OK).await?;
        Ok(progress(called))
    }

    /// `GET /subscriptions/{sid}/endpoints`.
    pub async fn list_endpoints(&self) -> Result<Called<Vec<Endpoint>>, CdnError> {
        let url = self.url(&["endpoints"]);
        let called = self.call(Method::GET, url, NO_BODY, StatusCode::OK).await?;
        Ok(endpoints(called))
    }

    /// `GET …/endpoints/{endpoint_id}/cacherules`: the endpoint's cache
    /// policy. A body that does not read as a `CachePolicy` is a
    /// malformed answer (the caller keeps the copy it had).
    pub async fn get_cache_policy(
        &self,
        endpoint_id: &str,
    ) -> Result<Called<CachePolicy>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "cacherules"]);
        let called: Called<wire::CachePolicyBody> =
            self.call(Method::GET, url, NO_BODY, StatusCode::OK).await?;
        let policy =
            CachePolicy::from_wire(&called.value).map_err(|e| CdnError::MalformedResponse {
                status: StatusCode::OK.as_u16(),
                snippet: format!("not a CachePolicy: {e}"),
                correlation_id: called.correlation_id.clone(),
                retry_after: None,
            })?;
        Ok(Called {
            value: policy,
            correlation_id: called.correlation_id,
        })
    }

    /// `PUT …/endpoints/{endpoint_id}/cacherules`: replaces the policy.
    pub async fn put_cache_policy(
        &self,
        endpoint_id: &str,
        policy: &CachePolicy,
    ) -> Result<Called<()>, CdnError> {
        let url = self.url(&["endpoints", endpoint_id, "cacherules"]);
        let called: Called<wire::ApiResponseBody> = self
            .call(
                Method::PUT,
                url,
                Some(&policy.to_wire()),
                StatusCode::ACCEPTED,
            )
            .await?;
        Ok(Called {
            value: (),
            correlation_id: called.correlation_id,
        })
    }

    /// `{base}/subscriptions/{sid}/{segments…}?apiVersion=1.0`, each segment
    /// percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .push("subscriptions")
                .push(&self.subscription_id)
                .extend(segments);
        }
        url.set_query(Some(&format!("apiVersion={API_VERSION}")));
        url
    }

    /// Sends once; on a clock-skew answer that carries a `Date`, corrects
    /// the offset and sends once more.
    async fn call<T: DeserializeOwned, B: serde::Serialize + Sync>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        expected: StatusCode,
    ) -> Result<Called<T>, CdnError> {
        match self.call_once(method.clone(), &url, body, expected).await {
            Err(Failure {
                error,
                server_date: Some(server_date),
            }) if error.class() == ErrorClass::ClockSkew => {
                let server = OffsetDateTime::from(server_date);
                let offset = server - self.clock.now_utc();
                self.clock_offset_ms
                    .store(offset.whole_milliseconds() as i64, Ordering::Relaxed);
                tracing::warn!(
                    offset_seconds = offset.whole_seconds(),
                    error = %error,
                    "the CDN refused our request date; correcting the clock offset and retrying once"
                );
                self.call_once(method, &url, body, expected)
                    .await
                    .map_err(|f| f.error)
            }
            other => other.map_err(|f| f.error),
        }
    }

    async fn call_once<T: DeserializeOwned, B: serde::Serialize + Sync>(
        &self,
        method: Method,
        url: &Url,
        body: Option<&B>,
        expected: StatusCode,
    ) -> Result<Called<T>, Failure> {
        let now = self.clock.now_utc()
            + time::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed));
        let request_date = signing::format_request_date(now);
        let to_sign = signing::string_to_sign(method.as_str(), url, &request_date);
        let authorization = signing::authorization(
            &self.credentials.key_id,
            &self.credentials.key_value,
            &to_sign,
        );

        let mut request = self
            .http
            .request(method, url.clone())
            .header(signing::DATE_HEADER, &request_date)
            .header(AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.json(body).header(CONTENT_TYPE, "application/json");
        }

        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport_failure)?;
        interpret(status, &headers, &bytes, expected)
    }
}

/// A call without a body (its type is only there for the generic).
const NO_BODY: Option<&wire::PurgeBody> = None;

fn accepted(called: Called<wire::PurgeAcceptedBody>) -> Result<Called<PurgeAccepted>, CdnError> {
    if !called.value.succeeded {
        return Err(CdnError::MalformedResponse {
            status: StatusCode::ACCEPTED.as_u16(),
            snippet: super::error::NOT_SUCCEEDED_202.to_owned(),
            correlation_id: called.correlation_id,
            retry_after: None,
        });
    }
    Ok(Called {
        value: PurgeAccepted {
            task_track_id: called.value.async_info.task_track_id,
            task_status: called.value.async_info.task_status,
        },
        correlation_id: called.correlation_id,
    })
}

fn progress(called: Called<wire::PurgeProgressBody>) -> Called<PurgeProgress> {
    Called {
        value: called.value.into(),
        correlation_id: called.correlation_id,
    }
}

fn endpoints(called: Called<Vec<wire::EndpointBody>>) -> Called<Vec<Endpoint>> {
    Called {
        value: called.value.into_iter().map(Endpoint::from).collect(),
        correlation_id: called.correlation_id,
    }
}

/// Reads complete answers exactly as [`CdnClient`] does once the bytes are
/// in, without network or clock: what the fuzz target `cdn_response`
/// feeds arbitrary status codes, headers and bodies.
pub mod read {
    use super::*;

    /// The answer to `POST …/purges`.
    pub fn add_purge(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Called<PurgeAccepted>, CdnError> {
        accepted(interpret(status, headers, body, StatusCode::ACCEPTED).map_err(|f| f.error)?)
    }

    /// The answer to `GET …/purges/{TaskTrackId}`.
    pub fn query_purge(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Called<PurgeProgress>, CdnError> {
        interpret(status, headers, body, StatusCode::OK)
            .map(progress)
            .map_err(|f| f.error)
    }

    /// The answer to `GET …/endpoints`.
    pub fn list_endpoints(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Called<Vec<Endpoint>>, CdnError> {
        interpret(status, headers, body, StatusCode::OK)
            .map(endpoints)
            .map_err(|f| f.error)
    }
}

fn transport_failure(error: reqwest::Error) -> Failure {
    let kind = if error.is_timeout() {
        TransportFailure::Timeout
    } else if error.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Other
    };
    // reqwest's message names the URL, which holds no secret; add the root
    // cause ("connection refused", "unexpected EOF") so the log is useful.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure {
        error: CdnError::Transport { kind, message },
        server_date: None,
    }
}

/// Turns a complete response into a value or a classified error.
fn interpret<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expected: StatusCode,
) -> Result<Called<T>, Failure> {
    let correlation_id = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let server_date = headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());

    // The documented error body wins whatever the status code says.
    if let Ok(error) = serde_json::from_slice::<wire::ErrorBody>(body)
        && !error.succeeded
    {
        return Err(Failure {
            error: CdnError::Api {
                status: status.as_u16(),
                error_type: super::ErrorType::parse(&error.error_info.error_type),
                message: error.error_info.message,
                correlation_id,
                retry_after,
            },
            server_date,
        });
    }

    if status == expected
        && let Ok(value) = serde_json::from_slice::<T>(body)
    {
        return Ok(Called {
            value,
            correlation_id,
        });
    }

    Err(Failure {
        error: CdnError::MalformedResponse {
            status: status.as_u16(),
            snippet: snippet(body),
            correlation_id,
            retry_after,
        },
        server_date,
    })
}

/// `Retry-After` is either delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    if out.trim().is_empty() {
        out = "(empty body)".to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdn::ErrorType;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    fn classify(status: u16, body: &str) -> CdnError {
        let status = StatusCode::from_u16(status).expect("status");
        match interpret::<wire::PurgeAcceptedBody>(
            status,
            &headers(&[("x-correlation-id", "corr-1")]),
            body.as_bytes(),
            StatusCode::ACCEPTED,
        ) {
            Ok(_) => panic!("expected an error for {body}"),
            Err(failure) => failure.error,
        }
    }

    #[test]
    fn every_documented_type_is_classified_per_the_reference() {
        use ErrorClass::*;
        let expected = [
            ("CredentialInvalid", Credentials),
            ("ParameterMissing", BadItem),
            ("ParameterInvalid", BadItem),
            ("MissingAuthorizationHeader", Credentials),
            ("InvalidRequestDateHeader", ClockSkew),
            ("MissingRequestDateHeader", ClockSkew),
            ("AuthorizationHeaderExpired", ClockSkew),
            ("InvalidAuthorizationHeader", Credentials),
            ("ApiKeyNotFound", Credentials),
            ("InvalidApiKey", Credentials),
            ("WrongSignature", Credentials),
            ("SubscriptionNotFound", Credentials),
            ("EndpointDoesNotBelongToSubscription", EndpointMisconfigured),
            ("EndpointNotInActiveState", EndpointInactive),
            ("EndpointNotFound", EndpointMisconfigured),
            ("MaliciousItemPathDetected", BadItem),
            ("PermissionDenied", Credentials),
            ("RequestThrottled", Throttled),
        ];
        assert_eq!(expected.len(), ErrorType::DOCUMENTED.len());
        for (name, class) in expected {
            // Status codes are not documented: the body decides, whatever
            // the status.
            for status in [400, 403, 429, 500, 202] {
                let body = format!(
                    r#"{{"Succeeded": false, "ErrorInfo": {{"Type": "{name}", "Message": "m"}}}}"#
                );
                let error = classify(status, &body);
                assert_eq!(error.class(), class, "{name} at {status}");
                assert_eq!(error.error_type().map(ErrorType::as_str), Some(name));
                assert!(!matches!(error.error_type(), Some(ErrorType::Unknown(_))));
                assert_eq!(error.correlation_id(), Some("corr-1"));
            }
        }
    }

    #[test]
    fn unknown_types_are_kept_verbatim_and_transient() {
        // A type that names the quota is the one exception: see
        // `a_quota_type_is_a_spent_day`.
        let quota = classify(
            403,
            r#"{"Succeeded": false, "ErrorInfo": {"Type": "DailyQuotaExceeded", "Message": "daily quota"}}"#,
        );
        assert_eq!(quota.class(), ErrorClass::QuotaExceeded);
        let error = classify(
            403,
            r#"{"Succeeded": false, "ErrorInfo": {"Type": "SomethingNew", "Message": "?"}}"#,
        );
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(
            error.error_type(),
            Some(&ErrorType::Unknown("SomethingNew".into()))
        );
        assert!(
            quota
                .to_string()
                .contains("DailyQuotaExceeded: daily quota")
        );
    }

    #[test]
    fn html_and_truncated_bodies_are_transient() {
        let html = classify(502, "<html><body>Bad Gateway</body></html>");
        assert_eq!(html.class(), ErrorClass::Transient);
        assert!(matches!(
            html,
            CdnError::MalformedResponse { status: 502, .. }
        ));

        let truncated = classify(202, r#"{"Succeeded": true, "IsAsync": tr"#);
        assert_eq!(truncated.class(), ErrorClass::Transient);

        let empty = classify(503, "");
        assert!(empty.to_string().contains("(empty body)"));
    }

    #[test]
    fn success_needs_the_expected_status_and_shape() {
        let ok = interpret::<wire::PurgeAcceptedBody>(
            StatusCode::ACCEPTED,
            &headers(&[("x-correlation-id", "c")]),
            br#"{"Succeeded": true, "IsAsync": true, "AsyncInfo": {"TaskTrackId": "t", "TaskStatus": "Processing"}}"#,
            StatusCode::ACCEPTED,
        );
        let called = ok.unwrap_or_else(|_| panic!("accepted"));
        assert_eq!(called.value.async_info.task_track_id, "t");
        assert_eq!(called.correlation_id.as_deref(), Some("c"));
    }

    #[test]
    fn retry_after_is_surfaced() {
        let failure = interpret::<wire::PurgeAcceptedBody>(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "7")]),
            br#"{"Succeeded": false, "ErrorInfo": {"Type": "RequestThrottled", "Message": "slow down"}}"#,
            StatusCode::ACCEPTED,
        )
        .expect_err("throttled");
        assert_eq!(failure.error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}

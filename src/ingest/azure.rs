//! The CDN API's routes, answered by the daemon, for scripts written for
//! the real API and pointed at purgeq.
//!
//! `POST /subscriptions/{sid}/endpoints/{eid}/purges` (and `…/preloads`)
//! queues the body's URLs and answers like the service (202, `TaskTrackId`
//! = our request id); `GET …/purges/{id}` (and `…/preloads/{id}`) answers
//! progress in the service's shape; `GET /subscriptions/{sid}/endpoints`
//! and `…/endpoints/{eid}` describe the configured endpoints. Requests are
//! not signature-checked: whoever can reach the socket may post, as on the
//! v1 API. Every error, an unknown route's included, uses the service's
//! `ErrorInfo` shape.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::IngestState;
use super::error::ApiError;
use super::intake::{self, UrlList};
use super::v1::body_or_error;
use crate::cdn::client::CORRELATION_HEADER;
use crate::cdn::wire;
use crate::config::Settings;
use crate::http_server::Peer;
use crate::store::{ItemState, Operation, PreloadState};
use crate::target::{Priority, PurgeTarget, Requested};

/// An error in the service's shape.
pub struct AzureError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl AzureError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
        }
    }
}

impl From<ApiError> for AzureError {
    fn from(error: ApiError) -> Self {
        let error_type = match error.status {
            StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => "ParameterInvalid",
            // The service's own word for "not now".
            StatusCode::SERVICE_UNAVAILABLE => "RequestThrottled",
            // Not a documented type: CDN clients treat unknown types as
            // transient, which a slow upload is.
            StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
            _ => "InternalError",
        };
        // With details, each refused URL is said once (the message's own
        // "first: …" repeated the first).
        let mut message = match error.details.is_empty() {
            true => error.message,
            false => error
                .message
                .split("; first:")
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        for detail in &error.details {
            message.push_str(&format!(
                "; {} {:?}: {}",
                detail.field, detail.url, detail.reason
            ));
        }
        AzureError::new(error.status, error_type, message)
    }
}

impl IntoResponse for AzureError {
    fn into_response(self) -> Response {
        crate::metrics::refused(self.error_type);
        with_correlation_id(
            (
                self.status,
                Json(wire::ErrorBody::new(self.error_type, self.message)),
            )
                .into_response(),
        )
    }
}

fn with_correlation_id(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// `?apiVersion=1.0`, as the service requires it: a script that forgot it
/// (or asks for another version) learns it here, not from the real API.
fn check_api_version(query: Option<&str>) -> Result<(), AzureError> {
    match wire::api_version_problem(query) {
        None => Ok(()),
        Some((error_type, message)) => Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            error_type,
            message,
        )),
    }
}

/// `priority=urgent` in the query of a CDN-shaped purge (not part of the
/// service's API: a script pointed at purgeq may add it).
fn priority_of(query: Option<&str>) -> Result<Priority, AzureError> {
    let value = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "priority")
        .map(|(_, value)| value.into_owned());
    match value {
        None => Ok(Priority::Normal),
        Some(value) => Priority::parse(&value).ok_or_else(|| {
            AzureError::new(
                StatusCode::BAD_REQUEST,
                "ParameterInvalid",
                format!("priority: {value:?} is not one of normal, urgent"),
            )
        }),
    }
}

/// The subscription must be ours, when one is configured.
fn check_subscription(state: &IngestState, sid: &str) -> Result<(), AzureError> {
    let settings = state.settings();
    let configured = &settings.cdn.subscription_id;
    if !configured.is_empty() && configured != sid {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("Subscription {sid} does not exist."),
        ));
    }
    Ok(())
}

/// The subscription must be ours (when one is configured) and the endpoint
/// one that the configuration routes to.
fn check_path(state: &IngestState, sid: &str, eid: &str) -> Result<(), AzureError> {
    check_subscription(state, sid)?;
    let settings = state.settings();
    if !settings
        .derived
        .router
        .endpoint_ids()
        .iter()
        .any(|id| id == eid)
    {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("Endpoint {eid} does not exist in the purgeq configuration."),
        ));
    }
    Ok(())
}

pub async fn add_purge(
    State(state): State<IngestState>,
    Path((sid, eid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_path(&state, &sid, &eid)?;
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let targets = parse_purge(&settings, &eid, &body)?;
    let ask = super::Ask::purge(targets, None, priority_of(query.as_deref())?);
    let outcome = state.accept(ask, &peer).await?;
    Ok(accepted(&outcome))
}

/// The service's 202 for an accepted purge or preload. The Azure body
/// has no room for the forecast: it travels in `X-Purgeq-Forecast`
/// (`today` or `next_quota_day`) and `X-Purgeq-Forecast-Next-Quota-Day`
/// (how many of its URLs wait for the next quota day).
fn accepted(answer: &super::Accepted) -> Response {
    let accepted = wire::PurgeAcceptedBody {
        succeeded: true,
        is_async: true,
        async_info: wire::AsyncInfo {
            task_track_id: answer.outcome.id.to_string(),
            task_status: "Processing".to_owned(),
        },
    };
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Some(forecast) = &answer.forecast {
        let expected = match forecast.expected {
            crate::forecast::Expected::Today => "today",
            crate::forecast::Expected::NextQuotaDay => "next_quota_day",
        };
        let headers = response.headers_mut();
        headers.insert(FORECAST_HEADER, HeaderValue::from_static(expected));
        headers.insert(
            FORECAST_WAITING_HEADER,
            HeaderValue::from(forecast.urls_next_quota_day),
        );
    }
    with_correlation_id(response)
}

/// When an accepted purge is expected to be done (see [`accepted`]).
pub const FORECAST_HEADER: &str = "x-purgeq-forecast";
pub const FORECAST_WAITING_HEADER: &str = "x-purgeq-forecast-next-quota-day";

/// `POST …/preloads`: queued like `POST /v1/preloads`.
pub async fn add_preload(
    State(state): State<IngestState>,
    Path((sid, eid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_path(&state, &sid, &eid)?;
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let targets = parse_preload(&settings, &eid, &body)?;
    let ask = super::Ask {
        preload_only: targets,
        ..super::Ask::purge(Vec::new(), None, Priority::Normal)
    };
    let outcome = state.accept(ask, &peer).await?;
    Ok(accepted(&outcome))
}

/// Reads a CDN-shaped preload body (`{"Files": [...]}`, required) for
/// endpoint `eid`: all of it, or nothing.
pub fn parse_preload(
    settings: &Settings,
    eid: &str,
    body: &[u8],
) -> Result<Vec<PurgeTarget>, AzureError> {
    let preload: wire::PreloadBody = serde_json::from_slice(body).map_err(|e| {
        AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterInvalid",
            format!("The body is not of the form {{\"Files\": [...]}}: {e}."),
        )
    })?;
    let Some(files) = preload.files.filter(|f| !f.is_empty()) else {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterMissing",
            "Parameter 'Files' is missing.",
        ));
    };
    let targets = intake::targets(
        settings,
        &[UrlList {
            field: "Files",
            urls: &files,
            requested: Requested::File,
        }],
    )?;
    only_endpoint(&targets, eid)?;
    Ok(targets)
}

/// Every URL must belong to the endpoint named in the path.
fn only_endpoint(targets: &[PurgeTarget], eid: &str) -> Result<(), AzureError> {
    match targets.iter().find(|t| t.endpoint_id != eid) {
        None => Ok(()),
        Some(stray) => Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterInvalid",
            format!(
                "{} is served by endpoint {}, not {eid}.",
                stray.url, stray.endpoint_id
            ),
        )),
    }
}

/// Reads a CDN-shaped purge body for endpoint `eid`: every URL must be
/// valid and served by `eid`, or nothing is taken. Pure (no HTTP, no
/// store), so the fuzz target `request_body` can drive it directly.
pub fn parse_purge(
    settings: &Settings,
    eid: &str,
    body: &[u8],
) -> Result<Vec<PurgeTarget>, AzureError> {
    let purge: wire::PurgeBody = serde_json::from_slice(body).map_err(|e| {
        AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterInvalid",
            format!(
                "The body is not of the form {{\"Files\": [...], \"Directories\": [...]}}: {e}."
            ),
        )
    })?;
    if purge.files.is_empty() && purge.directories.is_empty() {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterMissing",
            "Parameter 'Files' or 'Directories' is missing.",
        ));
    }
    let targets = intake::targets(
        settings,
        &[
            UrlList {
                field: "Files",
                urls: &purge.files,
                requested: Requested::File,
            },
            UrlList {
                field: "Directories",
                urls: &purge.directories,
                requested: Requested::Directory,
            },
        ],
    )?;
    only_endpoint(&targets, eid)?;
    Ok(targets)
}

pub async fn query_purge(
    State(state): State<IngestState>,
    Path((sid, eid, id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_path(&state, &sid, &eid)?;
    let status = state
        .store
        .request_status(&crate::store::RequestId::parse(&id))
        .await
        .map_err(ApiError::from)?;
    let status = status.filter(|s| {
        s.items.iter().all(|i| i.endpoint_id == eid)
            && s.items.iter().any(|i| i.operation == Operation::Purge)
    });
    let Some(status) = status else {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Purge {id} not found for endpoint {eid}."),
        ));
    };
    let mut progress = wire::PurgeProgressBody::default();
    for item in status
        .items
        .into_iter()
        .filter(|i| i.operation == Operation::Purge)
    {
        let entry = wire::UrlStatusBody {
            status: match item.state {
                ItemState::Succeeded => "Succeed",
                ItemState::Failed | ItemState::Cancelled => "Failed",
                _ => "Running",
            }
            .to_owned(),
            url: item.url,
        };
        if item.kind == "directory" {
            progress.directories.push(entry);
        } else {
            progress.files.push(entry);
        }
    }
    Ok(with_correlation_id(Json(progress).into_response()))
}

/// `GET …/preloads/{id}`: a request's preloads in the service's shape
/// (`Waiting` until sent, `Running` while the CDN works, then `Succeed` or
/// `Failed`; a preload skipped because its purge failed reads `Failed`).
pub async fn query_preload(
    State(state): State<IngestState>,
    Path((sid, eid, id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_path(&state, &sid, &eid)?;
    let status = state
        .store
        .request_status(&crate::store::RequestId::parse(&id))
        .await
        .map_err(ApiError::from)?;
    let status = status.filter(|s| {
        s.items.iter().all(|i| i.endpoint_id == eid)
            && s.items.iter().any(|i| i.preload_state.is_some())
    });
    let Some(status) = status else {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Preload {id} not found for endpoint {eid}."),
        ));
    };
    let files = status
        .items
        .into_iter()
        .filter_map(|item| {
            let state = item.preload_state?;
            Some(wire::UrlStatusBody {
                status: match state {
                    PreloadState::Waiting | PreloadState::Pending => "Waiting",
                    PreloadState::Sending | PreloadState::Submitted => "Running",
                    PreloadState::Succeeded => "Succeed",
                    PreloadState::Failed | PreloadState::Cancelled | PreloadState::Skipped => {
                        "Failed"
                    }
                }
                .to_owned(),
                url: item.url,
            })
        })
        .collect();
    Ok(with_correlation_id(
        Json(wire::PreloadProgressBody { files }).into_response(),
    ))
}

/// The configured endpoints in the service's shape (`EndpointList`): one
/// entry per host, as the service has one `CustomDomain` per endpoint.
fn endpoint_bodies(settings: &Settings, eid: Option<&str>) -> Vec<wire::EndpointBody> {
    settings
        .cdn
        .endpoints
        .iter()
        .filter(|e| eid.is_none_or(|id| id == e.id))
        .flat_map(|e| {
            e.hosts.iter().map(|host| wire::EndpointBody {
                endpoint_id: e.id.clone(),
                setting: wire::EndpointSettingBody {
                    custom_domain: host.clone(),
                    // purgeq does not know the origin: the service's own
                    // answer is one `purgeq endpoints` away.
                    host: String::new(),
                    origin: wire::OriginBody::default(),
                    service_type: "Web".to_owned(),
                },
                status: wire::EndpointStatusBody {
                    enabled: "true".to_owned(),
                    lifetime_status: "Normal".to_owned(),
                },
            })
        })
        .collect()
}

/// `GET /subscriptions/{sid}/endpoints`: from purgeq's configuration.
pub async fn list_endpoints(
    State(state): State<IngestState>,
    Path(sid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_subscription(&state, &sid)?;
    let bodies = endpoint_bodies(&state.settings(), None);
    Ok(with_correlation_id(Json(bodies).into_response()))
}

/// `GET /subscriptions/{sid}/endpoints/{eid}`: the endpoint (its first
/// host, as the service describes one endpoint).
pub async fn get_endpoint(
    State(state): State<IngestState>,
    Path((sid, eid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, AzureError> {
    check_api_version(query.as_deref())?;
    check_path(&state, &sid, &eid)?;
    match endpoint_bodies(&state.settings(), Some(&eid))
        .into_iter()
        .next()
    {
        Some(body) => Ok(with_correlation_id(Json(body).into_response())),
        None => Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("Endpoint {eid} does not exist in the purgeq configuration."),
        )),
    }
}

/// Anything else under `/subscriptions/`: the service's error shape, not
/// purgeq's own.
pub async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> AzureError {
    AzureError::new(
        StatusCode::NOT_FOUND,
        "ParameterInvalid",
        format!(
            "{method} {} is not served by purgeq (it answers purges, preloads and endpoints).",
            uri.path()
        ),
    )
}

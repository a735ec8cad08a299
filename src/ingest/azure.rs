//! The CDN API's purge routes, answered by the daemon.
//!
//! `POST /subscriptions/{sid}/endpoints/{eid}/purges` queues the body's
//! URLs and answers like the service (202, `TaskTrackId` = our request id);
//! `GET …/purges/{id}` answers progress in the service's shape. Requests are
//! not signature-checked: whoever can reach the socket may post, as on the
//! v1 API. Errors use the service's `ErrorInfo` shape.

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
use crate::store::ItemState;
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

/// The subscription must be ours (when one is configured) and the endpoint
/// one that the configuration routes to.
fn check_path(state: &IngestState, sid: &str, eid: &str) -> Result<(), AzureError> {
    let settings = state.settings();
    let configured = &settings.cdn.subscription_id;
    if !configured.is_empty() && configured != sid {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("Subscription {sid} does not exist."),
        ));
    }
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
    let outcome = state
        .accept(targets, &peer, None, priority_of(query.as_deref())?)
        .await?;
    let accepted = wire::PurgeAcceptedBody {
        succeeded: true,
        is_async: true,
        async_info: wire::AsyncInfo {
            task_track_id: outcome.id.to_string(),
            task_status: "Processing".to_owned(),
        },
    };
    Ok(with_correlation_id(
        (StatusCode::ACCEPTED, Json(accepted)).into_response(),
    ))
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
    if let Some(stray) = targets.iter().find(|t| t.endpoint_id != eid) {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "ParameterInvalid",
            format!(
                "{} is served by endpoint {}, not {eid}.",
                stray.url, stray.endpoint_id
            ),
        ));
    }
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
    let Some(status) = status.filter(|s| s.items.iter().all(|i| i.endpoint_id == eid)) else {
        return Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Purge {id} not found for endpoint {eid}."),
        ));
    };
    let mut progress = wire::PurgeProgressBody::default();
    for item in status.items {
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

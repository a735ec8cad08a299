//! The page's routes: thin handlers that read what the API reads and hand
//! it to the pure renderers in [`super`].
//!
//! They are mounted on every listener by the daemon, behind the same
//! access rules as the API (the socket's mode, loopback, the bearer token
//! beyond it); `ui.enabled = false` answers 404 for all of them (checked
//! per request, so a reload turns the page on or off).

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ListFilter;
use crate::ingest::IngestState;
use crate::ingest::error::ApiError;
use crate::store::{RequestId, RequestState};

/// How many requests the front page lists: bounded, whatever the history.
const RECENT: u32 = 50;

/// What a browser may do with the page: only what it serves itself, no
/// inline script, no framing by another site.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<IngestState> {
    Router::new()
        .route("/", get(status))
        .route("/ui/requests/{id}", get(request))
        .route("/ui/style.css", get(style))
        .route("/ui/app.js", get(script))
}

fn enabled(state: &IngestState) -> Result<(), ApiError> {
    if state.settings().ui.enabled {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "the status page is turned off (ui.enabled = false)",
        ))
    }
}

fn html(body: String) -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (HeaderName::from_static("content-security-policy"), CSP),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn status(
    State(state): State<IngestState>,
    filter: Result<Query<ListFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(mut filter) = filter.map_err(|rejection| {
        ApiError::bad_request(format!("bad query string: {}", rejection.body_text()))
    })?;
    // An empty field in the form means no filter.
    filter.state = filter.state.filter(|s| !s.is_empty());
    filter.label = filter.label.filter(|s| !s.is_empty());
    let wanted: Option<RequestState> = match &filter.state {
        None => None,
        Some(text) => Some(
            serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
                ApiError::bad_request(format!(
                    "state: {text:?} is not one of in_progress, succeeded, failed, cancelled"
                ))
            })?,
        ),
    };
    let stats = crate::ingest::v1::stats_view(&state).await?;
    let mut recent = state
        .store
        .list_requests(filter.label.as_deref(), None, RECENT)
        .await?;
    if let Some(wanted) = wanted {
        recent.retain(|r| r.state == wanted);
    }
    Ok(html(super::status_page(&stats, &recent, &filter)))
}

async fn request(
    State(state): State<IngestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let id = RequestId::parse(&id);
    let Some(status) = state.store.request_status(&id).await? else {
        return Err(ApiError::not_found(format!(
            "no request with id {:?}",
            id.as_str()
        )));
    };
    Ok(html(super::request_page(&status)))
}

async fn style(State(state): State<IngestState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(([(CONTENT_TYPE, "text/css; charset=utf-8")], super::STYLE).into_response())
}

async fn script(State(state): State<IngestState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok((
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        super::SCRIPT,
    )
        .into_response())
}

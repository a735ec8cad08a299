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
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::ListFilter;
use super::listing::Filter;
use crate::ingest::IngestState;
use crate::ingest::error::ApiError;
use crate::store::RequestId;

/// What a browser may do with the page: only what it serves itself, no
/// inline script, no framing by another site.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes, behind [`super::auth::guard`]. The guard needs the
/// state, so it is added where the state is known (`layer`).
pub fn routes_with(state: IngestState) -> Router<IngestState> {
    routes().route_layer(axum::middleware::from_fn_with_state(
        state,
        super::auth::guard,
    ))
}

fn routes() -> Router<IngestState> {
    Router::new()
        .route("/ui/login", axum::routing::post(super::auth::post_login))
        .route(
            "/ui/logout",
            axum::routing::post(super::actions::post_logout),
        )
        .route("/", get(status))
        .route("/ui/requests/{id}", get(request))
        .route("/ui/search", get(search))
        .route(
            "/ui/search/retry",
            get(|s, h, q| bulk_confirm(s, h, q, super::Bulk::Retry))
                .post(|s, h, q, b| bulk_act(s, h, q, b, super::Bulk::Retry)),
        )
        .route(
            "/ui/search/cancel",
            get(|s, h, q| bulk_confirm(s, h, q, super::Bulk::Cancel))
                .post(|s, h, q, b| bulk_act(s, h, q, b, super::Bulk::Cancel)),
        )
        .route(
            "/ui/requests/{id}/retry",
            get(|s, h, p| confirm(s, h, p, Action::Retry))
                .post(|s, p, h, b| act(s, p, h, b, Action::Retry)),
        )
        .route(
            "/ui/requests/{id}/cancel",
            get(|s, h, p| confirm(s, h, p, Action::Cancel))
                .post(|s, p, h, b| act(s, p, h, b, Action::Cancel)),
        )
        .route("/ui/style.css", get(style))
        .route("/ui/app.js", get(script))
        .route("/ui/favicon.svg", get(icon))
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

/// The page's viewer, from the request's headers.
fn viewer(state: &IngestState, headers: &HeaderMap) -> super::Viewer {
    super::Viewer {
        csrf: super::actions::form_token(headers),
        session: super::auth::in_session(state, headers),
    }
}

async fn status(
    State(state): State<IngestState>,
    headers: HeaderMap,
    filter: Result<Query<ListFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(form) = filter?;
    let filter = Filter::parse(&form).map_err(ApiError::bad_request)?;
    let stats = crate::ingest::v1::stats_view(&state).await?;
    let charts = chart_data(&state).await?;
    let window = state
        .store
        .recent_requests(
            filter.before.as_deref(),
            filter.window(),
            filter.url.as_deref(),
        )
        .await?;
    let recent = super::listing::select(window, &filter);
    Ok(html(super::status_page(
        &stats,
        &charts,
        &recent,
        &filter,
        &state.policies.snapshot(),
        &endpoint_hosts(&state),
        &viewer(&state, &headers),
    )))
}

/// Each configured endpoint's hosts (the demo endpoint's without any).
fn endpoint_hosts(state: &IngestState) -> super::EndpointHosts {
    state
        .settings()
        .cdn
        .endpoints
        .iter()
        .map(|e| (e.id.clone(), e.hosts.clone()))
        .collect()
}

/// The charts' counts: six reads, each an index range over the last hour
/// or day.
async fn chart_data(state: &IngestState) -> Result<super::ChartData, ApiError> {
    use crate::store::{Slot, Timestamp};
    let now = state.clock.now_utc();
    let hour_ago = Timestamp::new(now - time::Duration::minutes(60));
    let day_ago = Timestamp::new(now - time::Duration::hours(24));
    let settings = state.settings();
    let offset = settings.derived.quota_offset.get();
    let day_start = crate::quota::next_day_start(now, offset) - time::Duration::days(1);
    let store = &state.store;
    Ok(super::ChartData {
        now,
        day_start,
        urls_hour: store.urls_flow(hour_ago, Slot::Minute).await?,
        urls_day: store.urls_flow(day_ago, Slot::Hour).await?,
        calls_hour: store.calls_by_outcome(hour_ago, Slot::Minute).await?,
        calls_day: store.calls_by_outcome(day_ago, Slot::Hour).await?,
        quota_day: store
            .quota_through_the_day(&crate::store::QuotaAccount {
                subscription_id: settings.cdn.subscription_id.clone(),
                day: crate::quota::day_of(now, offset),
            })
            .await?,
        history_from: store.history_from().await?,
        errors: store.recent_errors(10).await?,
    })
}

async fn request(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    done: Result<Query<super::Done>, QueryRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(done) = done?;
    let status = request_or_404(&state, &id).await?;
    Ok(html(super::request_page(
        &status,
        state.settings().ui.read_only,
        &done,
        &viewer(&state, &headers),
    )))
}

/// `GET /ui/search`: the form; with a search, a page of its results.
async fn search(
    State(state): State<IngestState>,
    headers: HeaderMap,
    form: Result<Query<super::SearchForm>, QueryRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Query(form) = form?;
    let found = if form.is_empty() {
        None
    } else {
        let search = form.parse().map_err(ApiError::bad_request)?;
        Some(state.store.search(&search).await?)
    };
    Ok(html(super::search_page(
        &form,
        found.as_ref(),
        state.settings().ui.read_only,
        &viewer(&state, &headers),
    )))
}

/// The page of results a bulk action's query names (a search it must be).
async fn bulk_page(
    state: &IngestState,
    form: Result<Query<super::SearchForm>, QueryRejection>,
) -> Result<(super::SearchForm, crate::store::SearchPage), ApiError> {
    let Query(form) = form?;
    if form.is_empty() {
        return Err(ApiError::bad_request(
            "a bulk action acts on a search's results: search first",
        ));
    }
    let search = form.parse().map_err(ApiError::bad_request)?;
    let found = state.store.search(&search).await?;
    Ok((form, found))
}

/// `GET /ui/search/retry|cancel?…`: the confirmation.
async fn bulk_confirm(
    State(state): State<IngestState>,
    headers: HeaderMap,
    form: Result<Query<super::SearchForm>, QueryRejection>,
    action: super::Bulk,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    refuse_read_only(&state)?;
    let (form, found) = bulk_page(&state, form).await?;
    Ok(html(super::bulk_confirm_page(
        &form,
        &found,
        action,
        &viewer(&state, &headers),
    )))
}

/// `POST /ui/search/retry|cancel?…` (the confirmation's form): acts on
/// the page of results as it is now, then back to the search, which
/// says what was done.
async fn bulk_act(
    State(state): State<IngestState>,
    headers: HeaderMap,
    form: Result<Query<super::SearchForm>, QueryRejection>,
    body: Bytes,
    action: super::Bulk,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    refuse_read_only(&state)?;
    super::actions::check(&headers, &body)?;
    let (form, found) = bulk_page(&state, form).await?;
    let (failed, pending) = super::bulk_targets(&found);
    let now = crate::store::Timestamp::new(state.clock.now_utc());
    let done = match action {
        super::Bulk::Retry => {
            let ids = failed.into_iter().map(crate::store::ItemId).collect();
            let retried = state.store.retry_items(ids, now).await?;
            tracing::info!(retried, "retried from a search on the status page");
            format!("done=retried&n={retried}")
        }
        super::Bulk::Cancel => {
            let (mut cancelled, mut kept) = (0, 0);
            for id in &pending {
                let outcome = state
                    .store
                    .cancel_pending(&RequestId::parse(id), now)
                    .await?;
                cancelled += outcome.cancelled;
                kept += outcome.kept;
            }
            tracing::info!(
                requests = pending.len(),
                cancelled,
                kept,
                "cancelled from a search on the status page"
            );
            format!("done=cancelled&n={cancelled}&kept={kept}")
        }
    };
    state.pipeline.wake();
    let query = form.this_page();
    Ok((
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            format!("/ui/search?{query}&{done}"),
        )],
    )
        .into_response())
}

async fn request_or_404(
    state: &IngestState,
    id: &str,
) -> Result<crate::store::RequestStatus, ApiError> {
    let id = RequestId::parse(id);
    state
        .request_status(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no request with id {:?}", id.as_str())))
}

/// `GET /ui/requests/{id}/retry` or `/cancel`: what the action will do,
/// and the button that does it (a POST with the form token). Without
/// JavaScript, a confirmation is a page of its own.
async fn confirm(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    action: Action,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    refuse_read_only(&state)?;
    let status = request_or_404(&state, &id).await?;
    Ok(html(super::confirm_page(
        &status,
        action == Action::Retry,
        &viewer(&state, &headers),
    )))
}

fn refuse_read_only(state: &IngestState) -> Result<(), ApiError> {
    if state.settings().ui.read_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ReadOnly",
            "the status page is read-only (ui.read_only = true); use purgeq retry or purgeq cancel",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    Cancel,
}

/// A button pressed: checked ([`super::actions::check`]), done as the API
/// does it, then back to the request's page (303, so a reload does not
/// post again).
async fn act(
    State(state): State<IngestState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    action: Action,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    refuse_read_only(&state)?;
    super::actions::check(&headers, &body)?;
    let id = RequestId::parse(&id);
    if state.store.request_status(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no request with id {:?}",
            id.as_str()
        )));
    }
    let now = crate::store::Timestamp::new(state.clock.now_utc());
    // The result travels in the redirect's query (numbers and a word):
    // the request's page says what was done.
    let done = match action {
        Action::Retry => {
            let retried = state.store.retry_failed(Some(&id), now).await?;
            tracing::info!(request = %id.as_str(), retried, "retried from the status page");
            format!("done=retried&n={retried}")
        }
        Action::Cancel => {
            let outcome = state.store.cancel_pending(&id, now).await?;
            tracing::info!(request = %id.as_str(), cancelled = outcome.cancelled,
                kept = outcome.kept, "cancelled from the status page");
            format!(
                "done=cancelled&n={}&kept={}",
                outcome.cancelled, outcome.kept
            )
        }
    };
    state.pipeline.wake();
    Ok((
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            // A stored request's id (found above): a UUID.
            format!("/ui/requests/{}?{done}", id.as_str()),
        )],
    )
        .into_response())
}

async fn style(State(state): State<IngestState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(([(CONTENT_TYPE, "text/css; charset=utf-8")], super::STYLE).into_response())
}

async fn icon(State(state): State<IngestState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(([(CONTENT_TYPE, "image/svg+xml")], super::ICON).into_response())
}

async fn script(State(state): State<IngestState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok((
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        super::SCRIPT,
    )
        .into_response())
}

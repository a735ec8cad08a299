//! purgeq's own API: `/v1/purges`, `/v1/stats`, `/healthz`, `/readyz`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::IngestState;
use super::error::ApiError;
use super::intake::{self, UrlList};
use crate::config::Settings;
use crate::http_server::Peer;
use crate::store::{RequestId, Timestamp};
use crate::store::{RequestStatus, StateCounts};
use crate::target::{Priority, PurgeTarget, Requested};

/// The longest `?wait=` honoured, so a forgotten client cannot pin a
/// connection forever.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// `POST /v1/purges` body. PascalCase `Files`/`Directories` are accepted
/// too, so a body written for the CDN API can be posted as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentBody {
    #[serde(default, alias = "Files")]
    pub files: Vec<String>,
    #[serde(default, alias = "Directories")]
    pub directories: Vec<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    /// Free text stored with the request (a deploy id, say).
    #[serde(default)]
    pub label: Option<String>,
    /// `urgent`: cut before normal work, and may use the quota held back
    /// by `quota.urgent_reserve_*`.
    #[serde(default)]
    pub priority: Priority,
    /// Preload each file once its purge has succeeded (directories are
    /// purged, not preloaded).
    #[serde(default)]
    pub preload: bool,
    /// `[[origin_cache]]` layers not to purge for these URLs (a layer
    /// known to be down, or emptied by hand): recorded as skipped in the
    /// history, with the request named.
    #[serde(default)]
    pub skip_origin_caches: Vec<String>,
    /// Tags whose URLs to purge, as the tag registry holds them now
    /// (issue 35): each becomes files, like `files`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /v1/preloads` body: files to preload without purging them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadBody {
    #[serde(default, alias = "Files")]
    pub files: Vec<String>,
    #[serde(default)]
    pub label: Option<String>,
}

/// Reads a body within `ingest.max_body_bytes`, mapping axum's rejection
/// to our error JSON.
pub fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if super::body_budget::over_budget(&rejection) {
            super::body_budget::refusal()
        } else if super::body_deadline::timed_out(&rejection) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!("{rejection}; the whole body must arrive within ingest.body_timeout"),
            )
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the body is larger than ingest.max_body_bytes ({limit} bytes)"
            ))
        } else {
            ApiError::bad_request(format!("cannot read the body: {rejection}"))
        }
    })
}

pub async fn post_purges(
    State(state): State<IngestState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let intent = parse_intent(&settings, &body)?;
    let mut ask = super::Ask {
        preload: intent.preload,
        skip_origin_caches: intent.skip_origin_caches,
        ..super::Ask::purge(intent.targets, intent.label, intent.priority)
    };
    // A purge's tags become files at the door (issue 35); the answer
    // says what each gave.
    let mut tagged = None;
    if !intent.tags.is_empty() {
        let (expanded, warning) =
            super::tags::expand_tags(&state, &settings, &intent.tags, &ask.targets).await?;
        let first = ask.targets.len();
        ask.targets.extend(expanded.targets);
        ask.via_tag = (first..).zip(expanded.via).collect();
        ask.tags = expanded
            .per_tag
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        tagged = Some((expanded.per_tag, expanded.unknown, warning));
    }
    let mut outcome = state.accept(ask, &peer).await?;
    if let Some((per_tag, unknown, warning)) = tagged {
        outcome.tags = Some(per_tag);
        outcome.unknown_tags = unknown;
        outcome.warning = warning;
    }
    Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
}

/// `POST /v1/preloads`: warm the edge with files, without purging them.
/// Answered like a purge (202 and the request); `GET /v1/purges/{id}`
/// follows it.
pub async fn post_preloads(
    State(state): State<IngestState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let (targets, label) = parse_preloads(&settings, &body)?;
    let ask = super::Ask {
        preload_only: targets,
        ..super::Ask::purge(Vec::new(), label, Priority::Normal)
    };
    let outcome = state.accept(ask, &peer).await?;
    Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
}

/// Reads a `POST /v1/preloads` body: files only (a directory cannot be
/// preloaded), every one valid and routed, or nothing is taken.
pub fn parse_preloads(
    settings: &Settings,
    body: &[u8],
) -> Result<(Vec<PurgeTarget>, Option<String>), ApiError> {
    let body: PreloadBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid preload request: {e}"))
    })?;
    check_label(body.label.as_deref())?;
    let targets = intake::targets(
        settings,
        &[UrlList {
            field: "files",
            urls: &body.files,
            requested: Requested::File,
        }],
    )?;
    Ok((targets, body.label))
}

/// A purge intent read and checked: every URL valid and routed.
#[derive(Debug)]
pub struct Intent {
    pub targets: Vec<PurgeTarget>,
    pub label: Option<String>,
    pub priority: Priority,
    pub preload: bool,
    pub skip_origin_caches: Vec<String>,
    /// Tags to expand through the registry (checked, not yet expanded:
    /// this function reads no store).
    pub tags: Vec<String>,
}

/// Reads a `POST /v1/purges` body: all of it is valid, or nothing is
/// taken. Pure (no HTTP, no store), so the fuzz target `request_body` can
/// drive it directly.
pub fn parse_intent(settings: &Settings, body: &[u8]) -> Result<Intent, ApiError> {
    let body: IntentBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid purge intent: {e}")))?;
    check_label(body.label.as_deref())?;
    check_skipped_layers(settings, &body.skip_origin_caches)?;
    if body.tags.len() > super::tags::MAX_TAGS_PER_REQUEST {
        return Err(ApiError::too_large(format!(
            "the request names {} tags, more than {}; split it",
            body.tags.len(),
            super::tags::MAX_TAGS_PER_REQUEST
        )));
    }
    super::tags::check_tags("tags", &body.tags)?;
    // Only tags: no URL list to check (a request naming neither URLs nor
    // tags is refused by `intake::targets`).
    let only_tags = !body.tags.is_empty()
        && body.files.is_empty()
        && body.directories.is_empty()
        && body.urls.is_empty();
    let targets = if only_tags {
        Vec::new()
    } else {
        intake::targets(
            settings,
            &[
                UrlList {
                    field: "files",
                    urls: &body.files,
                    requested: Requested::File,
                },
                UrlList {
                    field: "directories",
                    urls: &body.directories,
                    requested: Requested::Directory,
                },
                UrlList {
                    field: "urls",
                    urls: &body.urls,
                    requested: Requested::ByTrailingSlash,
                },
            ],
        )?
    };
    Ok(Intent {
        targets,
        label: body.label,
        priority: body.priority,
        preload: body.preload,
        skip_origin_caches: body.skip_origin_caches,
        tags: body.tags,
    })
}

/// Every layer a request skips must be configured: a misspelt name would
/// otherwise skip nothing, silently.
fn check_skipped_layers(settings: &Settings, names: &[String]) -> Result<(), ApiError> {
    let routes = &settings.derived.origin_routes;
    match names.iter().find(|name| !routes.knows(name)) {
        None => Ok(()),
        Some(name) => {
            let known: Vec<&str> = routes.names().collect();
            Err(ApiError::bad_request(format!(
                "skip_origin_caches: {name:?} is not a configured origin cache ({})",
                match known.is_empty() {
                    true => "none are configured".to_owned(),
                    false => format!("configured: {}", known.join(", ")),
                }
            )))
        }
    }
}

/// A label is printed by `show`, `history` and the status page: escape
/// sequences or line breaks in it would colour a terminal or forge table
/// rows (issue 12).
fn check_label(label: Option<&str>) -> Result<(), ApiError> {
    let Some(label) = label else { return Ok(()) };
    if label.len() > 256 {
        return Err(ApiError::bad_request("label: at most 256 bytes"));
    }
    if let Some(c) = label.chars().find(|c| crate::target::is_deceptive(*c)) {
        return Err(ApiError::bad_request(format!(
            "label: contains the control or text-direction character {:?}; labels are one line of \
             printable text",
            c
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    /// Seconds to hold the answer until every URL is final.
    pub wait: Option<f64>,
}

/// The request with per-state counts, as `GET /v1/purges/{id}` answers.
#[derive(Debug, Serialize)]
pub struct RequestView {
    #[serde(flatten)]
    pub status: RequestStatus,
    pub counts: StateCounts,
}

impl From<RequestStatus> for RequestView {
    /// URLs by the state that matters to the client (a merged URL counts
    /// under its directory's state); `merged` counts, besides, the URLs
    /// that were merged into a directory or a newer copy of themselves, so
    /// it agrees with the `merged` of `/v1/stats` and `history --state
    /// merged` (issue 12: it was always 0).
    fn from(status: RequestStatus) -> Self {
        let mut counts = StateCounts::default();
        for item in &status.items {
            counts.add(item.state);
            if item.merged_into.is_some() && item.state != crate::store::ItemState::Merged {
                counts.add(crate::store::ItemState::Merged);
            }
        }
        RequestView { status, counts }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    label: Option<String>,
    state: Option<crate::store::RequestState>,
    before: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct RequestList {
    requests: Vec<crate::store::RequestSummary>,
    /// The `before` of the next (older) page; `None` on the last.
    next_before: Option<String>,
}

/// `GET /v1/purges`: recent requests, newest first, filtered by label and
/// overall state, paged by `before`. A state filter reads at most a few
/// pages of requests per answer, so a rare state cannot make it scan the
/// whole history; `next_before` says where to go on.
pub async fn list_purges(
    State(state): State<IngestState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RequestList>, ApiError> {
    const MAX_PAGES: usize = 20;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: a number from 1 to 500"));
    }
    let mut before = query.before.map(|id| request_id(id).to_string());
    let mut requests = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = state
            .store
            .list_requests(query.label.as_deref(), before.as_deref(), limit)
            .await?;
        let full = page.len() == limit as usize;
        before = page.last().map(|r| r.id.clone());
        requests.extend(
            page.into_iter()
                .filter(|r| query.state.is_none_or(|s| s == r.state)),
        );
        if !full {
            before = None;
            break;
        }
        if requests.len() >= limit as usize {
            break;
        }
    }
    if requests.len() > limit as usize {
        requests.truncate(limit as usize);
        before = requests.last().map(|r| r.id.clone());
    }
    Ok(Json(RequestList {
        requests,
        next_before: before,
    }))
}

/// Request ids are UUIDs, written in lower case: an id typed or copied in
/// upper case names the same request.
fn request_id(id: String) -> RequestId {
    RequestId::parse(&id)
}

pub async fn get_purge(
    State(state): State<IngestState>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<RequestView>, ApiError> {
    let Query(query) = query?;
    let wait = match query.wait {
        None => Duration::ZERO,
        // Clamped before converting: `Duration::from_secs_f64` panics on
        // values like 1e300 (found by schemathesis).
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "wait: a number of seconds, 0 or more",
            ));
        }
    };
    let status = wait_for_final(&state, &request_id(id), wait).await?;
    Ok(Json(status.into()))
}

/// The request's status once every URL is final, or when `wait` is up.
pub async fn wait_for_final(
    state: &IngestState,
    id: &RequestId,
    wait: Duration,
) -> Result<RequestStatus, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.store.subscribe();
    loop {
        changes.mark_unchanged();
        let status = state
            .request_status(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no request with id {:?}", id.as_str())))?;
        if status.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(status);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(status) },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `GET /v1/stats`: the daemon's state on one page. Also what `purgeq
/// status` reads back, so the screen and the API share one type.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatsView {
    pub items: StateCounts,
    /// Preloads by state, counted apart from the purges in `items`.
    #[serde(default)]
    pub preloads: crate::store::PreloadCounts,
    pub oldest_pending_at: Option<String>,
    pub oldest_pending_age_seconds: Option<f64>,
    /// Endpoints with work.
    pub backlog_by_endpoint: std::collections::BTreeMap<String, EndpointBacklog>,
    pub store: StoreView,
    /// Why pending work waits now, and until when (a pause, a spent quota).
    pub waiting: Vec<crate::store::Wait>,
    /// How long the backlog takes to send, roughly.
    pub drain: crate::quota::Drain,
    /// Which node sends: `standalone` on SQLite. Optional when read back,
    /// so `purgeq status` still reads a daemon from before it existed.
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetStatus>,
    /// Each configured cache in front of the origin: URLs it has yet to
    /// purge (their CDN purge waits), failing ones, the newest failure.
    #[serde(default)]
    pub origin_caches: Vec<crate::store::OriginLayerCounts>,
    /// Verification at the edge (`[verify]`): being probed now, time to
    /// fresh over the last hour and day, what is stale. Absent when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<crate::store::FreshnessSummary>,
    /// The tag registry: URLs it holds, URLs its bound dropped.
    #[serde(default)]
    pub tags: crate::store::TagRegistryCounts,
    #[serde(flatten)]
    pub pipeline: crate::report::PipelineStatus,
}

/// One endpoint's work (`backlog_by_endpoint` in `/v1/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EndpointBacklog {
    pub pending: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StoreView {
    pub path: String,
    pub writable: bool,
}

/// The backlog against the batch limits, the rate and what today's quota
/// has left (from the pipeline's status; a full day when it has none yet).
/// What waits for the next quota day is the planner's own rule
/// ([`crate::store::LaneCounts::waiting`]: the urgent reserve is not
/// normal work's), so the drain and the quota panel say the same.
fn drain_estimate(
    state: &IngestState,
    pipeline: &crate::report::PipelineStatus,
    lanes: crate::store::LaneCounts,
) -> crate::quota::Drain {
    let settings = state.settings();
    let rules = &settings.quota;
    let left = pipeline.quota.as_ref().map_or(
        crate::planner::Left {
            files: rules.files_per_day,
            directories: rules.directories_per_day,
        },
        |q| crate::planner::Left {
            files: q.files_left,
            directories: q.directories_left,
        },
    );
    crate::quota::drain(
        (lanes.files, lanes.directories),
        (
            settings.batch.max_files as u64,
            settings.batch.max_directories as u64,
        ),
        settings.sender.requests_per_second,
        lanes.waiting(left, rules),
        (rules.files_per_day, rules.directories_per_day),
    )
}

pub async fn get_stats(State(state): State<IngestState>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(stats_view(&state).await?))
}

/// The daemon's state on one page: what `/v1/stats` answers and the status
/// page renders.
///
/// Every count comes from the counts the store keeps as rows change
/// (issue 31), read once: a few rows, whatever the queue and the history
/// hold, and the items, backlog, preloads and drain of one answer agree.
pub async fn stats_view(state: &IngestState) -> Result<StatsView, ApiError> {
    let mut pipeline = state.status().await;
    let counts = state.store.queue_counts().await?;
    let oldest_pending_at = state.store.oldest_pending().await?;
    let oldest_pending_age_seconds = oldest_pending_at
        .as_deref()
        .and_then(crate::store::parse_timestamp)
        .map(|at| (state.clock.now_utc() - at).as_seconds_f64().max(0.0));
    let backlog_by_endpoint = counts
        .backlog_by_endpoint()
        .into_iter()
        .map(|(endpoint, pending, in_flight)| (endpoint, EndpointBacklog { pending, in_flight }))
        .collect();
    let tags = state.store.tag_registry_counts().await?;
    // Every node of a fleet as the shared store knows it: stale when
    // silent longer than a lease lasts (then it cannot be leading).
    let mut fleet = state.fleet.borrow().clone();
    if fleet.role != "standalone" {
        fleet.nodes = state
            .store
            .fleet_nodes(crate::fleet::LeaseTiming::DEFAULT.ttl)
            .await?;
    }
    let drain = drain_estimate(state, &pipeline, counts.lanes());
    // What waits for the next quota day, from the counts read now rather
    // than the planner's last look: one figure for the drain and the
    // quota.
    if let Some(quota) = pipeline.quota.as_mut() {
        quota.files_waiting = drain.pending_files - drain.files_today;
        quota.directories_waiting = drain.pending_directories - drain.directories_today;
    }
    Ok(StatsView {
        backlog_by_endpoint,
        items: counts.states(),
        preloads: crate::store::PreloadCounts {
            waiting: state.store.preloads_waiting().await?,
            ..counts.preload_states()
        },
        oldest_pending_at,
        oldest_pending_age_seconds,
        store: StoreView {
            path: state.store.location().to_owned(),
            writable: state.store.is_writable(),
        },
        waiting: state.store.waits().await?,
        drain,
        origin_caches: origin_layers(state).await?,
        freshness: match state.settings().verify.enabled {
            true => Some(state.store.freshness(state.clock.now_utc()).await?),
            false => None,
        },
        fleet: Some(fleet),
        tags,
        pipeline,
    })
}

/// Every configured layer with what it has yet to purge (a layer no
/// longer configured still shows while rows of it wait).
async fn origin_layers(
    state: &IngestState,
) -> Result<Vec<crate::store::OriginLayerCounts>, ApiError> {
    let settings = state.settings();
    if settings.origin_cache.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts = state.store.origin_layer_counts().await?;
    for layer in &settings.origin_cache {
        if !counts.iter().any(|c| c.layer == layer.name) {
            counts.push(crate::store::OriginLayerCounts {
                layer: layer.name.clone(),
                ..Default::default()
            });
        }
    }
    counts.sort_by(|a, b| a.layer.cmp(&b.layer));
    Ok(counts)
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store can commit and sending is not paused.
pub async fn readyz(State(state): State<IngestState>) -> Response {
    let probe = tokio::time::timeout(Duration::from_secs(2), state.store.probe_write()).await;
    let problem = match probe {
        Err(_) => Some("the store did not answer a write within 2s".to_owned()),
        Ok(Err(error)) => Some(error.to_string()),
        Ok(Ok(())) => state.not_ready_reason(),
    };
    match problem {
        None => Json(serde_json::json!({ "ready": true })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// `POST /v1/purges/{id}/retry`: the request's failed URLs go back to
/// pending.
pub async fn retry_request(
    State(state): State<IngestState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = request_id(id);
    require_request(&state, &id).await?;
    let retried = state
        .store
        .retry_failed(Some(&id), Timestamp::new(state.clock.now_utc()))
        .await?;
    state.pipeline.wake();
    Ok(Json(serde_json::json!({ "id": id, "retried": retried })))
}

/// `POST /v1/retry-failed`: every failed URL goes back to pending.
pub async fn retry_all_failed(
    State(state): State<IngestState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retried = state
        .store
        .retry_failed(None, Timestamp::new(state.clock.now_utc()))
        .await?;
    state.pipeline.wake();
    Ok(Json(serde_json::json!({ "retried": retried })))
}

/// `POST /v1/purges/{id}/cancel`: the request's pending URLs that nothing
/// else wants are cancelled.
pub async fn cancel_request(
    State(state): State<IngestState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = request_id(id);
    require_request(&state, &id).await?;
    let outcome = state
        .store
        .cancel_pending(&id, Timestamp::new(state.clock.now_utc()))
        .await?;
    Ok(Json(
        serde_json::json!({ "id": id, "cancelled": outcome.cancelled, "kept": outcome.kept }),
    ))
}

async fn require_request(state: &IngestState, id: &RequestId) -> Result<(), ApiError> {
    match state.store.request_status(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "no request with id {:?}",
            id.as_str()
        ))),
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<IngestState>) -> Response {
    let fleet = state.fleet.borrow().clone();
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            crate::metrics::render(
                handle,
                &state.store,
                &state.status().await,
                &fleet,
                state.clock.now_utc(),
                &state.settings().origin_cache,
            )
            .await,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MetricsUnavailable",
            "metrics are recorded by another daemon in this process",
        )
        .into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /v1/openapi.json")
}

/// A known path with another method: 405 in the API's error shape (axum
/// adds the `Allow` header).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on this path; the Allow header lists what is"),
    )
}

/// `GET /v1/openapi.json`: the API's OpenAPI 3.1 document.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
        .into_response()
}

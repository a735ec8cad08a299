//! The ingest API: the axum router served on the Unix socket and on TCP.
//!
//! Two dialects over one store: purgeq's own `/v1` API ([`v1`]), and the
//! CDN API's own purge routes ([`azure`]) so a script written for the real
//! service can point at the daemon instead.

pub mod azure;
pub mod body_budget;
pub mod body_deadline;
pub mod browser;
pub mod error;
mod intake;
pub mod plan;
pub mod sessions;
pub mod tags;
pub mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use tokio::sync::watch;

use crate::config::Settings;
use crate::store::Store;

pub use crate::report::PipelineReport;
pub use plan::PlanView;
pub use v1::{EndpointBacklog, StatsView};

#[derive(Clone)]
pub struct IngestState {
    pub store: Store,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub pipeline: Arc<dyn PipelineReport>,
    /// `None` when another daemon in this process owns the recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub backlog: Arc<Backlog>,
    /// The daemon's clock: the one the pipeline reads, so request times and
    /// ages agree with it (and tests can move it).
    pub clock: crate::clock::SharedClock,
    /// This node's place in the fleet, as it changes (`/v1/stats`,
    /// `/metrics`).
    pub fleet: watch::Receiver<crate::fleet::FleetStatus>,
    /// The status page's login sessions and the wrong-token throttle.
    pub sessions: Arc<sessions::Sessions>,
    /// The endpoints' cache policies, as last read.
    pub policies: Arc<crate::cdn::cache_rules::Policies>,
}

/// An accepted request: what the store did, and when it is expected to be
/// done (purges only).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    #[serde(flatten)]
    pub outcome: crate::store::EnqueueOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::Forecast>,
    /// With `"tags"`: how many URLs each tag gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, usize>>,
    /// Tags the registry does not know (not an error).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_tags: Vec<String>,
    /// What the client should know although the request was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// An estimate of the pending backlog, for `ingest.max_pending`: counting
/// a million pending rows on every request would cost more than the
/// request, so the count is refreshed from the store at most once a second
/// (by whichever request finds it stale: nothing runs while idle) and
/// raised by each accepted request in between.
#[derive(Debug, Default)]
pub struct Backlog {
    pending: std::sync::atomic::AtomicU64,
    refreshed_at_ms: std::sync::atomic::AtomicU64,
    /// A fleet follower's last read of the shared quota and queue counts,
    /// and when: reused for a second, so a forecast per intent does not
    /// count the shared queue per intent.
    shared_quota: std::sync::Mutex<Option<(std::time::Instant, crate::report::QuotaStatus)>>,
}

impl Backlog {
    async fn estimate(&self, store: &Store) -> u64 {
        use std::sync::atomic::Ordering;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.refreshed_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .refreshed_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Ok(count) = store.pending_count().await
        {
            self.pending.store(count, Ordering::Relaxed);
        }
        self.pending.load(Ordering::Relaxed)
    }

    fn added(&self, new: usize) {
        self.pending
            .fetch_add(new as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A request read and checked at the door, ready to store.
pub(crate) struct Ask {
    /// What to purge.
    pub targets: Vec<crate::target::PurgeTarget>,
    /// Preload each file of `targets` once its purge has succeeded.
    pub preload: bool,
    /// Files to preload without purging (`POST /v1/preloads`).
    pub preload_only: Vec<crate::target::PurgeTarget>,
    pub label: Option<String>,
    pub priority: crate::target::Priority,
    /// Origin-cache layers not to purge for these URLs.
    pub skip_origin_caches: Vec<String>,
    /// The tags named, with how many URLs each gave.
    pub tags: Vec<(String, usize)>,
    /// The tag each target came from, by position.
    pub via_tag: std::collections::HashMap<usize, String>,
}

impl Ask {
    pub fn purge(
        targets: Vec<crate::target::PurgeTarget>,
        label: Option<String>,
        priority: crate::target::Priority,
    ) -> Ask {
        Ask {
            targets,
            preload: false,
            preload_only: Vec::new(),
            label,
            priority,
            skip_origin_caches: Vec::new(),
            tags: Vec::new(),
            via_tag: std::collections::HashMap::new(),
        }
    }

    /// The origin-cache layers each target's purge waits for, as
    /// `(position, layer)`: those in front of the URL's host.
    fn origin_purges(&self, settings: &Settings) -> Vec<(usize, String)> {
        let routes = &settings.derived.origin_routes;
        if routes.is_empty() {
            return Vec::new();
        }
        self.targets
            .iter()
            .enumerate()
            .flat_map(|(position, target)| {
                routes
                    .for_host(&crate::origin_cache::host_of(&target.url))
                    .into_iter()
                    .map(move |layer| (position, layer.to_owned()))
            })
            .collect()
    }

    /// Positions of the files to preload after their purge: all of them
    /// when the intent asked, else those of endpoints configured with
    /// `preload_after_purge` (directories are purged, never preloaded).
    fn preload_after_purge(&self, settings: &Settings) -> Vec<usize> {
        let always: Vec<&str> = settings
            .cdn
            .endpoints
            .iter()
            .filter(|e| e.preload_after_purge)
            .map(|e| e.id.as_str())
            .collect();
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == crate::target::Kind::File)
            .filter(|(_, t)| self.preload || always.contains(&t.endpoint_id.as_str()))
            .map(|(position, _)| position)
            .collect()
    }
}

impl IngestState {
    /// The current settings (they change on reload).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// A request as clients see it: with `[verify]` on, a URL whose purge
    /// succeeded is pending until its verification ends.
    pub async fn request_status(
        &self,
        id: &crate::store::RequestId,
    ) -> Result<Option<crate::store::RequestStatus>, crate::store::StoreError> {
        let Some(mut status) = self.store.request_status(id).await? else {
            return Ok(None);
        };
        let settings = self.settings();
        if settings.verify.enabled {
            let since =
                crate::store::Timestamp::new(self.clock.now_utc() - settings.verify.window());
            crate::store::expect_verification(&mut status, since);
        }
        Ok(Some(status))
    }

    /// Stores a validated request from `peer`, then wakes the batcher.
    async fn accept(
        &self,
        ask: Ask,
        peer: &crate::http_server::Peer,
    ) -> Result<Accepted, error::ApiError> {
        let settings = self.settings();
        self.check_backlog(
            &settings,
            (ask.targets.len() + ask.preload_only.len()) as u64,
        )
        .await?;
        let preload_after_purge = ask.preload_after_purge(&settings);
        let origin_purges = ask.origin_purges(&settings);
        let mut request = crate::store::NewRequest::purge(
            crate::store::RequestId::generate(),
            self.clock.now_utc(),
            peer.source(),
            ask.label,
            ask.priority,
            ask.targets,
        );
        request.preload_after_purge = preload_after_purge;
        request.preload_only = ask.preload_only;
        request.origin_purges = origin_purges;
        request.skip_origin_caches = ask.skip_origin_caches;
        request.tags = ask.tags;
        request.via_tag = ask.via_tag;
        request.cache_facts = self
            .policies
            .facts(&mut request.targets, request.received_at);
        let planned = self.planned(&request.targets, &request.cache_facts, request.priority);
        // The queue ahead of this request, read before it is stored: the
        // pipeline's next look, woken by this very request, would count
        // its URLs as ahead of themselves.
        let before = if planned.is_empty() {
            None
        } else {
            self.quota_now().await
        };
        let outcome = self
            .store
            .enqueue_within(request, settings.ingest.store_timeout)
            .await?;
        if outcome.preloads > 0 {
            crate::metrics::preloads_asked(outcome.preloads);
        }
        crate::metrics::enqueued(outcome.urls);
        self.backlog.added(outcome.new);
        self.pipeline.added(outcome.new);
        let forecast = before.map(|quota| self.forecast_from(quota, &planned));
        Ok(Accepted {
            outcome,
            forecast,
            tags: None,
            unknown_tags: Vec::new(),
            warning: None,
        })
    }

    /// Refuses a request that would take the backlog past
    /// `ingest.max_pending` (0: no limit), with `Retry-After`.
    async fn check_backlog(&self, settings: &Settings, count: u64) -> Result<(), error::ApiError> {
        let max_pending = settings.ingest.max_pending;
        if max_pending > 0 {
            let pending = self.backlog.estimate(&self.store).await;
            if pending + count > max_pending {
                return Err(error::ApiError {
                    retry_after_secs: Some(30),
                    ..error::ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "BacklogFull",
                        format!(
                            "this request's {} would make {} waiting, over ingest.max_pending = {max_pending} \
                             ({pending} waiting now); nothing was accepted, try again later",
                            if count == 1 {
                                "1 URL".to_owned()
                            } else {
                                format!("{count} URLs")
                            },
                            pending + count
                        ),
                    )
                });
            }
        }
        Ok(())
    }

    /// A request's purges as the planner sees them (intake's, and a dry
    /// run's): with `facts`, what the cache policies said of them, read as
    /// whether each file's older copies expire before the next quota day.
    pub(crate) fn planned(
        &self,
        targets: &[crate::target::PurgeTarget],
        facts: &std::collections::HashMap<usize, crate::cdn::cache_rules::CacheFact>,
        priority: crate::target::Priority,
    ) -> Vec<crate::planner::Pending> {
        let next_day = self.next_day_at();
        targets
            .iter()
            .enumerate()
            .map(|(position, target)| crate::planner::Pending {
                endpoint_id: target.endpoint_id.clone(),
                kind: target.kind,
                url: target.url.clone(),
                urgent: priority == crate::target::Priority::Urgent,
                expires_soon: facts
                    .get(&position)
                    .and_then(|f| f.expires.as_ref())
                    .is_some_and(|(at, _)| *at < next_day),
            })
            .collect()
    }

    /// When the next quota day starts, by the daemon's clock.
    pub(crate) fn next_day_at(&self) -> time::OffsetDateTime {
        let offset = self.settings().derived.quota_offset.get();
        crate::quota::next_day_start(self.clock.now_utc(), offset)
    }

    /// When `urls`, not yet stored, would be done if they were: the
    /// forecast from the quota and queue as they are now. `None` when the
    /// store cannot say.
    pub(crate) async fn forecast(
        &self,
        urls: &[crate::planner::Pending],
    ) -> Option<crate::forecast::Forecast> {
        Some(self.forecast_from(self.quota_now().await?, urls))
    }

    /// Today's quota and the queue: the sending pipeline's last look; on a
    /// fleet follower (no pipeline here), or before the pipeline's first
    /// look, the shared store's count. `None` when the store cannot say
    /// (an intake's answer is still `202`: the request is in).
    async fn quota_now(&self) -> Option<crate::report::QuotaStatus> {
        match self.status().await.quota {
            Some(quota) => Some(quota),
            None => self.shared_quota().await,
        }
    }

    /// When `urls` are expected to be done behind the queue `quota` saw
    /// (which must not count `urls` themselves).
    fn forecast_from(
        &self,
        quota: crate::report::QuotaStatus,
        urls: &[crate::planner::Pending],
    ) -> crate::forecast::Forecast {
        let settings = self.settings();
        let now = self.clock.now_utc();
        let left = crate::planner::Left {
            files: quota.files_left,
            directories: quota.directories_left,
        };
        crate::forecast::forecast(&crate::forecast::Inputs {
            now,
            next_day_at: self.next_day_at(),
            rules: &settings.quota,
            left,
            files_pending: quota.files_pending,
            urgent_files_pending: quota.urgent_files_pending,
            directories_pending: 0,
            urls,
            calls_per_second: settings.sender.requests_per_second,
            files_per_call: settings.batch.max_files,
            linger: settings.batch.linger,
            completion: settings.tracker.poll_interval,
        })
    }

    fn pipeline_status(&self) -> crate::report::PipelineStatus {
        self.pipeline.status()
    }

    /// The pipeline's status; on a fleet follower, which does not send and
    /// so has no quota of its own to report, with the fleet's quota read
    /// from the shared store (issue 32: followers said `quota: null`).
    pub(crate) async fn status(&self) -> crate::report::PipelineStatus {
        let mut status = self.pipeline_status();
        if status.quota.is_none() && !self.fleet.borrow().sends() {
            status.quota = self.shared_quota().await;
        }
        status
    }

    /// Today's quota as the shared store counts it. `None` when it cannot
    /// be read (the page and `/v1/stats` then show none, as before).
    async fn shared_quota(&self) -> Option<crate::report::QuotaStatus> {
        let cached = self
            .backlog
            .shared_quota
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((at, quota)) = cached
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return Some(quota);
        }
        let quota = self.read_shared_quota().await?;
        *self
            .backlog
            .shared_quota
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), quota.clone()));
        Some(quota)
    }

    /// [`IngestState::shared_quota`], read now.
    async fn read_shared_quota(&self) -> Option<crate::report::QuotaStatus> {
        let settings = self.settings();
        let now = self.clock.now_utc();
        let offset = settings.derived.quota_offset.get();
        let account = crate::store::QuotaAccount {
            subscription_id: settings.cdn.subscription_id.clone(),
            day: crate::quota::day_of(now, offset),
        };
        let used = self.store.quota_use(&account).await.ok()?;
        let counts = self.store.lane_counts().await.ok()?;
        let rules = &settings.quota;
        let left = crate::planner::Left {
            files: rules.files_per_day.saturating_sub(used.files_used),
            directories: rules
                .directories_per_day
                .saturating_sub(used.directories_used),
        };
        Some(used.status(
            rules,
            crate::store::QuotaContext {
                exhausted_until: None,
                waiting: counts.waiting(left, rules),
                files_pending: (counts.files, counts.urgent_files),
                next_day_at: crate::store::timestamp(crate::quota::next_day_start(now, offset)),
            },
        ))
    }

    fn not_ready_reason(&self) -> Option<String> {
        if let Some(reason) = self.store.not_writable_reason() {
            return Some(format!("the store cannot take new intents: {reason}"));
        }
        self.pipeline.status().not_ready_reason()
    }
}

/// The OpenAPI 3.1 document of every route below, served at
/// `/v1/openapi.json`. Hand-written (the API is small and its error shapes
/// matter more than generated boilerplate); `routes_match_the_openapi_document`
/// keeps it and [`routes`] in step, and schemathesis checks real answers
/// against it (`scripts/schemathesis.sh`).
pub const OPENAPI: &str = include_str!("../../doc/openapi.json");

/// One route: method, path (axum syntax, the same as OpenAPI's) and
/// handler. One table feeds both the router and the OpenAPI sync test, so a
/// route cannot be added without the test noticing.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<IngestState>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: axum::handler::Handler<T, IngestState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| unreachable!("only standard methods are routed"));
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/purges", v1::post_purges),
        route(Method::GET, "/v1/purges", v1::list_purges),
        route(Method::GET, "/v1/purges/{id}", v1::get_purge),
        route(Method::POST, "/v1/purges/{id}/retry", v1::retry_request),
        route(Method::POST, "/v1/purges/{id}/cancel", v1::cancel_request),
        route(Method::POST, "/v1/retry-failed", v1::retry_all_failed),
        route(Method::GET, "/v1/stats", v1::get_stats),
        route(Method::GET, "/v1/plan", plan::get_plan),
        route(Method::POST, "/v1/plan", plan::post_plan),
        route(Method::GET, "/v1/openapi.json", v1::openapi),
        route(Method::GET, "/healthz", v1::healthz),
        route(Method::GET, "/readyz", v1::readyz),
        route(Method::GET, "/metrics", v1::metrics),
        route(
            Method::POST,
            "/subscriptions/{sid}/endpoints/{eid}/purges",
            azure::add_purge,
        ),
        route(
            Method::GET,
            "/subscriptions/{sid}/endpoints/{eid}/purges/{id}",
            azure::query_purge,
        ),
        route(Method::POST, "/v1/preloads", v1::post_preloads),
        route(Method::POST, "/v1/tags", tags::post_tags),
        route(Method::GET, "/v1/tags/{tag}", tags::get_tag),
        route(
            Method::POST,
            "/subscriptions/{sid}/endpoints/{eid}/preloads",
            azure::add_preload,
        ),
        route(
            Method::GET,
            "/subscriptions/{sid}/endpoints/{eid}/preloads/{id}",
            azure::query_preload,
        ),
        route(
            Method::GET,
            "/subscriptions/{sid}/endpoints",
            azure::list_endpoints,
        ),
        route(
            Method::GET,
            "/subscriptions/{sid}/endpoints/{eid}",
            azure::get_endpoint,
        ),
    ]
}

/// Under `/subscriptions/` the CDN's own error shape, for scripts written
/// for the real API; elsewhere purgeq's.
async fn unknown_route(method: Method, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/subscriptions/") {
        azure::unknown_route(method, uri).await.into_response()
    } else {
        v1::not_found().await.into_response()
    }
}

async fn unknown_method(method: Method, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/subscriptions/") {
        azure::unknown_route(method, uri).await.into_response()
    } else {
        v1::method_not_allowed(method).await.into_response()
    }
}

/// The router, the same on every listener: the API's routes, and `extra`
/// (the status page's, mounted by the daemon) behind the same access
/// rules.
pub fn router(state: IngestState, extra: Router<IngestState>) -> Router {
    // The body limit is enforced by axum; over it, the handlers answer 413.
    let body_limit = state.settings().ingest.max_body_bytes;
    let budget = body_budget::Budget::new(state.settings().ingest.max_body_bytes_in_flight);
    let mut router = Router::new();
    for Route { path, handler, .. } in routes() {
        router = router.route(path, handler);
    }
    router
        .merge(extra)
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_deadline::limit_body_time,
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            body_budget::charge_bodies(budget.clone(), request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A body whose `Content-Length` is over `ingest.max_body_bytes` is
/// refused at once with 413: waiting for it to arrive ended in a 408
/// after `ingest.body_timeout`, for a size known to be refused (issue 12).
async fn refuse_declared_oversize(
    axum::extract::State(state): axum::extract::State<IngestState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = state.settings().ingest.max_body_bytes;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    if let Some(length) = declared.filter(|n| *n > limit as u128) {
        return error::ApiError::too_large(format!(
            "the body is {length} bytes, larger than ingest.max_body_bytes ({limit} bytes)"
        ))
        .into_response();
    }
    next.run(request).await
}

/// With `ingest.token` set, TCP clients must send `Authorization: Bearer
/// TOKEN` (compared in constant time). `/healthz` stays open for health
/// checkers; the Unix socket relies on its file mode.
async fn require_token(
    axum::extract::State(state): axum::extract::State<IngestState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let over_tcp = matches!(
        request.extensions().get::<crate::http_server::Peer>(),
        Some(crate::http_server::Peer::Tcp(_))
    );
    // The status page checks the token itself (`ui::auth`): a browser
    // sends no bearer header, so it gets a login page and a session
    // cookie instead of this 401.
    let path = request.uri().path();
    let page = path == "/" || path.starts_with("/ui/");
    if over_tcp && path != "/healthz" && !page {
        let settings = state.settings();
        if let Some(token) = &settings.derived.tcp_token {
            let presented = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !presented.is_some_and(|p| token.matches(p)) {
                // A wrong token is not a missing one (issue 29, item 12).
                let message = if presented.is_some() {
                    "the bearer token sent is not this daemon's ingest.token"
                } else {
                    "TCP clients must send Authorization: Bearer TOKEN (the daemon's ingest.token)"
                };
                let mut response = error::ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    message,
                )
                .into_response();
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn document() -> serde_json::Value {
        serde_json::from_str(OPENAPI).expect("doc/openapi.json is JSON")
    }

    #[test]
    fn routes_match_the_openapi_document() {
        let routed: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
            .collect();
        let documented: BTreeSet<(String, String)> = document()["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, operations)| {
                operations
                    .as_object()
                    .expect("operations")
                    .keys()
                    .filter(|k| k.as_str() != "parameters")
                    .map(|method| (method.clone(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            routed, documented,
            "the router and doc/openapi.json disagree"
        );
    }

    /// Every `$ref` points at a schema that exists, so a renamed schema
    /// cannot leave a dangling reference for clients' code generators.
    #[test]
    fn every_openapi_reference_resolves() {
        fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, v) in map {
                        match (key.as_str(), v) {
                            ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                            _ => refs(v, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{reference}: only local references"));
            assert!(doc.pointer(pointer).is_some(), "{reference} is dangling");
        }
    }
}

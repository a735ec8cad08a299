//! The ingest API: the axum router served on the Unix socket and on TCP.
//!
//! Two dialects over one store: purgeq's own `/v1` API ([`v1`]), and the
//! CDN API's own purge routes ([`azure`]) so a script written for the real
//! service can point at the daemon instead.

mod azure;
pub mod error;
mod intake;
pub mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::config::Settings;
use crate::store::Store;

/// What the sending side tells the API about itself. Implemented by the
/// pipeline; ingest only reads it, so ingest does not depend on pipeline.
pub trait PipelineReport: Send + Sync + 'static {
    /// Extra top-level fields for `/v1/stats` (sender state, quota…).
    fn report(&self) -> serde_json::Value;
    /// Why the daemon is not ready (e.g. sending paused), if it is not.
    fn not_ready_reason(&self) -> Option<String>;
    /// New items were committed: the batcher may have work.
    fn wake(&self);
    /// The pipeline's loops are running (for the systemd watchdog).
    fn alive(&self) -> bool;
}

#[derive(Clone)]
pub struct IngestState {
    pub store: Store,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub pipeline: Arc<dyn PipelineReport>,
    /// `None` when another daemon in this process owns the recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub backlog: Arc<Backlog>,
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

impl IngestState {
    /// The current settings (they change on reload).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// Stores validated targets as one request from `peer`, then wakes
    /// the batcher.
    async fn accept(
        &self,
        targets: Vec<crate::target::PurgeTarget>,
        peer: &crate::http_server::Peer,
        label: Option<String>,
    ) -> Result<crate::store::EnqueueOutcome, error::ApiError> {
        let max_pending = self.settings().ingest.max_pending;
        if max_pending > 0 {
            let pending = self.backlog.estimate(&self.store).await;
            if pending + targets.len() as u64 > max_pending {
                return Err(error::ApiError {
                    retry_after_secs: Some(30),
                    ..error::ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "BacklogFull",
                        format!(
                            "{pending} URLs are already waiting, the limit is ingest.max_pending = {max_pending}; \
                             nothing was accepted, try again later"
                        ),
                    )
                });
            }
        }
        let outcome = self
            .store
            .enqueue(crate::store::NewRequest {
                id: uuid::Uuid::now_v7().to_string(),
                received_at: time::OffsetDateTime::now_utc(),
                source: peer.source(),
                label,
                targets,
            })
            .await?;
        crate::metrics::enqueued(outcome.urls);
        self.backlog.added(outcome.new);
        self.pipeline.wake();
        Ok(outcome)
    }

    fn pipeline_report(&self) -> serde_json::Value {
        self.pipeline.report()
    }

    fn not_ready_reason(&self) -> Option<String> {
        if !self.store.is_writable() {
            return Some("the store cannot write (disk full or read-only?)".to_owned());
        }
        self.pipeline.not_ready_reason()
    }
}

/// The router, the same on every listener.
pub fn router(state: IngestState) -> Router {
    // The body limit is enforced by axum; over it, the handlers answer 413.
    let body_limit = state.settings().ingest.max_body_bytes;
    Router::new()
        .route("/v1/purges", post(v1::post_purges))
        .route("/v1/purges/{id}", get(v1::get_purge))
        .route("/v1/purges/{id}/retry", post(v1::retry_request))
        .route("/v1/purges/{id}/cancel", post(v1::cancel_request))
        .route("/v1/retry-failed", post(v1::retry_all_failed))
        .route("/v1/stats", get(v1::get_stats))
        .route("/healthz", get(v1::healthz))
        .route("/readyz", get(v1::readyz))
        .route("/metrics", get(v1::metrics))
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/purges",
            post(azure::add_purge),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/purges/{id}",
            get(azure::query_purge),
        )
        .fallback(v1::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
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
    if over_tcp && request.uri().path() != "/healthz" {
        let settings = state.settings();
        if let Some(token) = &settings.derived.tcp_token {
            let presented = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !presented.is_some_and(|p| token.matches(p)) {
                let mut response = error::ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "TCP clients must send Authorization: Bearer TOKEN (the daemon's ingest.token)",
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

//! Prometheus metrics, through the `metrics` facade and
//! `metrics-exporter-prometheus` (text exposition at `GET /metrics`).
//!
//! Counters and histograms are recorded where things happen; the gauges
//! that describe the state of the queue are read from the store and the
//! pipeline's report at scrape time, so they are never stale and cost
//! nothing between scrapes.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::report::SenderState;
use crate::store::{ItemState, Store};

pub const API_CALLS: &str = "purgeq_api_calls_total";
pub const API_CALL_DURATION: &str = "purgeq_api_call_duration_seconds";
pub const THROTTLED: &str = "purgeq_throttled_total";
pub const ENQUEUED_URLS: &str = "purgeq_enqueued_urls_total";
pub const ENQUEUED_REQUESTS: &str = "purgeq_enqueued_requests_total";
pub const REFUSED: &str = "purgeq_refused_requests_total";
pub const BATCH_SIZE: &str = "purgeq_batch_urls";
pub const ITEMS: &str = "purgeq_items";
pub const OLDEST_PENDING_AGE: &str = "purgeq_oldest_pending_age_seconds";
pub const QUOTA_USED: &str = "purgeq_quota_used";
pub const QUOTA_LEFT: &str = "purgeq_quota_left";
pub const SENDER_PAUSED: &str = "purgeq_sender_paused";
pub const PRELOADS: &str = "purgeq_preloads";
pub const PRELOADS_REQUESTED: &str = "purgeq_preloads_requested_total";
pub const FLEET_LEADER: &str = "purgeq_fleet_leader";
pub const EXPIRED: &str = "purgeq_urls_expired_total";
pub const ORIGIN_PURGES: &str = "purgeq_origin_purges_total";
pub const ORIGIN_PENDING: &str = "purgeq_origin_pending";
pub const ORIGIN_FAILING: &str = "purgeq_origin_failing";
pub const VERIFIED: &str = "purgeq_verifications_total";
pub const TIME_TO_FRESH: &str = "purgeq_time_to_fresh_seconds";
pub const VERIFYING: &str = "purgeq_verifications_pending";
pub const TAG_REGISTRY_URLS: &str = "purgeq_tag_registry_urls";
pub const TAG_REGISTRY_DROPPED: &str = "purgeq_tag_registry_dropped_urls";
pub const TAGS_FED: &str = "purgeq_tags_fed_urls_total";
pub const TAG_LOG_LINES: &str = "purgeq_tag_log_lines_total";

/// The process-wide recorder, installed on first use. Several daemons in
/// one process (tests holding them) share it; the queue gauges are set from
/// each daemon's own store at scrape time. `None` only when another
/// recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE.get_or_init(install_recorder).clone()
}

fn install_recorder() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(API_CALL_DURATION.to_owned()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(TIME_TO_FRESH.to_owned()),
                &[1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BATCH_SIZE.to_owned()),
                &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
            )
        })
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    Some(handle)
}

fn describe() {
    describe_counter!(
        API_CALLS,
        "CDN API calls by operation (purge, query) and outcome"
    );
    describe_histogram!(
        API_CALL_DURATION,
        Unit::Seconds,
        "CDN API call latency by operation"
    );
    describe_counter!(THROTTLED, "RequestThrottled answers from the CDN");
    describe_counter!(ENQUEUED_URLS, "URLs accepted from clients");
    describe_counter!(ENQUEUED_REQUESTS, "Requests accepted from clients");
    describe_counter!(
        EXPIRED,
        "URLs that needed no purge: the endpoint's cache rules say every copy cached before the request has expired"
    );
    describe_counter!(
        REFUSED,
        "Client requests answered with an error, by error type (BacklogFull, StoreUnavailable, InvalidUrl...)"
    );
    describe_counter!(
        ORIGIN_PURGES,
        "Purge requests to the caches in front of the origin, by layer and outcome (done, failed)"
    );
    describe_gauge!(
        ORIGIN_PENDING,
        "URLs an origin cache has yet to purge (their CDN purge waits), by layer"
    );
    describe_gauge!(
        ORIGIN_FAILING,
        "Of those, URLs whose purge at the layer failed at least once, by layer"
    );
    describe_counter!(
        VERIFIED,
        "URLs verified at the edge, by result (fresh, stale, unverifiable)"
    );
    describe_histogram!(
        TIME_TO_FRESH,
        Unit::Seconds,
        "From the intent to every edge serving the new content"
    );
    describe_gauge!(VERIFYING, "URLs being verified at the edge now");
    describe_gauge!(TAG_REGISTRY_URLS, "URLs the tag registry holds");
    describe_gauge!(
        TAG_REGISTRY_DROPPED,
        "URLs the tag registry dropped to stay within tags.max_urls, since it began"
    );
    describe_counter!(
        TAGS_FED,
        "URLs whose tags this node set or forgot, by source (api, header, access_log)"
    );
    describe_counter!(
        TAG_LOG_LINES,
        "Access-log lines read for tags, by result (learned, nothing, bad)"
    );
    describe_histogram!(BATCH_SIZE, "URLs per purge batch cut");
    describe_gauge!(ITEMS, "Items by state");
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest pending item"
    );
    describe_gauge!(
        QUOTA_USED,
        "URLs sent today, by kind (file, directory, preload)"
    );
    describe_gauge!(
        PRELOADS,
        "Preloads by state (waiting: their purge has not succeeded yet)"
    );
    describe_counter!(
        PRELOADS_REQUESTED,
        "URLs clients asked to preload (after their purge, or on their own)"
    );
    describe_gauge!(QUOTA_LEFT, "URLs left in today's quota, by kind");
    describe_gauge!(
        FLEET_LEADER,
        "1 on the node that sends (the fleet's leader, or a standalone host), 0 on a follower"
    );
    describe_gauge!(
        SENDER_PAUSED,
        "1 while sending is paused (credentials refused)"
    );
}

/// A CDN call and how it went.
pub fn api_call(operation: &'static str, outcome: &str, duration: Duration) {
    counter!(API_CALLS, "operation" => operation, "outcome" => outcome.to_owned()).increment(1);
    histogram!(API_CALL_DURATION, "operation" => operation).record(duration.as_secs_f64());
}

/// A URL's verification at the edge ended; `time_to_fresh` when fresh.
pub fn verified(result: &'static str, time_to_fresh: Option<f64>) {
    counter!(VERIFIED, "result" => result).increment(1);
    if let Some(seconds) = time_to_fresh {
        histogram!(TIME_TO_FRESH).record(seconds);
    }
}

/// One URL's purge at an origin cache, and how it went.
pub fn origin_purge(layer: &str, outcome: &'static str) {
    counter!(ORIGIN_PURGES, "layer" => layer.to_owned(), "outcome" => outcome).increment(1);
}

/// A feed of the tag registry from `POST /v1/tags`.
pub fn tags_fed(outcome: &crate::store::FeedOutcome) {
    tags_learned("api", outcome);
}

/// A feed of the tag registry from `source`.
pub fn tags_learned(source: &'static str, outcome: &crate::store::FeedOutcome) {
    counter!(TAGS_FED, "source" => source).increment(outcome.tagged + outcome.forgotten);
}

/// Access-log lines read: learned from, with nothing to learn, unreadable.
pub fn tag_log_lines(learned: u64, nothing: u64, bad: u64) {
    for (result, n) in [("learned", learned), ("nothing", nothing), ("bad", bad)] {
        if n > 0 {
            counter!(TAG_LOG_LINES, "result" => result).increment(n);
        }
    }
}

pub fn preloads_asked(urls: usize) {
    counter!(PRELOADS_REQUESTED).increment(urls as u64);
}

/// URLs ended `expired` (no purge, no quota).
pub fn expired(urls: u64) {
    counter!(EXPIRED).increment(urls);
}

pub fn throttled() {
    counter!(THROTTLED).increment(1);
}

pub fn enqueued(urls: usize) {
    counter!(ENQUEUED_REQUESTS).increment(1);
    counter!(ENQUEUED_URLS).increment(urls as u64);
}

/// A client request was answered with an error of `error_type` (a fixed,
/// small set of names, so the label stays bounded).
pub fn refused(error_type: &'static str) {
    counter!(REFUSED, "type" => error_type).increment(1);
}

pub fn batch_cut(urls: usize) {
    histogram!(BATCH_SIZE).record(urls as f64);
}

/// Sets the state gauges from the store and the pipeline's report, then
/// renders the exposition.
pub async fn render(
    handle: &PrometheusHandle,
    store: &Store,
    status: &crate::report::PipelineStatus,
    fleet: &crate::fleet::FleetStatus,
    now: time::OffsetDateTime,
    origin_caches: &[crate::config::OriginCacheSettings],
) -> String {
    gauge!(FLEET_LEADER).set(if fleet.sends() { 1.0 } else { 0.0 });
    if let Ok(counts) = store.queue_counts().await {
        let items = counts.states();
        for state in ItemState::ALL {
            gauge!(ITEMS, "state" => state.as_str()).set(items.get(state) as f64);
        }
        if let Ok(waiting) = store.preloads_waiting().await {
            let preloads = counts.preload_states();
            for (state, count) in [
                ("waiting", waiting),
                ("pending", preloads.pending),
                ("sending", preloads.sending),
                ("submitted", preloads.submitted),
                ("succeeded", preloads.succeeded),
                ("failed", preloads.failed),
                ("cancelled", preloads.cancelled),
            ] {
                gauge!(PRELOADS, "state" => state).set(count as f64);
            }
        }
    }
    let age = match store.oldest_pending().await {
        Ok(Some(at)) => crate::store::parse_timestamp(&at)
            .map(|at| (now - at).as_seconds_f64().max(0.0))
            .unwrap_or(0.0),
        _ => 0.0,
    };
    gauge!(OLDEST_PENDING_AGE).set(age);
    if let Ok(pending) = store.verifications_pending().await {
        gauge!(VERIFYING).set(pending as f64);
    }
    if let Ok(registry) = store.tag_registry_counts().await {
        gauge!(TAG_REGISTRY_URLS).set(registry.urls as f64);
        gauge!(TAG_REGISTRY_DROPPED).set(registry.dropped as f64);
    }
    if let Ok(counts) = store.origin_layer_counts().await {
        // Every configured layer has its gauges, 0 when nothing waits.
        for layer in origin_caches {
            let count = counts.iter().find(|c| c.layer == layer.name);
            let (pending, failing) = count.map_or((0, 0), |c| (c.pending, c.failing));
            gauge!(ORIGIN_PENDING, "layer" => layer.name.clone()).set(pending as f64);
            gauge!(ORIGIN_FAILING, "layer" => layer.name.clone()).set(failing as f64);
        }
    }
    if let Some(quota) = &status.quota {
        for (kind, used, left) in [
            ("file", quota.files_used, quota.files_left),
            ("directory", quota.directories_used, quota.directories_left),
            ("preload", quota.preloads_used, quota.preloads_left),
        ] {
            gauge!(QUOTA_USED, "kind" => kind).set(used as f64);
            gauge!(QUOTA_LEFT, "kind" => kind).set(left as f64);
        }
    }
    let paused = status.sender.state == SenderState::Paused;
    gauge!(SENDER_PAUSED).set(if paused { 1.0 } else { 0.0 });
    handle.render()
}

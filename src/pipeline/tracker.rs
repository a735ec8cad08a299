//! The tracker: follows each accepted call's `TaskTrackId` until every URL
//! has a final result.
//!
//! Every `tracker.poll_interval` it asks the CDN about each submitted batch
//! (through the same gate as purges). `Succeed` ends a URL; `Failed` sends it
//! back to pending until `sender.max_attempts`, then fails it; a batch with
//! no final answer after `tracker.give_up_after` has its URLs failed with a
//! reason that says so. With nothing submitted, it sleeps until woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Shared;
use super::gate::{Admission, CREDENTIALS_RETRY};
use crate::cdn::{ErrorClass, UrlState};
use crate::store::{ItemResult, StoreError, SubmittedBatch, parse_timestamp, timestamp};
use crate::target::Kind;

/// Longest wait before a URL the CDN reported `Failed` is sent again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

pub(super) async fn run(shared: Arc<Shared>) {
    let _alive = super::AliveGuard::new(&shared.tracker_alive);
    let mut last_polled: HashMap<i64, Instant> = HashMap::new();
    loop {
        let next = match poll_due(&shared, &mut last_polled).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "tracker: store error; retrying in 5s");
                Some(Duration::from_secs(5))
            }
        };
        let sleep = tokio::time::sleep(next.unwrap_or(Duration::from_secs(86_400)));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake_tracker.notified() => {}
            _ = sleep, if next.is_some() => {}
        }
    }
}

/// Polls every batch that is due; returns when the next one will be.
async fn poll_due(
    shared: &Arc<Shared>,
    last_polled: &mut HashMap<i64, Instant>,
) -> Result<Option<Duration>, StoreError> {
    let batches = shared.store.submitted_batches().await?;
    last_polled.retain(|id, _| batches.iter().any(|b| b.id == *id));
    if batches.is_empty() {
        return Ok(None);
    }
    let settings = shared.settings();
    let interval = settings.tracker.poll_interval;
    let now = shared.now();
    let started = Instant::now();
    let mut next: Option<Duration> = None;
    let mut polls = JoinSet::new();
    for batch in batches {
        let accepted = parse_timestamp(&batch.accepted_at).unwrap_or(now);
        let age = (now - accepted).unsigned_abs();
        if now - accepted > settings.tracker.give_up_after {
            give_up(shared, &batch, settings.tracker.give_up_after).await?;
            continue;
        }
        // First poll one interval after acceptance, then every interval.
        let wait = match last_polled.get(&batch.id) {
            Some(at) => interval.saturating_sub(started - *at),
            None => interval.saturating_sub(age),
        };
        if !wait.is_zero() {
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        last_polled.insert(batch.id, started);
        next = Some(next.map_or(interval, |n| n.min(interval)));
        let shared = shared.clone();
        polls.spawn(async move { poll(&shared, &batch).await });
    }
    while let Some(joined) = polls.join_next().await {
        match joined {
            Ok(result) => result?,
            Err(error) => tracing::error!(%error, "a tracker poll panicked"),
        }
    }
    Ok(next)
}

async fn give_up(
    shared: &Shared,
    batch: &SubmittedBatch,
    after: Duration,
) -> Result<(), StoreError> {
    let items = shared.store.submitted_items(batch.id).await?;
    let reason = format!(
        "gave up: no final result from the CDN within {} (TaskTrackId {})",
        humantime::format_duration(after),
        batch.task_track_id
    );
    tracing::warn!(batch = batch.id, task_track_id = %batch.task_track_id, items = items.len(), "{reason}");
    let results = items
        .into_iter()
        .map(|i| {
            (
                i.item_id,
                ItemResult::Failed {
                    reason: reason.clone(),
                },
            )
        })
        .collect();
    shared
        .store
        .record_results(batch.id, results, &shared.now_ts())
        .await?;
    Ok(())
}

async fn poll(shared: &Arc<Shared>, batch: &SubmittedBatch) -> Result<(), StoreError> {
    let Admission::Go(permit) = shared.gate.admit(&shared.shutdown).await else {
        // Paused or stopping: ask again later.
        return Ok(());
    };
    let started = Instant::now();
    let result = shared
        .client()
        .query_purge(&batch.endpoint_id, &batch.task_track_id)
        .await;
    let took = started.elapsed();
    drop(permit);
    let settings = shared.settings();
    let max_attempts = i64::from(settings.sender.max_attempts);
    let now = shared.now();
    match result {
        Ok(progress) => {
            shared.gate.on_success();
            shared.record_call("query", "ok", took, None);
            let all = || {
                progress
                    .value
                    .files
                    .iter()
                    .chain(&progress.value.directories)
            };
            tracing::info!(
                endpoint = %batch.endpoint_id,
                batch = batch.id,
                outcome = "ok",
                task_track_id = %batch.task_track_id,
                correlation_id = progress.correlation_id.as_deref().unwrap_or("-"),
                succeeded = all().filter(|u| u.state == UrlState::Succeeded).count(),
                failed = all().filter(|u| u.state == UrlState::Failed).count(),
                running = all().filter(|u| !u.state.is_final()).count(),
                "progress query"
            );
            let states: HashMap<(Kind, &str), &UrlState> = progress
                .value
                .files
                .iter()
                .map(|u| ((Kind::File, u.url.as_str()), &u.state))
                .chain(
                    progress
                        .value
                        .directories
                        .iter()
                        .map(|u| ((Kind::Directory, u.url.as_str()), &u.state)),
                )
                .collect();
            let items = shared.store.submitted_items(batch.id).await?;
            let mut results = Vec::new();
            for item in items {
                let Some(state) = states.get(&(item.kind, item.url.as_str())) else {
                    continue;
                };
                let result = match state {
                    UrlState::Succeeded => ItemResult::Succeeded,
                    UrlState::Failed if item.attempts < max_attempts => {
                        let delay = retry_delay(settings.tracker.poll_interval, item.attempts);
                        ItemResult::Retry {
                            not_before: timestamp(now + delay),
                            reason: format!(
                                "the CDN reported the purge as Failed (attempt {} of {max_attempts}, TaskTrackId {}); retrying",
                                item.attempts, batch.task_track_id
                            ),
                        }
                    }
                    UrlState::Failed => ItemResult::Failed {
                        reason: format!(
                            "the CDN reported the purge as Failed on all {max_attempts} attempts (last TaskTrackId {})",
                            batch.task_track_id
                        ),
                    },
                    UrlState::Running | UrlState::Other(_) => continue,
                };
                results.push((item.item_id, result));
            }
            if !results.is_empty() {
                let retried = results
                    .iter()
                    .any(|(_, r)| matches!(r, ItemResult::Retry { .. }));
                let closed = shared
                    .store
                    .record_results(batch.id, results, &timestamp(now))
                    .await?;
                if closed {
                    tracing::info!(batch = batch.id, task_track_id = %batch.task_track_id,
                        correlation_id = progress.correlation_id.as_deref().unwrap_or("-"), "purge finished");
                }
                if retried {
                    shared.wake_batcher.notify_one();
                }
            }
        }
        Err(error) => {
            shared.record_call(
                "query",
                &error.outcome_label(),
                took,
                Some(error.to_string()),
            );
            match error.class() {
                ErrorClass::Throttled => {
                    shared.gate.on_throttled(error.retry_after());
                }
                ErrorClass::Credentials => {
                    let reason =
                        format!("the CDN refused our credentials ({error}); fix them and reload");
                    if shared
                        .gate
                        .pause(&error.outcome_label(), reason.clone(), CREDENTIALS_RETRY)
                    {
                        tracing::error!("{reason}; sending is paused, every item is kept");
                    }
                }
                ErrorClass::BadItem | ErrorClass::EndpointMisconfigured => {
                    // The service does not know this task: send its URLs again.
                    let reason = format!(
                        "the CDN does not know TaskTrackId {} ({error}); sending again",
                        batch.task_track_id
                    );
                    tracing::warn!(batch = batch.id, "{reason}");
                    let items = shared.store.submitted_items(batch.id).await?;
                    let results = items
                        .into_iter()
                        .map(|i| {
                            let result = if i.attempts < max_attempts {
                                ItemResult::Retry {
                                    not_before: timestamp(now),
                                    reason: reason.clone(),
                                }
                            } else {
                                ItemResult::Failed {
                                    reason: reason.clone(),
                                }
                            };
                            (i.item_id, result)
                        })
                        .collect();
                    shared
                        .store
                        .record_results(batch.id, results, &timestamp(now))
                        .await?;
                    shared.wake_batcher.notify_one();
                }
                _ => {
                    tracing::info!(
                        endpoint = %batch.endpoint_id,
                        batch = batch.id,
                        outcome = %error.outcome_label(),
                        task_track_id = %batch.task_track_id,
                        correlation_id = error.correlation_id().unwrap_or("-"),
                        error = %error,
                        "progress query failed; asking again next interval"
                    );
                }
            }
        }
    }
    Ok(())
}

/// `poll_interval × 2^(attempts-1)`, at most [`MAX_RETRY_DELAY`].
fn retry_delay(poll_interval: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(1, 10).saturating_sub(1) as u32;
    poll_interval.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(5));
        assert_eq!(retry_delay(base, 3), Duration::from_secs(20));
        assert_eq!(retry_delay(base, 50), MAX_RETRY_DELAY);
    }
}

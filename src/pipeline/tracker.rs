//! The tracker: follows each accepted call's `TaskTrackId` until every URL
//! has a final result. Purges are asked about at `…/purges/{id}`, preloads
//! at `…/preloads/{id}`; both answers read the same way (a preload may
//! also say `Waiting`, which is not final).
//!
//! Every `tracker.poll_interval` it asks the CDN about each submitted batch
//! (through the same gate as purges). `Succeed` ends a URL; `Failed` sends it
//! back to pending until `sender.max_attempts`, then fails it; a batch with
//! no final answer after `tracker.give_up_after` has its URLs failed with a
//! reason that says so, but only once the tracker has really asked
//! ([`MIN_QUERIES_BEFORE_GIVING_UP`] progress queries that reached the
//! CDN): after a downtime or a pause longer than `give_up_after`, the CDN
//! usually has the final answer, and failing without asking would report
//! an end that did not happen. With nothing submitted, it sleeps until
//! woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Shared;
use super::gate::Admission;
use crate::cdn::{Called, CdnError, ErrorClass, PurgeProgress, UrlState};
use crate::store::Timestamp;
use crate::store::{
    BatchId, ItemId, ItemResult, Operation, StoreError, SubmittedBatch, SubmittedItem,
};
use crate::target::Kind;

/// Longest wait before a URL the CDN reported `Failed` is sent again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Progress queries that must reach the CDN, in this run, before a batch
/// past `tracker.give_up_after` is given up.
const MIN_QUERIES_BEFORE_GIVING_UP: u32 = 3;

/// What the tracker knows of one batch in this run.
#[derive(Debug, Clone, Copy)]
struct Polled {
    at: Instant,
    /// Progress queries that reached the CDN (answered or not).
    asked: u32,
}

/// Whether a batch accepted `age` ago, asked about `asked` times, is given
/// up now.
fn gives_up(age: Duration, asked: u32, give_up_after: Duration) -> bool {
    age > give_up_after && asked >= MIN_QUERIES_BEFORE_GIVING_UP
}

pub(super) async fn run(shared: Arc<Shared>) {
    let _alive = super::AliveGuard::new(&shared.tracker_alive);
    let mut last_polled: HashMap<BatchId, Polled> = HashMap::new();
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
    last_polled: &mut HashMap<BatchId, Polled>,
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
        let accepted = batch.accepted_at.get();
        let age = if now > accepted {
            (now - accepted).unsigned_abs()
        } else {
            Duration::ZERO
        };
        let polled = last_polled.get(&batch.id).copied();
        let asked = polled.map_or(0, |p| p.asked);
        if gives_up(age, asked, settings.tracker.give_up_after) {
            give_up(shared, &batch, settings.tracker.give_up_after, asked).await?;
            continue;
        }
        // First poll one interval after acceptance, then every interval.
        let wait = match polled {
            Some(p) => interval.saturating_sub(started - p.at),
            None => interval.saturating_sub(age),
        };
        if !wait.is_zero() {
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        last_polled.insert(batch.id, Polled { at: started, asked });
        next = Some(next.map_or(interval, |n| n.min(interval)));
        let shared = shared.clone();
        polls.spawn(async move { (batch.id, poll(&shared, &batch).await) });
    }
    while let Some(joined) = polls.join_next().await {
        match joined {
            Ok((id, result)) => {
                if result? == Asked::Yes
                    && let Some(polled) = last_polled.get_mut(&id)
                {
                    polled.asked += 1;
                }
            }
            Err(error) => tracing::error!(%error, "a tracker poll panicked"),
        }
    }
    Ok(next)
}

async fn give_up(
    shared: &Shared,
    batch: &SubmittedBatch,
    after: Duration,
    asked: u32,
) -> Result<(), StoreError> {
    let items = shared.store.submitted_items(batch.id).await?;
    let reason = format!(
        "gave up: no final result from the CDN within {} and {asked} progress queries (TaskTrackId {})",
        humantime::format_duration(after),
        batch.task_track_id
    );
    tracing::warn!(batch = %batch.id, task_track_id = %batch.task_track_id, items = items.len(), "{reason}");
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
        .record_results(batch.id, results, shared.now_ts())
        .await?;
    Ok(())
}

/// Whether a progress query reached the CDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Yes,
    No,
}

/// The CDN may echo a URL in another spelling than we sent (the case of
/// escapes, an IDN host): results are matched on the normalized form.
fn match_key(url: &str) -> String {
    crate::target::normalize(url, usize::MAX / 8)
        .map(String::from)
        .unwrap_or_else(|_| url.to_owned())
}

async fn poll(shared: &Arc<Shared>, batch: &SubmittedBatch) -> Result<Asked, StoreError> {
    let Admission::Go(permit) = shared.gate.admit(&shared.shutdown).await else {
        // Paused or stopping: ask again later. This does not count towards
        // giving up.
        return Ok(Asked::No);
    };
    if shared.lease_lapsed() {
        return Ok(Asked::No);
    }
    let started = Instant::now();
    let client = shared.client();
    let result = match batch.operation {
        Operation::Purge => {
            client
                .query_purge(&batch.endpoint_id, &batch.task_track_id)
                .await
        }
        Operation::Preload => {
            client
                .query_preload(&batch.endpoint_id, &batch.task_track_id)
                .await
        }
    };
    let took = started.elapsed();
    drop(permit);
    let label = match batch.operation {
        Operation::Purge => "query",
        Operation::Preload => "preload_query",
    };
    match result {
        Ok(progress) => {
            shared.gate.on_success();
            shared.record_call(label, "ok", took, None);
            on_progress(shared, batch, &progress).await?;
        }
        Err(error) => {
            shared.record_call(label, &error.outcome_label(), took, Some(&error));
            on_query_error(shared, batch, &error).await?;
        }
    }
    Ok(Asked::Yes)
}

/// Records what an answer says about each URL ([`read_progress`]).
async fn on_progress(
    shared: &Arc<Shared>,
    batch: &SubmittedBatch,
    progress: &Called<PurgeProgress>,
) -> Result<(), StoreError> {
    let correlation_id = progress.correlation_id.as_deref().unwrap_or("-");
    let all = || {
        progress
            .value
            .files
            .iter()
            .chain(&progress.value.directories)
    };
    tracing::info!(
        endpoint = %batch.endpoint_id,
        batch = %batch.id,
        outcome = "ok",
        task_track_id = %batch.task_track_id,
        correlation_id,
        succeeded = all().filter(|u| u.state == UrlState::Succeeded).count(),
        failed = all().filter(|u| u.state == UrlState::Failed).count(),
        running = all().filter(|u| !u.state.is_final()).count(),
        "progress query"
    );
    let settings = shared.settings();
    let rules = RetryRules {
        max_attempts: i64::from(settings.sender.max_attempts),
        poll_interval: settings.tracker.poll_interval,
    };
    let now = shared.now();
    let items = shared.store.submitted_items(batch.id).await?;
    let results = read_progress(
        &progress.value,
        &items,
        &rules,
        (batch.operation, &batch.task_track_id),
        now,
    );
    if results.is_empty() {
        return Ok(());
    }
    // A retried URL is pending again; a purge that succeeded may have made
    // preloads pending: either way the batcher has work.
    let retried = results.iter().any(|(_, r)| match r {
        ItemResult::Retry { .. } => true,
        ItemResult::Succeeded => batch.operation == Operation::Purge,
        ItemResult::Failed { .. } => false,
    });
    let closed = shared
        .store
        .record_results(batch.id, results, Timestamp::new(now))
        .await?;
    if closed {
        tracing::info!(batch = %batch.id, task_track_id = %batch.task_track_id,
            correlation_id, "{} finished", batch.operation);
    }
    if retried {
        shared.wake_batcher.notify_one();
    }
    Ok(())
}

/// A progress query failed: the gate learns of throttling and refused
/// credentials; a task the CDN does not know has its URLs sent again
/// ([`unknown_task_results`]); anything else is asked again next interval.
async fn on_query_error(
    shared: &Arc<Shared>,
    batch: &SubmittedBatch,
    error: &CdnError,
) -> Result<(), StoreError> {
    match error.class() {
        ErrorClass::Throttled => {
            shared.gate.on_throttled(error.retry_after());
        }
        ErrorClass::Credentials => {
            let reason = format!("the CDN refused our credentials ({error}); fix them and reload");
            shared.pause_for_credentials(error, &reason);
        }
        ErrorClass::BadItem | ErrorClass::EndpointMisconfigured => {
            let reason = format!(
                "the CDN does not know TaskTrackId {} ({error}); its URLs are sent again",
                batch.task_track_id
            );
            tracing::warn!(batch = %batch.id, "{reason}");
            let now = shared.now();
            let max_attempts = i64::from(shared.settings().sender.max_attempts);
            let items = shared.store.submitted_items(batch.id).await?;
            let results = unknown_task_results(&items, &reason, max_attempts, now);
            shared
                .store
                .record_results(batch.id, results, Timestamp::new(now))
                .await?;
            shared.wake_batcher.notify_one();
        }
        _ => {
            tracing::info!(
                endpoint = %batch.endpoint_id,
                batch = %batch.id,
                outcome = %error.outcome_label(),
                task_track_id = %batch.task_track_id,
                correlation_id = error.correlation_id().unwrap_or("-"),
                error = %error,
                "progress query failed; asking again next interval"
            );
        }
    }
    Ok(())
}

/// The service does not know the task (it lost it, or it is another
/// service than the one that accepted it): the result cannot be learned,
/// so each URL is sent again at once while it has attempts left, and fails
/// with the reason after; never left waiting, never failed without a word.
fn unknown_task_results(
    items: &[SubmittedItem],
    reason: &str,
    max_attempts: i64,
    now: time::OffsetDateTime,
) -> Vec<(ItemId, ItemResult)> {
    items
        .iter()
        .map(|item| {
            let result = if item.attempts < max_attempts {
                ItemResult::Retry {
                    not_before: Timestamp::new(now),
                    reason: reason.to_owned(),
                }
            } else {
                ItemResult::Failed {
                    reason: reason.to_owned(),
                }
            };
            (item.item_id, result)
        })
        .collect()
}

/// When a URL the CDN reported `Failed` is sent again, and how often.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryRules {
    pub max_attempts: i64,
    pub poll_interval: Duration,
}

/// What a progress answer means for each submitted item (the tracker's
/// policy, without I/O):
///
/// | the CDN says | attempts so far | result |
/// |---|---|---|
/// | `Succeed` | any | succeeded |
/// | `Failed` | fewer than `max_attempts` | back to pending after [`retry_delay`] |
/// | `Failed` | `max_attempts` | failed, with the reason |
/// | `Running`, anything else, or the URL not in the answer | any | nothing yet |
///
/// URLs are matched in their normalized form (the CDN may echo another
/// spelling).
pub(super) fn read_progress(
    progress: &PurgeProgress,
    items: &[SubmittedItem],
    rules: &RetryRules,
    (operation, task_track_id): (Operation, &str),
    now: time::OffsetDateTime,
) -> Vec<(ItemId, ItemResult)> {
    let states: HashMap<(Kind, String), &UrlState> = progress
        .files
        .iter()
        .map(|u| ((Kind::File, match_key(&u.url)), &u.state))
        .chain(
            progress
                .directories
                .iter()
                .map(|u| ((Kind::Directory, match_key(&u.url)), &u.state)),
        )
        .collect();
    let max_attempts = rules.max_attempts;
    items
        .iter()
        .filter_map(|item| {
            let state = states.get(&(item.kind, match_key(&item.url)))?;
            let result = match state {
                UrlState::Succeeded => ItemResult::Succeeded,
                UrlState::Failed if item.attempts < max_attempts => {
                    let delay = retry_delay(rules.poll_interval, item.attempts);
                    ItemResult::Retry {
                        not_before: Timestamp::new(now + delay),
                        reason: format!(
                            "the CDN reported the {operation} as Failed (attempt {} of {max_attempts}, TaskTrackId {task_track_id}); retrying",
                            item.attempts
                        ),
                    }
                }
                UrlState::Failed => ItemResult::Failed {
                    reason: format!(
                        "the CDN reported the {operation} as Failed on all {max_attempts} attempts (last TaskTrackId {task_track_id})"
                    ),
                },
                UrlState::Waiting | UrlState::Running | UrlState::Other(_) => return None,
            };
            Some((item.item_id, result))
        })
        .collect()
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

    fn item(id: i64, kind: Kind, url: &str, attempts: i64) -> SubmittedItem {
        SubmittedItem {
            item_id: ItemId(id),
            kind,
            url: url.into(),
            attempts,
        }
    }

    #[test]
    fn an_unknown_task_sends_its_urls_again_until_their_last_attempt() {
        let now = time::macros::datetime!(2026-11-25 10:00 UTC);
        let items = [
            item(1, Kind::File, "http://e.com/a", 1),
            item(2, Kind::File, "http://e.com/b", 5),
        ];
        let results = unknown_task_results(&items, "lost task", 5, now);
        assert_eq!(
            results,
            [
                (
                    ItemId(1),
                    ItemResult::Retry {
                        not_before: Timestamp::new(now),
                        reason: "lost task".into(),
                    }
                ),
                (
                    ItemId(2),
                    ItemResult::Failed {
                        reason: "lost task".into(),
                    }
                ),
            ]
        );
    }

    fn url(url: &str, state: UrlState) -> crate::cdn::UrlProgress {
        crate::cdn::UrlProgress {
            url: url.into(),
            state,
        }
    }

    #[test]
    fn every_row_of_the_progress_table() {
        let rules = RetryRules {
            max_attempts: 3,
            poll_interval: Duration::from_secs(5),
        };
        let now = time::macros::datetime!(2026-11-25 10:00 UTC);
        let progress = PurgeProgress {
            files: vec![
                url("http://e.com/ok", UrlState::Succeeded),
                url("http://e.com/again", UrlState::Failed),
                url("http://e.com/last", UrlState::Failed),
                url("http://e.com/running", UrlState::Running),
                // Echoed in another spelling than the one sent.
                url("HTTP://E.COM/%7ecase", UrlState::Succeeded),
            ],
            directories: vec![url("http://e.com/d/", UrlState::Succeeded)],
        };
        let items = [
            item(1, Kind::File, "http://e.com/ok", 1),
            item(2, Kind::File, "http://e.com/again", 1),
            item(3, Kind::File, "http://e.com/last", 3),
            item(4, Kind::File, "http://e.com/running", 1),
            item(5, Kind::File, "http://e.com/~case", 1),
            item(6, Kind::Directory, "http://e.com/d/", 1),
            // Not in the answer: nothing yet.
            item(7, Kind::File, "http://e.com/missing", 1),
            // A file and a directory of one URL are different things.
            item(8, Kind::File, "http://e.com/d/", 1),
        ];
        let results = read_progress(&progress, &items, &rules, (Operation::Purge, "task-1"), now);
        let ids: Vec<i64> = results.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [1, 2, 3, 5, 6]);
        assert_eq!(results[0].1, ItemResult::Succeeded);
        match &results[1].1 {
            ItemResult::Retry { not_before, reason } => {
                assert_eq!(not_before.to_string(), "2026-11-25T10:00:05.000Z");
                assert!(reason.contains("attempt 1 of 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match &results[2].1 {
            ItemResult::Failed { reason } => {
                assert!(
                    reason.contains("on all 3 attempts") && reason.contains("task-1"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(results[3].1, ItemResult::Succeeded);
        assert_eq!(results[4].1, ItemResult::Succeeded);
    }

    #[test]
    fn gives_up_only_after_asking() {
        let after = Duration::from_secs(3600);
        let old = Duration::from_secs(7200);
        // Past the limit but never asked in this run (a restart after a
        // long downtime, a credentials pause): ask first.
        assert!(!gives_up(old, 0, after));
        assert!(!gives_up(old, MIN_QUERIES_BEFORE_GIVING_UP - 1, after));
        assert!(gives_up(old, MIN_QUERIES_BEFORE_GIVING_UP, after));
        // Asked often, but not yet past the limit.
        assert!(!gives_up(Duration::from_secs(60), 100, after));
    }

    #[test]
    fn echoed_urls_match_in_any_spelling() {
        assert_eq!(
            match_key("HTTP://Example.com/a%2fb"),
            match_key("http://example.com/a%2Fb")
        );
        assert_eq!(
            match_key("http://bücher.example/x"),
            match_key("http://xn--bcher-kva.example/x")
        );
    }
}

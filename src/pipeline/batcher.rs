//! The batcher: cuts batches on demand.
//!
//! A batch is cut only when a sender slot is free and the gate is open, so
//! a backlog stays pending items (which can still coalesce) rather than
//! turning into thousands of batches committed in advance. A batch is cut
//! when it would be full, or when its oldest item has waited
//! `batch.linger`. The batcher sleeps until the next such moment, or until
//! woken (new items, a finished batch, a reload): an idle daemon does no
//! work at all.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::task::TaskTracker;

use super::{Shared, sender};
use crate::quota;
use crate::store::{CutLimits, StoreError, parse_timestamp, timestamp};
use crate::target::Kind;

/// With items waiting on an exhausted quota, check this often whether the
/// day has turned (the clock may also be moved by an operator or a test).
const QUOTA_RECHECK: Duration = Duration::from_secs(5);

pub(super) async fn run(shared: Arc<Shared>, senders: TaskTracker) {
    let _alive = super::AliveGuard::new(&shared.batcher_alive);
    let mut rotation = 0usize;
    let mut known = match shared.store.pending_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            tracing::warn!(%error, "cannot list endpoints with pending items");
            Vec::new()
        }
    };
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let next = match cut_what_can_go(&shared, &senders, &mut known, &mut rotation).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "batcher: store error; retrying in 5s");
                Some(Duration::from_secs(5))
            }
        };
        if next == Some(Duration::ZERO) {
            continue;
        }
        let sleep = tokio::time::sleep(next.unwrap_or(Duration::from_secs(86_400)));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake_batcher.notified() => {}
            _ = sleep, if next.is_some() => {}
        }
    }
}

fn earlier(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn until(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    let gap = to - from;
    if gap.is_negative() {
        Duration::ZERO
    } else {
        gap.unsigned_abs()
    }
}

/// Cuts every batch that may go now; returns when to look again (`None`:
/// only when woken).
async fn cut_what_can_go(
    shared: &Arc<Shared>,
    senders: &TaskTracker,
    known: &mut Vec<String>,
    rotation: &mut usize,
) -> Result<Option<Duration>, StoreError> {
    let gate_wait = shared
        .gate
        .paused()
        .map(|p| p.until)
        .into_iter()
        .chain(shared.gate.throttled_until())
        .max();
    if let Some(wait) = gate_wait {
        return Ok(Some(
            wait.saturating_duration_since(tokio::time::Instant::now()),
        ));
    }
    let settings = shared.settings();
    let offset = settings
        .derived
        .quota_offset
        .unwrap_or(time::UtcOffset::UTC);
    let now = shared.now();
    let now_ts = timestamp(now);
    let day = quota::day_of(now, offset);
    let subscription_id = shared.client().subscription_id().to_owned();
    let linger = settings.batch.linger;

    let mut endpoints = settings.derived.router.endpoint_ids();
    for endpoint in known.iter() {
        if !endpoints.contains(endpoint) {
            endpoints.push(endpoint.clone());
        }
    }
    if endpoints.is_empty() {
        return Ok(None);
    }
    *rotation = (*rotation + 1) % endpoints.len();
    endpoints.rotate_left(*rotation);

    let quota = shared.store.quota_use(&subscription_id, &day).await?;
    shared.status().quota = Some(quota);

    let mut next: Option<Duration> = None;
    let mut cut_any = false;
    let mut quota_blocked = false;
    for endpoint in &endpoints {
        if let Some(until) = shared.endpoint_paused_until(endpoint) {
            next = earlier(
                next,
                until.saturating_duration_since(tokio::time::Instant::now()),
            );
            continue;
        }
        let files = shared
            .store
            .readiness(endpoint, Kind::File, &now_ts, settings.batch.max_files)
            .await?;
        let directories = shared
            .store
            .readiness(
                endpoint,
                Kind::Directory,
                &now_ts,
                settings.batch.max_directories,
            )
            .await?;
        let earliest = [&files.earliest_not_before, &directories.earliest_not_before]
            .into_iter()
            .flatten()
            .filter_map(|t| parse_timestamp(t))
            .min();
        let Some(earliest) = earliest else {
            continue;
        };
        let eligible = files.eligible + directories.eligible;
        let ripe_at = earliest + linger;
        if eligible == 0 {
            next = earlier(next, until(now, ripe_at));
            continue;
        }
        let full = (settings.batch.max_files > 0 && files.eligible >= settings.batch.max_files)
            || (settings.batch.max_directories > 0
                && directories.eligible >= settings.batch.max_directories);
        if !full && ripe_at > now {
            next = earlier(next, until(now, ripe_at));
            continue;
        }
        let Ok(slot) = shared.batch_slots.clone().try_acquire_owned() else {
            // Woken when a batch finishes.
            return Ok(next);
        };
        let limits = CutLimits {
            max_files: settings.batch.max_files,
            max_directories: settings.batch.max_directories,
            subscription_id: subscription_id.clone(),
            quota_day: day.clone(),
            files_per_day: settings.quota.files_per_day,
            directories_per_day: settings.quota.directories_per_day,
        };
        match shared.store.cut_batch(endpoint, limits, &now_ts).await? {
            Some(batch) => {
                tracing::debug!(batch = batch.id, endpoint = %endpoint, files = batch.files.len(),
                    directories = batch.directories.len(), full, "cut a batch");
                crate::metrics::batch_cut(batch.len());
                senders.spawn(sender::run(shared.clone(), batch, slot));
                cut_any = true;
            }
            None => quota_blocked = true,
        }
    }

    if quota_blocked {
        let resumes = quota::next_day_start(now, offset);
        let first = shared
            .status()
            .quota_exhausted_until
            .replace(resumes)
            .is_none();
        if first {
            tracing::warn!(day = %day, resumes_at = %timestamp(resumes),
                "daily quota used up; the remaining items wait for the next quota day");
        }
        next = earlier(next, until(now, resumes).min(QUOTA_RECHECK));
    } else {
        shared.status().quota_exhausted_until = None;
    }

    if cut_any {
        // More may be ready (another full batch, another endpoint).
        return Ok(Some(Duration::ZERO));
    }
    if next.is_none() {
        // Nothing waiting anywhere: refresh the list of endpoints with
        // pending items (cheap now, and it catches ones dropped from the
        // configuration).
        *known = shared.store.pending_endpoints().await?;
    }
    Ok(next)
}

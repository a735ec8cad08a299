//! The periodic clean-up of finished history (`[retention]`).
//!
//! Every `retention.interval` it removes what finished more than
//! `retention.keep_finished` ago; the store does it in small batches. It
//! follows reloads, and sleeps in between: nothing runs while idle.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::quota;
use crate::store::Timestamp;
use crate::store::{Store, timestamp};

/// Items deleted per transaction.
const BATCH: usize = 500;

pub async fn run(
    store: Store,
    mut settings: watch::Receiver<Arc<Settings>>,
    clock: SharedClock,
    stop: CancellationToken,
) {
    loop {
        let interval = settings.borrow().retention.interval;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            // A reload may shorten the interval: start the wait again.
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let current = settings.borrow().clone();
        let keep = time::Duration::try_from(current.retention.keep_finished)
            .unwrap_or(time::Duration::MAX);
        let cutoff = clock
            .now_utc()
            .checked_sub(keep)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let offset = current.derived.quota_offset.get();
        match store
            .remove_finished_before(
                Timestamp::new(cutoff),
                &quota::day_of(cutoff, offset),
                BATCH,
            )
            .await
        {
            Ok(removed) if removed.total() > 0 => tracing::info!(
                items = removed.items,
                requests = removed.requests,
                batches = removed.batches,
                quota_days = removed.quota_days,
                before = %timestamp(cutoff),
                "retention: removed finished history"
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "retention pass failed; trying again next interval")
            }
        }
    }
}

//! On PostgreSQL, moves the deltas the count triggers append into the
//! counts every second (see `store::counts`), so reading the counts stays
//! a few rows however much the fleet writes. Every node does it: the fold
//! is one statement per table and safe to run at once. On SQLite the
//! triggers keep the counts exact and this task ends at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

const EVERY: Duration = Duration::from_secs(1);

pub(super) async fn run(store: Store, stop: CancellationToken) {
    if !store.keeps_count_deltas() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Err(error) = store.fold_counts().await {
            // The deltas stay and are read with the counts: only reads
            // get a little longer until the next fold succeeds.
            tracing::debug!(%error, "cannot fold the count deltas; trying again in 1s");
        }
    }
}

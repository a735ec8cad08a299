//! What the daemon tells systemd while it runs: a one-line `STATUS=` and,
//! under a watchdog, `WATCHDOG=1` while the parts that do the work answer.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::systemd;
use crate::report::PipelineReport;
use crate::store::Store;

/// The one-line `STATUS=` for systemd: backlog, and why sending is
/// paused if it is.
pub(super) async fn status_line(store: &Store, report: &dyn PipelineReport) -> String {
    let backlog = match store.state_counts().await {
        Ok(counts) => format!(
            "{} pending, {} in flight",
            counts.pending,
            counts.sending + counts.submitted
        ),
        Err(error) => format!("store unreadable: {error}"),
    };
    let status = report.status();
    let waiting = status
        .quota
        .as_ref()
        .map(|q| q.files_waiting + q.directories_waiting)
        .filter(|n| *n > 0)
        .map(|n| format!("; {n} wait for the next quota day"))
        .unwrap_or_default();
    match status.not_ready_reason() {
        Some(reason) => format!("{backlog}{waiting}; {reason}"),
        None => format!("{backlog}{waiting}"),
    }
}

/// Under systemd: `WATCHDOG=1` while the store's writer answers and the
/// batcher and tracker loops run (a stuck writer or a dead loop stops the
/// pings, and systemd restarts us), and a fresh `STATUS=` line.
///
/// A writer that answers with an error (disk full, file removed or made
/// read-only) still gets its pings: a restart would not fix the disk, and
/// restarting on it would be a crash loop. /readyz reports it instead.
pub(super) async fn run(store: Store, report: Arc<dyn PipelineReport>, stop: CancellationToken) {
    let interval = systemd::watchdog_interval()
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let answered = tokio::time::timeout(interval, store.probe_writer()).await;
        if answered.is_err() {
            tracing::warn!("the store writer did not answer in time; not pinging the watchdog");
        } else if !report.alive() {
            tracing::error!("the batcher or the tracker has stopped; not pinging the watchdog");
        } else {
            systemd::watchdog();
        }
        systemd::status(&status_line(&store, report.as_ref()).await);
    }
}

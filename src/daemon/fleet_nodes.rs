//! In fleet mode, this node's heartbeat in `fleet_nodes`: its role, term
//! and version every lease renewal period and whenever its role changes,
//! so every node's page can show the whole fleet and which node has gone
//! silent (issue 36).
//!
//! A heartbeat that cannot be written is logged and tried again; it never
//! holds up the lease loop, which runs on its own.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fleet::FleetStatus;
use crate::store::{Store, Timestamp};

pub(super) async fn run(
    store: Store,
    mut fleet: watch::Receiver<FleetStatus>,
    every: Duration,
    stop: CancellationToken,
) {
    let started_at = Timestamp::new(time::OffsetDateTime::now_utc());
    let version = env!("CARGO_PKG_VERSION");
    let mut failing = false;
    loop {
        let status = fleet.borrow().clone();
        let beat = store.fleet_heartbeat(&status, version, started_at);
        match tokio::time::timeout(every, beat).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot write this node's heartbeat; trying again");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("this node's heartbeat took longer than {every:?}; trying again");
            }
            _ => {}
        }
        // Every period, and at once when this node's role changes (an
        // election shows on every page without waiting for the period).
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
            changed = fleet.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

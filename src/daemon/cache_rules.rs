//! Keeps each configured endpoint's cache policy: read from the CDN at
//! start, every `cdn.cache_rules_refresh`, and on SIGHUP; the last good
//! copy kept in the store, so a restart without the API still has it.
//!
//! A failed read changes nothing but the note of the failure (shown on
//! the status page): the copy in force stays, and with no copy at all
//! nothing is assumed (every URL is purged).
//!
//! In a fleet only the node that sends reads the CDN (the subscription's
//! rate budget is the fleet's: three nodes reading at once were throttled
//! in the fleet drill); the others load the leader's copy from the shared
//! store every [`FOLLOWER_RELOAD`]. Reads are spaced [`CALL_GAP`] apart.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::cdn::ClientSource;
use crate::cdn::cache_rules::{KnownPolicy, Policies};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::fleet::FleetStatus;

/// How often a fleet follower loads the leader's copies from the store.
const FOLLOWER_RELOAD: std::time::Duration = std::time::Duration::from_secs(30);

/// Between two policy reads of one refresh: a refresh never bursts
/// against the subscription's rate limit.
const CALL_GAP: std::time::Duration = std::time::Duration::from_secs(1);
use crate::store::{Store, timestamp};

/// What the refresher works with.
pub(super) struct Refresher {
    pub(super) policies: Arc<Policies>,
    pub(super) store: Store,
    pub(super) settings: watch::Receiver<Arc<Settings>>,
    pub(super) clients: ClientSource,
    pub(super) clock: SharedClock,
    /// Notified on reload: read every policy again now.
    pub(super) now: Arc<Notify>,
    /// Whether this node sends (only then does it read the CDN).
    pub(super) fleet: watch::Receiver<FleetStatus>,
}

/// Loads the copies kept in the store (before intake opens, so the first
/// intents are already read under them).
pub(super) async fn load_kept(store: &Store, policies: &Policies) {
    match store.cache_policies().await {
        Ok(kept) => {
            for (endpoint_id, known) in kept {
                policies.set(&endpoint_id, known);
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the kept cache policies; reading them from the CDN");
        }
    }
}

pub(super) async fn run(refresher: Refresher, stop: CancellationToken) {
    let mut settings = refresher.settings.clone();
    let mut fleet = refresher.fleet.clone();
    loop {
        let current = settings.borrow_and_update().clone();
        let sends = fleet.borrow_and_update().sends();
        let every = current.cdn.cache_rules_refresh;
        let wait = if !sends {
            load_kept(&refresher.store, &refresher.policies).await;
            FOLLOWER_RELOAD
        } else if every.is_zero() {
            std::time::Duration::from_secs(86_400 * 365)
        } else {
            refresh_all(&refresher, &current, &stop).await;
            every
        };
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = refresher.now.notified() => break,
                _ = tokio::time::sleep_until(until) => break,
                // Elected (or deposed): read, or stop reading, now. A
                // follower hears of every claim tick: only a change of
                // role counts.
                Ok(()) = fleet.changed() => {
                    if fleet.borrow_and_update().sends() != sends {
                        break;
                    }
                }
            }
        }
    }
}

/// Reads every configured endpoint's policy once.
async fn refresh_all(refresher: &Refresher, settings: &Settings, stop: &CancellationToken) {
    let client = match refresher.clients.build(settings) {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "cannot read cache policies");
            return;
        }
    };
    for (n, endpoint_id) in settings
        .derived
        .router
        .endpoint_ids()
        .into_iter()
        .enumerate()
    {
        if n > 0 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CALL_GAP) => {}
            }
        }
        match client.get_cache_policy(&endpoint_id).await {
            Ok(called) => {
                let now = refresher.clock.now_utc();
                let policy = called.value;
                // In force for intake first, then kept (whose change also
                // recomputes the pending expiries): an intent between the
                // two is read under the new policy, and the recomputation
                // covers it either way.
                refresher.policies.set(
                    &endpoint_id,
                    KnownPolicy {
                        policy: policy.clone(),
                        fetched_at: timestamp(now),
                        refresh_error: None,
                    },
                );
                match refresher
                    .store
                    .save_cache_policy(&endpoint_id, &policy, now)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(%endpoint_id, policy = %policy, "cache policy read");
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%endpoint_id, %error, "cannot keep the cache policy in the store; using it anyway");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%endpoint_id, %error, "cannot read the endpoint's cache policy; keeping the last copy");
                refresher
                    .policies
                    .refresh_failed(&endpoint_id, error.to_string());
            }
        }
    }
}

//! The sender: one task per batch, until the batch is accepted or its
//! items have a terminal state. No error loses an item:
//!
//! | class | what happens |
//! |---|---|
//! | accepted | batch and items `submitted`, quota charged |
//! | throttled | the gate closes for every caller; this batch waits and retries |
//! | transient | retried with exponential back-off; re-sending is safe |
//! | clock skew | corrected by the client; if it persists, as transient |
//! | credentials | sending pauses, items back to pending, resumes on reload |
//! | endpoint inactive | the endpoint rests a while, items back to pending |
//! | endpoint misconfigured | the endpoint's items fail with the reason |
//! | bad item | the batch is split in halves until the bad URLs stand alone |

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use super::Shared;
use super::gate::{Admission, CREDENTIALS_RETRY};
use crate::cdn::ErrorClass;
use crate::quota;
use crate::store::{Batch, StoreError, timestamp};

/// Back-off between attempts of one batch after transient failures.
fn transient_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long to wait between tries of a store write that failed for lack of
/// space or I/O.
fn store_backoff() -> backon::ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// Records what a call did, trying again while the store cannot write
/// (disk full, file read-only): the call was made, and giving up would
/// leave the batch `sending` until the next start. Only shutdown stops
/// the tries; the next start then re-sends the batch.
async fn durably<T, Fut>(
    shared: &Shared,
    what: &'static str,
    write: impl FnMut() -> Fut,
) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    use backon::Retryable;
    let tries = write
        .retry(store_backoff())
        .sleep(tokio::time::sleep)
        .when(|error| matches!(error, StoreError::Unavailable(_)))
        .notify(|error, wait| {
            tracing::warn!(%error, ?wait, "cannot record {what}; trying again");
        });
    tokio::select! {
        result = tries => result,
        _ = shared.shutdown.cancelled() => Err(StoreError::Closed),
    }
}

/// Sends `batch` to completion, holding its batch slot.
pub(super) async fn run(shared: Arc<Shared>, batch: Batch, slot: OwnedSemaphorePermit) {
    if let Err(error) = send(shared.clone(), batch).await {
        // Only shutdown or a store bug gets here. The batch stays as the
        // store last recorded it; the next start finishes it.
        tracing::error!(%error, "store error while sending a batch; it will be retried on the next start");
    }
    drop(slot);
    shared.wake_batcher.notify_one();
}

fn send(shared: Arc<Shared>, batch: Batch) -> BoxFuture<'static, Result<(), StoreError>> {
    Box::pin(async move {
        let mut backoff = transient_backoff();
        loop {
            let _permit = match shared.gate.admit(&shared.shutdown).await {
                Admission::Go(permit) => permit,
                // Shutting down: the batch stays `sending`, re-sent next start.
                Admission::Shutdown => return Ok(()),
                Admission::Paused(pause) => {
                    // The pause, not the items, decides when they go: a
                    // reload lifts it at once.
                    let now_ts = shared.now_ts();
                    durably(&shared, "the released batch", || {
                        shared
                            .store
                            .release_batch(&batch, &pause.reason, &now_ts, &now_ts)
                    })
                    .await?;
                    return Ok(());
                }
            };
            let client = shared.client();
            let started = tokio::time::Instant::now();
            let result = client
                .add_purge(
                    &batch.endpoint_id,
                    &batch.file_urls(),
                    &batch.directory_urls(),
                )
                .await;
            let took = started.elapsed();
            drop(_permit);
            let now = shared.now();
            let now_ts = timestamp(now);
            let error = match result {
                Ok(accepted) => {
                    let settings = shared.settings();
                    let offset = settings
                        .derived
                        .quota_offset
                        .unwrap_or(time::UtcOffset::UTC);
                    let day = quota::day_of(now, offset);
                    durably(&shared, "the accepted call", || {
                        shared.store.batch_accepted(
                            &batch,
                            &accepted.value.task_track_id,
                            accepted.correlation_id.as_deref(),
                            client.subscription_id(),
                            &day,
                            &now_ts,
                        )
                    })
                    .await?;
                    shared.gate.on_success();
                    shared.record_call("purge", "accepted", took, None);
                    tracing::info!(
                        endpoint = %batch.endpoint_id,
                        batch = batch.id,
                        files = batch.files.len(),
                        directories = batch.directories.len(),
                        outcome = "accepted",
                        task_track_id = %accepted.value.task_track_id,
                        correlation_id = accepted.correlation_id.as_deref().unwrap_or("-"),
                        "purge call accepted"
                    );
                    shared.wake_tracker.notify_one();
                    return Ok(());
                }
                Err(error) => error,
            };
            shared.record_call(
                "purge",
                &error.outcome_label(),
                took,
                Some(error.to_string()),
            );
            let class = error.class();
            let message = error.to_string();
            let log = |next: &str| {
                tracing::info!(
                    endpoint = %batch.endpoint_id,
                    batch = batch.id,
                    outcome = %error.outcome_label(),
                    class = %class,
                    correlation_id = error.correlation_id().unwrap_or("-"),
                    error = %error,
                    "purge call failed; {next}"
                )
            };
            match class {
                ErrorClass::Throttled => {
                    let wait = shared.gate.on_throttled(error.retry_after());
                    log(&format!("every call waits {wait:?}"));
                    durably(&shared, "the failed attempt", || {
                        shared
                            .store
                            .batch_attempt_failed(batch.id, &message, &now_ts)
                    })
                    .await?;
                }
                ErrorClass::Transient | ErrorClass::ClockSkew => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(300));
                    let wait = error.retry_after().map_or(wait, |r| r.max(wait));
                    log(&format!("sending this batch again in {wait:?}"));
                    durably(&shared, "the failed attempt", || {
                        shared
                            .store
                            .batch_attempt_failed(batch.id, &message, &now_ts)
                    })
                    .await?;
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                ErrorClass::Credentials => {
                    let reason = format!(
                        "the CDN refused our credentials ({error}); fix cdn.subscription_id, cdn.key_id \
                         or the key value and reload (systemctl reload purgeq)"
                    );
                    if shared
                        .gate
                        .pause(&error.outcome_label(), reason.clone(), CREDENTIALS_RETRY)
                    {
                        tracing::error!("{reason}; sending is paused, every item is kept");
                    }
                    // Eligible at once: the pause holds them, and a reload
                    // lifts it.
                    durably(&shared, "the released batch", || {
                        shared
                            .store
                            .release_batch(&batch, &reason, &now_ts, &now_ts)
                    })
                    .await?;
                    return Ok(());
                }
                ErrorClass::EndpointInactive => {
                    log(&format!(
                        "leaving endpoint {} alone for {:?}",
                        batch.endpoint_id,
                        shared.settings().sender.endpoint_inactive_retry
                    ));
                    shared.pause_endpoint(&batch.endpoint_id, error.to_string());
                    // The in-memory endpoint pause holds them; after a
                    // restart they are simply tried again.
                    durably(&shared, "the released batch", || {
                        shared
                            .store
                            .release_batch(&batch, &message, &now_ts, &now_ts)
                    })
                    .await?;
                    return Ok(());
                }
                ErrorClass::EndpointMisconfigured => {
                    let failed = durably(&shared, "the failed batch", || {
                        shared.store.fail_batch(&batch, &message, true, &now_ts)
                    })
                    .await?;
                    tracing::error!(
                        endpoint = %batch.endpoint_id,
                        items = failed,
                        error = %error,
                        "endpoint is misconfigured: its items failed; fix [[cdn.endpoints]] and reload"
                    );
                    return Ok(());
                }
                ErrorClass::BadItem if batch.len() <= 1 => {
                    log("the URL is refused: it fails, the rest of the queue goes on");
                    durably(&shared, "the failed batch", || {
                        shared.store.fail_batch(&batch, &message, false, &now_ts)
                    })
                    .await?;
                    return Ok(());
                }
                ErrorClass::BadItem => {
                    log("splitting the batch to find the refused URLs");
                    let (first, second) = durably(&shared, "the split batch", || {
                        shared.store.split_batch(&batch, &message, &now_ts)
                    })
                    .await?;
                    send(shared.clone(), first).await?;
                    return send(shared, second).await;
                }
            }
        }
    })
}

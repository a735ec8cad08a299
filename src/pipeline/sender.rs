//! The sender: one task per batch, until the batch is accepted or its
//! items have a terminal state. A batch is a purge or a preload call
//! ([`Operation`]); both go through the same gate (one rate budget for
//! every call of the subscription) and the same policy. No error loses an
//! item:
//!
//! | class | what happens ([`on_error`]) |
//! |---|---|
//! | accepted | batch and items `submitted` (the quota was charged at the cut) |
//! | accepted, answer unreadable (`202`) | batch and items `succeeded`, noted "not tracked"; never sent again |
//! | throttled | the gate closes for every caller; this batch waits and retries |
//! | transient | retried with exponential back-off; re-sending is safe |
//! | clock skew | corrected by the client; if it persists, as transient |
//! | credentials | sending pauses, items back to pending, resumes on reload |
//! | endpoint inactive | the endpoint rests a while, items back to pending |
//! | endpoint misconfigured | the endpoint's items fail with the reason |
//! | bad item | the batch is split in halves until the bad URLs stand alone |
//! | quota exceeded | the refused kind corrected ([`crate::ledger`]), items back to pending |
//!
//! The ledger has two parts: what the CDN certainly counted (accepted
//! calls, and calls under way) and what it may have counted. A call whose
//! outcome is unknown (a timeout, a dropped connection) moves its charge
//! to the uncertain part and the next attempt is charged anew; uncertain
//! charges never hold sending back. An answer that proves a refusal
//! changes nothing, and a batch that is not sent again gives its charge
//! back.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use super::gate::Admission;
use super::{BatchClaim, Shared};
use crate::cdn::{CdnError, ErrorClass};
use crate::store::{Batch, CallOutcome, Operation, StoreError, Timestamp};

/// What the sender does after a failed call: the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Every caller waits for the gate; then this batch goes again.
    WaitForGate,
    /// This batch goes again after its own back-off.
    Retry,
    /// Sending pauses until a reload; the items go back to pending.
    PauseForCredentials,
    /// The endpoint rests; the items go back to pending.
    RestEndpoint,
    /// The batch's items and every pending item of its endpoint fail.
    FailEndpoint,
    /// The batch (a single URL) fails.
    FailBatch,
    /// The batch is split in halves, each sent on its own.
    Split,
    /// The day is spent: recorded, the items go back to pending.
    WaitForQuotaDay,
}

/// The sending policy: what an error class means for a batch of
/// `batch_len` URLs.
pub(super) fn on_error(class: ErrorClass, batch_len: usize) -> Action {
    match class {
        ErrorClass::Throttled => Action::WaitForGate,
        ErrorClass::Transient | ErrorClass::ClockSkew => Action::Retry,
        ErrorClass::Credentials => Action::PauseForCredentials,
        ErrorClass::EndpointInactive => Action::RestEndpoint,
        ErrorClass::EndpointMisconfigured => Action::FailEndpoint,
        ErrorClass::BadItem if batch_len <= 1 => Action::FailBatch,
        ErrorClass::BadItem => Action::Split,
        ErrorClass::QuotaExceeded => Action::WaitForQuotaDay,
    }
}

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
/// space, I/O, or a lock held by another connection.
fn store_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Records what a call did, trying again while the store cannot write
/// (disk full, file read-only, database locked): the call was made, and
/// giving up would leave the batch `sending` with its outcome forgotten.
///
/// The first try is always made, shutdown or not: racing it against
/// shutdown dropped the record of calls the CDN had accepted, and the
/// next start sent them again (issue 13). Shutdown stops nothing here;
/// the pipeline's `shutdown_timeout` bounds how long the tries go on.
async fn durably<T, Fut>(
    what: &'static str,
    mut write: impl FnMut() -> Fut,
) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = store_backoff();
    loop {
        match write().await {
            Err(error) if error.is_retryable() => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(%error, ?wait, "cannot record {what}; trying again");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// Sends `batch` to completion, holding its batch slot and its claim (so
/// the batcher does not adopt it while this task owns it).
pub(super) async fn run(
    shared: Arc<Shared>,
    batch: Batch,
    claim: BatchClaim,
    slot: OwnedSemaphorePermit,
) {
    if let Err(error) = send(shared.clone(), batch).await {
        // A store error that retrying cannot fix. The batch stays as the
        // store last recorded it; once this task lets go of it, the
        // batcher adopts it and sends it again.
        tracing::error!(%error, "store error while sending a batch; it will be sent again");
        shared.request_adoption();
    }
    drop(claim);
    drop(slot);
    shared.wake_batcher.notify_one();
}

/// What to do after one call's outcome was applied.
enum Next {
    /// Send this batch again (after a throttle or a back-off).
    Again,
    /// The batch has a recorded end, or waits in the store for later.
    Done,
    /// Send each half on its own (each already claimed).
    Halves(Box<[(Batch, BatchClaim); 2]>),
}

/// Sends `batch` until it is accepted or its items have their end: one
/// call per turn, its outcome applied by [`apply`].
fn send(shared: Arc<Shared>, batch: Batch) -> BoxFuture<'static, Result<(), StoreError>> {
    Box::pin(async move {
        let mut backoff = transient_backoff();
        loop {
            let permit = match shared.gate.admit(&shared.shutdown).await {
                Admission::Go(permit) => permit,
                // Shutting down: the batch stays `sending`, sent next start.
                Admission::Shutdown => return Ok(()),
                Admission::Paused(pause) => {
                    // The pause, not the items, decides when they go: a
                    // reload lifts it at once.
                    let now_ts = shared.now_ts();
                    durably("the released batch", || {
                        shared
                            .store
                            .release_batch(&batch, &pause.reason, now_ts, now_ts)
                    })
                    .await?;
                    return Ok(());
                }
            };
            if shared.lease_lapsed() {
                // Not ours to send any more: the batch stays `sending`,
                // and the next leader sends it (nothing is recorded here,
                // and the fence would refuse it anyway).
                tracing::warn!(batch = %batch.id, "the fleet's lease is not trusted: this call is not made");
                return Ok(());
            }
            let client = shared.client();
            let started = tokio::time::Instant::now();
            let result = match batch.operation {
                Operation::Purge => {
                    client
                        .add_purge(
                            &batch.endpoint_id,
                            &batch.file_urls(),
                            &batch.directory_urls(),
                        )
                        .await
                }
                Operation::Preload => {
                    client
                        .add_preload(&batch.endpoint_id, &batch.file_urls())
                        .await
                }
            };
            let took = started.elapsed();
            drop(permit);
            let error = match result {
                Ok(accepted) => return record_accepted(&shared, &batch, accepted, took).await,
                Err(error) if error.accepted_but_unreadable() => {
                    return record_untracked(&shared, &batch, &error, took).await;
                }
                Err(error) => error,
            };
            shared.record_call(
                call_label(batch.operation),
                &error.outcome_label(),
                took,
                Some(&error),
            );
            let action = on_error(error.class(), batch.len());
            match apply(&shared, &batch, &error, action, &mut backoff).await? {
                Next::Again => {}
                Next::Done => return Ok(()),
                Next::Halves(halves) => {
                    let [(first, first_claim), (second, second_claim)] = *halves;
                    send(shared.clone(), first).await?;
                    drop(first_claim);
                    let result = send(shared, second).await;
                    drop(second_claim);
                    return result;
                }
            }
        }
    })
}

/// The call was accepted: recorded (always the first try, see
/// [`durably`]), then the tracker is woken.
async fn record_accepted(
    shared: &Arc<Shared>,
    batch: &Batch,
    accepted: crate::cdn::Called<crate::cdn::PurgeAccepted>,
    took: Duration,
) -> Result<(), StoreError> {
    let now_ts = shared.now_ts();
    let account = shared.quota_account();
    durably("the accepted call", || {
        shared.store.batch_accepted(
            batch,
            &accepted.value.task_track_id,
            accepted.correlation_id.as_deref(),
            &account,
            now_ts,
        )
    })
    .await?;
    shared.gate.on_success();
    shared.record_call(call_label(batch.operation), "accepted", took, None);
    tracing::info!(
        endpoint = %batch.endpoint_id,
        batch = %batch.id,
        operation = %batch.operation,
        files = batch.files.len(),
        directories = batch.directories.len(),
        outcome = "accepted",
        task_track_id = %accepted.value.task_track_id,
        correlation_id = accepted.correlation_id.as_deref().unwrap_or("-"),
        "{} call accepted", batch.operation
    );
    shared.wake_tracker.notify_one();
    Ok(())
}

/// The CDN answered `202` with a body that could not be read: the call was
/// taken, so it is recorded as such (charged as certain) and never sent
/// again blindly; see `Store::batch_accepted_untracked` (issue 28).
async fn record_untracked(
    shared: &Arc<Shared>,
    batch: &Batch,
    error: &CdnError,
    took: Duration,
) -> Result<(), StoreError> {
    let now_ts = shared.now_ts();
    let account = shared.quota_account();
    durably("the accepted, untracked call", || {
        shared
            .store
            .batch_accepted_untracked(batch, error.correlation_id(), &account, now_ts)
    })
    .await?;
    shared.gate.on_success();
    shared.record_call(call_label(batch.operation), "accepted", took, None);
    tracing::warn!(
        endpoint = %batch.endpoint_id,
        batch = %batch.id,
        operation = %batch.operation,
        files = batch.files.len(),
        directories = batch.directories.len(),
        correlation_id = error.correlation_id().unwrap_or("-"),
        error = %error,
        "{} call accepted (HTTP 202) with an unreadable answer: recorded as done, not tracked, not sent again",
        batch.operation
    );
    shared.wake_batcher.notify_one();
    Ok(())
}

/// Carries out what [`on_error`] decided for a failed call.
async fn apply(
    shared: &Arc<Shared>,
    batch: &Batch,
    error: &CdnError,
    action: Action,
    backoff: &mut backon::ExponentialBackoff,
) -> Result<Next, StoreError> {
    let failed = Failed {
        shared,
        batch,
        error,
        message: error.to_string(),
        account: shared.quota_account(),
        now: shared.now_ts(),
    };
    match action {
        Action::WaitForGate => failed.wait_for_gate().await,
        Action::Retry => failed.retry(backoff).await,
        Action::PauseForCredentials => failed.pause_for_credentials().await,
        Action::RestEndpoint => failed.rest_endpoint().await,
        Action::FailEndpoint => failed.fail(true).await,
        Action::FailBatch => failed.fail(false).await,
        Action::WaitForQuotaDay => failed.wait_for_quota_day().await,
        Action::Split => failed.split().await,
    }
}

/// One failed call of one batch, and the store writes each action makes.
struct Failed<'a> {
    shared: &'a Arc<Shared>,
    batch: &'a Batch,
    error: &'a CdnError,
    message: String,
    account: crate::store::QuotaAccount,
    now: Timestamp,
}

impl Failed<'_> {
    fn log(&self, next: &str) {
        log(self.batch, self.error, next);
    }

    /// The attempt is recorded (and charged again if the CDN may have
    /// counted it); the batch stays `sending`.
    async fn record_attempt(&self) -> Result<(), StoreError> {
        durably("the failed attempt", || {
            self.shared.store.batch_attempt_failed(
                self.batch,
                &self.message,
                call_outcome(self.error),
                &self.account,
                self.now,
            )
        })
        .await
    }

    /// The items go back to pending, eligible at once: what holds them
    /// (a pause, an endpoint's rest, the quota) is decided elsewhere.
    async fn release(&self, reason: &str) -> Result<(), StoreError> {
        durably("the released batch", || {
            self.shared
                .store
                .release_batch(self.batch, reason, self.now, self.now)
        })
        .await
    }

    async fn wait_for_gate(&self) -> Result<Next, StoreError> {
        let wait = self.shared.gate.on_throttled(self.error.retry_after());
        self.log(&format!("every call waits {wait:?}"));
        self.record_attempt().await?;
        Ok(Next::Again)
    }

    async fn retry(&self, backoff: &mut backon::ExponentialBackoff) -> Result<Next, StoreError> {
        let wait = backoff.next().unwrap_or(Duration::from_secs(300));
        let wait = self.error.retry_after().map_or(wait, |r| r.max(wait));
        self.log(&format!("sending this batch again in {wait:?}"));
        self.record_attempt().await?;
        tokio::select! {
            _ = self.shared.shutdown.cancelled() => Ok(Next::Done),
            _ = tokio::time::sleep(wait) => Ok(Next::Again),
        }
    }

    async fn pause_for_credentials(&self) -> Result<Next, StoreError> {
        let reason = format!(
            "the CDN refused our credentials ({}); fix cdn.subscription_id, cdn.key_id \
             or the key value and reload (systemctl reload purgeq)",
            self.error
        );
        self.shared.pause_for_credentials(self.error, &reason);
        // The pause holds them, and a reload lifts it.
        self.release(&reason).await?;
        Ok(Next::Done)
    }

    async fn rest_endpoint(&self) -> Result<Next, StoreError> {
        let endpoint = &self.batch.endpoint_id;
        let rest = self.shared.settings().sender.endpoint_inactive_retry;
        self.log(&format!("leaving endpoint {endpoint} alone for {rest:?}"));
        self.shared.pause_endpoint(endpoint, self.message.clone());
        // The in-memory endpoint pause holds them; after a restart they
        // are simply tried again.
        self.release(&self.message).await?;
        Ok(Next::Done)
    }

    /// The batch's items fail; with `whole_endpoint`, every pending item
    /// of its endpoint too (the endpoint itself is refused).
    async fn fail(&self, whole_endpoint: bool) -> Result<Next, StoreError> {
        if !whole_endpoint {
            self.log("the URL is refused: it fails, the rest of the queue goes on");
        }
        let failed = durably("the failed batch", || {
            self.shared
                .store
                .fail_batch(self.batch, &self.message, whole_endpoint, self.now)
        })
        .await?;
        if whole_endpoint {
            tracing::error!(
                endpoint = %self.batch.endpoint_id,
                items = failed,
                error = %self.error,
                "endpoint is misconfigured: its items failed; fix [[cdn.endpoints]] and reload"
            );
        }
        Ok(Next::Done)
    }

    async fn wait_for_quota_day(&self) -> Result<Next, StoreError> {
        self.log("the CDN says the daily quota is spent: the items wait for the next quota day");
        self.release(&format!(
            "the CDN refused the call for quota: {}",
            self.error
        ))
        .await?;
        let quota = &self.shared.settings().quota;
        let per_day = crate::ledger::PerDay {
            files: quota.files_per_day,
            directories: quota.directories_per_day,
            preloads: quota.preloads_per_day,
        };
        let message = self.error.api_message().unwrap_or_default();
        let correction = crate::ledger::on_quota_refusal(
            crate::ledger::Refusal {
                preload: self.batch.operation == Operation::Preload,
                files: self.batch.files.len() as u64,
                directories: self.batch.directories.len() as u64,
                message,
            },
            per_day,
        );
        durably("the spent quota day", || {
            self.shared.store.quota_day_spent(&self.account, correction)
        })
        .await?;
        Ok(Next::Done)
    }

    async fn split(&self) -> Result<Next, StoreError> {
        self.log("splitting the batch to find the refused URLs");
        // Claimed under the adoption lock, so the batcher never sees the
        // halves `sending` and unclaimed.
        let _guard = self.shared.adoption.lock().await;
        let (first, second) = durably("the split batch", || {
            self.shared
                .store
                .split_batch(self.batch, &self.message, &self.account, self.now)
        })
        .await?;
        let claims = (self.shared.claim(first.id), self.shared.claim(second.id));
        Ok(Next::Halves(Box::new([
            (first, claims.0),
            (second, claims.1),
        ])))
    }
}

/// Whether the CDN may have counted a failed call against the quota.
fn call_outcome(error: &CdnError) -> CallOutcome {
    if error.proves_not_taken() {
        CallOutcome::Refused
    } else {
        CallOutcome::Unknown
    }
}

/// The `operation` label of a call in metrics and `/v1/stats`.
pub(super) fn call_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Purge => "purge",
        Operation::Preload => "preload",
    }
}

fn log(batch: &Batch, error: &CdnError, next: &str) {
    tracing::info!(
        endpoint = %batch.endpoint_id,
        batch = %batch.id,
        operation = %batch.operation,
        outcome = %error.outcome_label(),
        class = %error.class(),
        correlation_id = error.correlation_id().unwrap_or("-"),
        error = %error,
        "{} call failed; {next}", batch.operation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_row() {
        let rows = [
            (ErrorClass::Throttled, 5, Action::WaitForGate),
            (ErrorClass::Transient, 5, Action::Retry),
            (ErrorClass::ClockSkew, 5, Action::Retry),
            (ErrorClass::Credentials, 5, Action::PauseForCredentials),
            (ErrorClass::EndpointInactive, 5, Action::RestEndpoint),
            (ErrorClass::EndpointMisconfigured, 5, Action::FailEndpoint),
            (ErrorClass::BadItem, 5, Action::Split),
            (ErrorClass::BadItem, 2, Action::Split),
            // A batch of one that is refused: that URL is the bad one.
            (ErrorClass::BadItem, 1, Action::FailBatch),
            (ErrorClass::QuotaExceeded, 5, Action::WaitForQuotaDay),
            (ErrorClass::QuotaExceeded, 1, Action::WaitForQuotaDay),
        ];
        for (class, len, action) in rows {
            assert_eq!(on_error(class, len), action, "{class} with {len} URLs");
        }
    }

    #[test]
    fn a_quota_refusal_never_pauses_as_credentials() {
        let error = crate::cdn::ErrorType::parse("QuotaExceeded");
        assert_eq!(error.class(), ErrorClass::QuotaExceeded);
        assert_ne!(on_error(error.class(), 3), Action::PauseForCredentials);
    }
}

//! The pipeline's transitions: cutting batches, recording each call's
//! outcome, the tracker's per-URL results, and startup recovery.
//!
//! Each public method is one writer job, hence one transaction: a crash
//! between two of them leaves a state the next start can finish.

use super::db::{Backend, Conn, id_lists_for_postgres, on_conn, on_pool};

use super::charges::{QuotaAccount, QuotaUse, charge_again, doubt, move_charge, quota_use, refund};
use super::db::json_list;
use super::model::Operation;
use super::returns::return_to_pending;
use super::{BatchId, ItemId, Store, StoreError, Timestamp, preloads};
use crate::target::Kind;

/// The operation of a stored batch (`purge` for one the store does not
/// know, which touches nothing then).
async fn operation_of(conn: &mut Conn<'_>, batch_id: BatchId) -> Result<Operation, sqlx::Error> {
    let text: Option<String> = on_conn!(conn, c => sqlx::query_scalar("SELECT operation FROM batches WHERE id = $1")
        .bind(batch_id)
        .fetch_optional(c).await)?;
    Ok(text
        .as_deref()
        .and_then(Operation::parse)
        .unwrap_or(Operation::Purge))
}

/// The history's note on a URL whose call the CDN accepted (`202`) with an
/// answer that could not be read: purged, but not followed to the end.
pub const UNTRACKED: &str = "accepted by the CDN (HTTP 202), not tracked: its answer could not be read, \
     so there is no TaskTrackId to follow; not sent again, which would purge and count it twice";

/// How long a preload chained on an untracked purge waits: the purge's end
/// cannot be seen, and a preload sent before it can warm the old file.
pub const UNTRACKED_PRELOAD_DELAY: time::Duration = time::Duration::minutes(5);

/// One URL in a batch. In a preload batch, `item_id` is the id of a
/// `preloads` row (the batch's [`Operation`] says which table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub item_id: ItemId,
    pub url: String,
}

/// A batch being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub endpoint_id: String,
    pub operation: Operation,
    pub files: Vec<BatchItem>,
    pub directories: Vec<BatchItem>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.files.len() + self.directories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn file_urls(&self) -> Vec<String> {
        self.files.iter().map(|i| i.url.clone()).collect()
    }

    pub fn directory_urls(&self) -> Vec<String> {
        self.directories.iter().map(|i| i.url.clone()).collect()
    }

    fn item_ids(&self) -> Vec<ItemId> {
        self.files
            .iter()
            .chain(&self.directories)
            .map(|i| i.item_id)
            .collect()
    }
}

/// How much may be cut: batch limits and what the day's quota has left.
#[derive(Debug, Clone)]
pub struct CutLimits {
    pub max_files: usize,
    pub max_directories: usize,
    pub account: QuotaAccount,
    pub files_per_day: u64,
    pub directories_per_day: u64,
    /// Held back for urgent items (`quota.urgent_reserve_*`).
    pub reserve_files: u64,
    pub reserve_directories: u64,
}

/// How much of a preload batch may be cut: `batch.max_preload_files` and
/// what the day's preload quota has left.
#[derive(Debug, Clone)]
pub struct PreloadLimits {
    pub max_files: usize,
    pub account: QuotaAccount,
    pub per_day: u64,
}

/// What a failed call says about whether the CDN counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The CDN answered with an error: it did not count the call.
    Refused,
    /// No answer we can read (timeout, connection lost, an HTML 502): the
    /// CDN may have counted it, so the ledger does too.
    Unknown,
}

/// Where the oldest pending items of one endpoint and kind stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Pending items eligible now, counted up to the batch limit.
    pub eligible: usize,
    /// How many of those are urgent (counted up to the same limit).
    pub urgent: usize,
    /// The earliest `not_before` among all pending items, eligible or not
    /// (but not those held for the origin caches: they have none yet).
    pub earliest_not_before: Option<Timestamp>,
}

/// A batch the CDN accepted, awaiting final results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedBatch {
    pub id: BatchId,
    pub endpoint_id: String,
    pub operation: Operation,
    pub task_track_id: String,
    pub accepted_at: Timestamp,
}

/// An item of a submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedItem {
    pub item_id: ItemId,
    pub kind: Kind,
    pub url: String,
    pub attempts: i64,
}

/// What the tracker learned about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Succeeded,
    /// Failed at the CDN; try again after `not_before`.
    Retry {
        not_before: Timestamp,
        reason: String,
    },
    /// Failed for good.
    Failed {
        reason: String,
    },
}

impl Store {
    /// Endpoints that have pending items (for endpoints no longer in the
    /// configuration, whose items must still drain).
    pub async fn pending_endpoints(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.queue_counts().await?.pending_endpoints())
    }

    /// How ready one endpoint's items of one kind are. Both queries walk
    /// the `items_state` index: cost is bounded by `cap`, not the backlog.
    pub async fn readiness(
        &self,
        endpoint_id: &str,
        kind: Kind,
        now: Timestamp,
        cap: usize,
    ) -> Result<Readiness, StoreError> {
        let earliest_not_before: Option<Timestamp> = on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT not_before FROM items
             WHERE state = 'pending' AND endpoint_id = $1 AND kind = $2 AND not_before < $3
             ORDER BY not_before LIMIT 1",
        )
        .bind(endpoint_id)
        .bind(kind.as_str())
        // Held for the origin caches: not the batcher's until released.
        .bind(super::origin_purges::HELD)
        .fetch_optional(c).await)?;
        let count = |sql: &'static str| async move {
            on_pool!(&self.reader, p => sqlx::query_scalar::<_, i64>(sql)
                .bind(endpoint_id)
                .bind(kind.as_str())
                .bind(now)
                .bind(cap as i64)
                .fetch_one(p)
                .await)
        };
        let eligible = if cap == 0 || earliest_not_before.is_none_or(|nb| nb > now) {
            0
        } else {
            count(
                "SELECT count(*) FROM (SELECT 1 FROM items
                  WHERE state = 'pending' AND endpoint_id = $1 AND kind = $2 AND not_before <= $3
                  LIMIT $4) AS eligible",
            )
            .await?
        };
        // `urgent = 1` written into the statement: the partial index
        // `items_pending_urgent` serves only a literal.
        let urgent = if eligible == 0 {
            0
        } else {
            count(
                self.reader
                    .backend()
                    .pick(URGENT_ELIGIBLE, URGENT_ELIGIBLE_POSTGRES),
            )
            .await?
        };
        Ok(Readiness {
            eligible: eligible.max(0) as usize,
            urgent: urgent.max(0) as usize,
            earliest_not_before,
        })
    }

    pub async fn quota_use(&self, account: &QuotaAccount) -> Result<QuotaUse, StoreError> {
        // From the read pool: for status and the batcher's quick look.
        // `cut_batch` checks again inside the writer's transaction, which
        // is what counts.
        Ok(on_pool!(&self.reader, p => {
            let mut conn = p.acquire().await?;
            quota_use(&mut Conn::from(&mut *conn), account).await?
        }))
    }

    /// Cuts the next batch of `endpoint_id`: oldest eligible items first,
    /// within the batch limits and what the day's quota has left. `None`
    /// when nothing may be cut.
    pub async fn cut_batch(
        &self,
        endpoint_id: &str,
        limits: CutLimits,
        now: Timestamp,
    ) -> Result<Option<Batch>, StoreError> {
        let endpoint_id = endpoint_id.to_owned();
        self.write(move |conn| {
            let (endpoint_id, limits, now) = (endpoint_id.clone(), limits.clone(), now);
            Box::pin(async move { cut_batch(conn, &endpoint_id, &limits, now).await })
        })
        .await
    }

    /// Every batch `sending` now (one walk of the `batches_state` index).
    pub async fn sending_batch_ids(&self) -> Result<Vec<BatchId>, StoreError> {
        Ok(
            on_pool!(&self.reader, c => sqlx::query_scalar("SELECT id FROM batches WHERE state = 'sending' ORDER BY id")
                .fetch_all(c).await)?,
        )
    }

    /// These batches, if still `sending`, with their items.
    pub async fn sending_batches(&self, batch_ids: &[BatchId]) -> Result<Vec<Batch>, StoreError> {
        let sql = self.reader.with_id_lists(
            "SELECT id, endpoint_id, operation FROM batches
             WHERE state = 'sending' AND id IN (SELECT value FROM json_each($1)) ORDER BY id",
        );
        let ids: Vec<(BatchId, String, String)> = on_pool!(&self.reader, c => sqlx::query_as(sql)
        .bind(json_list(batch_ids)?)
        .fetch_all(c).await)?;
        let mut batches = Vec::with_capacity(ids.len());
        for (id, endpoint_id, operation) in ids {
            let operation = Operation::parse(&operation).unwrap_or(Operation::Purge);
            let sql = match operation {
                Operation::Purge => {
                    "SELECT id, kind, url FROM items WHERE batch_id = $1 AND state = 'sending' ORDER BY id"
                }
                Operation::Preload => {
                    "SELECT id, 'file', url FROM preloads WHERE batch_id = $1 AND state = 'sending' ORDER BY id"
                }
            };
            let rows: Vec<(ItemId, String, String)> =
                on_pool!(&self.reader, c => sqlx::query_as(sql).bind(id).fetch_all(c).await)?;
            let mut batch = Batch {
                id,
                endpoint_id,
                operation,
                files: Vec::new(),
                directories: Vec::new(),
            };
            for (item_id, kind, url) in rows {
                let item = BatchItem { item_id, url };
                match Kind::parse(&kind) {
                    Some(Kind::Directory) => batch.directories.push(item),
                    _ => batch.files.push(item),
                }
            }
            batches.push(batch);
        }
        Ok(batches)
    }

    /// The call was accepted: batch and items `submitted`. The quota was
    /// charged when the batch was cut; a batch cut on an earlier quota day
    /// moves its charge to the day the CDN counted it on. Each item counts
    /// one more attempt: attempts are calls the CDN accepted, not cuts.
    pub async fn batch_accepted(
        &self,
        batch: &Batch,
        task_track_id: &str,
        correlation_id: Option<&str>,
        account: &QuotaAccount,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let args = (
            batch.id,
            task_track_id.to_owned(),
            correlation_id.map(str::to_owned),
            account.clone(),
            now,
        );
        self.write(move |conn| {
            let (id, task, correlation, account, now) = args.clone();
            Box::pin(async move {
                // Only a batch still being sent: one that reached a final
                // state (another leader's copy of the call finished) never
                // goes back to `submitted` (issue 28).
                let updated = on_conn!(conn, c => sqlx::query(
                    "UPDATE batches SET state = 'submitted', task_track_id = $2, correlation_id = $3,
                            attempts = attempts + 1, sent_at = $4, accepted_at = $4, last_error = NULL
                     WHERE id = $1 AND state = 'sending'",
                )
                .bind(id)
                .bind(&task)
                .bind(&correlation)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
                if updated == 0 {
                    return Ok(());
                }
                move_charge(conn, id, &account).await?;
                let table = operation_of(conn, id).await?.table();
                on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET state = 'submitted', attempts = attempts + 1, updated_at = $2
                     WHERE batch_id = $1 AND state = 'sending'"
                )))
                .bind(id)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
    }

    /// The CDN answered `202 Accepted` but its body could not be read: the
    /// call was taken (and counted: the charge is certain), only its
    /// `TaskTrackId` is lost, so its progress cannot be followed. Sending
    /// it again would purge and count it twice; instead the batch and its
    /// items end `succeeded` at once, with [`UNTRACKED`] as their note in
    /// the history. Preloads chained on these purges wait
    /// [`UNTRACKED_PRELOAD_DELAY`] (the purge's end cannot be seen).
    pub async fn batch_accepted_untracked(
        &self,
        batch: &Batch,
        correlation_id: Option<&str>,
        account: &QuotaAccount,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let args = (
            batch.id,
            batch.operation,
            batch.item_ids(),
            correlation_id.map(str::to_owned),
            account.clone(),
            now,
        );
        self.write(move |conn| {
            let (id, operation, items, correlation, account, now) = args.clone();
            Box::pin(async move {
                let updated = on_conn!(conn, c => sqlx::query(
                    "UPDATE batches SET state = 'succeeded', task_track_id = NULL, correlation_id = $2,
                            attempts = attempts + 1, sent_at = $3, accepted_at = $3, finished_at = $3,
                            last_error = $4
                     WHERE id = $1 AND state = 'sending'",
                )
                .bind(id)
                .bind(&correlation)
                .bind(now)
                .bind(UNTRACKED)
                .execute(c).await.map(|r| r.rows_affected()))?;
                if updated == 0 {
                    return Ok(());
                }
                move_charge(conn, id, &account).await?;
                let table = operation.table();
                on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET state = 'succeeded', attempts = attempts + 1, last_error = $2,
                            updated_at = $3, finished_at = $3
                     WHERE batch_id = $1 AND state = 'sending'"
                )))
                .bind(id)
                .bind(UNTRACKED)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
                if operation == Operation::Purge {
                    let later = Timestamp::new(now.get() + UNTRACKED_PRELOAD_DELAY);
                    for item in &items {
                        preloads::chain_after_at(conn, *item, now, later).await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// A call failed and will be tried again: count it and keep the reason.
    /// When its outcome is unknown the CDN may have counted it: its charge
    /// becomes uncertain, and the next attempt is charged anew.
    pub async fn batch_attempt_failed(
        &self,
        batch: &Batch,
        error: &str,
        outcome: CallOutcome,
        account: &QuotaAccount,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let args = (batch.id, error.to_owned(), account.clone(), now);
        self.write(move |conn| {
            let (id, error, account, now) = args.clone();
            Box::pin(async move {
                on_conn!(conn, c => sqlx::query("UPDATE batches SET attempts = attempts + 1, last_error = $2, sent_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&error)
                    .bind(now)
                    .execute(c).await.map(|r| r.rows_affected()))?;
                if outcome == CallOutcome::Unknown {
                    doubt(conn, id).await?;
                    charge_again(conn, &[id], &account).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// The CDN refused a call for quota: the ledger was low (another
    /// client of the subscription, or a count lost). Each count is raised
    /// to at least what `correction` says (see [`crate::ledger`]: only the
    /// refused kind, to the CDN's own count when it gives one); the others
    /// are left as they are.
    pub async fn quota_day_spent(
        &self,
        account: &QuotaAccount,
        correction: crate::ledger::Correction,
    ) -> Result<(), StoreError> {
        let at_least = |count: Option<u64>| i64::try_from(count.unwrap_or(0)).unwrap_or(i64::MAX);
        let (files, directories, preloads) = (
            at_least(correction.files),
            at_least(correction.directories),
            at_least(correction.preloads),
        );
        let args = (account.clone(), files, directories, preloads);
        self.write(move |conn| {
            let (account, files, directories, preloads) = args.clone();
            Box::pin(async move {
                // A kind the CDN refused has its count settled: what it may
                // have counted is in the CDN's own number now.
                let sql = conn.pick(
                    "INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (subscription_id, day) DO UPDATE SET
                         files_used = max(files_used, excluded.files_used),
                         directories_used = max(directories_used, excluded.directories_used),
                         preloads_used = max(preloads_used, excluded.preloads_used),
                         files_uncertain = CASE WHEN excluded.files_used > 0 THEN 0 ELSE files_uncertain END,
                         directories_uncertain =
                             CASE WHEN excluded.directories_used > 0 THEN 0 ELSE directories_uncertain END,
                         preloads_uncertain = CASE WHEN excluded.preloads_used > 0 THEN 0 ELSE preloads_uncertain END",
                    "INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (subscription_id, day) DO UPDATE SET
                         files_used = greatest(quota_days.files_used, excluded.files_used),
                         directories_used = greatest(quota_days.directories_used, excluded.directories_used),
                         preloads_used = greatest(quota_days.preloads_used, excluded.preloads_used),
                         files_uncertain =
                             CASE WHEN excluded.files_used > 0 THEN 0 ELSE quota_days.files_uncertain END,
                         directories_uncertain =
                             CASE WHEN excluded.directories_used > 0 THEN 0 ELSE quota_days.directories_uncertain END,
                         preloads_uncertain =
                             CASE WHEN excluded.preloads_used > 0 THEN 0 ELSE quota_days.preloads_uncertain END",
                );
                on_conn!(conn, c => sqlx::query(sql)
                .bind(&account.subscription_id)
                .bind(&account.day)
                .bind(files)
                .bind(directories)
                .bind(preloads)
                .execute(c).await.map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
    }

    /// Batches left `sending` by a run that is gone (a crash) or by a
    /// sender that gave up (the store failed under it): their last call
    /// may have reached the CDN, so its charge becomes uncertain, and each
    /// is charged anew before it is sent again.
    pub async fn adopt_sending(
        &self,
        batch_ids: &[BatchId],
        account: &QuotaAccount,
    ) -> Result<(), StoreError> {
        let args = (batch_ids.to_vec(), account.clone());
        self.write(move |conn| {
            let (ids, account) = args.clone();
            Box::pin(async move {
                for id in &ids {
                    doubt(conn, *id).await?;
                }
                charge_again(conn, &ids, &account).await
            })
        })
        .await
    }

    /// The batch was not sent (credentials refused, endpoint inactive): its
    /// items go back to pending, eligible again at `not_before`.
    pub async fn release_batch(
        &self,
        batch: &Batch,
        reason: &str,
        not_before: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let args = (
            batch.id,
            batch.operation,
            batch.item_ids(),
            reason.to_owned(),
            not_before,
            now,
        );
        self.write(move |conn| {
            let (id, operation, items, reason, not_before, now) = args.clone();
            Box::pin(async move {
                refund(conn, id).await?;
                on_conn!(conn, c => sqlx::query("UPDATE batches SET state = 'released', last_error = $2, finished_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&reason)
                    .bind(now)
                    .execute(c).await.map(|r| r.rows_affected()))?;
                match operation {
                    Operation::Purge => return_to_pending(conn, &items, &reason, not_before, now, false).await,
                    Operation::Preload => preloads::return_to_pending(conn, &items, &reason, not_before, now, false).await,
                }
            })
        })
        .await
    }

    /// A URL in the batch was refused: move its items into two halves.
    /// The CDN refused the call, so its charge is refunded; each half is
    /// charged as it is made.
    pub async fn split_batch(
        &self,
        batch: &Batch,
        reason: &str,
        account: &QuotaAccount,
        now: Timestamp,
    ) -> Result<(Batch, Batch), StoreError> {
        let batch = batch.clone();
        let args = (reason.to_owned(), account.clone(), now);
        self.write(move |conn| {
            let batch = batch.clone();
            let (reason, account, now) = args.clone();
            Box::pin(async move {
                refund(conn, batch.id).await?;
                on_conn!(conn, c => sqlx::query("UPDATE batches SET state = 'split', attempts = attempts + 1, last_error = $2, finished_at = $3 WHERE id = $1")
                    .bind(batch.id)
                    .bind(&reason)
                    .bind(now)
                    .execute(c).await.map(|r| r.rows_affected()))?;
                let mut all: Vec<(Kind, BatchItem)> = batch
                    .files
                    .iter()
                    .map(|i| (Kind::File, i.clone()))
                    .chain(batch.directories.iter().map(|i| (Kind::Directory, i.clone())))
                    .collect();
                let second = all.split_off(all.len() / 2);
                let op = batch.operation;
                let a = insert_batch_of(conn, &batch.endpoint_id, op, all, &account, now).await?;
                let b = insert_batch_of(conn, &batch.endpoint_id, op, second, &account, now).await?;
                Ok((a, b))
            })
        })
        .await
    }

    /// Fails a batch's items for good with `reason` (the CDN refused the
    /// call, so its charge is refunded); with `whole_endpoint`, also every
    /// pending item of its endpoint (the endpoint is wrong).
    pub async fn fail_batch(
        &self,
        batch: &Batch,
        reason: &str,
        whole_endpoint: bool,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let args = (batch.id, batch.endpoint_id.clone(), reason.to_owned(), now);
        self.write(move |conn| {
            let (id, endpoint, reason, now) = args.clone();
            Box::pin(async move {
                // Refused by the CDN: not counted.
                refund(conn, id).await?;
                on_conn!(conn, c => sqlx::query("UPDATE batches SET state = 'failed', attempts = attempts + 1, last_error = $2, finished_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&reason)
                    .bind(now)
                    .execute(c).await.map(|r| r.rows_affected()))?;
                let table = operation_of(conn, id).await?.table();
                let mut failed = on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET state = 'failed', last_error = $2, updated_at = $3, finished_at = $3
                     WHERE batch_id = $1 AND state = 'sending'"
                )))
                .bind(id)
                .bind(&reason)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
                if whole_endpoint {
                    // The endpoint is wrong: neither its purges nor its
                    // preloads can go.
                    for table in ["items", "preloads"] {
                        failed += on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET state = 'failed', last_error = $2, updated_at = $3, finished_at = $3
                             WHERE state = 'pending' AND endpoint_id = $1"
                        )))
                        .bind(&endpoint)
                        .bind(&reason)
                        .bind(now)
                        .execute(c).await.map(|r| r.rows_affected()))?;
                    }
                }
                Ok(failed)
            })
        })
        .await
    }

    pub async fn submitted_batches(&self) -> Result<Vec<SubmittedBatch>, StoreError> {
        let rows: Vec<(BatchId, String, String, String, Timestamp)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT id, endpoint_id, operation, task_track_id, accepted_at FROM batches
             WHERE state = 'submitted' ORDER BY accepted_at",
        )
        .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, endpoint_id, operation, task_track_id, accepted_at)| SubmittedBatch {
                    id,
                    endpoint_id,
                    operation: Operation::parse(&operation).unwrap_or(Operation::Purge),
                    task_track_id,
                    accepted_at,
                },
            )
            .collect())
    }

    pub async fn submitted_items(
        &self,
        batch_id: BatchId,
    ) -> Result<Vec<SubmittedItem>, StoreError> {
        let rows: Vec<(ItemId, String, String, i64)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT id, kind, url, attempts FROM items WHERE batch_id = $1 AND state = 'submitted'
             UNION ALL
             SELECT id, 'file', url, attempts FROM preloads WHERE batch_id = $1 AND state = 'submitted'",
        )
        .bind(batch_id)
        .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(|(item_id, kind, url, attempts)| SubmittedItem {
                item_id,
                kind: Kind::parse(&kind).unwrap_or(Kind::File),
                url,
                attempts,
            })
            .collect())
    }

    /// Records the tracker's results; closes the batch when none of its
    /// items is left waiting. Returns whether the batch is now closed.
    pub async fn record_results(
        &self,
        batch_id: BatchId,
        results: Vec<(ItemId, ItemResult)>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let results = results.clone();
            Box::pin(async move {
                if operation_of(conn, batch_id).await? == Operation::Preload {
                    preloads::record_results(conn, &results, now).await?;
                    return close_if_done(conn, batch_id, now).await;
                }
                for (item_id, result) in &results {
                    match result {
                        ItemResult::Succeeded => {
                            let updated = on_conn!(conn, c => sqlx::query(
                                "UPDATE items SET state = 'succeeded', last_error = NULL, updated_at = $2, finished_at = $2
                                 WHERE id = $1 AND state = 'submitted'",
                            )
                            .bind(item_id)
                            .bind(now)
                            .execute(c).await.map(|r| r.rows_affected()))?;
                            // In the same transaction: no crash can fall
                            // between a purge's success and its preloads.
                            // Only for this success: a result recorded
                            // twice chains nothing twice.
                            if updated > 0 {
                                preloads::chain_after(conn, *item_id, now).await?;
                            }
                        }
                        ItemResult::Failed { reason } => {
                            on_conn!(conn, c => sqlx::query(
                                "UPDATE items SET state = 'failed', last_error = $2, updated_at = $3, finished_at = $3
                                 WHERE id = $1 AND state = 'submitted'",
                            )
                            .bind(item_id)
                            .bind(reason)
                            .bind(now)
                            .execute(c).await.map(|r| r.rows_affected()))?;
                        }
                        ItemResult::Retry { not_before, reason } => {
                            return_to_pending(conn, &[*item_id], reason, *not_before, now, true).await?;
                        }
                    }
                }
                close_if_done(conn, batch_id, now).await
            })
        })
        .await
    }

    /// Startup recovery: items marked in flight whose batch is gone or
    /// finished go back to pending. Returns how many.
    pub async fn recover(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let orphans: Vec<ItemId> = on_conn!(conn, c => sqlx::query_scalar(
                    "SELECT i.id FROM items i LEFT JOIN batches b ON b.id = i.batch_id
                     WHERE i.state IN ('sending', 'submitted')
                       AND (b.id IS NULL OR b.state NOT IN ('sending', 'submitted'))",
                )
                .fetch_all(c).await)?;
                if !orphans.is_empty() {
                    return_to_pending(conn, &orphans, "recovered after a restart", now, now, false)
                        .await?;
                }
                let preloads = preloads::recover(conn, now).await?;
                Ok(orphans.len() as u64 + preloads)
            })
        })
        .await
    }
}

async fn cut_batch(
    conn: &mut Conn<'_>,
    endpoint_id: &str,
    limits: &CutLimits,
    now: Timestamp,
) -> Result<Option<Batch>, sqlx::Error> {
    let quota = quota_use(conn, &limits.account).await?;
    let mut picked: Vec<(Kind, BatchItem)> = Vec::new();
    for (kind, per_day, used, reserve, max) in [
        (
            Kind::File,
            limits.files_per_day,
            quota.files_used,
            limits.reserve_files,
            limits.max_files,
        ),
        (
            Kind::Directory,
            limits.directories_per_day,
            quota.directories_used,
            limits.reserve_directories,
            limits.max_directories,
        ),
    ] {
        let sql = conn.pick(URGENT_WAITING, URGENT_WAITING_POSTGRES);
        let urgent_waiting: i64 = on_conn!(conn, c => sqlx::query_scalar(sql)
        .bind(kind.as_str())
        .fetch_one(c).await)?;
        let lanes = crate::quota::lanes(
            per_day.saturating_sub(used),
            reserve,
            urgent_waiting.max(0) as u64,
        );
        // Urgent first, within the whole day; then normal, within its lane.
        let urgent_max = (max as u64).min(lanes.urgent);
        let urgent = pick(conn, endpoint_id, kind, true, urgent_max, now).await?;
        let normal_max = (max as u64 - urgent.len() as u64).min(lanes.normal);
        let normal = pick(conn, endpoint_id, kind, false, normal_max, now).await?;
        picked.extend(urgent.into_iter().chain(normal).map(|item| (kind, item)));
    }
    if picked.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        insert_batch_of(
            conn,
            endpoint_id,
            Operation::Purge,
            picked,
            &limits.account,
            now,
        )
        .await?,
    ))
}

/// The urgent lane's statements name the partial index that holds only
/// urgent pending items: SQLite, without statistics (the daemon does not
/// run `ANALYZE`), preferred the equality on `items_state` and walked
/// every pending item, urgent or not (16-38 ms per cut with 100,000
/// pending, issue 31). PostgreSQL picks the index itself; its texts are
/// the same without `INDEXED BY` (`indexed_by_is_the_only_difference`).
/// `urgent = 1` is a literal: the partial index serves only that.
pub(crate) const URGENT_ELIGIBLE: &str =
    "SELECT count(*) FROM (SELECT 1 FROM items INDEXED BY items_pending_urgent
      WHERE state = 'pending' AND urgent = 1 AND endpoint_id = $1 AND kind = $2
        AND not_before <= $3
      LIMIT $4) AS eligible";
pub(crate) const URGENT_ELIGIBLE_POSTGRES: &str = "SELECT count(*) FROM (SELECT 1 FROM items
      WHERE state = 'pending' AND urgent = 1 AND endpoint_id = $1 AND kind = $2
        AND not_before <= $3
      LIMIT $4) AS eligible";
/// Urgent items waiting, of one kind (every endpoint: the reserve is the
/// subscription's).
pub(crate) const URGENT_WAITING: &str = "SELECT count(*) FROM items INDEXED BY items_pending_urgent
     WHERE state = 'pending' AND urgent = 1 AND kind = $1";
pub(crate) const URGENT_WAITING_POSTGRES: &str = "SELECT count(*) FROM items
     WHERE state = 'pending' AND urgent = 1 AND kind = $1";
pub(crate) const PICK_URGENT: &str = "SELECT id, url FROM items INDEXED BY items_pending_urgent
     WHERE state = 'pending' AND urgent = 1 AND endpoint_id = $1 AND kind = $2
       AND not_before <= $3
     ORDER BY not_before, id LIMIT $4";
pub(crate) const PICK_URGENT_POSTGRES: &str = "SELECT id, url FROM items
     WHERE state = 'pending' AND urgent = 1 AND endpoint_id = $1 AND kind = $2
       AND not_before <= $3
     ORDER BY not_before, id LIMIT $4";

/// Up to `max` eligible pending items of one lane, oldest first.
async fn pick(
    conn: &mut Conn<'_>,
    endpoint_id: &str,
    kind: Kind,
    urgent: bool,
    max: u64,
    now: Timestamp,
) -> Result<Vec<BatchItem>, sqlx::Error> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let sql = if urgent {
        conn.pick(PICK_URGENT, PICK_URGENT_POSTGRES)
    } else {
        "SELECT id, url FROM items
         WHERE state = 'pending' AND endpoint_id = $1 AND kind = $2 AND not_before <= $3
           AND urgent = 0
         ORDER BY not_before, id LIMIT $4"
    };
    let rows: Vec<(ItemId, String)> = on_conn!(conn, c => sqlx::query_as(sql)
        .bind(endpoint_id)
        .bind(kind.as_str())
        .bind(now)
        .bind(max as i64)
        .fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(item_id, url)| BatchItem { item_id, url })
        .collect())
}

/// Creates a `sending` batch of `operation` holding `items` (rows of its
/// table), points them at it, and charges it to `account`: from now on
/// the call may reach the CDN.
pub(super) async fn insert_batch_of(
    conn: &mut Conn<'_>,
    endpoint_id: &str,
    operation: Operation,
    items: Vec<(Kind, BatchItem)>,
    account: &QuotaAccount,
    now: Timestamp,
) -> Result<Batch, sqlx::Error> {
    let mut batch = Batch {
        id: BatchId(0),
        endpoint_id: endpoint_id.to_owned(),
        operation,
        files: Vec::new(),
        directories: Vec::new(),
    };
    for (kind, item) in items {
        match kind {
            Kind::File => batch.files.push(item),
            Kind::Directory => batch.directories.push(item),
        }
    }
    let id: BatchId = on_conn!(conn, c => sqlx::query_scalar(
        "INSERT INTO batches (endpoint_id, state, not_before, files, directories, created_at, operation)
         VALUES ($1, 'sending', $2, $3, $4, $2, $5) RETURNING id",
    )
    .bind(endpoint_id)
    .bind(now)
    .bind(batch.files.len() as i64)
    .bind(batch.directories.len() as i64)
    .bind(operation.as_str())
    .fetch_one(c).await)?;
    batch.id = id;
    charge_again(conn, &[id], account).await?;
    let table = operation.table();
    let mut sql = format!(
        "UPDATE {table} SET state = 'sending', batch_id = $1, updated_at = $2
         WHERE id IN (SELECT value FROM json_each($3))"
    );
    if conn.backend() == Backend::Postgres {
        sql = id_lists_for_postgres(&sql);
    }
    on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(sql))
    .bind(id)
    .bind(now)
    .bind(json_list(&batch.item_ids())?)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(batch)
}

/// A submitted batch with no item left waiting becomes `succeeded` (every
/// URL succeeded) or `failed` (some did not, and the first reason is kept
/// with it, so no batch reads `failed` without one).
async fn close_if_done(
    conn: &mut Conn<'_>,
    batch_id: BatchId,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let operation = operation_of(conn, batch_id).await?;
    let table = operation.table();
    let waiting: i64 = on_conn!(conn, c => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE batch_id = $1 AND state = 'submitted'"
    )))
    .bind(batch_id)
    .fetch_one(c).await)?;
    if waiting > 0 {
        return Ok(false);
    }
    let not_succeeded: i64 = on_conn!(conn, c => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE batch_id = $1 AND state != 'succeeded'"
    )))
    .bind(batch_id)
    .fetch_one(c).await)?;
    let state = if not_succeeded == 0 {
        "succeeded"
    } else {
        "failed"
    };
    let done = match operation {
        Operation::Purge => "purged",
        Operation::Preload => "preloaded",
    };
    on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE batches SET state = $2, finished_at = $3,
                last_error = CASE WHEN $2 = 'failed' THEN coalesce(last_error,
                    (SELECT count(*) FROM {table} WHERE batch_id = $1 AND state != 'succeeded')
                    || ' of ' || (SELECT count(*) FROM {table} WHERE batch_id = $1)
                    || ' URLs not {done} by this call: '
                    || coalesce((SELECT last_error FROM {table} WHERE batch_id = $1 AND state != 'succeeded'
                                 AND last_error IS NOT NULL ORDER BY id LIMIT 1), 'no reason recorded'))
                ELSE last_error END
         WHERE id = $1 AND state = 'submitted'"
    )))
    .bind(batch_id)
    .bind(state)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(true)
}

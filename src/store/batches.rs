//! The pipeline's transitions: cutting batches, recording each call's
//! outcome, the tracker's per-URL results, and startup recovery.
//!
//! Each public method is one writer job, hence one transaction: a crash
//! between two of them leaves a state the next start can finish.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Store, StoreError};
use crate::target::Kind;

/// One URL in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub item_id: i64,
    pub url: String,
}

/// A batch being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: i64,
    pub endpoint_id: String,
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

    fn item_ids(&self) -> Vec<i64> {
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
    pub subscription_id: String,
    pub quota_day: String,
    pub files_per_day: u64,
    pub directories_per_day: u64,
}

/// The day's quota: used by accepted calls, reserved by calls under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    pub day: String,
    pub files_used: u64,
    pub directories_used: u64,
    pub files_reserved: u64,
    pub directories_reserved: u64,
}

/// Where the oldest pending items of one endpoint and kind stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Pending items eligible now, counted up to the batch limit.
    pub eligible: usize,
    /// The earliest `not_before` among all pending items, eligible or not.
    pub earliest_not_before: Option<String>,
}

/// A batch the CDN accepted, awaiting final results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedBatch {
    pub id: i64,
    pub endpoint_id: String,
    pub task_track_id: String,
    pub accepted_at: String,
}

/// An item of a submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedItem {
    pub item_id: i64,
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
        not_before: String,
        reason: String,
    },
    /// Failed for good.
    Failed {
        reason: String,
    },
}

fn ids_json(ids: &[i64]) -> Result<String, sqlx::Error> {
    serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

impl Store {
    /// Endpoints that have pending items (for endpoints no longer in the
    /// configuration, whose items must still drain).
    pub async fn pending_endpoints(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT endpoint_id FROM items WHERE state = 'pending'")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// How ready one endpoint's items of one kind are. Both queries walk
    /// the `items_state` index: cost is bounded by `cap`, not the backlog.
    pub async fn readiness(
        &self,
        endpoint_id: &str,
        kind: Kind,
        now: &str,
        cap: usize,
    ) -> Result<Readiness, StoreError> {
        let earliest_not_before: Option<String> = sqlx::query_scalar(
            "SELECT not_before FROM items
             WHERE state = 'pending' AND endpoint_id = ?1 AND kind = ?2
             ORDER BY not_before LIMIT 1",
        )
        .bind(endpoint_id)
        .bind(kind.as_str())
        .fetch_optional(&self.reader)
        .await?;
        let eligible: i64 = if cap == 0 || earliest_not_before.as_deref().is_none_or(|nb| nb > now)
        {
            0
        } else {
            sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM items
                  WHERE state = 'pending' AND endpoint_id = ?1 AND kind = ?2 AND not_before <= ?3
                  LIMIT ?4)",
            )
            .bind(endpoint_id)
            .bind(kind.as_str())
            .bind(now)
            .bind(cap as i64)
            .fetch_one(&self.reader)
            .await?
        };
        Ok(Readiness {
            eligible: eligible.max(0) as usize,
            earliest_not_before,
        })
    }

    pub async fn quota_use(
        &self,
        subscription_id: &str,
        day: &str,
    ) -> Result<QuotaUse, StoreError> {
        // From the read pool: for status and the batcher's quick look.
        // `cut_batch` checks again inside the writer's transaction, which
        // is what counts.
        let mut conn = self.reader.acquire().await?;
        Ok(quota_use(&mut conn, subscription_id, day).await?)
    }

    /// Cuts the next batch of `endpoint_id`: oldest eligible items first,
    /// within the batch limits and what the day's quota has left. `None`
    /// when nothing may be cut.
    pub async fn cut_batch(
        &self,
        endpoint_id: &str,
        limits: CutLimits,
        now: &str,
    ) -> Result<Option<Batch>, StoreError> {
        let endpoint_id = endpoint_id.to_owned();
        let now = now.to_owned();
        self.write(move |conn| {
            let (endpoint_id, limits, now) = (endpoint_id.clone(), limits.clone(), now.clone());
            Box::pin(async move { cut_batch(conn, &endpoint_id, &limits, &now).await })
        })
        .await
    }

    /// A batch still `sending` (after a restart), with its items.
    pub async fn sending_batches(&self) -> Result<Vec<Batch>, StoreError> {
        let ids: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, endpoint_id FROM batches WHERE state = 'sending' ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut batches = Vec::with_capacity(ids.len());
        for (id, endpoint_id) in ids {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, kind, url FROM items WHERE batch_id = ?1 AND state = 'sending' ORDER BY id",
            )
            .bind(id)
            .fetch_all(&self.reader)
            .await?;
            let mut batch = Batch {
                id,
                endpoint_id,
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

    /// The call was accepted: batch and items `submitted`, quota charged.
    pub async fn batch_accepted(
        &self,
        batch: &Batch,
        task_track_id: &str,
        correlation_id: Option<&str>,
        subscription_id: &str,
        quota_day: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let args = (
            batch.id,
            task_track_id.to_owned(),
            correlation_id.map(str::to_owned),
            subscription_id.to_owned(),
            quota_day.to_owned(),
            now.to_owned(),
            batch.files.len() as i64,
            batch.directories.len() as i64,
        );
        self.write(move |conn| {
            let (id, task, correlation, subscription, day, now, files, directories) = args.clone();
            Box::pin(async move {
                sqlx::query(
                    "UPDATE batches SET state = 'submitted', task_track_id = ?2, correlation_id = ?3,
                            attempts = attempts + 1, sent_at = ?4, accepted_at = ?4, last_error = NULL
                     WHERE id = ?1",
                )
                .bind(id)
                .bind(&task)
                .bind(&correlation)
                .bind(&now)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE items SET state = 'submitted', updated_at = ?2
                     WHERE batch_id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(&now)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO quota_days (subscription_id, day, files_used, directories_used)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (subscription_id, day) DO UPDATE SET
                         files_used = files_used + excluded.files_used,
                         directories_used = directories_used + excluded.directories_used",
                )
                .bind(&subscription)
                .bind(&day)
                .bind(files)
                .bind(directories)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// A call failed and will be tried again: count it and keep the reason.
    pub async fn batch_attempt_failed(
        &self,
        batch_id: i64,
        error: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let args = (batch_id, error.to_owned(), now.to_owned());
        self.write(move |conn| {
            let (id, error, now) = args.clone();
            Box::pin(async move {
                sqlx::query("UPDATE batches SET attempts = attempts + 1, last_error = ?2, sent_at = ?3 WHERE id = ?1")
                    .bind(id)
                    .bind(&error)
                    .bind(&now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
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
        not_before: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let args = (
            batch.id,
            batch.item_ids(),
            reason.to_owned(),
            not_before.to_owned(),
            now.to_owned(),
        );
        self.write(move |conn| {
            let (id, items, reason, not_before, now) = args.clone();
            Box::pin(async move {
                sqlx::query("UPDATE batches SET state = 'released', last_error = ?2, finished_at = ?3 WHERE id = ?1")
                    .bind(id)
                    .bind(&reason)
                    .bind(&now)
                    .execute(&mut *conn)
                    .await?;
                return_to_pending(conn, &items, &reason, &not_before, &now, false).await
            })
        })
        .await
    }

    /// A URL in the batch was refused: move its items into two halves.
    pub async fn split_batch(
        &self,
        batch: &Batch,
        reason: &str,
        now: &str,
    ) -> Result<(Batch, Batch), StoreError> {
        let batch = batch.clone();
        let args = (reason.to_owned(), now.to_owned());
        self.write(move |conn| {
            let batch = batch.clone();
            let (reason, now) = args.clone();
            Box::pin(async move {
                sqlx::query("UPDATE batches SET state = 'split', attempts = attempts + 1, last_error = ?2, finished_at = ?3 WHERE id = ?1")
                    .bind(batch.id)
                    .bind(&reason)
                    .bind(&now)
                    .execute(&mut *conn)
                    .await?;
                let mut all: Vec<(Kind, BatchItem)> = batch
                    .files
                    .iter()
                    .map(|i| (Kind::File, i.clone()))
                    .chain(batch.directories.iter().map(|i| (Kind::Directory, i.clone())))
                    .collect();
                let second = all.split_off(all.len() / 2);
                let a = insert_batch_of(conn, &batch.endpoint_id, all, &now).await?;
                let b = insert_batch_of(conn, &batch.endpoint_id, second, &now).await?;
                Ok((a, b))
            })
        })
        .await
    }

    /// Fails a batch's items for good with `reason`; with `whole_endpoint`,
    /// also every pending item of its endpoint (the endpoint is wrong).
    pub async fn fail_batch(
        &self,
        batch: &Batch,
        reason: &str,
        whole_endpoint: bool,
        now: &str,
    ) -> Result<u64, StoreError> {
        let args = (
            batch.id,
            batch.endpoint_id.clone(),
            reason.to_owned(),
            now.to_owned(),
        );
        self.write(move |conn| {
            let (id, endpoint, reason, now) = args.clone();
            Box::pin(async move {
                sqlx::query("UPDATE batches SET state = 'failed', attempts = attempts + 1, last_error = ?2, finished_at = ?3 WHERE id = ?1")
                    .bind(id)
                    .bind(&reason)
                    .bind(&now)
                    .execute(&mut *conn)
                    .await?;
                let mut failed = sqlx::query(
                    "UPDATE items SET state = 'failed', last_error = ?2, updated_at = ?3, finished_at = ?3
                     WHERE batch_id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(&reason)
                .bind(&now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if whole_endpoint {
                    failed += sqlx::query(
                        "UPDATE items SET state = 'failed', last_error = ?2, updated_at = ?3, finished_at = ?3
                         WHERE state = 'pending' AND endpoint_id = ?1",
                    )
                    .bind(&endpoint)
                    .bind(&reason)
                    .bind(&now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                Ok(failed)
            })
        })
        .await
    }

    pub async fn submitted_batches(&self) -> Result<Vec<SubmittedBatch>, StoreError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, endpoint_id, task_track_id, accepted_at FROM batches
             WHERE state = 'submitted' ORDER BY accepted_at",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, endpoint_id, task_track_id, accepted_at)| SubmittedBatch {
                    id,
                    endpoint_id,
                    task_track_id,
                    accepted_at,
                },
            )
            .collect())
    }

    pub async fn submitted_items(&self, batch_id: i64) -> Result<Vec<SubmittedItem>, StoreError> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, kind, url, attempts FROM items WHERE batch_id = ?1 AND state = 'submitted'",
        )
        .bind(batch_id)
        .fetch_all(&self.reader)
        .await?;
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
        batch_id: i64,
        results: Vec<(i64, ItemResult)>,
        now: &str,
    ) -> Result<bool, StoreError> {
        let now = now.to_owned();
        self.write(move |conn| {
            let results = results.clone();
            let now = now.clone();
            Box::pin(async move {
                for (item_id, result) in &results {
                    match result {
                        ItemResult::Succeeded => {
                            sqlx::query(
                                "UPDATE items SET state = 'succeeded', last_error = NULL, updated_at = ?2, finished_at = ?2
                                 WHERE id = ?1 AND state = 'submitted'",
                            )
                            .bind(item_id)
                            .bind(&now)
                            .execute(&mut *conn)
                            .await?;
                        }
                        ItemResult::Failed { reason } => {
                            sqlx::query(
                                "UPDATE items SET state = 'failed', last_error = ?2, updated_at = ?3, finished_at = ?3
                                 WHERE id = ?1 AND state = 'submitted'",
                            )
                            .bind(item_id)
                            .bind(reason)
                            .bind(&now)
                            .execute(&mut *conn)
                            .await?;
                        }
                        ItemResult::Retry { not_before, reason } => {
                            return_to_pending(conn, &[*item_id], reason, not_before, &now, true).await?;
                        }
                    }
                }
                close_if_done(conn, batch_id, &now).await
            })
        })
        .await
    }

    /// Startup recovery: items marked in flight whose batch is gone or
    /// finished go back to pending. Returns how many.
    pub async fn recover(&self, now: &str) -> Result<u64, StoreError> {
        let now = now.to_owned();
        self.write(move |conn| {
            let now = now.clone();
            Box::pin(async move {
                let orphans: Vec<i64> = sqlx::query_scalar(
                    "SELECT i.id FROM items i LEFT JOIN batches b ON b.id = i.batch_id
                     WHERE i.state IN ('sending', 'submitted')
                       AND (b.id IS NULL OR b.state NOT IN ('sending', 'submitted'))",
                )
                .fetch_all(&mut *conn)
                .await?;
                let count = orphans.len() as u64;
                if !orphans.is_empty() {
                    return_to_pending(
                        conn,
                        &orphans,
                        "recovered after a restart",
                        &now,
                        &now,
                        false,
                    )
                    .await?;
                }
                Ok(count)
            })
        })
        .await
    }
}

async fn quota_use(
    conn: &mut SqliteConnection,
    subscription_id: &str,
    day: &str,
) -> Result<QuotaUse, sqlx::Error> {
    let used: Option<(i64, i64)> = sqlx::query_as(
        "SELECT files_used, directories_used FROM quota_days WHERE subscription_id = ?1 AND day = ?2",
    )
    .bind(subscription_id)
    .bind(day)
    .fetch_optional(&mut *conn)
    .await?;
    let reserved: (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(files), 0), coalesce(sum(directories), 0) FROM batches WHERE state = 'sending'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (files_used, directories_used) = used.unwrap_or((0, 0));
    Ok(QuotaUse {
        day: day.to_owned(),
        files_used: files_used.max(0) as u64,
        directories_used: directories_used.max(0) as u64,
        files_reserved: reserved.0.max(0) as u64,
        directories_reserved: reserved.1.max(0) as u64,
    })
}

async fn cut_batch(
    conn: &mut SqliteConnection,
    endpoint_id: &str,
    limits: &CutLimits,
    now: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    let quota = quota_use(conn, &limits.subscription_id, &limits.quota_day).await?;
    let files_left = limits
        .files_per_day
        .saturating_sub(quota.files_used + quota.files_reserved);
    let directories_left = limits
        .directories_per_day
        .saturating_sub(quota.directories_used + quota.directories_reserved);
    let max_files = (limits.max_files as u64).min(files_left) as i64;
    let max_directories = (limits.max_directories as u64).min(directories_left) as i64;

    let mut picked: Vec<(Kind, BatchItem)> = Vec::new();
    for (kind, max) in [(Kind::File, max_files), (Kind::Directory, max_directories)] {
        if max == 0 {
            continue;
        }
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, url FROM items
             WHERE state = 'pending' AND endpoint_id = ?1 AND kind = ?2 AND not_before <= ?3
             ORDER BY not_before, id LIMIT ?4",
        )
        .bind(endpoint_id)
        .bind(kind.as_str())
        .bind(now)
        .bind(max)
        .fetch_all(&mut *conn)
        .await?;
        picked.extend(
            rows.into_iter()
                .map(|(item_id, url)| (kind, BatchItem { item_id, url })),
        );
    }
    if picked.is_empty() {
        return Ok(None);
    }
    let batch = insert_batch_of(conn, endpoint_id, picked, now).await?;
    let ids = ids_json(&batch.item_ids())?;
    sqlx::query(
        "UPDATE items SET attempts = attempts + 1 WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(Some(batch))
}

/// Creates a `sending` batch holding `items` and points them at it.
async fn insert_batch_of(
    conn: &mut SqliteConnection,
    endpoint_id: &str,
    items: Vec<(Kind, BatchItem)>,
    now: &str,
) -> Result<Batch, sqlx::Error> {
    let mut batch = Batch {
        id: 0,
        endpoint_id: endpoint_id.to_owned(),
        files: Vec::new(),
        directories: Vec::new(),
    };
    for (kind, item) in items {
        match kind {
            Kind::File => batch.files.push(item),
            Kind::Directory => batch.directories.push(item),
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO batches (endpoint_id, state, not_before, files, directories, created_at)
         VALUES (?1, 'sending', ?2, ?3, ?4, ?2) RETURNING id",
    )
    .bind(endpoint_id)
    .bind(now)
    .bind(batch.files.len() as i64)
    .bind(batch.directories.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    batch.id = id;
    sqlx::query(
        "UPDATE items SET state = 'sending', batch_id = ?1, updated_at = ?2
         WHERE id IN (SELECT value FROM json_each(?3))",
    )
    .bind(id)
    .bind(now)
    .bind(ids_json(&batch.item_ids())?)
    .execute(&mut *conn)
    .await?;
    Ok(batch)
}

/// Puts items back to `pending` (from `sending`, `submitted`, or `failed`
/// for an operator's retry). One that has a pending twin (the same URL
/// asked for again meanwhile) is merged into the twin instead, since only
/// one pending item per URL may exist; its followers move with it.
pub(super) async fn return_to_pending(
    conn: &mut SqliteConnection,
    item_ids: &[i64],
    reason: &str,
    not_before: &str,
    now: &str,
    keep_batch: bool,
) -> Result<(), sqlx::Error> {
    let ids = ids_json(item_ids)?;
    sqlx::query(
        "UPDATE items AS i SET state = 'merged', last_error = ?2, updated_at = ?3,
                merged_into = (SELECT t.id FROM items t WHERE t.state = 'pending'
                               AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)
         WHERE i.id IN (SELECT value FROM json_each(?1))
           AND EXISTS (SELECT 1 FROM items t WHERE t.state = 'pending'
                       AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)",
    )
    .bind(&ids)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE items SET merged_into = (SELECT m.merged_into FROM items m WHERE m.id = items.merged_into)
         WHERE state = 'merged' AND merged_into IN (SELECT value FROM json_each(?1))
           AND (SELECT m.state FROM items m WHERE m.id = items.merged_into) = 'merged'",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE items SET state = 'pending', not_before = ?2, last_error = ?3, updated_at = ?4,
                batch_id = CASE WHEN ?5 THEN batch_id ELSE NULL END
         WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('sending', 'submitted', 'failed')",
    )
    .bind(&ids)
    .bind(not_before)
    .bind(reason)
    .bind(now)
    .bind(keep_batch)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A submitted batch with no item left waiting becomes `succeeded` (every
/// URL succeeded) or `failed` (some did not).
async fn close_if_done(
    conn: &mut SqliteConnection,
    batch_id: i64,
    now: &str,
) -> Result<bool, sqlx::Error> {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM items WHERE batch_id = ?1 AND state = 'submitted'",
    )
    .bind(batch_id)
    .fetch_one(&mut *conn)
    .await?;
    if waiting > 0 {
        return Ok(false);
    }
    let not_succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM items WHERE batch_id = ?1 AND state != 'succeeded'",
    )
    .bind(batch_id)
    .fetch_one(&mut *conn)
    .await?;
    let state = if not_succeeded == 0 {
        "succeeded"
    } else {
        "failed"
    };
    sqlx::query(
        "UPDATE batches SET state = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'submitted'",
    )
    .bind(batch_id)
    .bind(state)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

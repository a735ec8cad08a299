//! Preloads: asking the CDN to fetch a file from the origin into the edge.
//!
//! A preload sent before the purge of its URL has finished can warm the
//! edge with the old file, so a preload that follows a purge does not
//! exist until that purge has succeeded: [`chain_after`] creates it in the
//! very transaction that records the purge's `Succeed` (no crash can fall
//! between the two), for each URL whose request asked for it
//! (`request_items.preload`). A purge that fails creates none; the history
//! says `skipped`. A preload asked for on its own (`POST /v1/preloads`) is
//! created pending when the request is stored.
//!
//! Preloads live in their own table (`preloads`, linked to requests by
//! `request_preloads`), never in `items`: nothing that coalesces, covers,
//! promotes or cuts purges can see one. They coalesce only with each
//! other: one pending preload per URL.
//!
//! Their batches go through the same transitions as purges'
//! ([`super::batches`], which dispatches on the batch's
//! [`Operation`](super::Operation)); what differs is here.

use std::sync::Arc;

use super::db::{Conn, json_list, on_conn, on_pool};

use super::batches::{self, BatchItem, ItemResult, PreloadLimits, Readiness};
use super::model::NewRequest;
use super::model::Operation;
use super::{Batch, ItemId, Store, StoreError, Timestamp};
use crate::target::Kind;

/// A preload's state as a request sees it (`history.preload_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreloadState {
    /// Its purge has not succeeded yet.
    Waiting,
    Pending,
    Sending,
    Submitted,
    Succeeded,
    Failed,
    Cancelled,
    /// Its purge ended without success: there is nothing new to warm.
    Skipped,
}

impl PreloadState {
    pub const ALL: [PreloadState; 8] = [
        PreloadState::Waiting,
        PreloadState::Pending,
        PreloadState::Sending,
        PreloadState::Submitted,
        PreloadState::Succeeded,
        PreloadState::Failed,
        PreloadState::Cancelled,
        PreloadState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PreloadState::Waiting => "waiting",
            PreloadState::Pending => "pending",
            PreloadState::Sending => "sending",
            PreloadState::Submitted => "submitted",
            PreloadState::Succeeded => "succeeded",
            PreloadState::Failed => "failed",
            PreloadState::Cancelled => "cancelled",
            PreloadState::Skipped => "skipped",
        }
    }

    /// `merged` (a row whose requests moved to a twin) reads as pending:
    /// the view never shows one, since links follow the twin.
    pub fn parse(text: &str) -> Option<PreloadState> {
        if text == "merged" {
            return Some(PreloadState::Pending);
        }
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            PreloadState::Succeeded
                | PreloadState::Failed
                | PreloadState::Cancelled
                | PreloadState::Skipped
        )
    }
}

/// Preloads in each state of the `preloads` table: `/v1/stats`'s
/// `preloads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreloadCounts {
    pub pending: u64,
    pub sending: u64,
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Requested URLs whose purge has not succeeded yet.
    #[serde(default)]
    pub waiting: u64,
}

/// URLs that want a preload and whose purge is still open (the item, or
/// the item it was merged into: merges are one level deep), found from
/// the links that want a preload (the partial index
/// `request_items_preload`), not from the queue: a million pending purges
/// that want no preload cost nothing here (issue 31).
pub(crate) const WAITING_PRELOADS: &str = "SELECT count(*) FROM request_items ri
     JOIN items i ON i.id = ri.item_id
     LEFT JOIN items m ON m.id = i.merged_into AND i.state = 'merged'
     WHERE ri.preload = 1
       AND (i.state IN ('pending', 'sending', 'submitted')
            OR m.state IN ('pending', 'sending', 'submitted'))";

impl Store {
    /// How ready one endpoint's pending preloads are (as
    /// [`Store::readiness`] for purges; preloads have no urgent lane).
    pub async fn preload_readiness(
        &self,
        endpoint_id: &str,
        now: Timestamp,
        cap: usize,
    ) -> Result<Readiness, StoreError> {
        let earliest_not_before: Option<Timestamp> = on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT not_before FROM preloads WHERE state = 'pending' AND endpoint_id = $1
             ORDER BY not_before LIMIT 1",
        )
        .bind(endpoint_id)
        .fetch_optional(c).await)?;
        let eligible: i64 = if cap == 0 || earliest_not_before.is_none_or(|nb| nb > now) {
            0
        } else {
            on_pool!(&self.reader, c => sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM preloads
                  WHERE state = 'pending' AND endpoint_id = $1 AND not_before <= $2 LIMIT $3) AS eligible",
            )
            .bind(endpoint_id)
            .bind(now)
            .bind(cap as i64)
            .fetch_one(c).await)?
        };
        Ok(Readiness {
            eligible: eligible.max(0) as usize,
            urgent: 0,
            earliest_not_before,
        })
    }

    /// Cuts the next preload batch of `endpoint_id`: oldest eligible
    /// first, within `batch.max_preload_files` and the day's preload quota
    /// (checked here, in the writer's transaction, which is what counts).
    pub async fn cut_preload_batch(
        &self,
        endpoint_id: &str,
        limits: PreloadLimits,
        now: Timestamp,
    ) -> Result<Option<Batch>, StoreError> {
        let endpoint_id = endpoint_id.to_owned();
        self.write(move |conn| {
            let (endpoint_id, limits) = (endpoint_id.clone(), limits.clone());
            Box::pin(async move { cut(conn, &endpoint_id, &limits, now).await })
        })
        .await
    }

    /// Requested URLs that want a preload and whose purge is still open:
    /// `PreloadCounts::waiting`, which is not a count of preload rows (the
    /// rest of `PreloadCounts` is `QueueCounts::preload_states`).
    pub async fn preloads_waiting(&self) -> Result<u64, StoreError> {
        let waiting: i64 = on_pool!(&self.reader, c => sqlx::query_scalar(WAITING_PRELOADS)
            .fetch_one(c).await)?;
        Ok(waiting.max(0) as u64)
    }
}

async fn cut(
    conn: &mut Conn<'_>,
    endpoint_id: &str,
    limits: &PreloadLimits,
    now: Timestamp,
) -> Result<Option<Batch>, sqlx::Error> {
    let quota = super::charges::quota_use(conn, &limits.account).await?;
    let left = limits.per_day.saturating_sub(quota.preloads_used);
    let max = (limits.max_files as u64).min(left);
    if max == 0 {
        return Ok(None);
    }
    let rows: Vec<(ItemId, String)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT id, url FROM preloads
         WHERE state = 'pending' AND endpoint_id = $1 AND not_before <= $2
         ORDER BY not_before, id LIMIT $3",
    )
    .bind(endpoint_id)
    .bind(now)
    .bind(max as i64)
    .fetch_all(c).await)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let picked = rows
        .into_iter()
        .map(|(item_id, url)| (Kind::File, BatchItem { item_id, url }))
        .collect();
    Ok(Some(
        batches::insert_batch_of(
            conn,
            endpoint_id,
            Operation::Preload,
            picked,
            &limits.account,
            now,
        )
        .await?,
    ))
}

/// The URLs that follow purge item `item_id` (its own, and those merged
/// into it), whose request asked for a preload and is not cancelled, and
/// that are files: a directory is purged, not preloaded, but a file
/// covered by or promoted into a directory is preloaded once the
/// directory's purge succeeded.
const WANTED_AFTER: &str = "
    WITH wanted AS (
        SELECT ri.request_id AS request_id, ri.position AS position,
               i.endpoint_id AS endpoint_id, COALESCE(ri.requested_url, i.url) AS url
        FROM request_items ri
        JOIN items i ON i.id = ri.item_id
        JOIN requests r ON r.id = ri.request_id
        WHERE ri.preload = 1 AND r.cancelled_at IS NULL
          AND COALESCE(ri.requested_kind, i.kind) = 'file'
          AND ri.item_id IN (SELECT $1 UNION ALL
                             SELECT f.id FROM items f WHERE f.merged_into = $1 AND f.state = 'merged'))";

/// Purge item `item_id` has just succeeded: a pending preload for each
/// URL that wanted one (a pending twin, if any, carries it), linked to
/// the request position that asked. Returns how many were linked.
pub(super) async fn chain_after(
    conn: &mut Conn<'_>,
    item_id: ItemId,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    chain_after_at(conn, item_id, now, now).await
}

/// [`chain_after`], the preloads eligible only from `not_before`.
pub(super) async fn chain_after_at(
    conn: &mut Conn<'_>,
    item_id: ItemId,
    now: Timestamp,
    not_before: Timestamp,
) -> Result<u64, sqlx::Error> {
    on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
        "{WANTED_AFTER}
         INSERT INTO preloads (endpoint_id, url, state, not_before, after_item, created_at, updated_at)
         SELECT DISTINCT endpoint_id, url, 'pending', $3, $1, $2, $2 FROM wanted WHERE true
         ON CONFLICT (endpoint_id, url) WHERE state = 'pending' DO NOTHING"
    )))
    .bind(item_id)
    .bind(now)
    .bind(not_before)
    .execute(c).await.map(|r| r.rows_affected()))?;
    // SQLite's CROSS JOIN keeps `wanted` the outer loop; PostgreSQL has
    // no CROSS JOIN with a condition, and plans the join itself.
    let join = conn.pick("CROSS JOIN", "JOIN");
    let linked = on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(format!(
        "{WANTED_AFTER}
         INSERT INTO request_preloads (request_id, position, preload_id)
         SELECT w.request_id, w.position, p.id FROM wanted w
         {join} preloads p ON p.state = 'pending' AND p.endpoint_id = w.endpoint_id AND p.url = w.url
         WHERE true
         ON CONFLICT (request_id, position) DO UPDATE SET preload_id = excluded.preload_id"
    )))
    .bind(item_id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(linked)
}

/// Notes which of the requests' file URLs are to be preloaded after their
/// purge ([`NewRequest::preload_after_purge`]), and stores the preloads
/// asked for on their own ([`NewRequest::preload_only`]). Returns, per
/// request, how many preloads were new.
pub(super) async fn enqueue_for(
    conn: &mut Conn<'_>,
    requests: &[Arc<NewRequest>],
) -> Result<Vec<usize>, sqlx::Error> {
    let mut new = vec![0usize; requests.len()];
    for (index, request) in requests.iter().enumerate() {
        if !request.preload_after_purge.is_empty() {
            let sql = conn.pick(
                "UPDATE request_items SET preload = 1
                 WHERE request_id = $1 AND position IN (SELECT value FROM json_each($2))",
                "UPDATE request_items SET preload = 1
                 WHERE request_id = $1
                   AND position IN (SELECT value::bigint FROM json_array_elements_text($2::json))",
            );
            on_conn!(conn, c => sqlx::query(sql)
            .bind(request.id.as_str())
            .bind(json_list(&request.preload_after_purge)?)
            .execute(c).await.map(|r| r.rows_affected()))?;
        }
        let now = Timestamp::new(request.received_at);
        let first = request.targets.len();
        for (offset, target) in request.preload_only.iter().enumerate() {
            let inserted = on_conn!(conn, c => sqlx::query(
                "INSERT INTO preloads (endpoint_id, url, state, not_before, created_at, updated_at)
                 VALUES ($1, $2, 'pending', $3, $3, $3)
                 ON CONFLICT (endpoint_id, url) WHERE state = 'pending' DO NOTHING",
            )
            .bind(&target.endpoint_id)
            .bind(&target.url)
            .bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
            new[index] += inserted as usize;
            on_conn!(conn, c => sqlx::query(
                "INSERT INTO request_preloads (request_id, position, preload_id)
                 SELECT $1, $2, id FROM preloads
                 WHERE state = 'pending' AND endpoint_id = $3 AND url = $4
                 ON CONFLICT (request_id, position) DO UPDATE SET preload_id = excluded.preload_id",
            )
            .bind(request.id.as_str())
            .bind((first + offset) as i64)
            .bind(&target.endpoint_id)
            .bind(&target.url)
            .execute(c).await.map(|r| r.rows_affected()))?;
        }
    }
    Ok(new)
}

/// Puts preloads back to `pending` (from `sending`, `submitted`, or
/// `failed` for an operator's retry). One pending preload per URL: a
/// returned one whose URL is pending already (asked for again meanwhile)
/// hands its requests to that one and is marked `merged`.
pub(super) async fn return_to_pending(
    conn: &mut Conn<'_>,
    ids: &[ItemId],
    reason: &str,
    not_before: Timestamp,
    now: Timestamp,
    keep_batch: bool,
) -> Result<(), sqlx::Error> {
    for id in ids {
        let twin: Option<i64> = on_conn!(conn, c => sqlx::query_scalar(
            "SELECT t.id FROM preloads p JOIN preloads t
               ON t.state = 'pending' AND t.endpoint_id = p.endpoint_id AND t.url = p.url AND t.id != p.id
             WHERE p.id = $1 AND p.state IN ('sending', 'submitted', 'failed')",
        )
        .bind(id)
        .fetch_optional(c).await)?;
        if let Some(twin) = twin {
            on_conn!(conn, c => sqlx::query("UPDATE request_preloads SET preload_id = $2 WHERE preload_id = $1")
                .bind(id)
                .bind(twin)
                .execute(c).await.map(|r| r.rows_affected()))?;
            on_conn!(conn, c => sqlx::query(
                "UPDATE preloads SET state = 'merged', merged_into = $2, last_error = $3,
                        updated_at = $4, finished_at = $4
                 WHERE id = $1",
            )
            .bind(id)
            .bind(twin)
            .bind(reason)
            .bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
            continue;
        }
        on_conn!(conn, c => sqlx::query(
            "UPDATE preloads SET state = 'pending', not_before = $2, last_error = $3, updated_at = $4,
                    finished_at = NULL, batch_id = CASE WHEN $5 THEN batch_id ELSE NULL END
             WHERE id = $1 AND state IN ('sending', 'submitted', 'failed')",
        )
        .bind(id)
        .bind(not_before)
        .bind(reason)
        .bind(now)
        .bind(keep_batch)
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// The tracker's results for a preload batch.
pub(super) async fn record_results(
    conn: &mut Conn<'_>,
    results: &[(ItemId, ItemResult)],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    for (id, result) in results {
        match result {
            ItemResult::Succeeded => {
                on_conn!(conn, c => sqlx::query(
                    "UPDATE preloads SET state = 'succeeded', last_error = NULL, updated_at = $2,
                            finished_at = $2
                     WHERE id = $1 AND state = 'submitted'",
                )
                .bind(id)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
            }
            ItemResult::Failed { reason } => {
                on_conn!(conn, c => sqlx::query(
                    "UPDATE preloads SET state = 'failed', last_error = $2, updated_at = $3,
                            finished_at = $3
                     WHERE id = $1 AND state = 'submitted'",
                )
                .bind(id)
                .bind(reason)
                .bind(now)
                .execute(c).await.map(|r| r.rows_affected()))?;
            }
            ItemResult::Retry { not_before, reason } => {
                return_to_pending(conn, &[*id], reason, *not_before, now, true).await?;
            }
        }
    }
    Ok(())
}

/// Startup recovery: preloads marked in flight whose batch is gone or
/// finished go back to pending. Returns how many.
pub(super) async fn recover(conn: &mut Conn<'_>, now: Timestamp) -> Result<u64, sqlx::Error> {
    let orphans: Vec<ItemId> = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT p.id FROM preloads p LEFT JOIN batches b ON b.id = p.batch_id
         WHERE p.state IN ('sending', 'submitted')
           AND (b.id IS NULL OR b.state NOT IN ('sending', 'submitted'))",
    )
    .fetch_all(c).await)?;
    return_to_pending(conn, &orphans, "recovered after a restart", now, now, false).await?;
    Ok(orphans.len() as u64)
}

/// An operator's retry: the failed preloads of `request_id` (every failed
/// one without it) go back to pending with a fresh count of attempts.
pub(super) async fn retry(
    conn: &mut Conn<'_>,
    request_id: Option<&str>,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<ItemId> = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT id FROM preloads WHERE state = 'failed'
           AND ($1 IS NULL OR id IN (SELECT preload_id FROM request_preloads WHERE request_id = $1))",
    )
    .bind(request_id)
    .fetch_all(c).await)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = conn.pick(
        "UPDATE preloads SET attempts = 0 WHERE id IN (SELECT value FROM json_each($1))",
        "UPDATE preloads SET attempts = 0
         WHERE id IN (SELECT value::bigint FROM json_array_elements_text($1::json))",
    );
    on_conn!(conn, c => sqlx::query(sql)
        .bind(json_list(&ids)?)
        .execute(c).await.map(|r| r.rows_affected()))?;
    return_to_pending(conn, &ids, "sent again by an operator", now, now, true).await?;
    Ok(ids.len() as u64)
}

/// Cancels the pending preloads of `request_id` (already marked
/// cancelled) that no live request wants. Returns `(cancelled, kept)`.
pub(super) async fn cancel(
    conn: &mut Conn<'_>,
    request_id: &str,
    now: Timestamp,
) -> Result<(u64, u64), sqlx::Error> {
    let pending: i64 = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT count(*) FROM preloads WHERE state = 'pending'
           AND id IN (SELECT preload_id FROM request_preloads WHERE request_id = $1)",
    )
    .bind(request_id)
    .fetch_one(c).await)?;
    let cancelled = on_conn!(conn, c => sqlx::query(
        "UPDATE preloads SET state = 'cancelled', finished_at = $2, updated_at = $2,
                last_error = 'cancelled by an operator (request ' || $1 || ')'
         WHERE state = 'pending'
           AND id IN (SELECT preload_id FROM request_preloads WHERE request_id = $1)
           AND NOT EXISTS (SELECT 1 FROM request_preloads rp JOIN requests r ON r.id = rp.request_id
                           WHERE rp.preload_id = preloads.id AND r.cancelled_at IS NULL)",
    )
    .bind(request_id)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok((cancelled, (pending.max(0) as u64).saturating_sub(cancelled)))
}

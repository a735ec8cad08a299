//! What an operator may do to items and preloads: send failed ones
//! again, cancel pending ones.

use super::db::{Conn, json_list, on_conn};
use serde::Serialize;

use super::returns::return_to_pending;
use super::{ItemId, RequestId, Store, StoreError, Timestamp};

/// The answer to a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    /// Pending items now `cancelled`.
    pub cancelled: u64,
    /// Pending items kept because another request (or a URL merged into
    /// them) still wants them.
    pub kept: u64,
}

impl Store {
    /// Puts failed items and preloads back to pending, with a fresh count
    /// of attempts: those of `request_id`, or every failed one. Returns
    /// how many.
    pub async fn retry_failed(
        &self,
        request_id: Option<&RequestId>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let args = (request_id.map(|id| id.as_str().to_owned()), now);
        self.write(move |conn| {
            let (request_id, now) = args.clone();
            Box::pin(async move {
                let purges = retry(conn, request_id.as_deref(), now).await?;
                let preloads = super::preloads::retry(conn, request_id.as_deref(), now).await?;
                Ok(purges + preloads)
            })
        })
        .await
    }

    /// Puts these items back to pending, those of them that failed, with
    /// a fresh count of attempts (a search's "retry the failed"): each id
    /// is the item that carries a URL (a merged URL's directory). Returns
    /// how many.
    pub async fn retry_items(&self, ids: Vec<ItemId>, now: Timestamp) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let ids = ids.clone();
            Box::pin(async move {
                let json = json_list(&ids)?;
                let sql = conn.with_id_lists(
                    "SELECT id FROM items WHERE state = 'failed' AND id IN (SELECT value FROM json_each($1))",
                );
                let failed: Vec<ItemId> = on_conn!(conn, c => sqlx::query_scalar(sql)
                    .bind(&json)
                    .fetch_all(c).await)?;
                retry_ids(conn, failed, now).await
            })
        })
        .await
    }

    /// Cancels the pending items and preloads of `request_id` that nothing
    /// else wants. Preloads that would follow its purges are not made.
    pub async fn cancel_pending(
        &self,
        request_id: &RequestId,
        now: Timestamp,
    ) -> Result<Cancelled, StoreError> {
        let args = (request_id.as_str().to_owned(), now);
        self.write(move |conn| {
            let (request_id, now) = args.clone();
            Box::pin(async move {
                let purges = cancel(conn, &request_id, now).await?;
                let (cancelled, kept) = super::preloads::cancel(conn, &request_id, now).await?;
                Ok(Cancelled {
                    cancelled: purges.cancelled + cancelled,
                    kept: purges.kept + kept,
                })
            })
        })
        .await
    }
}

/// The item that carries each URL of `request_id`: the item itself, or
/// the root it was merged into (a directory, or a newer twin). A JSON list
/// for `json_each`.
const ROOTS_OF_REQUEST: &str = "
    SELECT DISTINCT CASE WHEN i.state = 'merged' AND i.merged_into IS NOT NULL
                         THEN i.merged_into ELSE i.id END AS root
    FROM request_items ri JOIN items i ON i.id = ri.item_id
    WHERE ri.request_id = $1";

async fn retry(
    conn: &mut Conn<'_>,
    request_id: Option<&str>,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    // A URL merged into a directory that failed is retried by retrying the
    // directory: its state is the URL's state (issue 13, bug 3).
    let ids: Vec<ItemId> = match request_id {
        Some(request_id) => on_conn!(conn, c => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM items WHERE state = 'failed' AND id IN ({ROOTS_OF_REQUEST})"
            )))
            .bind(request_id)
            .fetch_all(c).await)?,
        None => {
            on_conn!(conn, c => sqlx::query_scalar("SELECT id FROM items WHERE state = 'failed'")
                .fetch_all(c).await)?
        }
    };
    retry_ids(conn, ids, now).await
}

/// Failed items `ids` back to pending with a fresh count of attempts.
async fn retry_ids(
    conn: &mut Conn<'_>,
    ids: Vec<ItemId>,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let json = json_list(&ids)?;
    let sql = conn.with_id_lists(
        "UPDATE items SET attempts = 0, finished_at = NULL
         WHERE id IN (SELECT value FROM json_each($1))",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(&json)
    .execute(c).await.map(|r| r.rows_affected()))?;
    // Two failed generations of one URL become one pending item (the
    // others follow it): see `return_to_pending`.
    return_to_pending(conn, &ids, "sent again by an operator", now, now, true).await?;
    Ok(ids.len() as u64)
}

/// Cancels what `request_id` asked for, as far as nothing else wants it.
///
/// The request is marked cancelled first, so its links no longer count:
/// an item is kept only while a request that is not cancelled links to
/// it, or to something merged into it. Two requests for one URL, both
/// cancelled, leave nothing to send (issue 13, bug 4).
async fn cancel(
    conn: &mut Conn<'_>,
    request_id: &str,
    now: Timestamp,
) -> Result<Cancelled, sqlx::Error> {
    on_conn!(conn, c => sqlx::query("UPDATE requests SET cancelled_at = $2 WHERE id = $1 AND cancelled_at IS NULL")
        .bind(request_id)
        .bind(now)
        .execute(c).await.map(|r| r.rows_affected()))?;
    let pending: Vec<i64> = on_conn!(conn, c => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM items WHERE state = 'pending' AND id IN ({ROOTS_OF_REQUEST})"
    )))
    .bind(request_id)
    .fetch_all(c).await)?;
    if pending.is_empty() {
        return Ok(Cancelled {
            cancelled: 0,
            kept: 0,
        });
    }
    let json = json_list(&pending)?;
    let sql = conn.with_id_lists(
        "UPDATE items SET state = 'cancelled', finished_at = $2, updated_at = $2,
                last_error = 'cancelled by an operator (request ' || $1 || ')'
         WHERE state = 'pending' AND id IN (SELECT value FROM json_each($3))
           AND NOT EXISTS (
               SELECT 1 FROM request_items ri JOIN requests r ON r.id = ri.request_id
               WHERE r.cancelled_at IS NULL
                 AND (ri.item_id = items.id
                      OR ri.item_id IN (SELECT f.id FROM items f WHERE f.merged_into = items.id)))",
    );
    let cancelled = on_conn!(conn, c => sqlx::query(sql)
    .bind(request_id)
    .bind(now)
    .bind(&json)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(Cancelled {
        cancelled,
        kept: (pending.len() as u64).saturating_sub(cancelled),
    })
}

//! What an operator may do to items: send failed ones again, cancel
//! pending ones.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::batches::return_to_pending;
use super::{Store, StoreError};

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
    /// Puts failed items back to pending, with a fresh count of attempts:
    /// those of `request_id`, or every failed item. Returns how many.
    pub async fn retry_failed(
        &self,
        request_id: Option<&str>,
        now: &str,
    ) -> Result<u64, StoreError> {
        let args = (request_id.map(str::to_owned), now.to_owned());
        self.write(move |conn| {
            let (request_id, now) = args.clone();
            Box::pin(async move { retry(conn, request_id.as_deref(), &now).await })
        })
        .await
    }

    /// Cancels the pending items of `request_id` that nothing else wants.
    pub async fn cancel_pending(
        &self,
        request_id: &str,
        now: &str,
    ) -> Result<Cancelled, StoreError> {
        let args = (request_id.to_owned(), now.to_owned());
        self.write(move |conn| {
            let (request_id, now) = args.clone();
            Box::pin(async move { cancel(conn, &request_id, &now).await })
        })
        .await
    }
}

async fn retry(
    conn: &mut SqliteConnection,
    request_id: Option<&str>,
    now: &str,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM items WHERE state = 'failed'
           AND (?1 IS NULL OR id IN (SELECT item_id FROM request_items WHERE request_id = ?1))",
    )
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let json = serde_json::to_string(&ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE items SET attempts = 0, finished_at = NULL
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&json)
    .execute(&mut *conn)
    .await?;
    return_to_pending(conn, &ids, "sent again by an operator", now, now, true).await?;
    Ok(ids.len() as u64)
}

async fn cancel(
    conn: &mut SqliteConnection,
    request_id: &str,
    now: &str,
) -> Result<Cancelled, sqlx::Error> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM items WHERE state = 'pending'
           AND id IN (SELECT item_id FROM request_items WHERE request_id = ?1)",
    )
    .bind(request_id)
    .fetch_one(&mut *conn)
    .await?;
    let cancelled = sqlx::query(
        "UPDATE items SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
                last_error = 'cancelled by an operator (request ' || ?1 || ')'
         WHERE state = 'pending'
           AND id IN (SELECT item_id FROM request_items WHERE request_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM request_items ri
                           WHERE ri.item_id = items.id AND ri.request_id != ?1)
           AND NOT EXISTS (SELECT 1 FROM items f WHERE f.merged_into = items.id)",
    )
    .bind(request_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(Cancelled {
        cancelled,
        kept: (pending.max(0) as u64).saturating_sub(cancelled),
    })
}

//! Removing finished history older than `retention.keep_finished`.
//!
//! In small batches, each its own writer job, so ingest is never held up
//! behind a large delete: a batch takes a few milliseconds and requests
//! waiting for the writer are committed in between.

use super::db::{Conn, on_conn};
use serde::Serialize;

use super::{Store, StoreError, Timestamp};

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub items: u64,
    pub preloads: u64,
    pub requests: u64,
    pub batches: u64,
    pub quota_days: u64,
}

impl Removed {
    fn add(&mut self, other: Removed) {
        self.items += other.items;
        self.preloads += other.preloads;
        self.requests += other.requests;
        self.batches += other.batches;
        self.quota_days += other.quota_days;
    }

    pub fn total(&self) -> u64 {
        self.items + self.preloads + self.requests + self.batches + self.quota_days
    }
}

impl Store {
    /// Deletes rows that finished before `cutoff`, at
    /// most `batch` items per transaction, until none is left.
    pub async fn remove_finished_before(
        &self,
        cutoff: Timestamp,
        cutoff_day: &str,
        batch: usize,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        self.write(|conn| Box::pin(note_open_requests(conn)))
            .await?;
        loop {
            let args = (cutoff, cutoff_day.to_owned(), batch as i64);
            let step = self
                .write(move |conn| {
                    let (cutoff, cutoff_day, batch) = args.clone();
                    Box::pin(async move { remove_step(conn, cutoff, &cutoff_day, batch).await })
                })
                .await?;
            removed.add(step);
            if step.total() == 0 {
                return Ok(removed);
            }
            // Let waiting intents through between batches.
            tokio::task::yield_now().await;
        }
    }
}

/// Requests that still wait for a URL, noted once per pass on the
/// writer's connection: their rows stay until the whole request is
/// finished, so a request never loses URLs from its status, nor changes
/// its overall state, while it runs (issue 13). A request that finishes
/// during the pass is removed by the next one.
async fn note_open_requests(conn: &mut Conn<'_>) -> Result<(), sqlx::Error> {
    on_conn!(conn, c => sqlx::query("CREATE TEMP TABLE IF NOT EXISTS retention_open (id TEXT PRIMARY KEY)")
        .execute(c).await.map(|r| r.rows_affected()))?;
    on_conn!(conn, c => sqlx::query("DELETE FROM retention_open")
        .execute(c).await.map(|r| r.rows_affected()))?;
    // Linked to an item in flight, or to an item merged into one.
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO retention_open (id)
         SELECT ri.request_id FROM items i JOIN request_items ri ON ri.item_id = i.id
         WHERE i.state IN ('pending', 'sending', 'submitted')
         UNION
         SELECT ri.request_id FROM items i
         JOIN items f ON f.merged_into = i.id AND f.state = 'merged'
         JOIN request_items ri ON ri.item_id = f.id
         WHERE i.state IN ('pending', 'sending', 'submitted')
         UNION
         SELECT rp.request_id FROM preloads p JOIN request_preloads rp ON rp.preload_id = p.id
         WHERE p.state IN ('pending', 'sending', 'submitted')
         ON CONFLICT DO NOTHING",
    )
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

async fn remove_step(
    conn: &mut Conn<'_>,
    cutoff: Timestamp,
    cutoff_day: &str,
    batch: i64,
) -> Result<Removed, sqlx::Error> {
    // The finished items to go, and the ones merged into them (which
    // follow their fate); request_items go with them (ON DELETE CASCADE).
    // A rowid table on SQLite; ids are BIGINTs on PostgreSQL.
    let sql = conn.pick(
        "CREATE TEMP TABLE IF NOT EXISTS retention_doomed (id INTEGER PRIMARY KEY)",
        "CREATE TEMP TABLE IF NOT EXISTS retention_doomed (id BIGINT PRIMARY KEY)",
    );
    on_conn!(conn, c => sqlx::query(sql)
        .execute(c).await.map(|r| r.rows_affected()))?;
    on_conn!(conn, c => sqlx::query("DELETE FROM retention_doomed")
        .execute(c).await.map(|r| r.rows_affected()))?;
    // Not while a request that wants it (or something merged into it)
    // is still open.
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO retention_doomed (id)
         SELECT id FROM items
         WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired') AND finished_at < $1
           AND NOT EXISTS (SELECT 1 FROM request_items ri
                           WHERE ri.item_id = items.id
                             AND ri.request_id IN (SELECT id FROM retention_open))
           AND NOT EXISTS (SELECT 1 FROM items f JOIN request_items ri ON ri.item_id = f.id
                           WHERE f.merged_into = items.id
                             AND ri.request_id IN (SELECT id FROM retention_open))
         LIMIT $2",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(c).await.map(|r| r.rows_affected()))?;
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO retention_doomed (id)
         SELECT id FROM items
         WHERE state = 'merged'
           AND (merged_into IN (SELECT id FROM retention_doomed)
                OR (merged_into IS NULL AND updated_at < $1))
         ON CONFLICT DO NOTHING",
    )
    .bind(cutoff)
    .execute(c).await.map(|r| r.rows_affected()))?;
    let items = on_conn!(conn, c => sqlx::query("DELETE FROM items WHERE id IN (SELECT id FROM retention_doomed)")
        .execute(c).await.map(|r| r.rows_affected()))?;
    // Finished preloads (and merged ones, whose requests moved on);
    // request_preloads go with them.
    let preloads = on_conn!(conn, c => sqlx::query(
        "DELETE FROM preloads WHERE id IN (
             SELECT p.id FROM preloads p
             WHERE p.state IN ('succeeded', 'failed', 'cancelled', 'merged') AND p.finished_at < $1
               AND NOT EXISTS (SELECT 1 FROM request_preloads rp
                               WHERE rp.preload_id = p.id
                                 AND rp.request_id IN (SELECT id FROM retention_open))
             LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(c).await.map(|r| r.rows_affected()))?;

    let requests = on_conn!(conn, c => sqlx::query(
        "DELETE FROM requests WHERE id IN (
             SELECT r.id FROM requests r
             WHERE r.received_at < $1
               AND NOT EXISTS (SELECT 1 FROM request_items ri WHERE ri.request_id = r.id)
               AND NOT EXISTS (SELECT 1 FROM request_preloads rp WHERE rp.request_id = r.id)
             LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(c).await.map(|r| r.rows_affected()))?;

    let batches = on_conn!(conn, c => sqlx::query(
        "DELETE FROM batches WHERE id IN (
             SELECT b.id FROM batches b
             WHERE b.state IN ('succeeded', 'failed', 'split', 'released') AND b.finished_at < $1
               AND NOT EXISTS (SELECT 1 FROM items i WHERE i.batch_id = b.id)
               AND NOT EXISTS (SELECT 1 FROM preloads p WHERE p.batch_id = b.id)
             LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(c).await.map(|r| r.rows_affected()))?;

    // The charts' call log, as old as the rest.
    on_conn!(conn, c => sqlx::query(
        "DELETE FROM calls WHERE id IN (SELECT id FROM calls WHERE at < $1 ORDER BY at LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(c).await.map(|r| r.rows_affected()))?;
    // The charts' minutes, as old as the rest (the quota ledger's charts
    // are `quota <subscription> <day>`; a few rows a day).
    on_conn!(conn, c => sqlx::query(
        "DELETE FROM chart_minutes
         WHERE (chart IN ('urls', 'calls') OR chart LIKE 'quota %')
           AND minute < substr($1, 1, 16)",
    )
    .bind(cutoff)
    .execute(c).await.map(|r| r.rows_affected()))?;
    let quota_days = on_conn!(conn, c => sqlx::query("DELETE FROM quota_days WHERE day < $1")
        .bind(cutoff_day)
        .execute(c).await.map(|r| r.rows_affected()))?;

    Ok(Removed {
        items,
        preloads,
        requests,
        batches,
        quota_days,
    })
}

//! Reading the history straight from the database, read-only, for
//! `purgeq history`: it works whether or not the daemon runs. A SQLite
//! file, or a fleet's PostgreSQL database (`store.url`): the `history`
//! view is the same on both.

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::StoreError;
use super::db::{Conn, on_conn};

/// Which history rows to read.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Effective state (a merged URL has its directory's state), or
    /// `merged`: the URLs that were merged, whatever became of them.
    pub state: Option<String>,
    /// Received at or after this stored timestamp.
    pub since: Option<String>,
    pub url_prefix: Option<String>,
    /// Requests with exactly this label.
    pub label: Option<String>,
    pub request_id: Option<String>,
    pub limit: u32,
}

/// One URL of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub received_at: String,
    pub request_id: String,
    pub source: String,
    pub url: String,
    pub kind: String,
    pub endpoint_id: String,
    pub state: String,
    pub merged_into_url: Option<String>,
    /// Why it was merged: `coalesced`, `covered` (a directory asked for)
    /// or `promoted` (a directory the planner chose for quota).
    pub merge_reason: Option<String>,
    pub task_track_id: Option<String>,
    pub correlation_id: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub finished_at: Option<String>,
    /// `normal` or `urgent`.
    pub priority: String,
    /// `purge`, or `preload` for a URL the request only preloads.
    pub operation: String,
    /// The URL's preload, when one was asked for (see the `history`
    /// view): waiting, pending, sending, submitted, succeeded, failed,
    /// cancelled or skipped.
    pub preload_state: Option<String>,
    pub preload_task_track_id: Option<String>,
    pub preload_error: Option<String>,
    /// Its purges at the caches in front of the origin, as
    /// `varnish-1 done 2026-…Z, nginx-1 pending`; `None` where none hold
    /// its host.
    pub origin_caches: Option<String>,
    /// Whether the edge serves the new content (`[verify]`): fresh,
    /// stale, unverifiable or pending; `None` where it was not verified.
    pub verification: Option<String>,
    /// The tag the URL came from, when its request named tags (issue 35).
    pub via_tag: Option<String>,
}

/// Newest first.
pub async fn read_history(
    path: &Path,
    filter: &HistoryFilter,
) -> Result<Vec<HistoryEntry>, StoreError> {
    if !path.exists() {
        return Err(StoreError::unavailable(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let mut conn = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| StoreError::internal("sqlite options", e))?
        .filename(path)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| StoreError::cannot(format_args!("cannot open {}", path.display()), e))?;
    Ok(select(&mut Conn::Sqlite(&mut conn), filter).await?)
}

/// [`read_history`] on a fleet's PostgreSQL database, in a read-only
/// transaction.
pub async fn read_history_postgres(
    url: &super::fleet::DatabaseUrl,
    filter: &HistoryFilter,
) -> Result<Vec<HistoryEntry>, StoreError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(url.connect_options())
        .await
        .map_err(|e| super::fleet::pg_error(&format!("cannot connect to {url}"), e))?;
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| super::fleet::pg_error("cannot read the history", e))?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| super::fleet::pg_error("cannot read the history", e))?;
    select(&mut Conn::Postgres(&mut tx), filter)
        .await
        .map_err(|e| super::fleet::pg_error("cannot read the history", e))
}

/// The rows of `filter`, on either database.
async fn select(
    conn: &mut Conn<'_>,
    filter: &HistoryFilter,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let sql = conn.pick(HISTORY_SQLITE, HISTORY_POSTGRES);
    on_conn!(conn, c => sqlx::query_as(sql)
        .bind(&filter.state)
        .bind(&filter.since)
        .bind(&filter.url_prefix)
        .bind(i64::from(filter.limit))
        .bind(&filter.label)
        .bind(&filter.request_id)
        .fetch_all(c)
        .await)
}

/// The parameters are cast to text: PostgreSQL cannot infer the type of a
/// parameter that is only compared with NULL, and SQLite reads the same.
/// `origin_caches` sums up the URL's purges at the caches in front of the
/// origin (those of the directory it was merged into, if it was), with
/// each database's own string aggregate.
macro_rules! history_select {
    ($aggregate:literal) => {
        concat!(
            "SELECT received_at, request_id, source, url, kind, endpoint_id,
        effective_state AS state, merged_into_url, merge_reason, task_track_id, correlation_id,
        attempts, last_error, finished_at, priority, operation, preload_state,
        preload_task_track_id, preload_error,
        (SELECT ",
            $aggregate,
            "
         FROM origin_purges o
         WHERE operation = 'purge'
           AND o.item_id = (SELECT COALESCE(x.merged_into, x.id) FROM items x WHERE x.id = history.item_id)
        ) AS origin_caches,
        CASE (SELECT min(CASE v.state WHEN 'stale' THEN 1 WHEN 'unverifiable' THEN 2
                                      WHEN 'pending' THEN 3 ELSE 4 END)
              FROM verifications v
              WHERE operation = 'purge'
                AND v.item_id = (SELECT COALESCE(x.merged_into, x.id) FROM items x WHERE x.id = history.item_id))
            WHEN 1 THEN 'stale' WHEN 2 THEN 'unverifiable' WHEN 3 THEN 'pending' WHEN 4 THEN 'fresh'
        END AS verification,
        (SELECT ri.via_tag FROM request_items ri
         WHERE operation = 'purge' AND ri.request_id = history.request_id
           AND ri.item_id = history.item_id AND ri.via_tag IS NOT NULL
         LIMIT 1) AS via_tag
 FROM history
 WHERE (CAST($1 AS TEXT) IS NULL
        OR (CASE WHEN CAST($1 AS TEXT) = 'merged' THEN state ELSE effective_state END) = CAST($1 AS TEXT))
   AND (CAST($2 AS TEXT) IS NULL OR received_at >= CAST($2 AS TEXT))
   AND (CAST($3 AS TEXT) IS NULL OR substr(url, 1, length(CAST($3 AS TEXT))) = CAST($3 AS TEXT))
   AND (CAST($5 AS TEXT) IS NULL OR request_id IN (SELECT id FROM requests WHERE label = CAST($5 AS TEXT)))
   AND (CAST($6 AS TEXT) IS NULL OR request_id = CAST($6 AS TEXT))
 LIMIT $4"
        )
    };
}

const HISTORY_SQLITE: &str = history_select!(
    "group_concat(o.layer || ' ' || o.state || coalesce(' ' || o.done_at, ''), ', ')"
);
const HISTORY_POSTGRES: &str = history_select!(
    "string_agg(o.layer || ' ' || o.state || coalesce(' ' || o.done_at, ''), ', ' ORDER BY o.id)"
);

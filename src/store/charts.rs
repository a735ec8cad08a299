//! What the status page's charts are drawn from: counts per minute or
//! per hour over a recent span, each read by an index range (the last
//! hour or day of rows, never the whole history).

use super::db::{on_conn, on_pool};
use super::{Store, StoreError, Timestamp};

/// One API call for the `calls` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub at: Timestamp,
    /// `purge`, `preload`, `query` or `preload_query`.
    pub operation: &'static str,
    /// `accepted`, `throttled`, `transient` or `refused`.
    pub outcome: &'static str,
    /// For a call that did not succeed: the error's type, its text and
    /// the answer's correlation id.
    pub error: Option<CallError>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallError {
    pub error_type: String,
    pub message: String,
    pub correlation_id: Option<String>,
}

/// One of the recent errors the status page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    pub at: String,
    pub operation: String,
    pub error: CallError,
}

/// The width of a chart's slot: the stored timestamp's prefix that names
/// it (`2026-12-02T10:15` for a minute, `2026-12-02T10` for an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Minute,
    Hour,
}

impl Slot {
    fn prefix(self) -> i64 {
        match self {
            Slot::Minute => 16,
            Slot::Hour => 13,
        }
    }
}

/// `(slot, series, count)` rows: a slot's prefix, what was counted, how
/// many.
pub type Counts = Vec<(String, String, u64)>;

fn counts(rows: Vec<(String, String, i64)>) -> Counts {
    rows.into_iter()
        .map(|(slot, series, n)| (slot, series, n.max(0) as u64))
        .collect()
}

/// The smallest UUIDv7 text of a request received at or after `at`:
/// request ids sort by arrival, so a range of the primary key finds the
/// recent requests without an index on `received_at`.
fn first_request_id_at(at: Timestamp) -> String {
    let ms = (at.get().unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    format!(
        "{:08x}-{:04x}-7000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

/// The newest calls that failed: the partial index `calls_errors`, from its end.
pub(crate) const RECENT_ERRORS: &str =
    "SELECT at, operation, error_type, message, correlation_id FROM calls
             WHERE outcome != 'accepted' ORDER BY id DESC LIMIT $1";

/// Calls per slot and outcome since `$1`: a range of `calls_at`.
pub(crate) const CALLS_BY_OUTCOME: &str =
    "SELECT substr(at, 1, CAST($2 AS INTEGER)), outcome, count(*) FROM calls WHERE at >= $1
                 GROUP BY 1, 2 ORDER BY 1";

/// URLs asked for per slot since `$1`: requests from the first id of that time (their primary key), then their rows.
pub(crate) const URLS_ENQUEUED: &str =
    "SELECT substr(r.received_at, 1, CAST($3 AS INTEGER)), 'enqueued', count(*)
             FROM requests r JOIN request_items ri ON ri.request_id = r.id
             WHERE r.id >= $2 AND r.received_at >= $1
             GROUP BY 1 ORDER BY 1";

/// Purges that succeeded per slot since `$1`: a range of the partial
/// index `items_finished` (`finished_at IS NOT NULL` lets SQLite use
/// it). The state is counted, not searched: a search by state would walk
/// every item that ever succeeded.
pub(crate) const URLS_PURGED: &str = "SELECT substr(finished_at, 1, CAST($2 AS INTEGER)), 'purged',
            CAST(sum(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT)
     FROM items WHERE finished_at IS NOT NULL AND finished_at >= $1
     GROUP BY 1 ORDER BY 1";

/// Purge files and directories accepted per hour since `$1`: a range of `batches_accepted`.
pub(crate) const QUOTA_THROUGH_THE_DAY: &str =
    "SELECT substr(accepted_at, 1, 13), CAST(sum(files) AS BIGINT), CAST(sum(directories) AS BIGINT)
             FROM batches
             WHERE accepted_at IS NOT NULL AND accepted_at >= $1 AND operation = 'purge'
             GROUP BY 1 ORDER BY 1";

impl Store {
    /// Stores API calls for the charts, in one transaction.
    pub async fn record_calls(&self, calls: Vec<CallRecord>) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = calls
            .iter()
            .map(|c| {
                let e = c.error.as_ref();
                (
                    c.at.to_string(),
                    c.operation,
                    c.outcome,
                    e.map(|e| e.error_type.as_str()),
                    e.map(|e| e.message.as_str()),
                    e.and_then(|e| e.correlation_id.as_deref()),
                )
            })
            .collect();
        let json =
            serde_json::to_string(&rows).map_err(|e| StoreError::internal("encoding calls", e))?;
        self.write(move |conn| {
            let json = json.clone();
            Box::pin(async move {
                let sql = conn.pick(
                    "INSERT INTO calls (at, operation, outcome, error_type, message, correlation_id)
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
                     FROM json_each($1)",
                    "INSERT INTO calls (at, operation, outcome, error_type, message, correlation_id)
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
                     FROM json_array_elements($1::json)",
                );
                on_conn!(conn, c => sqlx::query(sql)
                .bind(&json)
                .execute(c).await.map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
    }

    /// The `limit` newest calls that did not succeed (one walk of the
    /// partial index `calls_errors`).
    pub async fn recent_errors(&self, limit: u32) -> Result<Vec<RecentError>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(&self.reader, c => sqlx::query_as(RECENT_ERRORS)
            .bind(i64::from(limit))
            .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(at, operation, error_type, message, correlation_id)| RecentError {
                    at,
                    operation,
                    error: CallError {
                        error_type: error_type.unwrap_or_default(),
                        message: message.unwrap_or_default(),
                        correlation_id,
                    },
                },
            )
            .collect())
    }

    /// API calls since `since`, per slot and outcome.
    pub async fn calls_by_outcome(
        &self,
        since: Timestamp,
        slot: Slot,
    ) -> Result<Counts, StoreError> {
        Ok(counts(
            on_pool!(&self.reader, c => sqlx::query_as(CALLS_BY_OUTCOME)
                .bind(since)
                .bind(slot.prefix())
                .fetch_all(c).await)?,
        ))
    }

    /// URLs asked for (`enqueued`) and URLs whose purge succeeded
    /// (`purged`) since `since`, per slot.
    pub async fn urls_flow(&self, since: Timestamp, slot: Slot) -> Result<Counts, StoreError> {
        let mut rows: Vec<(String, String, i64)> = on_pool!(&self.reader, c => sqlx::query_as(URLS_ENQUEUED)
            .bind(since)
            .bind(first_request_id_at(since))
            .bind(slot.prefix())
            .fetch_all(c).await)?;
        rows.extend(
            on_pool!(&self.reader, c => sqlx::query_as::<_, (String, String, i64)>(URLS_PURGED)
                .bind(since)
                .bind(slot.prefix())
                .fetch_all(c).await)?,
        );
        Ok(counts(rows))
    }

    /// Purge files and directories the CDN accepted since `since` (the
    /// quota day's start), per hour: how the day's quota was used.
    pub async fn quota_through_the_day(&self, since: Timestamp) -> Result<Counts, StoreError> {
        let rows: Vec<(String, i64, i64)> = on_pool!(&self.reader, c => sqlx::query_as(QUOTA_THROUGH_THE_DAY)
            .bind(since)
            .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .flat_map(|(hour, files, directories)| {
                [
                    (hour.clone(), "files".to_owned(), files.max(0) as u64),
                    (hour, "directories".to_owned(), directories.max(0) as u64),
                ]
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_id_of_a_time_sorts_before_every_later_id() {
        let at = Timestamp::parse("2026-12-02T10:00:00.000Z").expect("time");
        let bound = first_request_id_at(at);
        let later = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.get().unix_timestamp() as u64,
            1,
        ))
        .to_string();
        let earlier = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.get().unix_timestamp() as u64 - 1,
            0,
        ))
        .to_string();
        assert!(bound <= later, "{bound} <= {later}");
        assert!(earlier < bound, "{earlier} < {bound}");
    }
}

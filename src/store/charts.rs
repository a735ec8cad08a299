//! What the status page's charts are drawn from: counts per minute or
//! per hour over a recent span, read from the per-minute totals the
//! database keeps as rows are written (`chart_minutes`, migration 0014):
//! at most a day of minutes, never the rows themselves.

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
/// many (for the quota ledger's chart, the change: negative for a refund).
pub type Counts = Vec<(String, String, i64)>;

/// The newest calls that failed: the partial index `calls_errors`, from its end.
pub(crate) const RECENT_ERRORS: &str =
    "SELECT at, operation, error_type, message, correlation_id FROM calls
             WHERE outcome != 'accepted' ORDER BY id DESC LIMIT $1";

/// A chart's totals per slot and series since `$2` (a timestamp; its
/// minute counts whole): a range of `chart_minutes`' key, at most a day
/// of minutes, whatever was written in them (`$1` the chart, `$3` the
/// slot's prefix length). On PostgreSQL the deltas not yet folded are
/// added (see `store::counts`).
pub(crate) const CHART_SQLITE: &str =
    "SELECT substr(minute, 1, CAST($3 AS INTEGER)), series, CAST(sum(n) AS BIGINT)
     FROM chart_minutes WHERE chart = $1 AND minute >= substr($2, 1, 16)
     GROUP BY 1, 2 ORDER BY 1, 2";
pub(crate) const CHART_POSTGRES: &str =
    "SELECT substr(minute, 1, CAST($3 AS INTEGER)), series, CAST(sum(n) AS BIGINT)
     FROM (SELECT minute, series, n FROM chart_minutes
           WHERE chart = $1 AND minute >= substr($2, 1, 16)
           UNION ALL
           SELECT minute, series, n FROM chart_minute_deltas
           WHERE chart = $1 AND minute >= substr($2, 1, 16)) AS m
     GROUP BY 1, 2 ORDER BY 1, 2";

/// The first minute the `urls` chart has (the start of its key's range):
/// where the history the charts can show begins.
pub(crate) const HISTORY_FROM_SQLITE: &str =
    "SELECT min(minute) FROM chart_minutes WHERE chart = 'urls'";
pub(crate) const HISTORY_FROM_POSTGRES: &str =
    "SELECT min(minute) FROM (SELECT min(minute) AS minute FROM chart_minutes WHERE chart = 'urls'
                              UNION ALL
                              SELECT min(minute) FROM chart_minute_deltas WHERE chart = 'urls') AS m";

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
        self.chart("calls", since, slot).await
    }

    /// URLs asked for (`enqueued`) and URLs whose purge succeeded
    /// (`purged`) since `since`, per slot.
    pub async fn urls_flow(&self, since: Timestamp, slot: Slot) -> Result<Counts, StoreError> {
        self.chart("urls", since, slot).await
    }

    async fn chart(
        &self,
        chart: &'static str,
        since: Timestamp,
        slot: Slot,
    ) -> Result<Counts, StoreError> {
        self.chart_since(chart, &since.to_string(), slot).await
    }

    /// A chart's minutes from `since` (a stored timestamp or a prefix of
    /// one; empty: all of them), per slot and series.
    async fn chart_since(
        &self,
        chart: &str,
        since: &str,
        slot: Slot,
    ) -> Result<Counts, StoreError> {
        let sql = self.reader.backend().pick(CHART_SQLITE, CHART_POSTGRES);
        Ok(on_pool!(&self.reader, c => sqlx::query_as(sql)
                .bind(chart)
                .bind(since)
                .bind(slot.prefix())
                .fetch_all(c).await)?)
    }

    /// How a quota day was used, per hour, from the quota ledger's own
    /// changes (migration 0015): files, directories and preloads charged
    /// (refunds negative). Summed, each series is the day's row in
    /// `quota_days`, which the quota bars read.
    pub async fn quota_through_the_day(
        &self,
        account: &super::QuotaAccount,
    ) -> Result<Counts, StoreError> {
        let chart = format!("quota {} {}", account.subscription_id, account.day);
        self.chart_since(&chart, "", Slot::Hour).await
    }

    /// The first minute the charts have a record for, if any.
    pub async fn history_from(&self) -> Result<Option<String>, StoreError> {
        let sql = self
            .reader
            .backend()
            .pick(HISTORY_FROM_SQLITE, HISTORY_FROM_POSTGRES);
        Ok(
            on_pool!(&self.reader, c => sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_one(c).await)?,
        )
    }
}

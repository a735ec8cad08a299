//! Read-only queries, on the reader pool.

use serde::Serialize;

use super::db::on_pool;
use super::model::ItemState;
use super::{Operation, PreloadState, RequestId, Store, StoreError};

/// One URL of a request, as the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemStatus {
    pub url: String,
    pub kind: String,
    pub endpoint_id: String,
    /// The state that matters to the client: for a URL merged into a
    /// directory, the directory's state.
    pub state: ItemState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Why it was merged: `coalesced`, `covered` (a directory asked for) or
    /// `promoted` (a directory the quota planner chose).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_reason: Option<String>,
    pub task_track_id: Option<String>,
    pub correlation_id: Option<String>,
    pub attempts: i64,
    pub error: Option<String>,
    pub finished_at: Option<String>,
    /// Why a pending URL is not sent now, and until when (the day's quota
    /// spent, sending paused), when something holds it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// `purge`, or `preload` for a URL the request only preloads (then
    /// `state` is the preload's).
    pub operation: Operation,
    /// The URL's preload, when one was asked for: `waiting` (for its
    /// purge to succeed), `skipped` (the purge did not), or the preload's
    /// own state. A failed preload never makes the purge failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_state: Option<PreloadState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_task_track_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_finished_at: Option<String>,
    /// Each cache in front of the origin that holds the URL's host
    /// (`[[origin_cache]]`): its purge of the URL, done before the CDN's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origin_caches: Vec<super::OriginLayerStatus>,
    /// Whether the CDN's edge serves the new content (`[verify]`, issue
    /// 33): absent where verification is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::VerificationView>,
    /// Its place in the request (to attach what other tables say of it).
    /// The tag this URL came from, when the request named tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_tag: Option<String>,
    #[serde(skip)]
    pub position: Option<i64>,
}

/// A request's overall state, derived from its URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Some URL is still on its way.
    InProgress,
    Succeeded,
    /// Every URL is final and at least one failed.
    Failed,
    /// Every URL is final, none failed, at least one was cancelled.
    Cancelled,
}

impl RequestState {
    /// From the URLs' states: in progress while a purge or a preload is
    /// open; then from the purges (and the preloads asked for on their
    /// own): a preload that failed after its purge succeeded leaves the
    /// request `succeeded`, and says so in its `preload_state`.
    pub fn of(items: &[ItemStatus]) -> RequestState {
        let open = |i: &ItemStatus| {
            !i.state.is_final()
                || i.preload_state.is_some_and(|p| !p.is_final())
                || i.verification
                    .as_ref()
                    .is_some_and(|v| v.state == super::VerificationState::Pending)
        };
        if items.iter().any(open) {
            RequestState::InProgress
        } else if items.iter().any(|i| i.state == ItemState::Failed) {
            RequestState::Failed
        } else if items.iter().any(|i| i.state == ItemState::Cancelled) {
            RequestState::Cancelled
        } else {
            RequestState::Succeeded
        }
    }

    pub fn is_final(self) -> bool {
        self != RequestState::InProgress
    }

    /// As in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::InProgress => "in_progress",
            RequestState::Succeeded => "succeeded",
            RequestState::Failed => "failed",
            RequestState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestStatus {
    pub id: String,
    pub received_at: String,
    pub source: String,
    pub label: Option<String>,
    pub state: RequestState,
    /// The tags the request named, with how many URLs each gave then
    /// (issue 35; absent when it named none).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, u64>,
    pub items: Vec<ItemStatus>,
}

/// How many items are in each state: the `items` object of `/v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StateCounts {
    pub pending: u64,
    pub sending: u64,
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub merged: u64,
    pub cancelled: u64,
    /// Ended without a purge: the cache rules say every older copy
    /// expired while it waited.
    #[serde(default)]
    pub expired: u64,
}

impl StateCounts {
    pub fn add(&mut self, state: ItemState) {
        self.add_n(state, 1);
    }

    pub fn add_n(&mut self, state: ItemState, n: u64) {
        *self.slot(state) += n;
    }

    /// The count for `state` (through a copy, so the mapping from state to
    /// field is written once, in `slot`).
    pub fn get(&self, state: ItemState) -> u64 {
        let mut copy = self.clone();
        *copy.slot(state)
    }

    fn slot(&mut self, state: ItemState) -> &mut u64 {
        match state {
            ItemState::Pending => &mut self.pending,
            ItemState::Sending => &mut self.sending,
            ItemState::Submitted => &mut self.submitted,
            ItemState::Succeeded => &mut self.succeeded,
            ItemState::Failed => &mut self.failed,
            ItemState::Merged => &mut self.merged,
            ItemState::Cancelled => &mut self.cancelled,
            ItemState::Expired => &mut self.expired,
        }
    }
}

/// One row of the `history` view, as `request_status` reads it.
#[derive(sqlx::FromRow)]
struct HistoryRow {
    url: String,
    kind: String,
    endpoint_id: String,
    effective_state: String,
    merged_into_url: Option<String>,
    merge_reason: Option<String>,
    task_track_id: Option<String>,
    correlation_id: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    finished_at: Option<String>,
    operation: String,
    preload_state: Option<String>,
    preload_task_track_id: Option<String>,
    preload_attempts: Option<i64>,
    preload_error: Option<String>,
    preload_finished_at: Option<String>,
    position: Option<i64>,
}

impl From<HistoryRow> for ItemStatus {
    fn from(row: HistoryRow) -> Self {
        ItemStatus {
            state: ItemState::parse(&row.effective_state).unwrap_or(ItemState::Pending),
            url: row.url,
            kind: row.kind,
            endpoint_id: row.endpoint_id,
            merged_into: row.merged_into_url,
            merge_reason: row.merge_reason,
            task_track_id: row.task_track_id,
            correlation_id: row.correlation_id,
            attempts: row.attempts,
            error: row.last_error,
            finished_at: row.finished_at,
            waiting: None,
            operation: Operation::parse(&row.operation).unwrap_or(Operation::Purge),
            preload_state: row.preload_state.as_deref().and_then(PreloadState::parse),
            preload_task_track_id: row.preload_task_track_id,
            preload_attempts: row.preload_attempts,
            preload_error: row.preload_error,
            preload_finished_at: row.preload_finished_at,
            origin_caches: Vec::new(),
            verification: None,
            via_tag: None,
            position: row.position,
        }
    }
}

/// The oldest pending arrival: the first entry of the partial indexes
/// `items_pending_age` and `preloads_pending_age`. SQLite, which has no
/// statistics (the daemon does not run `ANALYZE`), prefers the equality
/// on `items_state` and walked every pending item (167 ms with a million
/// pending, issue 31), so it is told the index; PostgreSQL picks it.
pub(crate) const OLDEST_PENDING: &str = "SELECT min(at) FROM (
         SELECT min(created_at) AS at FROM items INDEXED BY items_pending_age WHERE state = 'pending'
         UNION ALL
         SELECT min(created_at) FROM preloads INDEXED BY preloads_pending_age WHERE state = 'pending')
     AS oldest";
pub(crate) const OLDEST_PENDING_POSTGRES: &str = "SELECT min(at) FROM (
         SELECT min(created_at) AS at FROM items WHERE state = 'pending'
         UNION ALL
         SELECT min(created_at) FROM preloads WHERE state = 'pending')
     AS oldest";

/// One request's URLs: SQLite pushes `request_id = $1` into both arms
/// of the view.
pub(crate) const REQUEST_URLS: &str =
    "SELECT url, kind, endpoint_id, effective_state, merged_into_url, merge_reason,
                    task_track_id, correlation_id, attempts, last_error, finished_at, operation,
                    preload_state, preload_task_track_id, preload_attempts, preload_error,
                    preload_finished_at, position
             FROM history WHERE request_id = $1";

/// One page of requests with their summaries (`$1` label, `$2` before,
/// `$3` limit, `$4` URL prefix), on both databases. Each request of the
/// page is asked what its state needs, by its keys: whether any URL is
/// open (it stops at the first: a release in flight costs one probe, not
/// a read of its thousand URLs), and only for one that is not, the worst
/// ending of its URLs; the URL count is a range of `request_items`' key.
/// Summing every URL of the page instead cost 48 ms for fifty 1,000-URL
/// requests on SQLite and 186 ms on PostgreSQL (issue 31); now 12 ms.
/// `marked` is materialized so that whether a request is open is asked
/// once, not at each of the three places that read it.
/// The URLs are read from the tables, not from the `history` view, which
/// SQLite cannot push a join into (it built the whole history for every
/// page); what is read here must say what the view says for these
/// columns: keep them alike (an item's state is the state of the item it
/// was merged into; a link that wants a preload is open while the preload
/// is, and "waiting" until its purge ends; a request's preloads of URLs it
/// did not purge count as its URLs).
pub(crate) const REQUEST_SUMMARIES: &str = "WITH page AS (
         SELECT id, received_at, source, label, cancelled_at FROM requests
         WHERE ($1 IS NULL OR label = $1) AND ($2 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3),
     marked AS MATERIALIZED (
         SELECT p.id, p.received_at, p.source, p.label,
                EXISTS (SELECT 1 FROM request_items ri
                        JOIN items i ON i.id = ri.item_id
                        LEFT JOIN items m ON m.id = i.merged_into
                        LEFT JOIN request_preloads rp
                               ON ri.preload = 1 AND rp.request_id = ri.request_id AND rp.position = ri.position
                        LEFT JOIN preloads pl ON pl.id = rp.preload_id
                        WHERE ri.request_id = p.id
                          AND (COALESCE(m.state, i.state) NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
                               OR (ri.preload = 1
                                   AND CASE WHEN pl.id IS NOT NULL THEN pl.state
                                            WHEN p.cancelled_at IS NOT NULL THEN 'cancelled'
                                            WHEN COALESCE(m.state, i.state) IN ('failed', 'cancelled') THEN 'skipped'
                                            ELSE 'waiting' END
                                       IN ('waiting', 'pending', 'sending', 'submitted'))))
                OR EXISTS (SELECT 1 FROM request_preloads rp JOIN preloads pl ON pl.id = rp.preload_id
                           WHERE rp.request_id = p.id
                             AND pl.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
                             AND NOT EXISTS (SELECT 1 FROM request_items ri
                                             WHERE ri.request_id = rp.request_id AND ri.position = rp.position))
                    AS open
         FROM page p),
     ended AS (
         SELECT k.id, k.received_at, k.source, k.label, k.open,
                CASE WHEN k.open THEN 0
                     ELSE (SELECT COALESCE(max(CASE COALESCE(m.state, i.state)
                                                   WHEN 'failed' THEN 2 WHEN 'cancelled' THEN 1 ELSE 0 END), 0)
                           FROM request_items ri
                           JOIN items i ON i.id = ri.item_id
                           LEFT JOIN items m ON m.id = i.merged_into
                           WHERE ri.request_id = k.id) END AS by_urls,
                CASE WHEN k.open THEN 0
                     ELSE (SELECT COALESCE(max(CASE pl.state
                                                   WHEN 'failed' THEN 2 WHEN 'cancelled' THEN 1 ELSE 0 END), 0)
                           FROM request_preloads rp JOIN preloads pl ON pl.id = rp.preload_id
                           WHERE rp.request_id = k.id
                             AND NOT EXISTS (SELECT 1 FROM request_items ri
                                             WHERE ri.request_id = rp.request_id AND ri.position = rp.position))
                     END AS by_preloads
         FROM marked k)
SELECT e.id, e.received_at, e.source, e.label,
       (SELECT count(*) FROM request_items ri WHERE ri.request_id = e.id)
       + (SELECT count(*) FROM request_preloads rp
          WHERE rp.request_id = e.id
            AND NOT EXISTS (SELECT 1 FROM request_items ri
                            WHERE ri.request_id = rp.request_id AND ri.position = rp.position)),
       CAST(CASE WHEN e.open THEN 1 ELSE 0 END AS BIGINT),
       CAST(CASE WHEN e.by_urls = 2 OR e.by_preloads = 2 THEN 1 ELSE 0 END AS BIGINT),
       CAST(CASE WHEN e.by_urls = 1 OR e.by_preloads = 1 THEN 1 ELSE 0 END AS BIGINT),
       $4 IS NULL
       OR EXISTS (SELECT 1 FROM request_items ri JOIN items i ON i.id = ri.item_id
                  WHERE ri.request_id = e.id AND substr(COALESCE(ri.requested_url, i.url), 1, length($4)) = $4)
       OR EXISTS (SELECT 1 FROM request_preloads rp JOIN preloads pl ON pl.id = rp.preload_id
                  WHERE rp.request_id = e.id AND substr(pl.url, 1, length($4)) = $4
                    AND NOT EXISTS (SELECT 1 FROM request_items ri
                                    WHERE ri.request_id = rp.request_id AND ri.position = rp.position))
FROM ended e ORDER BY e.id DESC";

impl Store {
    /// A request and each of its URLs, or `None` when the id is unknown.
    pub async fn request_status(
        &self,
        id: &RequestId,
    ) -> Result<Option<RequestStatus>, StoreError> {
        let request: Option<(String, String, String, Option<String>)> = on_pool!(&self.reader, c => sqlx::query_as("SELECT id, received_at, source, label FROM requests WHERE id = $1")
                .bind(id)
                .fetch_optional(c).await)?;
        let Some((id, received_at, source, label)) = request else {
            return Ok(None);
        };
        let mut items: Vec<ItemStatus> =
            on_pool!(&self.reader, c => sqlx::query_as::<_, HistoryRow>(REQUEST_URLS)
            .bind(&id)
            .fetch_all(c).await)?
            .into_iter()
            .map(ItemStatus::from)
            .collect();
        let mut origin = self.origin_of_request(&RequestId::parse(&id)).await?;
        if !origin.is_empty() {
            for item in items.iter_mut().filter(|i| i.operation == Operation::Purge) {
                if let Some(layers) = item.position.and_then(|p| origin.remove(&p)) {
                    item.origin_caches = layers;
                }
            }
        }
        let tags = self.tags_of_request(&RequestId::parse(&id)).await?;
        if !tags.is_empty() {
            let mut via = self.via_tags_of_request(&RequestId::parse(&id)).await?;
            for item in items.iter_mut().filter(|i| i.operation == Operation::Purge) {
                item.via_tag = item.position.and_then(|p| via.remove(&p));
            }
        }
        let mut verified = self.verification_of_request(&RequestId::parse(&id)).await?;
        if !verified.is_empty() {
            for item in items.iter_mut().filter(|i| i.operation == Operation::Purge) {
                item.verification = item.position.and_then(|p| verified.remove(&p));
            }
        }
        if items.iter().any(|i| i.state == ItemState::Pending) {
            let waits = self.waits().await?;
            let unstarted = self.unstarted_of_request(&RequestId::parse(&id)).await?;
            for item in items.iter_mut().filter(|i| i.state == ItemState::Pending) {
                // The caches in front of the origin come first: the CDN
                // purge is not cut before they are done.
                if let Some(held) = item.origin_caches.iter().find_map(|l| l.holds_back()) {
                    item.waiting = Some(held);
                    continue;
                }
                if item.position.is_some_and(|p| unstarted.contains(&p)) {
                    item.waiting = Some(
                        "origin caches: not asked yet (the sending node's origin stage starts them)"
                            .to_owned(),
                    );
                    continue;
                }
                // A URL merged into a directory waits with the directory.
                let kind = match &item.merged_into {
                    _ if item.operation == Operation::Preload => "preload",
                    Some(into) if into.ends_with('/') => "directory",
                    _ => item.kind.as_str(),
                };
                item.waiting = super::why_pending(&waits, kind);
            }
        }
        Ok(Some(RequestStatus {
            state: RequestState::of(&items),
            id,
            received_at,
            source,
            label,
            tags,
            items,
        }))
    }

    /// Positions of a request's URLs stored held whose layers' rows the
    /// origin stage has not written yet (see `origin_purges`).
    async fn unstarted_of_request(
        &self,
        id: &RequestId,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        let positions: Vec<i64> = on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT ri.position FROM request_items ri JOIN items i ON i.id = ri.item_id
             WHERE ri.request_id = $1 AND i.state = 'pending'
               AND i.not_before = $2
               AND NOT EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = i.id)")
            .bind(id.as_str())
            .bind(super::origin_purges::HELD)
            .fetch_all(c).await)?;
        Ok(positions.into_iter().collect())
    }

    /// Items in every state, from the counts kept as they change.
    pub async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        Ok(self.queue_counts().await?.states())
    }

    /// How many purges and preloads are pending.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        let counts = self.queue_counts().await?;
        Ok(counts.states().pending + counts.preload_states().pending)
    }

    /// When the oldest pending item (purge or preload) arrived.
    pub async fn oldest_pending(&self) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(&self.reader, c => sqlx::query_scalar(
                self.reader.backend().pick(OLDEST_PENDING, OLDEST_PENDING_POSTGRES))
            .fetch_one(c).await)?)
    }
}

/// One request in a list: `GET /v1/purges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    pub id: String,
    pub received_at: String,
    pub source: String,
    pub label: Option<String>,
    pub urls: u64,
    pub state: RequestState,
}

impl Store {
    /// Requests older than `before` (all when `None`), newest first, at
    /// most `limit`, with `label` when given. The overall state of each
    /// comes from its URLs' effective states, as [`RequestState::of`].
    pub async fn list_requests(
        &self,
        label: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RequestSummary>, StoreError> {
        Ok(self
            .summaries(label, before, limit, None)
            .await?
            .into_iter()
            .map(|(summary, _)| summary)
            .collect())
    }

    /// The `limit` requests before `before` (newest first, no filter:
    /// the status page filters this window, so a rare label or URL costs
    /// no more than a common one), each with whether one of its URLs
    /// starts with `url_prefix`.
    pub async fn recent_requests(
        &self,
        before: Option<&str>,
        limit: u32,
        url_prefix: Option<&str>,
    ) -> Result<Vec<(RequestSummary, bool)>, StoreError> {
        self.summaries(None, before, limit, url_prefix).await
    }

    /// One page of requests with their summaries. The URLs are read from
    /// the tables, the page's requests first, rather than from the
    /// `history` view: SQLite cannot push a join into that view (a
    /// `UNION ALL` with an `ORDER BY`), so it would build the whole
    /// history for every page (3.6 s with a million items). The `urls`
    /// part says what the view says for the columns used here; keep them
    /// alike.
    async fn summaries(
        &self,
        label: Option<&str>,
        before: Option<&str>,
        limit: u32,
        url_prefix: Option<&str>,
    ) -> Result<Vec<(RequestSummary, bool)>, StoreError> {
        type Row = (
            String,
            String,
            String,
            Option<String>,
            i64,
            i64,
            i64,
            i64,
            bool,
        );
        let rows: Vec<Row> = on_pool!(&self.reader, c => sqlx::query_as(REQUEST_SUMMARIES)
            .bind(label)
            .bind(before)
            .bind(i64::from(limit))
            .bind(url_prefix)
            .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, received_at, source, label, urls, open, failed, cancelled, url_matches)| {
                    let state = if open > 0 {
                        RequestState::InProgress
                    } else if failed > 0 {
                        RequestState::Failed
                    } else if cancelled > 0 {
                        RequestState::Cancelled
                    } else {
                        RequestState::Succeeded
                    };
                    let summary = RequestSummary {
                        id,
                        received_at,
                        source,
                        label,
                        urls: urls.max(0) as u64,
                        state,
                    };
                    (summary, url_matches)
                },
            )
            .collect())
    }
}

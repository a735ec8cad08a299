//! The caches in front of the origin (issue 34): one `origin_purges` row
//! per URL and layer. A URL's CDN purge waits until every layer that holds
//! its host has purged it: while any of its rows is pending, the item's
//! `not_before` is [`HELD`], which the batcher never reaches; the origin
//! stage releases it (`not_before` = now) when its last row is done.
//!
//! A new intent for a URL already pending purges its layers again: the
//! content changed since they were purged, and they may have cached the
//! old copy in between.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::db::{Conn, json_list, on_conn, on_pool};
use super::enqueue::Links;
use super::model::{NewRequest, OriginPurgeState};
use super::{ItemId, RequestId, Store, StoreError, Timestamp};
use crate::target::Kind;

/// An item's `not_before` while a layer in front of the origin has not
/// purged it yet: never reached by the batcher (see the module).
pub const HELD: &str = "9999-12-31T23:59:59.999Z";

/// What became of one URL at one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginLayerStatus {
    /// The `[[origin_cache]]` name.
    pub layer: String,
    pub state: OriginPurgeState,
    pub attempts: i64,
    /// When it was done: before the CDN purge, by construction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// What the layer answered: `purged`, `not cached`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// While pending: the last failure; when skipped: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While pending after a failure: when it is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

impl OriginLayerStatus {
    /// Why the URL's CDN purge waits on this layer, when it does:
    /// `origin cache varnish-1: connection refused, retrying at …`.
    pub fn holds_back(&self) -> Option<String> {
        (self.state == OriginPurgeState::Pending).then(|| match (&self.error, &self.retry_at) {
            (Some(error), Some(at)) => {
                format!("origin cache {}: {error}, retrying at {at}", self.layer)
            }
            (Some(error), None) => format!("origin cache {}: {error}", self.layer),
            _ => format!("origin cache {}: not purged yet", self.layer),
        })
    }
}

/// One layer's purge of one URL, due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePurge {
    pub id: i64,
    pub item_id: ItemId,
    pub layer: String,
    pub attempts: i64,
    pub kind: Kind,
    pub url: String,
    pub endpoint_id: String,
    /// The item's state: a row whose item left `pending` (merged into a
    /// directory, cancelled, expired) is closed without a request.
    pub item_state: String,
}

/// A due row as read, by column name.
#[derive(sqlx::FromRow)]
struct DueRow {
    id: i64,
    item_id: i64,
    layer: String,
    attempts: i64,
    kind: String,
    url: String,
    endpoint_id: String,
    item_state: String,
    not_before: String,
}

impl From<DueRow> for DuePurge {
    fn from(row: DueRow) -> DuePurge {
        DuePurge {
            id: row.id,
            item_id: ItemId(row.item_id),
            layer: row.layer,
            attempts: row.attempts,
            kind: Kind::parse(&row.kind).unwrap_or(Kind::File),
            url: row.url,
            endpoint_id: row.endpoint_id,
            item_state: row.item_state,
        }
    }
}

/// One layer's due purges, oldest first (`$1` layer, `$2` now, `$3`
/// limit): a range of `origin_purges_due_by_layer`.
pub(super) const DUE_AT_LAYER: &str =
    "SELECT o.id, o.item_id, o.layer, o.attempts, i.kind, i.url, i.endpoint_id,
            i.state AS item_state, o.not_before
     FROM origin_purges o JOIN items i ON i.id = o.item_id
     WHERE o.state = 'pending' AND o.layer = $1 AND o.not_before <= $2
     ORDER BY o.not_before, o.id LIMIT $3";

/// When one layer's next purge is due: the first entry of its range.
pub(super) const NEXT_AT_LAYER: &str =
    "SELECT not_before FROM origin_purges WHERE state = 'pending' AND layer = $1
     ORDER BY not_before LIMIT 1";

// The layer purges `$1` lists as `[item, layer]`, pending from `$2`, for
// the items still pending; what a row already there becomes is the
// caller's `ON CONFLICT` clause.
macro_rules! insert_layer_rows {
    (sqlite, $($on_conflict:tt)+) => {
        concat!(
            "INSERT INTO origin_purges (item_id, layer, state, not_before, created_at, updated_at)
     SELECT p.value ->> 0, p.value ->> 1, 'pending', $2, $2, $2
     FROM json_each($1) p
     CROSS JOIN items i ON i.id = p.value ->> 0 AND i.state || '' = 'pending'
     WHERE true ",
            $($on_conflict)+
        )
    };
    (postgres, $($on_conflict:tt)+) => {
        concat!(
            "INSERT INTO origin_purges (item_id, layer, state, not_before, created_at, updated_at)
     SELECT (p.value ->> 0)::bigint, p.value ->> 1, 'pending', $2, $2, $2
     FROM json_array_elements($1::json) AS p (value)
     JOIN items i ON i.id = (p.value ->> 0)::bigint AND i.state = 'pending' ",
            $($on_conflict)+
        )
    };
}

// A row already there starts again: the URL changed since that layer
// purged it.
macro_rules! start_again {
    () => {
        "ON CONFLICT (item_id, layer) DO UPDATE SET state = 'pending', attempts = 0,
         not_before = excluded.not_before, last_error = NULL, answer = NULL,
         done_at = NULL, updated_at = excluded.updated_at"
    };
}

/// How a layer's purge of one URL ended this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginOutcome {
    Done {
        answer: String,
    },
    Retry {
        reason: String,
        at: Timestamp,
    },
    /// Not asked, and never will be: why.
    Skipped {
        reason: String,
    },
}

/// Pending rows, per layer (the status page, `status`, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OriginLayerCounts {
    pub layer: String,
    /// URLs this layer has yet to purge.
    pub pending: u64,
    /// Of those, the ones that failed at least once.
    pub failing: u64,
    /// The newest failure among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Starts (or starts again) the layer purges of the requests just stored
/// and holds their items back from the CDN until those are done; a layer
/// a request skips is marked skipped for its URLs, with the request named.
///
/// `links` gives the item of each URL (as the statements that linked them
/// returned it), so the rows go in by item id: one statement for the
/// whole group of requests, and one for its skips when there are any.
/// Walking each request's links by position instead cost a statement per
/// request and halved single-URL intake (measured by
/// `PURGEQ_BENCH_ORIGIN_CACHES=2 cargo bench --bench ingest`).
///
/// Items this group inserted (`links.fresh`, already held) get no rows
/// here: writing a row per layer and URL in the statements that accept
/// them held batch intake with two layers at 0.56 of the rate without;
/// the origin stage writes them ([`Store::start_held_items`]). A URL
/// already pending (its layers may be done) is started again here.
pub(super) async fn hold_for_origin(
    conn: &mut Conn<'_>,
    requests: &[Arc<NewRequest>],
    links: &Links,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let mut purge: Vec<(i64, &str)> = Vec::new();
    let mut skip: Vec<(i64, &str, &str)> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        for (position, layer) in &request.origin_purges {
            let Some(item) = links.items.get(&(index, *position)) else {
                continue;
            };
            if links.fresh.contains(item) {
                // Inserted held just now: the origin stage writes its rows
                // (see `Store::start_held_items`).
                continue;
            }
            match request.skip_origin_caches.contains(layer) {
                true => skip.push((*item, layer.as_str(), request.id.as_str())),
                false => purge.push((*item, layer.as_str())),
            }
        }
    }
    purge.sort_unstable();
    purge.dedup();
    if !purge.is_empty() {
        let sql = conn.pick(START_LAYERS, insert_layer_rows!(postgres, start_again!()));
        on_conn!(conn, c => sqlx::query(sql)
            .bind(json_list(&purge)?)
            .bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    if !skip.is_empty() {
        // An operator's explicit word for these URLs: it wins over a
        // pending purge of the same layer.
        let sql = conn.pick(
            "INSERT INTO origin_purges (item_id, layer, state, not_before, last_error, created_at, updated_at)
             SELECT p.value ->> 0, p.value ->> 1, 'skipped', $2, 'skipped by request ' || (p.value ->> 2), $2, $2
             FROM json_each($1) p
             CROSS JOIN items i ON i.id = p.value ->> 0 AND i.state || '' = 'pending'
             WHERE true
             ON CONFLICT (item_id, layer) DO UPDATE SET state = 'skipped',
                 last_error = excluded.last_error, updated_at = excluded.updated_at
             WHERE origin_purges.state = 'pending'",
            "INSERT INTO origin_purges (item_id, layer, state, not_before, last_error, created_at, updated_at)
             SELECT (p.value ->> 0)::bigint, p.value ->> 1, 'skipped', $2,
                    'skipped by request ' || (p.value ->> 2), $2, $2
             FROM json_array_elements($1::json) AS p (value)
             JOIN items i ON i.id = (p.value ->> 0)::bigint AND i.state = 'pending'
             ON CONFLICT (item_id, layer) DO UPDATE SET state = 'skipped',
                 last_error = excluded.last_error, updated_at = excluded.updated_at
             WHERE origin_purges.state = 'pending'",
        );
        on_conn!(conn, c => sqlx::query(sql)
            .bind(json_list(&skip)?)
            .bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    let mut items: Vec<i64> = purge
        .iter()
        .map(|(item, _)| *item)
        .chain(skip.iter().map(|(item, _, _)| *item))
        .collect();
    items.sort_unstable();
    items.dedup();
    set_holds(conn, &items, now).await
}

/// The layer purges `$1` lists as `[item, layer]` start (again), for the
/// items still pending (SQLite's form).
pub(super) const START_LAYERS: &str = insert_layer_rows!(sqlite, start_again!());

/// Held items whose layers' rows are not written yet (inserted held by
/// intake), after the id `$1`, oldest first, `$2` at most: a range of
/// `items_held`. The literal is the index's own condition (a parameter
/// would not match it), and SQLite is told the index: without statistics
/// it walked every pending item by `items_state` instead, 3 ms on each
/// wake with 100,000 pending (issue 31).
pub(super) const UNSTARTED_HELD: &str = "SELECT i.id, i.url FROM items i INDEXED BY items_held
     WHERE i.state = 'pending' AND i.not_before = '9999-12-31T23:59:59.999Z' AND i.id > $1
       AND NOT EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = i.id)
     ORDER BY i.id LIMIT $2";

pub(super) const UNSTARTED_HELD_POSTGRES: &str = "SELECT i.id, i.url FROM items i
     WHERE i.state = 'pending' AND i.not_before = '9999-12-31T23:59:59.999Z' AND i.id > $1
       AND NOT EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = i.id)
     ORDER BY i.id LIMIT $2";

/// The held items of `$1` (ids) that a layer has yet to purge: held.
pub(super) const HOLD_ITEMS: &str = "UPDATE items SET not_before = $2, updated_at = $3
         WHERE id IN (SELECT value FROM json_each($1))
           AND state || '' = 'pending' AND not_before <> $2
           AND EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = items.id AND o.state = 'pending')";

/// The held items of `$1` (ids) that no layer holds any more: released.
pub(super) const RELEASE_ITEMS: &str = "UPDATE items SET not_before = $3, updated_at = $3
         WHERE id IN (SELECT value FROM json_each($1))
           AND state || '' = 'pending' AND not_before = $2
           AND NOT EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = items.id AND o.state = 'pending')";

/// Holds each pending item of `items` with a pending layer purge, and
/// releases the held ones that have none left.
///
/// `state || ''` in these statements keeps SQLite on the ids given (the
/// rowid): on `state = 'pending'` it chose `items_state` and walked the
/// whole backlog for a handful of items (seen with EXPLAIN QUERY PLAN,
/// and as 5 s store timeouts in the ingest bench with two layers).
async fn set_holds(conn: &mut Conn<'_>, items: &[i64], now: Timestamp) -> Result<(), sqlx::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let list = json_list(items)?;
    let sql = conn.with_id_lists(HOLD_ITEMS);
    on_conn!(conn, c => sqlx::query(sql.clone())
        .bind(&list)
        .bind(HELD)
        .bind(now)
        .execute(c).await.map(|r| r.rows_affected()))?;
    release(conn, &list, now).await?;
    Ok(())
}

/// Releases the held items of `list` (a JSON list of ids) that no layer
/// holds any more; returns how many.
async fn release(conn: &mut Conn<'_>, list: &str, now: Timestamp) -> Result<u64, sqlx::Error> {
    let sql = conn.with_id_lists(RELEASE_ITEMS);
    on_conn!(conn, c => sqlx::query(sql.clone())
        .bind(list)
        .bind(HELD)
        .bind(now)
        .execute(c).await.map(|r| r.rows_affected()))
}

/// A directory the planner made of files (a promotion) is purged at the
/// layers its files were to be purged at: a `BAN` of the directory at
/// Varnish, its known files elsewhere. Held until they have.
pub(super) async fn inherit(
    conn: &mut Conn<'_>,
    directory: ItemId,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let inserted = on_conn!(conn, c => sqlx::query(
        "INSERT INTO origin_purges (item_id, layer, state, not_before, created_at, updated_at)
         SELECT DISTINCT $1, o.layer, 'pending', $2, $2, $2
         FROM items f JOIN origin_purges o ON o.item_id = f.id
         WHERE f.merged_into = $1 AND o.state <> 'skipped'
         ON CONFLICT (item_id, layer) DO NOTHING")
        .bind(directory)
        .bind(now)
        .execute(c).await.map(|r| r.rows_affected()))?;
    if inserted > 0 {
        set_holds(conn, &[directory.0], now).await?;
        return Ok(());
    }
    // Files stored held whose rows the origin stage has not written yet:
    // the directory is held the same way, and the stage writes its rows
    // (the files under a directory share its host, so its layers).
    on_conn!(conn, c => sqlx::query(
        "UPDATE items SET not_before = $2, updated_at = $3
         WHERE id = $1 AND state = 'pending' AND EXISTS (
             SELECT 1 FROM items f
             WHERE f.merged_into = $1 AND f.not_before = $2
               AND NOT EXISTS (SELECT 1 FROM origin_purges o WHERE o.item_id = f.id))")
        .bind(directory)
        .bind(HELD)
        .bind(now)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

impl Store {
    /// Held items (after the id `after`) whose layers' rows intake left
    /// to the origin stage: `(id, url)`, oldest first, `limit` at most.
    pub async fn unstarted_held_items(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = self
            .reader
            .backend()
            .pick(UNSTARTED_HELD, UNSTARTED_HELD_POSTGRES);
        Ok(on_pool!(&self.reader, c => sqlx::query_as(sql)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(c).await)?)
    }

    /// Writes the layers' rows of held items (`(item, layer)`, pending;
    /// rows already there are left as they are), and releases the items
    /// of `items` that no layer holds (no layer in front of their host);
    /// returns how many were released.
    pub async fn start_held_items(
        &self,
        rows: Vec<(i64, String)>,
        items: Vec<i64>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let (rows, items) = (Arc::new(rows), Arc::new(items));
        self.write(move |conn| {
            let (rows, items) = (rows.clone(), items.clone());
            Box::pin(async move {
                if !rows.is_empty() {
                    // A row already there is left as it is.
                    let sql = conn.pick(
                        insert_layer_rows!(sqlite, "ON CONFLICT (item_id, layer) DO NOTHING"),
                        insert_layer_rows!(postgres, "ON CONFLICT (item_id, layer) DO NOTHING"),
                    );
                    on_conn!(conn, c => sqlx::query(sql)
                        .bind(json_list(&rows)?)
                        .bind(now)
                        .execute(c).await.map(|r| r.rows_affected()))?;
                }
                release(conn, &json_list(&items)?, now).await
            })
        })
        .await
    }

    /// Layer purges due at `now` at each of `layers`, oldest first, at
    /// most `limit`.
    ///
    /// One index range per layer (`origin_purges_due_by_layer`): a layer
    /// left out (down now, see the origin stage) is not read at all, so
    /// its backlog costs nothing until it is tried again.
    pub async fn origin_purges_due(
        &self,
        now: Timestamp,
        limit: usize,
        layers: &[String],
    ) -> Result<Vec<DuePurge>, StoreError> {
        let mut due = Vec::new();
        for layer in layers {
            let rows: Vec<DueRow> = on_pool!(&self.reader, c => sqlx::query_as(DUE_AT_LAYER)
                .bind(layer)
                .bind(now)
                .bind(limit as i64)
                .fetch_all(c).await)?;
            due.extend(rows);
        }
        due.sort_by(|a, b| (&a.not_before, a.id).cmp(&(&b.not_before, b.id)));
        due.truncate(limit);
        Ok(due.into_iter().map(DuePurge::from).collect())
    }

    /// When the next layer purge at one of `layers` is due (`None`: none
    /// pending there).
    pub async fn next_origin_purge(
        &self,
        layers: &[String],
    ) -> Result<Option<Timestamp>, StoreError> {
        let mut next: Option<Timestamp> = None;
        for layer in layers {
            let at: Option<Timestamp> = on_pool!(&self.reader, c => sqlx::query_scalar(NEXT_AT_LAYER)
                .bind(layer)
                .fetch_optional(c).await)?;
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next)
    }

    /// Pending layer purges of layers no longer configured, at most
    /// `limit`: the stage closes them (a walk of the pending rows, so it
    /// runs now and then, not on every wake).
    pub async fn orphaned_origin_purges(
        &self,
        configured: &[String],
        limit: usize,
    ) -> Result<Vec<DuePurge>, StoreError> {
        let sql = self.reader.backend().pick(
            "SELECT o.id, o.item_id, o.layer, o.attempts, i.kind, i.url, i.endpoint_id,
                    i.state AS item_state, o.not_before
             FROM origin_purges o JOIN items i ON i.id = o.item_id
             WHERE o.state = 'pending' AND o.layer NOT IN (SELECT value FROM json_each($1))
             LIMIT $2",
            "SELECT o.id, o.item_id, o.layer, o.attempts, i.kind, i.url, i.endpoint_id,
                    i.state AS item_state, o.not_before
             FROM origin_purges o JOIN items i ON i.id = o.item_id
             WHERE o.state = 'pending'
               AND o.layer NOT IN (SELECT value FROM json_array_elements_text($1::json))
             LIMIT $2",
        );
        let rows: Vec<DueRow> = on_pool!(&self.reader, c => sqlx::query_as(sql)
            .bind(json_list(configured)?)
            .bind(limit as i64)
            .fetch_all(c).await)?;
        Ok(rows.into_iter().map(DuePurge::from).collect())
    }

    /// The files purgeq knows under a directory item (merged or promoted
    /// into it, or asked for while it was pending), at most `limit`: what
    /// a layer without directory purges is given instead.
    pub async fn known_files_under(
        &self,
        directory: ItemId,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT url FROM (
                 SELECT url FROM items WHERE merged_into = $1 AND kind = 'file'
                 UNION
                 SELECT requested_url AS url FROM request_items
                 WHERE item_id = $1 AND requested_kind = 'file' AND requested_url IS NOT NULL
             ) AS known ORDER BY url LIMIT $2",
        )
        .bind(directory)
        .bind(limit as i64)
        .fetch_all(c).await)?)
    }

    /// Records how each layer purge ended, and releases to the batcher the
    /// items no layer holds any more; returns how many were released.
    pub async fn record_origin_purges(
        &self,
        outcomes: Vec<(i64, ItemId, OriginOutcome)>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let outcomes = Arc::new(outcomes);
        self.write(move |conn| {
            let outcomes = outcomes.clone();
            Box::pin(async move {
                for (id, _, outcome) in outcomes.iter() {
                    match outcome {
                        OriginOutcome::Done { answer } => on_conn!(conn, c => sqlx::query(
                            "UPDATE origin_purges SET state = 'done', attempts = attempts + 1,
                                 answer = $2, last_error = NULL, done_at = $3, updated_at = $3
                             WHERE id = $1 AND state = 'pending'")
                            .bind(id).bind(answer).bind(now)
                            .execute(c).await.map(|r| r.rows_affected()))?,
                        OriginOutcome::Retry { reason, at } => on_conn!(conn, c => sqlx::query(
                            "UPDATE origin_purges SET attempts = attempts + 1, last_error = $2,
                                 not_before = $3, updated_at = $4
                             WHERE id = $1 AND state = 'pending'")
                            .bind(id).bind(reason).bind(at).bind(now)
                            .execute(c).await.map(|r| r.rows_affected()))?,
                        OriginOutcome::Skipped { reason } => on_conn!(conn, c => sqlx::query(
                            "UPDATE origin_purges SET state = 'skipped', last_error = $2, updated_at = $3
                             WHERE id = $1 AND state = 'pending'")
                            .bind(id).bind(reason).bind(now)
                            .execute(c).await.map(|r| r.rows_affected()))?,
                    };
                }
                let mut items: Vec<i64> = outcomes.iter().map(|(_, item, _)| item.0).collect();
                items.sort_unstable();
                items.dedup();
                release(conn, &json_list(&items)?, now).await
            })
        })
        .await
    }

    /// Each layer's purges of a request's URLs, by position in the
    /// request (a URL merged into a directory shows the directory's).
    pub async fn origin_of_request(
        &self,
        id: &RequestId,
    ) -> Result<HashMap<i64, Vec<OriginLayerStatus>>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
        );
        let rows: Vec<Row> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT ri.position, o.layer, o.state, o.attempts, o.done_at, o.answer, o.last_error,
                    o.not_before
             FROM request_items ri
             JOIN items i ON i.id = ri.item_id
             JOIN origin_purges o ON o.item_id = COALESCE(i.merged_into, i.id)
             WHERE ri.request_id = $1
             ORDER BY ri.position, o.id",
        )
        .bind(id.as_str())
        .fetch_all(c).await)?;
        let mut by_position: HashMap<i64, Vec<OriginLayerStatus>> = HashMap::new();
        for (position, layer, state, attempts, done_at, answer, error, not_before) in rows {
            let state = OriginPurgeState::parse(&state).unwrap_or(OriginPurgeState::Pending);
            let retry_at =
                (state == OriginPurgeState::Pending && attempts > 0).then_some(not_before);
            by_position
                .entry(position)
                .or_default()
                .push(OriginLayerStatus {
                    layer,
                    state,
                    attempts,
                    done_at,
                    answer,
                    error,
                    retry_at,
                });
        }
        Ok(by_position)
    }

    /// Pending layer purges per layer: a range of `origin_purges_due`.
    pub async fn origin_layer_counts(&self) -> Result<Vec<OriginLayerCounts>, StoreError> {
        let rows: Vec<(String, i64, i64, Option<String>)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT o.layer, count(*), count(*) FILTER (WHERE o.attempts > 0),
                    (SELECT x.last_error FROM origin_purges x
                     WHERE x.state = 'pending' AND x.layer = o.layer AND x.last_error IS NOT NULL
                     ORDER BY x.updated_at DESC LIMIT 1)
             FROM origin_purges o WHERE o.state = 'pending' GROUP BY o.layer ORDER BY o.layer",
        )
        .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(|(layer, pending, failing, last_error)| OriginLayerCounts {
                layer,
                pending: pending.max(0) as u64,
                failing: failing.max(0) as u64,
                last_error,
            })
            .collect())
    }
}

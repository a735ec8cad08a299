//! The queue's counts, kept as rows change (issue 31).
//!
//! Triggers (`migrations/0013_queue_counts.sql`, postgres `0008`) keep one
//! row per endpoint, kind, state and lane in `item_counts`, and per
//! endpoint and state in `preload_counts`, in the same transaction as the
//! change. So a look at the queue (each batcher pass, `/v1/stats`,
//! `/metrics`, the page) reads a few rows, whatever the queue and the
//! history hold, and a crash cannot part the counts from the rows.
//!
//! [`QueueCounts`] is that read, and everything the store answers from it
//! (states, lanes, urgent endpoints, backlog per endpoint) is a pure
//! function of it, tested without a database.

use std::collections::BTreeMap;

use super::db::{Backend, on_pool};
use super::plan::{LaneCounts, UrgentPending};
use super::preloads::{PreloadCounts, PreloadState};
use super::reads::StateCounts;
use super::{ItemState, Store, StoreError};
use crate::target::Kind;

/// Items of one endpoint, kind, state and lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCount {
    pub endpoint_id: String,
    pub kind: Kind,
    pub state: ItemState,
    pub urgent: bool,
    pub n: u64,
}

/// Preloads of one endpoint and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadCount {
    pub endpoint_id: String,
    pub state: PreloadState,
    pub n: u64,
}

/// The counts as one read saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub items: Vec<ItemCount>,
    pub preloads: Vec<PreloadCount>,
}

impl QueueCounts {
    /// Items in every state.
    pub fn states(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for c in &self.items {
            counts.add_n(c.state, c.n);
        }
        counts
    }

    /// Pending items by kind and lane.
    pub fn lanes(&self) -> LaneCounts {
        let mut lanes = LaneCounts::default();
        for c in self.items.iter().filter(|c| c.state == ItemState::Pending) {
            let (all, urgent) = match c.kind {
                Kind::File => (&mut lanes.files, &mut lanes.urgent_files),
                Kind::Directory => (&mut lanes.directories, &mut lanes.urgent_directories),
            };
            *all += c.n;
            if c.urgent {
                *urgent += c.n;
            }
        }
        lanes
    }

    /// Urgent items pending: their endpoints (in order), files and
    /// directories.
    pub fn urgent(&self) -> UrgentPending {
        let mut urgent = UrgentPending::default();
        for c in &self.items {
            if c.state != ItemState::Pending || !c.urgent || c.n == 0 {
                continue;
            }
            match c.kind {
                Kind::File => urgent.files += c.n,
                Kind::Directory => urgent.directories += c.n,
            }
            if !urgent.endpoints.contains(&c.endpoint_id) {
                urgent.endpoints.push(c.endpoint_id.clone());
            }
        }
        urgent.endpoints.sort();
        urgent
    }

    /// Endpoints with pending purges or preloads, in order.
    pub fn pending_endpoints(&self) -> Vec<String> {
        let items = self
            .items
            .iter()
            .filter(|c| c.state == ItemState::Pending && c.n > 0)
            .map(|c| &c.endpoint_id);
        let preloads = self
            .preloads
            .iter()
            .filter(|c| c.state == PreloadState::Pending && c.n > 0)
            .map(|c| &c.endpoint_id);
        let mut endpoints: Vec<String> = items.chain(preloads).cloned().collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }

    /// Purges and preloads waiting or in flight, per endpoint:
    /// `(endpoint, pending, in flight)`, endpoints with neither left out.
    pub fn backlog_by_endpoint(&self) -> Vec<(String, u64, u64)> {
        let mut by_endpoint: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let items = self
            .items
            .iter()
            .map(|c| (c.endpoint_id.as_str(), open_slot(c.state.as_str()), c.n));
        let preloads = self
            .preloads
            .iter()
            .map(|c| (c.endpoint_id.as_str(), open_slot(c.state.as_str()), c.n));
        for (endpoint, slot, n) in items.chain(preloads) {
            let Some(in_flight) = slot else { continue };
            if n == 0 {
                continue;
            }
            let entry = by_endpoint.entry(endpoint).or_default();
            match in_flight {
                false => entry.0 += n,
                true => entry.1 += n,
            }
        }
        by_endpoint
            .into_iter()
            .map(|(endpoint, (pending, in_flight))| (endpoint.to_owned(), pending, in_flight))
            .collect()
    }

    /// Preloads by state (`waiting` is not a count of rows: left at 0).
    pub fn preload_states(&self) -> PreloadCounts {
        let mut counts = PreloadCounts::default();
        for c in &self.preloads {
            let slot = match c.state {
                PreloadState::Pending => &mut counts.pending,
                PreloadState::Sending => &mut counts.sending,
                PreloadState::Submitted => &mut counts.submitted,
                PreloadState::Succeeded => &mut counts.succeeded,
                PreloadState::Failed => &mut counts.failed,
                PreloadState::Cancelled => &mut counts.cancelled,
                PreloadState::Waiting | PreloadState::Skipped => continue,
            };
            *slot += c.n;
        }
        counts
    }
}

/// Whether a state is waiting (`Some(false)`), in flight (`Some(true)`)
/// or neither: the same words for items and preloads.
fn open_slot(state: &str) -> Option<bool> {
    match state {
        "pending" => Some(false),
        "sending" | "submitted" => Some(true),
        _ => None,
    }
}

/// The counts: SQLite's triggers keep `*_counts` exact; on PostgreSQL
/// the deltas not yet folded are added (see the migration).
const ITEM_COUNTS_SQLITE: &str =
    "SELECT endpoint_id, kind, state, urgent, n FROM item_counts WHERE n <> 0";
const ITEM_COUNTS_POSTGRES: &str = "SELECT endpoint_id, kind, state, urgent, CAST(sum(n) AS BIGINT)
     FROM (SELECT endpoint_id, kind, state, urgent, n FROM item_counts
           UNION ALL
           SELECT endpoint_id, kind, state, urgent, n FROM item_count_deltas) AS c
     GROUP BY endpoint_id, kind, state, urgent HAVING sum(n) <> 0";
const PRELOAD_COUNTS_SQLITE: &str = "SELECT endpoint_id, state, n FROM preload_counts WHERE n <> 0";
const PRELOAD_COUNTS_POSTGRES: &str = "SELECT endpoint_id, state, CAST(sum(n) AS BIGINT)
     FROM (SELECT endpoint_id, state, n FROM preload_counts
           UNION ALL
           SELECT endpoint_id, state, n FROM preload_count_deltas) AS c
     GROUP BY endpoint_id, state HAVING sum(n) <> 0";

/// Moves PostgreSQL's deltas into the counts, each table in one statement
/// (a delta committed meanwhile is not seen, and is moved next time).
const FOLD_ITEM_COUNTS: &str =
    "WITH moved AS (DELETE FROM item_count_deltas RETURNING endpoint_id, kind, state, urgent, n)
     INSERT INTO item_counts (endpoint_id, kind, state, urgent, n)
     SELECT endpoint_id, kind, state, urgent, CAST(sum(n) AS BIGINT) FROM moved
     GROUP BY endpoint_id, kind, state, urgent
     ON CONFLICT (endpoint_id, kind, state, urgent) DO UPDATE SET n = item_counts.n + excluded.n";
const FOLD_PRELOAD_COUNTS: &str =
    "WITH moved AS (DELETE FROM preload_count_deltas RETURNING endpoint_id, state, n)
     INSERT INTO preload_counts (endpoint_id, state, n)
     SELECT endpoint_id, state, CAST(sum(n) AS BIGINT) FROM moved GROUP BY endpoint_id, state
     ON CONFLICT (endpoint_id, state) DO UPDATE SET n = preload_counts.n + excluded.n";

const FOLD_CHART_MINUTES: &str =
    "WITH moved AS (DELETE FROM chart_minute_deltas RETURNING chart, minute, series, n)
     INSERT INTO chart_minutes (chart, minute, series, n)
     SELECT chart, minute, series, CAST(sum(n) AS BIGINT) FROM moved GROUP BY chart, minute, series
     ON CONFLICT (chart, minute, series) DO UPDATE SET n = chart_minutes.n + excluded.n";

type ItemCountRow = (String, String, String, i64, i64);

impl Store {
    /// The queue's counts: a few rows, whatever the queue holds.
    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let backend = self.reader.backend();
        let items: Vec<ItemCountRow> = on_pool!(&self.reader, c => sqlx::query_as(
            backend.pick(ITEM_COUNTS_SQLITE, ITEM_COUNTS_POSTGRES))
            .fetch_all(c).await)?;
        let preloads: Vec<(String, String, i64)> = on_pool!(&self.reader, c => sqlx::query_as(
            backend.pick(PRELOAD_COUNTS_SQLITE, PRELOAD_COUNTS_POSTGRES))
            .fetch_all(c).await)?;
        Ok(QueueCounts {
            items: items
                .into_iter()
                .filter_map(|(endpoint_id, kind, state, urgent, n)| {
                    Some(ItemCount {
                        endpoint_id,
                        kind: Kind::parse(&kind)?,
                        state: ItemState::parse(&state)?,
                        urgent: urgent != 0,
                        n: n.max(0) as u64,
                    })
                })
                .collect(),
            preloads: preloads
                .into_iter()
                .filter_map(|(endpoint_id, state, n)| {
                    Some(PreloadCount {
                        endpoint_id,
                        state: PreloadState::parse(&state)?,
                        n: n.max(0) as u64,
                    })
                })
                .collect(),
        })
    }

    /// Whether the counts have deltas to fold ([`Store::fold_counts`]):
    /// on PostgreSQL.
    pub fn keeps_count_deltas(&self) -> bool {
        self.reader.backend() == Backend::Postgres
    }

    /// On PostgreSQL, moves the deltas the triggers appended into the
    /// counts, so reading them stays a few rows (every node calls it every
    /// second or so; concurrent calls are safe). Nothing to do on SQLite.
    pub async fn fold_counts(&self) -> Result<(), StoreError> {
        if !self.keeps_count_deltas() {
            return Ok(());
        }
        self.write(|conn| {
            Box::pin(async move {
                for sql in [FOLD_ITEM_COUNTS, FOLD_PRELOAD_COUNTS, FOLD_CHART_MINUTES] {
                    super::db::on_conn!(conn, c => sqlx::query(sql).execute(c).await.map(|_| ()))?;
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(endpoint: &str, kind: Kind, state: ItemState, urgent: bool, n: u64) -> ItemCount {
        ItemCount {
            endpoint_id: endpoint.into(),
            kind,
            state,
            urgent,
            n,
        }
    }

    fn preload(endpoint: &str, state: PreloadState, n: u64) -> PreloadCount {
        PreloadCount {
            endpoint_id: endpoint.into(),
            state,
            n,
        }
    }

    fn sample() -> QueueCounts {
        use ItemState::*;
        use Kind::*;
        QueueCounts {
            items: vec![
                item("b", File, Pending, false, 7),
                item("b", File, Pending, true, 2),
                item("a", Directory, Pending, true, 1),
                item("a", File, Sending, false, 3),
                item("a", File, Submitted, true, 4),
                item("a", File, Succeeded, false, 100),
                item("c", File, Merged, false, 5),
                item("c", File, Pending, false, 0),
            ],
            preloads: vec![
                preload("c", PreloadState::Pending, 6),
                preload("a", PreloadState::Submitted, 1),
                preload("a", PreloadState::Succeeded, 9),
            ],
        }
    }

    #[test]
    fn states_add_every_endpoint_kind_and_lane() {
        let states = sample().states();
        assert_eq!(
            (
                states.pending,
                states.sending,
                states.submitted,
                states.succeeded,
                states.merged
            ),
            (10, 3, 4, 100, 5)
        );
    }

    #[test]
    fn lanes_count_pending_only_and_urgent_within_all() {
        assert_eq!(
            sample().lanes(),
            LaneCounts {
                files: 9,
                directories: 1,
                urgent_files: 2,
                urgent_directories: 1,
            }
        );
    }

    #[test]
    fn urgent_names_endpoints_with_urgent_pending_items_once() {
        let urgent = sample().urgent();
        assert_eq!(urgent.endpoints, ["a", "b"]);
        assert_eq!((urgent.files, urgent.directories), (2, 1));
    }

    #[test]
    fn pending_endpoints_include_preloads_and_skip_empty_rows() {
        assert_eq!(sample().pending_endpoints(), ["a", "b", "c"]);
    }

    #[test]
    fn backlog_by_endpoint_adds_purges_and_preloads() {
        assert_eq!(
            sample().backlog_by_endpoint(),
            [
                ("a".to_owned(), 1, 8),
                ("b".to_owned(), 9, 0),
                ("c".to_owned(), 6, 0)
            ]
        );
    }

    #[test]
    fn preload_states_by_state() {
        let p = sample().preload_states();
        assert_eq!((p.pending, p.submitted, p.succeeded), (6, 1, 9));
    }

    #[test]
    fn nothing_counted_is_all_zero() {
        let empty = QueueCounts::default();
        assert_eq!(empty.states(), StateCounts::default());
        assert_eq!(empty.lanes(), LaneCounts::default());
        assert!(empty.pending_endpoints().is_empty());
        assert!(empty.backlog_by_endpoint().is_empty());
    }
}

//! Edge verification's rows (issue 33): which URLs are probed after
//! their purge succeeded, what the last round saw, and how each ended.
//! The rules are [`crate::verify`]; the stage is `pipeline::verify`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::db::{on_conn, on_pool};
use super::model::VerificationState;
use super::{ItemId, RequestId, Store, StoreError, Timestamp};
use crate::target::Kind;

/// The request source of the re-purges verification makes: their items
/// are not verified again as new work (the row that asked is).
pub const REPURGE_SOURCE: &str = "purgeq-verify";

/// One edge in a URL's last round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The edge's address.
    pub edge: String,
    /// `fresh`, `stale` or `unverifiable` in that round.
    pub state: VerificationState,
    /// What the edge served (`200, ETag "v2"`), or why it could not be
    /// asked.
    pub served: String,
    /// What the origin served at the same time.
    pub origin: String,
    /// Since when this edge serves the new content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_at: Option<String>,
}

/// A URL due for a round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueVerification {
    pub id: i64,
    pub item_id: ItemId,
    pub endpoint_id: String,
    pub url: String,
    pub attempts: i64,
    pub repurges: i64,
    pub started_at: Timestamp,
    pub enqueued_at: Timestamp,
    pub edges: Vec<EdgeRecord>,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: i64,
    item_id: i64,
    endpoint_id: String,
    url: String,
    attempts: i64,
    repurges: i64,
    started_at: String,
    enqueued_at: String,
    edges: Option<String>,
}

/// How a round ended for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Probe again at `at`.
    Again { at: Timestamp },
    /// A re-purge was asked; probe again at `at`.
    Repurged { at: Timestamp },
    /// Final.
    Ended {
        state: VerificationState,
        reason: Option<String>,
    },
}

/// A URL's verification as a client sees it (`verification` on an item
/// of `GET /v1/purges/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationView {
    pub state: VerificationState,
    /// Why it is stale (the edge, the difference) or unverifiable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From the intent to every edge fresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_fresh_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fresh_at: Option<String>,
    /// Extra purges it cost.
    pub repurges: i64,
    /// The URLs probed for it (a directory's files), when not itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probed: Vec<String>,
    /// The last round, per edge.
    pub edges: Vec<EdgeRecord>,
}

impl VerificationView {
    /// One URL's row, or several (a directory's files) summed up: stale
    /// if any is, else unverifiable if any is, else pending if any is,
    /// else fresh (when the last one turned fresh).
    fn of(rows: Vec<VerificationRow>, own_url: &str) -> Option<VerificationView> {
        let rows: Vec<VerificationRow> = match rows.iter().any(|r| r.url == own_url) {
            true => rows.into_iter().filter(|r| r.url == own_url).collect(),
            false => rows,
        };
        let first = rows.first()?;
        let state = [
            VerificationState::Stale,
            VerificationState::Unverifiable,
            VerificationState::Pending,
        ]
        .into_iter()
        .find(|s| rows.iter().any(|r| r.state == *s))
        .unwrap_or(VerificationState::Fresh);
        let deciding = rows.iter().find(|r| r.state == state).unwrap_or(first);
        let fresh_at = (state == VerificationState::Fresh)
            .then(|| rows.iter().filter_map(|r| r.fresh_at.clone()).max())
            .flatten();
        let time_to_fresh_seconds = fresh_at.as_deref().and_then(|at| {
            let at = Timestamp::parse(at)?.get();
            let from = rows
                .iter()
                .filter_map(|r| Timestamp::parse(&r.enqueued_at))
                .min()?
                .get();
            Some((at - from).as_seconds_f64().max(0.0))
        });
        Some(VerificationView {
            state,
            reason: deciding.reason.clone(),
            time_to_fresh_seconds,
            fresh_at,
            repurges: rows.iter().map(|r| r.repurges).sum(),
            probed: match rows.len() == 1 && rows[0].url == own_url {
                true => Vec::new(),
                false => rows.iter().map(|r| r.url.clone()).collect(),
            },
            edges: deciding.edges.clone(),
        })
    }
}

impl VerificationView {
    /// Not started yet: the purge succeeded, the stage has not looked
    /// (or a preload asked for is still open).
    pub fn starting() -> VerificationView {
        VerificationView {
            state: VerificationState::Pending,
            reason: Some("starts after the purge (and its preload) succeeded".to_owned()),
            time_to_fresh_seconds: None,
            fresh_at: None,
            repurges: 0,
            probed: Vec::new(),
            edges: Vec::new(),
        }
    }
}

/// With verification on, a URL whose purge succeeded since `since` but
/// that the stage has not picked up yet is pending verification, not
/// done: `--wait` must not return between the two.
pub fn expect_verification(status: &mut super::RequestStatus, since: Timestamp) {
    if status.source == REPURGE_SOURCE {
        return;
    }
    let since = since.to_string();
    let mut changed = false;
    for item in &mut status.items {
        let waiting = item.operation == super::Operation::Purge
            && item.state == super::ItemState::Succeeded
            && item.verification.is_none()
            && item
                .finished_at
                .as_deref()
                .is_some_and(|at| at >= since.as_str());
        if waiting {
            item.verification = Some(VerificationView::starting());
            changed = true;
        }
    }
    if changed {
        status.state = super::RequestState::of(&status.items);
    }
}

struct VerificationRow {
    url: String,
    state: VerificationState,
    enqueued_at: String,
    repurges: i64,
    reason: Option<String>,
    fresh_at: Option<String>,
    edges: Vec<EdgeRecord>,
}

/// Counts and time to fresh for the page and `/v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FreshnessSummary {
    /// URLs being probed now.
    pub pending: u64,
    /// Seconds from intent to fresh: over the last hour and day.
    pub hour: TimeToFresh,
    pub day: TimeToFresh,
    /// URLs that ended stale in the last day and were not found fresh
    /// since, newest first (at most 20).
    pub stale_now: Vec<StaleUrl>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeToFresh {
    pub fresh: u64,
    pub stale: u64,
    pub unverifiable: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleUrl {
    pub url: String,
    pub reason: String,
    pub at: String,
}

/// Items whose purge succeeded since `$1` and have no verification yet
/// (none of `$2`'s re-purges; none with a preload still open), oldest
/// first. `state || ''`: read through `items_finished` (what finished
/// since `$1`), never `items_state` (every success ever): checked by
/// `query_plans`.
pub(super) const SUCCEEDED_UNVERIFIED: &str =
    "SELECT i.id, i.kind, i.url, i.created_at FROM items i
             WHERE i.finished_at >= $1 AND i.state || '' = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.item_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM preloads p WHERE p.after_item = i.id
                               AND p.state IN ('pending', 'sending', 'submitted'))
               AND EXISTS (SELECT 1 FROM request_items ri JOIN requests r ON r.id = ri.request_id
                           WHERE ri.item_id = i.id AND r.source <> $2)
             ORDER BY i.finished_at LIMIT $3";

/// URLs that ended stale since `$1` and were not found fresh since.
pub(super) const STALE_NOW: &str = "SELECT v.url, v.reason, v.finished_at FROM verifications v
             WHERE v.state = 'stale' AND v.finished_at >= $1
               AND NOT EXISTS (SELECT 1 FROM verifications f WHERE f.url = v.url
                               AND f.state = 'fresh' AND f.finished_at > v.finished_at)
             ORDER BY v.finished_at DESC LIMIT 20";

impl Store {
    /// Starts verifying the items whose purge succeeded since `since` and
    /// that have no verification yet: a file as itself, a directory as up
    /// to `sample` files purgeq knows under it (none known: unverifiable,
    /// said so). An item waits while a preload it asked for is open, and
    /// re-purges made by verification are not verified as new work.
    /// Returns how many URLs were started.
    pub async fn start_verifications(
        &self,
        since: Timestamp,
        now: Timestamp,
        sample: usize,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let items: Vec<(i64, String, String, String)> = on_pool!(&self.reader, c => sqlx::query_as(
            SUCCEEDED_UNVERIFIED,
        )
        .bind(since)
        .bind(REPURGE_SOURCE)
        .bind(limit as i64)
        .fetch_all(c).await)?;
        if items.is_empty() {
            return Ok(0);
        }
        // (item, url, enqueued_at, ended: Some(reason) when nothing can be probed)
        let mut rows: Vec<(i64, String, String, Option<String>)> = Vec::new();
        for (id, kind, url, created_at) in items {
            match Kind::parse(&kind) {
                Some(Kind::Directory) => {
                    let files = self.known_files_under(ItemId(id), sample).await?;
                    if files.is_empty() {
                        rows.push((
                            id,
                            url,
                            created_at.clone(),
                            Some("no file is known under the directory to probe".to_owned()),
                        ));
                    }
                    for file in files {
                        rows.push((id, file, created_at.clone(), None));
                    }
                }
                _ => rows.push((id, url, created_at, None)),
            }
        }
        let rows = Arc::new(rows);
        self.write(move |conn| {
            let rows = rows.clone();
            Box::pin(async move {
                let mut started = 0;
                for (item, url, enqueued_at, ended) in rows.iter() {
                    let (state, finished) = match ended {
                        Some(_) => (VerificationState::Unverifiable, Some(now)),
                        None => (VerificationState::Pending, None),
                    };
                    started += on_conn!(conn, c => sqlx::query(
                        "INSERT INTO verifications (item_id, url, state, enqueued_at, started_at,
                                                    not_before, reason, finished_at)
                         VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
                         ON CONFLICT (item_id, url) DO NOTHING")
                        .bind(item)
                        .bind(url)
                        .bind(state.as_str())
                        .bind(enqueued_at)
                        .bind(now)
                        .bind(ended)
                        .bind(finished)
                        .execute(c).await.map(|r| r.rows_affected()))?;
                }
                Ok(started)
            })
        })
        .await
    }

    /// URLs due for a round at `now`, oldest first, at most `limit`.
    pub async fn verifications_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueVerification>, StoreError> {
        let rows: Vec<DueRow> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT v.id, v.item_id, i.endpoint_id, v.url, v.attempts, v.repurges, v.started_at,
                    v.enqueued_at, v.edges
             FROM verifications v JOIN items i ON i.id = v.item_id
             WHERE v.state = 'pending' AND v.not_before <= $1
             ORDER BY v.not_before, v.id LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(|row| DueVerification {
                id: row.id,
                item_id: ItemId(row.item_id),
                endpoint_id: row.endpoint_id,
                url: row.url,
                attempts: row.attempts,
                repurges: row.repurges,
                started_at: Timestamp::parse(&row.started_at)
                    .unwrap_or_else(|| Timestamp::new(time::OffsetDateTime::now_utc())),
                enqueued_at: Timestamp::parse(&row.enqueued_at)
                    .unwrap_or_else(|| Timestamp::new(time::OffsetDateTime::now_utc())),
                edges: row
                    .edges
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// When the next round is due (`None`: nothing is being verified).
    pub async fn next_verification(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT not_before FROM verifications WHERE state = 'pending'
             ORDER BY not_before LIMIT 1",
        )
        .fetch_optional(c).await)?)
    }

    /// Records one URL's round: what each edge served, and what follows.
    /// A re-purge is counted here, before it is asked for: a crash between
    /// the two costs the re-purge, never a second one.
    pub async fn record_round(
        &self,
        id: i64,
        edges: Vec<EdgeRecord>,
        outcome: RoundOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let edges = serde_json::to_string(&edges)
            .map_err(|e| StoreError::internal("encoding a verification round", e))?;
        self.write(move |conn| {
            let (edges, outcome) = (edges.clone(), outcome.clone());
            Box::pin(async move {
                match outcome {
                    RoundOutcome::Again { at } => on_conn!(conn, c => sqlx::query(
                        "UPDATE verifications SET attempts = attempts + 1, edges = $2, not_before = $3
                         WHERE id = $1 AND state = 'pending'")
                        .bind(id).bind(&edges).bind(at)
                        .execute(c).await.map(|r| r.rows_affected()))?,
                    RoundOutcome::Repurged { at } => on_conn!(conn, c => sqlx::query(
                        "UPDATE verifications SET attempts = attempts + 1, repurges = repurges + 1,
                             edges = $2, not_before = $3
                         WHERE id = $1 AND state = 'pending'")
                        .bind(id).bind(&edges).bind(at)
                        .execute(c).await.map(|r| r.rows_affected()))?,
                    RoundOutcome::Ended { state, reason } => on_conn!(conn, c => sqlx::query(
                        "UPDATE verifications SET attempts = attempts + 1, edges = $2, state = $3,
                             reason = $4, finished_at = $5,
                             fresh_at = CASE WHEN $3 = 'fresh' THEN $5 ELSE NULL END
                         WHERE id = $1 AND state = 'pending'")
                        .bind(id).bind(&edges).bind(state.as_str()).bind(reason).bind(now)
                        .execute(c).await.map(|r| r.rows_affected()))?,
                };
                Ok(())
            })
        })
        .await
    }

    /// Each URL's verification in a request, by position (a URL merged
    /// into a directory: its own row when it was probed, else the
    /// directory's summed up).
    pub async fn verification_of_request(
        &self,
        id: &RequestId,
    ) -> Result<HashMap<i64, VerificationView>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT ri.position, COALESCE(ri.requested_url, i.url), v.url, v.state, v.enqueued_at,
                    v.repurges, v.reason, v.fresh_at, v.edges
             FROM request_items ri
             JOIN items i ON i.id = ri.item_id
             JOIN verifications v ON v.item_id = COALESCE(i.merged_into, i.id)
             WHERE ri.request_id = $1
             ORDER BY ri.position, v.id",
        )
        .bind(id.as_str())
        .fetch_all(c).await)?;
        let mut by_position: HashMap<i64, (String, Vec<VerificationRow>)> = HashMap::new();
        for (position, own, url, state, enqueued_at, repurges, reason, fresh_at, edges) in rows {
            let row = VerificationRow {
                url,
                state: VerificationState::parse(&state).unwrap_or(VerificationState::Pending),
                enqueued_at,
                repurges,
                reason,
                fresh_at,
                edges: edges
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok())
                    .unwrap_or_default(),
            };
            by_position
                .entry(position)
                .or_insert_with(|| (own, Vec::new()))
                .1
                .push(row);
        }
        Ok(by_position
            .into_iter()
            .filter_map(|(position, (own, rows))| {
                Some((position, VerificationView::of(rows, &own)?))
            })
            .collect())
    }

    /// URLs being verified now (a range of `verifications_due`).
    pub async fn verifications_pending(&self) -> Result<u64, StoreError> {
        let pending: i64 = on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT count(*) FROM verifications WHERE state = 'pending'",
        )
        .fetch_one(c).await)?;
        Ok(pending.max(0) as u64)
    }

    /// Time to fresh and what is stale, for the page and `/v1/stats`.
    pub async fn freshness(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<FreshnessSummary, StoreError> {
        let day_ago = Timestamp::new(now - time::Duration::days(1));
        let hour_ago = Timestamp::new(now - time::Duration::hours(1));
        let pending = self.verifications_pending().await?;
        let ended: Vec<(String, String, String, Option<String>)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT state, finished_at, enqueued_at, fresh_at FROM verifications
             WHERE finished_at >= $1 ORDER BY finished_at DESC LIMIT 100000",
        )
        .bind(day_ago)
        .fetch_all(c).await)?;
        let hour_ago_text = hour_ago.to_string();
        let window = |from: Option<&str>| {
            let mut times = Vec::new();
            let mut summary = TimeToFresh::default();
            for (state, finished_at, enqueued_at, fresh_at) in &ended {
                if from.is_some_and(|from| finished_at.as_str() < from) {
                    continue;
                }
                match VerificationState::parse(state) {
                    Some(VerificationState::Fresh) => {
                        summary.fresh += 1;
                        let seconds = fresh_at
                            .as_deref()
                            .and_then(Timestamp::parse)
                            .zip(Timestamp::parse(enqueued_at))
                            .map(|(f, e)| (f.get() - e.get()).as_seconds_f64().max(0.0));
                        times.extend(seconds);
                    }
                    Some(VerificationState::Stale) => summary.stale += 1,
                    Some(VerificationState::Unverifiable) => summary.unverifiable += 1,
                    _ => {}
                }
            }
            times.sort_by(f64::total_cmp);
            summary.median_seconds = percentile(&times, 0.5);
            summary.p95_seconds = percentile(&times, 0.95);
            summary
        };
        let stale: Vec<(String, Option<String>, String)> = on_pool!(&self.reader, c => sqlx::query_as(
            STALE_NOW,
        )
        .bind(day_ago)
        .fetch_all(c).await)?;
        Ok(FreshnessSummary {
            pending,
            hour: window(Some(&hour_ago_text)),
            day: window(None),
            stale_now: stale
                .into_iter()
                .map(|(url, reason, at)| StaleUrl {
                    url,
                    reason: reason.unwrap_or_default(),
                    at,
                })
                .collect(),
        })
    }
}

/// The `p` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index.min(sorted.len() - 1)).copied()
}

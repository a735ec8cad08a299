//! What the quota planner reads and writes: the pending queue as it sees
//! it, counts by lane, and promotions carried out.

use super::db::{Conn, on_conn, on_pool};

use super::model::MergeReason;
use super::returns::absorb_under;
use super::{Store, StoreError, Timestamp};
use futures::TryStreamExt;

use crate::config::QuotaSettings;
use crate::planner::{Left, Pending, PerCall, Plan, Promotion, Survey, Tally};
use crate::target::Kind;

/// Urgent items pending (see [`Store::urgent_pending`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrgentPending {
    pub endpoints: Vec<String>,
    pub files: u64,
    pub directories: u64,
}

/// Pending items by kind, and how many of them are urgent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCounts {
    pub files: u64,
    pub directories: u64,
    pub urgent_files: u64,
    pub urgent_directories: u64,
}

impl LaneCounts {
    /// Files and directories that today's `left` cannot take: urgent ones
    /// beyond what is left, normal ones beyond their lane (the reserve is
    /// not theirs).
    pub fn waiting(&self, left: Left, rules: &QuotaSettings) -> (u64, u64) {
        (
            crate::quota::waiting(
                self.files,
                self.urgent_files,
                left.files,
                rules.urgent_reserve_files,
            ),
            crate::quota::waiting(
                self.directories,
                self.urgent_directories,
                left.directories,
                rules.urgent_reserve_directories,
            ),
        )
    }
}

/// The pending queue in the batcher's order (`$1`: when the next quota
/// day starts; a file whose copies expire before then needs no purge).
const PENDING_OLDEST_FIRST: &str = "SELECT endpoint_id, kind, url, urgent,
            CASE WHEN expires_at IS NOT NULL AND expires_at < $1 THEN 1 ELSE 0 END
     FROM items WHERE state = 'pending' ORDER BY not_before, id";

/// The pending queue, in whatever order the index gives.
const PENDING_ANY_ORDER: &str = "SELECT endpoint_id, kind, url, urgent,
            CASE WHEN expires_at IS NOT NULL AND expires_at < $1 THEN 1 ELSE 0 END
     FROM items WHERE state = 'pending'";

/// Files that expire before the next quota day wait for their expiry: a
/// range of `items_pending_expiry` (named on SQLite, see
/// `cache_policies::NEXT_EXPIRY`).
pub(crate) const DEFER_EXPIRING: &str =
    "UPDATE items INDEXED BY items_pending_expiry SET not_before = expires_at
     WHERE state = 'pending' AND kind = 'file' AND urgent = 0
       AND expires_at IS NOT NULL AND expires_at < $1 AND not_before < expires_at";
pub(crate) const DEFER_EXPIRING_POSTGRES: &str = "UPDATE items SET not_before = expires_at
     WHERE state = 'pending' AND kind = 'file' AND urgent = 0
       AND expires_at IS NOT NULL AND expires_at < $1 AND not_before < expires_at";

impl Store {
    /// Every pending item, oldest first (the order the batcher takes them).
    /// A full read of the queue: for the planner when the day cannot hold
    /// the backlog, and for `GET /v1/plan`.
    pub async fn pending_for_plan(&self, next_day: Timestamp) -> Result<Vec<Pending>, StoreError> {
        let mut pending = Vec::new();
        self.each_pending(PENDING_OLDEST_FIRST, next_day, |p| pending.push(p))
            .await?;
        Ok(pending)
    }

    /// URLs pending as another URL's cached object (their endpoint ignores
    /// query strings): each is a file of quota saved. Walks the pending
    /// items (as the plan does), probing each one's links.
    pub async fn coalesced_pending(&self) -> Result<u64, StoreError> {
        let count: i64 = on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT count(*) FROM items i JOIN request_items ri ON ri.item_id = i.id
             WHERE i.state = 'pending' AND ri.link_reason = 'query_ignored'",
        )
        .fetch_one(c).await)?;
        Ok(count.max(0) as u64)
    }

    /// Gives the files that expire before `next_day` no earlier a turn
    /// than their expiry: the day's quota cannot reach every file, and
    /// these need no purge if they wait (they end `expired`). Returns how
    /// many were held back.
    pub async fn defer_expiring(&self, next_day: Timestamp) -> Result<u64, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let sql = conn.pick(DEFER_EXPIRING, DEFER_EXPIRING_POSTGRES);
                on_conn!(conn, c => sqlx::query(sql)
                .bind(next_day)
                .execute(c).await.map(|r| r.rows_affected()))
            })
        })
        .await
    }

    /// Streams every pending item through `survey`, without holding the
    /// queue in memory (the batcher's planner, on a queue of any size).
    pub async fn survey_pending(
        &self,
        survey: &mut Survey<'_>,
        next_day: Timestamp,
    ) -> Result<(), StoreError> {
        self.each_pending(PENDING_ANY_ORDER, next_day, |p| survey.add(&p))
            .await
    }

    /// Streams the pending items `sql` selects through `add`, one row at a
    /// time (flags are 0/1 integers on both databases).
    async fn each_pending(
        &self,
        sql: &'static str,
        next_day: Timestamp,
        mut add: impl FnMut(Pending),
    ) -> Result<(), StoreError> {
        on_pool!(&self.reader, p => {
            let mut rows = sqlx::query_as::<_, (String, String, String, i64, i64)>(sql)
                .bind(next_day)
                .fetch(p);
            while let Some((endpoint_id, kind, url, urgent, expires_soon)) = rows.try_next().await? {
                add(Pending {
                    endpoint_id,
                    kind: Kind::parse(&kind).unwrap_or(Kind::File),
                    url,
                    urgent: urgent != 0,
                    expires_soon: expires_soon != 0,
                });
            }
        });
        Ok(())
    }

    /// Today's plan for the queue as it is, from two streamed reads of it
    /// (a [`Survey`], then a [`Tally`] in the batcher's order), so a queue
    /// of a million items is planned without holding it in memory.
    pub async fn plan(
        &self,
        left: Left,
        rules: &QuotaSettings,
        per_call: PerCall,
        next_day: Timestamp,
    ) -> Result<Plan, StoreError> {
        let mut survey = Survey::new(rules);
        self.survey_pending(&mut survey, next_day).await?;
        let mut tally = Tally::new(survey, left, per_call);
        self.each_pending(PENDING_OLDEST_FIRST, next_day, |p| tally.add(&p))
            .await?;
        let mut plan = tally.finish();
        plan.coalesced_urls = self.coalesced_pending().await?;
        Ok(plan)
    }

    /// Pending counts by kind and lane.
    pub async fn lane_counts(&self) -> Result<LaneCounts, StoreError> {
        Ok(self.queue_counts().await?.lanes())
    }

    /// Urgent items pending: their endpoints, and how many files and
    /// directories (cheap on every batcher pass: the counts).
    pub async fn urgent_pending(&self) -> Result<UrgentPending, StoreError> {
        Ok(self.queue_counts().await?.urgent())
    }

    /// Carries out `promotions`: each directory becomes a pending item (or
    /// the pending one is used) and absorbs every pending item under it,
    /// recorded as `merged` with the reason `promoted`; their requests
    /// follow the directory's result. Returns how many items were absorbed.
    pub async fn promote(
        &self,
        promotions: Vec<Promotion>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let promotions = promotions.clone();
            Box::pin(async move {
                let mut absorbed = 0;
                for promotion in &promotions {
                    absorbed += promote_one(conn, promotion, now).await?;
                }
                Ok(absorbed)
            })
        })
        .await
    }
}

async fn promote_one(
    conn: &mut Conn<'_>,
    promotion: &Promotion,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at, promoted)
         VALUES ($1, 'directory', $2, 'pending', $3, $3, $3, 1)
         ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING",
    )
    .bind(&promotion.endpoint_id)
    .bind(&promotion.directory)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    let id: i64 = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT id FROM items
         WHERE state = 'pending' AND endpoint_id = $1 AND url = $2 AND kind = 'directory'",
    )
    .bind(&promotion.endpoint_id)
    .bind(&promotion.directory)
    .fetch_one(c).await)?;
    let absorbed = absorb_under(
        conn,
        id,
        &promotion.endpoint_id,
        &promotion.directory,
        MergeReason::Promoted,
        now,
    )
    .await?;
    // The directory is purged at the origin caches its files were to be
    // purged at, before the CDN (issue 34).
    super::origin_purges::inherit(conn, super::ItemId(id), now).await?;
    Ok(absorbed)
}

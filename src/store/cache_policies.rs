//! The endpoints' cache policies, and the `expired` end they make possible.
//!
//! A policy is kept as the API spelt it (`cache_policies.policy`), so a
//! restart without the CDN still plans with the last good copy. Where it
//! bounds how long a copy can live, each pending file carries the moment
//! its older copies are gone (`items.expires_at`, set at intake by
//! [`crate::cdn::cache_rules::Policies::facts`]); [`Store::expire_due`]
//! ends the files whose moment has passed, without a purge and without a
//! charge, and starts the preloads they asked for as a purge's success
//! would.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::db::{json_list, on_conn, on_pool};
use super::preloads::chain_after;
use super::{ItemId, Store, StoreError, Timestamp, timestamp};
use crate::cdn::cache_rules::{CachePolicy, KnownPolicy, fact_for};
use crate::cdn::wire::CachePolicyBody;
use crate::target::{Kind, PurgeTarget};

/// The expiry statements name `items_pending_expiry` on SQLite, which
/// without statistics walked every pending item by `items_state` (3-7 ms
/// a look with 100,000 pending, issue 31); PostgreSQL's texts are the same
/// without `INDEXED BY`.
pub(crate) const NEXT_EXPIRY: &str =
    "SELECT min(expires_at) FROM items INDEXED BY items_pending_expiry
     WHERE state = 'pending' AND expires_at IS NOT NULL";
pub(crate) const NEXT_EXPIRY_POSTGRES: &str = "SELECT min(expires_at) FROM items
     WHERE state = 'pending' AND expires_at IS NOT NULL";
pub(crate) const EXPIRE_DUE: &str = "UPDATE items INDEXED BY items_pending_expiry
     SET state = 'expired', finished_at = $1, updated_at = $1,
         last_error = 'no purge needed: every copy cached before the request has expired ('
                      || COALESCE(expiry_rule, 'cache rule') || ')'
     WHERE state = 'pending' AND kind = 'file'
       AND expires_at IS NOT NULL AND expires_at <= $1 AND not_before <> $2
     RETURNING id";
pub(crate) const EXPIRE_DUE_POSTGRES: &str = "UPDATE items
     SET state = 'expired', finished_at = $1, updated_at = $1,
         last_error = 'no purge needed: every copy cached before the request has expired ('
                      || COALESCE(expiry_rule, 'cache rule') || ')'
     WHERE state = 'pending' AND kind = 'file'
       AND expires_at IS NOT NULL AND expires_at <= $1 AND not_before <> $2
     RETURNING id";

impl Store {
    /// Keeps `policy` as the endpoint's. When it differs from the copy
    /// kept, the pending files of that endpoint get their expiry again
    /// under the new rules (from their newest intent): a policy that stops
    /// ignoring `Cache-Control` must not let a file expire unpurged.
    /// Returns whether the policy changed.
    pub async fn save_cache_policy(
        &self,
        endpoint_id: &str,
        policy: &CachePolicy,
        fetched_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let endpoint_id = endpoint_id.to_owned();
        let policy = policy.clone();
        let text = serde_json::to_string(&policy.to_wire())
            .map_err(|e| StoreError::internal("encoding a cache policy", e))?;
        let fetched_at = Timestamp::new(fetched_at);
        self.write(move |conn| {
            let (endpoint_id, policy, text) = (endpoint_id.clone(), policy.clone(), text.clone());
            Box::pin(async move {
                let before: Option<String> = on_conn!(conn, c => sqlx::query_scalar(
                    "SELECT policy FROM cache_policies WHERE endpoint_id = $1",
                )
                .bind(&endpoint_id)
                .fetch_optional(c).await)?;
                on_conn!(conn, c => sqlx::query(
                    "INSERT INTO cache_policies (endpoint_id, policy, fetched_at) VALUES ($1, $2, $3)
                     ON CONFLICT (endpoint_id) DO UPDATE SET policy = excluded.policy,
                                                             fetched_at = excluded.fetched_at",
                )
                .bind(&endpoint_id)
                .bind(&text)
                .bind(fetched_at)
                .execute(c).await.map(|r| r.rows_affected()))?;
                let changed = before.as_deref() != Some(text.as_str());
                if changed {
                    recompute_expiry(conn, &endpoint_id, &policy).await?;
                }
                Ok(changed)
            })
        })
        .await
    }

    /// Every policy kept, by endpoint (a copy that no longer reads as a
    /// policy is skipped with a warning: it will be fetched again).
    pub async fn cache_policies(&self) -> Result<HashMap<String, KnownPolicy>, StoreError> {
        let rows: Vec<(String, String, String)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT endpoint_id, policy, fetched_at FROM cache_policies ORDER BY endpoint_id",
        )
        .fetch_all(c).await)?;
        let mut policies = HashMap::new();
        for (endpoint_id, text, fetched_at) in rows {
            let parsed = serde_json::from_str::<CachePolicyBody>(&text)
                .map_err(|e| e.to_string())
                .and_then(|body| CachePolicy::from_wire(&body).map_err(|e| e.to_string()));
            match parsed {
                Ok(policy) => {
                    policies.insert(
                        endpoint_id,
                        KnownPolicy {
                            policy,
                            fetched_at,
                            refresh_error: None,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(%endpoint_id, %error, "a kept cache policy is unreadable; ignoring it");
                }
            }
        }
        Ok(policies)
    }

    /// Ends the pending files whose older copies have all expired by
    /// `now`: state `expired`, the rule as the reason, nothing charged,
    /// their preloads started. Returns how many.
    pub async fn expire_due(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = Timestamp::new(now);
        self.write(move |conn| {
            Box::pin(async move {
                let sql = conn.pick(EXPIRE_DUE, EXPIRE_DUE_POSTGRES);
                let expired: Vec<i64> = on_conn!(conn, c => sqlx::query_scalar(sql)
                .bind(now)
                // A file held for the origin caches has not expired: the
                // CDN would fetch the old copy from them again.
                .bind(super::origin_purges::HELD)
                .fetch_all(c).await)?;
                for id in &expired {
                    chain_after(conn, ItemId(*id), now).await?;
                }
                Ok(expired.len() as u64)
            })
        })
        .await
    }

    /// When the next pending file expires, if any does (one probe of the
    /// `items_pending_expiry` index).
    pub async fn next_expiry(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let sql = self
            .reader
            .backend()
            .pick(NEXT_EXPIRY, NEXT_EXPIRY_POSTGRES);
        let next: Option<String> = on_pool!(&self.reader, c => sqlx::query_scalar(sql)
        .fetch_one(c).await)?;
        Ok(next
            .as_deref()
            .and_then(Timestamp::parse)
            .map(Timestamp::get))
    }
}

/// The expiry of every pending file of `endpoint_id` under `policy`, from
/// the newest intent that asked for it (its own requests', and those of
/// items merged into it). Runs when a policy changes, which is rare.
async fn recompute_expiry(
    conn: &mut super::db::Conn<'_>,
    endpoint_id: &str,
    policy: &CachePolicy,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(i64, String, Option<String>)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT i.id, i.url, max(r.received_at) FROM items i
         JOIN items x ON x.id = i.id OR (x.merged_into = i.id AND x.state = 'merged')
         JOIN request_items ri ON ri.item_id = x.id
         JOIN requests r ON r.id = ri.request_id
         WHERE i.state = 'pending' AND i.kind = 'file' AND i.endpoint_id = $1
         GROUP BY i.id, i.url",
    )
    .bind(endpoint_id)
    .fetch_all(c).await)?;
    let updates: Vec<(i64, Option<String>, Option<String>)> = rows
        .into_iter()
        .map(|(id, url, newest)| {
            let newest = newest
                .as_deref()
                .and_then(Timestamp::parse)
                .map(Timestamp::get);
            let mut target = PurgeTarget {
                endpoint_id: endpoint_id.to_owned(),
                kind: Kind::File,
                url,
            };
            let expires = newest.and_then(|at| fact_for(policy, &mut target, at).expires);
            (
                id,
                expires.as_ref().map(|(at, _)| timestamp(*at)),
                expires.map(|(_, rule)| rule),
            )
        })
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    let json = json_list(&updates)?;
    let sql = conn.pick(
        "UPDATE items SET expires_at = j.value ->> 1, expiry_rule = j.value ->> 2
         FROM json_each($1) j WHERE items.id = j.value ->> 0",
        "UPDATE items SET expires_at = j.value ->> 1, expiry_rule = j.value ->> 2
         FROM json_array_elements($1::json) AS j (value) WHERE items.id = (j.value ->> 0)::bigint",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(json)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

//! The tag registry (issue 35): which URL carries which tags, so that a
//! purge can name a tag. Tables `tagged_urls` (one row per URL, with when
//! it was last seen), `url_tags` (keyed by tag first: a tag expands in one
//! index range) and `tag_registry` (its size and what the bound dropped,
//! kept as rows come and go rather than counted).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::db::{Conn, json_list, on_conn, on_pool};
use super::{RequestId, Store, StoreError, Timestamp};

/// One URL's tags as fed: they replace what the registry held for it; an
/// empty list forgets the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFeed {
    /// Normalized as purge intents are (`Router::target`).
    pub url: String,
    pub tags: Vec<String>,
}

/// Where a feed came from (`tagged_urls.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSource {
    Api,
    Header,
    AccessLog,
}

impl TagSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TagSource::Api => "api",
            TagSource::Header => "header",
            TagSource::AccessLog => "access_log",
        }
    }
}

/// What a feed did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedOutcome {
    /// URLs whose tags were set.
    pub tagged: u64,
    /// URLs forgotten (an empty list).
    pub forgotten: u64,
    /// Least recently seen URLs dropped to stay within `tags.max_urls`.
    pub dropped: u64,
}

/// The registry's size, for `/v1/stats`, `/metrics` and the page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TagRegistryCounts {
    /// URLs held.
    pub urls: u64,
    /// URLs dropped by the bound since the registry began.
    pub dropped: u64,
}

impl Store {
    /// Sets (or forgets) the tags of each URL of `feed`, in one
    /// transaction; then drops the least recently seen URLs past
    /// `max_urls`. A URL named twice takes its last list.
    pub async fn feed_tags(
        &self,
        feed: Vec<TagFeed>,
        source: TagSource,
        max_urls: u64,
        now: Timestamp,
    ) -> Result<FeedOutcome, StoreError> {
        let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in feed {
            last.insert(entry.url, entry.tags);
        }
        let last = Arc::new(last);
        self.write(move |conn| {
            let last = last.clone();
            Box::pin(async move { store_feed(conn, &last, source, max_urls, now).await })
        })
        .await
    }

    /// Each tag's URLs, at most `limit` in all (the caller refuses more
    /// than a request may hold: `limit` + 1 rows tell it so). A tag the
    /// registry does not know is absent.
    pub async fn urls_of_tags(
        &self,
        tags: &[String],
        limit: usize,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        // One index range per tag, in the key's order, each URL a probe by
        // id: a scalar subquery is never turned into a join, so neither
        // database walks the registry (a join let PostgreSQL hash-join
        // all of `tagged_urls`: 60 ms for a tag of one URL in 210,000).
        let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut left = limit;
        for tag in tags {
            if left == 0 || found.contains_key(tag) {
                continue;
            }
            let urls: Vec<String> = on_pool!(&self.reader, c => sqlx::query_scalar(EXPAND_TAG)
                .bind(tag)
                .bind(left as i64)
                .fetch_all(c).await)?;
            left -= urls.len();
            if !urls.is_empty() {
                found.insert(tag.clone(), urls);
            }
        }
        Ok(found)
    }

    /// The tags the registry holds for `url` (normalized).
    pub async fn tags_of_url(&self, url: &str) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(&self.reader, c => sqlx::query_scalar(
            "SELECT t.tag FROM tagged_urls u JOIN url_tags t ON t.url_id = u.id
             WHERE u.url = $1 ORDER BY t.tag")
            .bind(url)
            .fetch_all(c).await)?)
    }

    /// The registry's size and what its bound dropped.
    pub async fn tag_registry_counts(&self) -> Result<TagRegistryCounts, StoreError> {
        let row: Option<(i64, i64)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT urls, dropped FROM tag_registry WHERE id = 1")
            .fetch_optional(c).await)?;
        let (urls, dropped) = row.unwrap_or_default();
        Ok(TagRegistryCounts {
            urls: urls.max(0) as u64,
            dropped: dropped.max(0) as u64,
        })
    }

    /// The tags a request named, with how many URLs each gave then.
    pub async fn tags_of_request(
        &self,
        id: &RequestId,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT tag, urls FROM request_tags WHERE request_id = $1 ORDER BY tag")
            .bind(id.as_str())
            .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(|(tag, urls)| (tag, urls.max(0) as u64))
            .collect())
    }

    /// The tag each URL of a request came from, by position (URLs the
    /// request named itself are absent).
    pub async fn via_tags_of_request(
        &self,
        id: &RequestId,
    ) -> Result<BTreeMap<i64, String>, StoreError> {
        let rows: Vec<(i64, String)> = on_pool!(&self.reader, c => sqlx::query_as(
            "SELECT position, via_tag FROM request_items
             WHERE request_id = $1 AND via_tag IS NOT NULL")
            .bind(id.as_str())
            .fetch_all(c).await)?;
        Ok(rows.into_iter().collect())
    }
}

/// A tag's URLs, `$2` at most, in the order they were first tagged.
pub(super) const EXPAND_TAG: &str = "SELECT (SELECT u.url FROM tagged_urls u WHERE u.id = t.url_id)
     FROM url_tags t WHERE t.tag = $1 ORDER BY t.url_id LIMIT $2";

/// The feed's statements (see [`Store::feed_tags`]).
async fn store_feed(
    conn: &mut Conn<'_>,
    last: &BTreeMap<String, Vec<String>>,
    source: TagSource,
    max_urls: u64,
    now: Timestamp,
) -> Result<FeedOutcome, sqlx::Error> {
    let forget: Vec<&str> = last
        .iter()
        .filter(|(_, tags)| tags.is_empty())
        .map(|(url, _)| url.as_str())
        .collect();
    let tagged: Vec<&str> = last
        .iter()
        .filter(|(_, tags)| !tags.is_empty())
        .map(|(url, _)| url.as_str())
        .collect();
    let mut outcome = FeedOutcome::default();
    if !forget.is_empty() {
        // `url_tags` rows go with their URL (ON DELETE CASCADE).
        let sql = conn.pick(
            "DELETE FROM tagged_urls WHERE url IN (SELECT value FROM json_each($1))",
            "DELETE FROM tagged_urls WHERE url IN (SELECT value FROM json_array_elements_text($1::json))",
        );
        outcome.forgotten = on_conn!(conn, c => sqlx::query(sql)
            .bind(json_list(&forget)?)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    let mut new = 0i64;
    if !tagged.is_empty() {
        let list = json_list(&tagged)?;
        // How many of the URLs are new, for the registry's count. SQLite
        // has one writer, so counting first is exact; on PostgreSQL two
        // nodes may feed the same URLs at once, so the upsert itself says
        // which rows it inserted (`xmax = 0`).
        let known: Option<i64> = match conn.backend() {
            super::db::Backend::Sqlite => Some(on_conn!(conn, c => sqlx::query_scalar(
                "SELECT count(*) FROM json_each($1) j CROSS JOIN tagged_urls u ON u.url = j.value")
                .bind(&list)
                .fetch_one(c).await)?),
            super::db::Backend::Postgres => None,
        };
        let sql = conn.pick(
            "INSERT INTO tagged_urls (url, source, seen_at)
             SELECT value, $2, $3 FROM json_each($1) WHERE true
             ON CONFLICT (url) DO UPDATE SET source = excluded.source, seen_at = excluded.seen_at
             RETURNING id, url, false",
            "INSERT INTO tagged_urls (url, source, seen_at)
             SELECT value, $2, $3 FROM json_array_elements_text($1::json) AS j (value)
             ON CONFLICT (url) DO UPDATE SET source = excluded.source, seen_at = excluded.seen_at
             RETURNING id, url, (xmax = 0)",
        );
        let rows: Vec<(i64, String, bool)> = on_conn!(conn, c => sqlx::query_as(sql)
            .bind(&list)
            .bind(source.as_str())
            .bind(now)
            .fetch_all(c).await)?;
        new = match known {
            Some(known) => tagged.len() as i64 - known,
            None => rows.iter().filter(|(_, _, inserted)| *inserted).count() as i64,
        };
        let ids: Vec<(i64, String)> = rows.into_iter().map(|(id, url, _)| (id, url)).collect();
        let id_list: Vec<i64> = ids.iter().map(|(id, _)| *id).collect();
        let sql = conn.with_id_lists(
            "DELETE FROM url_tags WHERE url_id IN (SELECT value FROM json_each($1))",
        );
        on_conn!(conn, c => sqlx::query(sql.clone())
            .bind(json_list(&id_list)?)
            .execute(c).await.map(|r| r.rows_affected()))?;
        let pairs: Vec<(&str, i64)> = ids
            .iter()
            .flat_map(|(id, url)| {
                last.get(url)
                    .into_iter()
                    .flatten()
                    .map(move |tag| (tag.as_str(), *id))
            })
            .collect();
        let sql = conn.pick(
            "INSERT INTO url_tags (tag, url_id)
             SELECT value ->> 0, value ->> 1 FROM json_each($1) WHERE true
             ON CONFLICT DO NOTHING",
            "INSERT INTO url_tags (tag, url_id)
             SELECT value ->> 0, (value ->> 1)::bigint FROM json_array_elements($1::json)
             ON CONFLICT DO NOTHING",
        );
        on_conn!(conn, c => sqlx::query(sql)
            .bind(json_list(&pairs)?)
            .execute(c).await.map(|r| r.rows_affected()))?;
        outcome.tagged = ids.len() as u64;
    }
    let held: i64 = on_conn!(conn, c => sqlx::query_scalar(
        "UPDATE tag_registry SET urls = urls + $1 - $2 WHERE id = 1 RETURNING urls")
        .bind(new)
        .bind(outcome.forgotten as i64)
        .fetch_one(c).await)?;
    let excess = held - max_urls.min(i64::MAX as u64) as i64;
    if excess > 0 {
        outcome.dropped = on_conn!(conn, c => sqlx::query(
            "DELETE FROM tagged_urls WHERE id IN (
                 SELECT id FROM tagged_urls ORDER BY seen_at, id LIMIT $1)")
            .bind(excess)
            .execute(c).await.map(|r| r.rows_affected()))?;
        on_conn!(conn, c => sqlx::query(
            "UPDATE tag_registry SET urls = urls - $1, dropped = dropped + $1 WHERE id = 1")
            .bind(outcome.dropped as i64)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(outcome)
}

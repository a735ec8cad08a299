//! Putting items back in the queue: after a transient failure, a split, a
//! crash, a released batch, or an operator's retry. The queue's two rules
//! (one pending item per URL; a pending directory covers what is under it)
//! must hold afterwards, so a returned item may be merged instead, and a
//! returned directory absorbs what is pending under it.

use super::db::json_list;
use super::db::{Conn, on_conn};
use super::model::MergeReason;
use super::{ItemId, Timestamp};

/// Puts items back to `pending` (from `sending`, `submitted`, or `failed`
/// for an operator's retry), keeping the queue's two rules:
///
/// - one pending item per URL: an item whose URL is pending already (asked
///   for again meanwhile), or is among `item_ids` twice (two failed
///   generations retried together), is merged into that one instead;
/// - a pending directory covers every pending item under it: a returned
///   item under one is merged into it, and a returned directory absorbs
///   what is pending under it.
///
/// Merges stay one level deep: whatever followed a merged item follows
/// its new root.
pub(super) async fn return_to_pending(
    conn: &mut Conn<'_>,
    item_ids: &[ItemId],
    reason: &str,
    not_before: Timestamp,
    now: Timestamp,
    keep_batch: bool,
) -> Result<(), sqlx::Error> {
    let ids = json_list(item_ids)?;
    follow_twins(conn, &ids, reason, now).await?;
    repoint_followers(conn, &ids).await?;
    let sql = conn.with_id_lists(
        "UPDATE items SET state = 'pending', not_before = $2, last_error = $3, updated_at = $4,
                batch_id = CASE WHEN $5 THEN batch_id ELSE NULL END
         WHERE id IN (SELECT value FROM json_each($1)) AND state IN ('sending', 'submitted', 'failed')",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(&ids)
    .bind(not_before)
    .bind(reason)
    .bind(now)
    .bind(keep_batch)
    .execute(c).await.map(|r| r.rows_affected()))?;
    follow_covering_directories(conn, &ids, now).await?;
    repoint_followers(conn, &ids).await?;
    absorb_under_returned_directories(conn, &ids, now).await
}

/// Returned items whose URL has a pending twin (asked for again meanwhile),
/// or that are among the returned twice, are merged into that one.
async fn follow_twins(
    conn: &mut Conn<'_>,
    ids: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    // A pending twin exists: follow it.
    let sql = conn.with_id_lists(
        "UPDATE items AS i SET state = 'merged', last_error = $2, updated_at = $3,
                merge_reason = 'coalesced',
                merged_into = (SELECT t.id FROM items t WHERE t.state = 'pending'
                               AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)
         WHERE i.id IN (SELECT value FROM json_each($1))
           AND i.state IN ('sending', 'submitted', 'failed')
           AND EXISTS (SELECT 1 FROM items t WHERE t.state = 'pending'
                       AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(ids)
    .bind(reason)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    // The same URL twice among the returned: the newest carries it.
    let sql = conn.with_id_lists(
        "UPDATE items AS i SET state = 'merged', last_error = $2, updated_at = $3,
                merge_reason = 'coalesced',
                merged_into = (SELECT max(t.id) FROM items t
                               WHERE t.id IN (SELECT value FROM json_each($1))
                                 AND t.state IN ('sending', 'submitted', 'failed')
                                 AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)
         WHERE i.id IN (SELECT value FROM json_each($1))
           AND i.state IN ('sending', 'submitted', 'failed')
           AND EXISTS (SELECT 1 FROM items t
                       WHERE t.id IN (SELECT value FROM json_each($1)) AND t.id > i.id
                         AND t.state IN ('sending', 'submitted', 'failed')
                         AND t.endpoint_id = i.endpoint_id AND t.url = i.url AND t.kind = i.kind)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(ids)
    .bind(reason)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Returned items under a pending directory follow the top-most one.
async fn follow_covering_directories(
    conn: &mut Conn<'_>,
    ids: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    follow_covering_directory(conn, ids, now).await?;
    // Under a directory the planner chose, say so.
    let sql = conn.with_id_lists(
        "UPDATE items SET merge_reason = 'promoted'
         WHERE id IN (SELECT value FROM json_each($1)) AND state = 'merged'
           AND merged_into IN (SELECT id FROM items WHERE promoted = 1)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(ids)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

async fn follow_covering_directory(
    conn: &mut Conn<'_>,
    ids: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let sql = conn.with_id_lists(
        "UPDATE items AS i SET state = 'merged', updated_at = $2, merge_reason = 'covered',
                merged_into = (SELECT d.id FROM items d
                               WHERE d.state = 'pending' AND d.kind = 'directory'
                                 AND d.endpoint_id = i.endpoint_id AND d.id != i.id
                                 AND length(i.url) > length(d.url)
                                 AND substr(i.url, 1, length(d.url)) = d.url
                               ORDER BY length(d.url) LIMIT 1)
         WHERE i.id IN (SELECT value FROM json_each($1)) AND i.state = 'pending'
           AND EXISTS (SELECT 1 FROM items d
                       WHERE d.state = 'pending' AND d.kind = 'directory'
                         AND d.endpoint_id = i.endpoint_id AND d.id != i.id
                         AND length(i.url) > length(d.url)
                         AND substr(i.url, 1, length(d.url)) = d.url)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(ids)
    .bind(now)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A returned directory still pending absorbs what is pending under it.
async fn absorb_under_returned_directories(
    conn: &mut Conn<'_>,
    ids: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let sql = conn.with_id_lists(
        "SELECT id, endpoint_id, url, promoted FROM items
         WHERE id IN (SELECT value FROM json_each($1)) AND state = 'pending' AND kind = 'directory'",
    );
    let directories: Vec<(i64, String, String, i64)> = on_conn!(conn, c => sqlx::query_as(sql)
    .bind(ids)
    .fetch_all(c).await)?;
    for (id, endpoint_id, url, promoted) in directories {
        let reason = if promoted != 0 {
            MergeReason::Promoted
        } else {
            MergeReason::Covered
        };
        absorb_under(conn, id, &endpoint_id, &url, reason, now).await?;
    }
    Ok(())
}

/// Whatever was merged into one of `ids` that is now merged itself follows
/// its root instead, so every merge stays one level deep.
async fn repoint_followers(conn: &mut Conn<'_>, ids: &str) -> Result<(), sqlx::Error> {
    let sql = conn.with_id_lists(
        "UPDATE items SET merged_into = (SELECT m.merged_into FROM items m WHERE m.id = items.merged_into)
         WHERE state = 'merged' AND merged_into IN (SELECT value FROM json_each($1))
           AND (SELECT m.state FROM items m WHERE m.id = items.merged_into) = 'merged'",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(ids)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A pending directory covers every pending item under it: those are
/// marked `merged` and will follow the directory's result.
pub(super) async fn absorb_under(
    conn: &mut Conn<'_>,
    directory_id: i64,
    endpoint_id: &str,
    directory_url: &str,
    reason: MergeReason,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    // Every URL that starts with "…/dir/" sorts in ["…/dir/", "…/dir0"):
    // '0' is the character after '/'.
    let upper = format!("{}0", &directory_url[..directory_url.len() - 1]);
    // The range needs byte order: PostgreSQL compares text by the
    // database's collation, in which '/' may weigh nothing.
    let sql = conn.pick(
        "UPDATE items SET state = 'merged', merged_into = $1, updated_at = $2, merge_reason = $6
         WHERE state = 'pending' AND endpoint_id = $3 AND url > $4 AND url < $5 AND id != $1",
        "UPDATE items SET state = 'merged', merged_into = $1, updated_at = $2, merge_reason = $6
         WHERE state = 'pending' AND endpoint_id = $3
           AND url COLLATE \"C\" > $4 AND url COLLATE \"C\" < $5 AND id != $1",
    );
    let absorbed = on_conn!(conn, c => sqlx::query(sql)
    .bind(directory_id)
    .bind(now)
    .bind(endpoint_id)
    .bind(directory_url)
    .bind(&upper)
    .bind(reason.as_str())
    .execute(c).await.map(|r| r.rows_affected()))?;
    // What an urgent item was waiting for now waits on this directory.
    on_conn!(conn, c => sqlx::query(
        "UPDATE items SET urgent = 1 WHERE id = $1 AND urgent = 0
           AND EXISTS (SELECT 1 FROM items WHERE merged_into = $1 AND urgent = 1)",
    )
    .bind(directory_id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    // Keep merges one level deep: whatever followed an absorbed item, a
    // file as much as a sub-directory (a retried URL merged into its
    // pending twin, say), now follows this directory directly. Leaving it
    // two deep made requests read `succeeded` while the directory was
    // still pending (issue 13).
    on_conn!(conn, c => sqlx::query(
        "UPDATE items SET merged_into = $1
         WHERE state = 'merged' AND merged_into IN
             (SELECT id FROM items WHERE merged_into = $1 AND state = 'merged')",
    )
    .bind(directory_id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(absorbed)
}

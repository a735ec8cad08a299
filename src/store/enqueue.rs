//! Recording a client's request: deduplicate against what is pending,
//! let pending directories cover what lies under them, and link every URL
//! of the request to the item that will carry it.
//!
//! Files are handled as sets, a few statements per request whatever its
//! size (the URL lists travel as JSON and are unpacked by `json_each`);
//! directories, which are rare and may absorb other items, one at a time.
//!
//! The joins against `json_each` are written `CROSS JOIN`, which makes
//! SQLite keep the JSON list as the outer loop: each URL is then one probe
//! of the `items_pending` index. Left to itself the planner may scan every
//! pending item for each URL instead, which is quadratic.

use serde::Serialize;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

use super::{Store, StoreError, timestamp};
use crate::target::{Kind, PurgeTarget, ancestor_directories};

/// A validated request, ready to store.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub received_at: OffsetDateTime,
    pub source: String,
    pub label: Option<String>,
    pub targets: Vec<PurgeTarget>,
}

/// What the client hears back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnqueueOutcome {
    pub id: String,
    pub urls: usize,
    pub new: usize,
    pub deduplicated: usize,
}

impl Store {
    /// Stores `request`; returns once it is committed to disk.
    pub async fn enqueue(&self, request: NewRequest) -> Result<EnqueueOutcome, StoreError> {
        let request = std::sync::Arc::new(request);
        self.write(move |conn| {
            let request = request.clone();
            Box::pin(async move { enqueue(conn, &request).await })
        })
        .await
    }
}

async fn enqueue(
    conn: &mut SqliteConnection,
    request: &NewRequest,
) -> Result<EnqueueOutcome, sqlx::Error> {
    let now = timestamp(request.received_at);
    sqlx::query("INSERT INTO requests (id, received_at, source, label) VALUES (?1, ?2, ?3, ?4)")
        .bind(&request.id)
        .bind(&now)
        .bind(&request.source)
        .bind(&request.label)
        .execute(&mut *conn)
        .await?;

    let mut directories: Vec<(usize, &PurgeTarget)> = Vec::new();
    let mut files: Vec<(usize, &PurgeTarget)> = Vec::new();
    for (position, target) in request.targets.iter().enumerate() {
        match target.kind {
            Kind::Directory => directories.push((position, target)),
            Kind::File => files.push((position, target)),
        }
    }
    // Parents before children, so a child finds its parent pending.
    directories.sort_by_key(|(_, t)| t.url.len());

    let mut new = 0;
    for (position, directory) in directories {
        match covering_directory(conn, directory).await? {
            Some(id) => link(conn, &request.id, id, position, Some(directory)).await?,
            None => {
                let (id, inserted) = insert_or_find(conn, directory, &now).await?;
                if inserted {
                    new += 1;
                    absorb_under(conn, id, directory, &now).await?;
                }
                link(conn, &request.id, id, position, None).await?;
            }
        }
    }

    if !files.is_empty() {
        let mut remaining = Vec::with_capacity(files.len());
        let covered: std::collections::HashMap<usize, i64> =
            covered_files(conn, &files).await?.into_iter().collect();
        let mut covered_links = Vec::new();
        for (position, file) in files {
            match covered.get(&position) {
                Some(directory_id) => covered_links.push((
                    *directory_id,
                    position,
                    file.url.as_str(),
                    file.kind.as_str(),
                )),
                None => remaining.push((position, file)),
            }
        }
        if !covered_links.is_empty() {
            let links = serde_json::to_string(&covered_links).map_err(encode_error)?;
            sqlx::query(
                "INSERT OR IGNORE INTO request_items (request_id, item_id, position, requested_url, requested_kind)
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?2)",
            )
            .bind(&request.id)
            .bind(links)
            .execute(&mut *conn)
            .await?;
        }
        if !remaining.is_empty() {
            new += insert_and_link_files(conn, &request.id, &remaining, &now).await?;
        }
    }

    Ok(EnqueueOutcome {
        id: request.id.clone(),
        urls: request.targets.len(),
        new,
        deduplicated: request.targets.len() - new,
    })
}

fn encode_error(error: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(error))
}

/// A pending directory of the same endpoint above `target`, if any.
async fn covering_directory(
    conn: &mut SqliteConnection,
    target: &PurgeTarget,
) -> Result<Option<i64>, sqlx::Error> {
    let ancestors = ancestor_directories(&target.url);
    if ancestors.is_empty() {
        return Ok(None);
    }
    let ancestors = serde_json::to_string(&ancestors).map_err(encode_error)?;
    sqlx::query_scalar(
        "SELECT i.id FROM json_each(?2) a
         CROSS JOIN items i ON i.state = 'pending' AND i.endpoint_id = ?1
                           AND i.url = a.value AND i.kind = 'directory'
         ORDER BY length(i.url) LIMIT 1",
    )
    .bind(&target.endpoint_id)
    .bind(ancestors)
    .fetch_optional(&mut *conn)
    .await
}

/// Inserts a pending item, or finds the pending twin. Returns its id and
/// whether it is new.
async fn insert_or_find(
    conn: &mut SqliteConnection,
    target: &PurgeTarget,
    now: &str,
) -> Result<(i64, bool), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4)
         ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING",
    )
    .bind(&target.endpoint_id)
    .bind(target.kind.as_str())
    .bind(&target.url)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok((inserted.last_insert_rowid(), true));
    }
    let id = sqlx::query_scalar(
        "SELECT id FROM items WHERE state = 'pending' AND endpoint_id = ?1 AND url = ?2 AND kind = ?3",
    )
    .bind(&target.endpoint_id)
    .bind(&target.url)
    .bind(target.kind.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok((id, false))
}

/// A new pending directory covers every pending item under it: those are
/// marked `merged` and will follow the directory's result.
async fn absorb_under(
    conn: &mut SqliteConnection,
    directory_id: i64,
    directory: &PurgeTarget,
    now: &str,
) -> Result<(), sqlx::Error> {
    // Every URL that starts with "…/dir/" sorts in ["…/dir/", "…/dir0"):
    // '0' is the character after '/'.
    let upper = format!("{}0", &directory.url[..directory.url.len() - 1]);
    sqlx::query(
        "UPDATE items SET state = 'merged', merged_into = ?1, updated_at = ?2
         WHERE state = 'pending' AND endpoint_id = ?3 AND url > ?4 AND url < ?5 AND id != ?1",
    )
    .bind(directory_id)
    .bind(now)
    .bind(&directory.endpoint_id)
    .bind(&directory.url)
    .bind(&upper)
    .execute(&mut *conn)
    .await?;
    // Keep merges one level deep: what was merged into an absorbed
    // sub-directory now follows this directory directly.
    sqlx::query(
        "UPDATE items SET merged_into = ?1
         WHERE state = 'merged' AND merged_into IN
             (SELECT id FROM items WHERE merged_into = ?1 AND kind = 'directory')",
    )
    .bind(directory_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Links a URL of the request to its item; `covered` is the URL asked for
/// when the item is a directory covering it.
async fn link(
    conn: &mut SqliteConnection,
    request_id: &str,
    item_id: i64,
    position: usize,
    covered: Option<&PurgeTarget>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO request_items (request_id, item_id, position, requested_url, requested_kind)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(request_id)
    .bind(item_id)
    .bind(position as i64)
    .bind(covered.map(|t| t.url.as_str()))
    .bind(covered.map(|t| t.kind.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// For each file under a pending directory of its endpoint: (position,
/// directory id). One statement; skipped when no directory is pending.
async fn covered_files(
    conn: &mut SqliteConnection,
    files: &[(usize, &PurgeTarget)],
) -> Result<Vec<(usize, i64)>, sqlx::Error> {
    let mut endpoints: Vec<&str> = files.iter().map(|(_, f)| f.endpoint_id.as_str()).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let endpoints_json = serde_json::to_string(&endpoints).map_err(encode_error)?;
    let any_pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM items
                        WHERE state = 'pending' AND kind = 'directory'
                          AND endpoint_id IN (SELECT value FROM json_each(?1)))",
    )
    .bind(endpoints_json)
    .fetch_one(&mut *conn)
    .await?;
    if !any_pending {
        return Ok(Vec::new());
    }
    let probes: Vec<(usize, &str, String)> = files
        .iter()
        .flat_map(|(position, file)| {
            ancestor_directories(&file.url)
                .into_iter()
                .map(move |ancestor| (*position, file.endpoint_id.as_str(), ancestor))
        })
        .collect();
    let probes = serde_json::to_string(&probes).map_err(encode_error)?;
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT p.value ->> 0, i.id FROM json_each(?1) p
         CROSS JOIN items i ON i.state = 'pending' AND i.kind = 'directory'
                     AND i.endpoint_id = p.value ->> 1 AND i.url = p.value ->> 2",
    )
    .bind(probes)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(p, id)| (p as usize, id)).collect())
}

/// Inserts the files that are not pending yet and links every file of the
/// request to its pending item. Returns how many were new.
async fn insert_and_link_files(
    conn: &mut SqliteConnection,
    request_id: &str,
    files: &[(usize, &PurgeTarget)],
    now: &str,
) -> Result<usize, sqlx::Error> {
    let rows: Vec<(&str, &str, &str, usize)> = files
        .iter()
        .map(|(position, f)| {
            (
                f.endpoint_id.as_str(),
                f.kind.as_str(),
                f.url.as_str(),
                *position,
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(encode_error)?;
    // `WHERE true` is required by SQLite's grammar for an upsert on a SELECT.
    let inserted = sqlx::query(
        "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, 'pending', ?2, ?2, ?2
         FROM json_each(?1) WHERE true
         ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING",
    )
    .bind(&rows)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO request_items (request_id, item_id, position)
         SELECT ?1, i.id, j.value ->> 3 FROM json_each(?2) j
         CROSS JOIN items i ON i.state = 'pending' AND i.endpoint_id = j.value ->> 0
                     AND i.url = j.value ->> 2 AND i.kind = j.value ->> 1",
    )
    .bind(request_id)
    .bind(&rows)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() as usize)
}

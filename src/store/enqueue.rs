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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::db::{Conn, json_list, on_conn};
use serde::Serialize;

use super::model::{MergeReason, NewRequest};
use super::returns::absorb_under;
use super::{RequestId, Store, StoreError, Timestamp, timestamp};
use crate::cdn::cache_rules::CacheFact;
use crate::target::{Kind, Priority, PurgeTarget, ancestor_directories};

/// What the client hears back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnqueueOutcome {
    pub id: RequestId,
    pub urls: usize,
    pub new: usize,
    pub deduplicated: usize,
    /// URLs to be preloaded (after their purge, or on their own).
    #[serde(skip_serializing_if = "is_zero")]
    pub preloads: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Store {
    /// Stores `request`; returns once it is committed to disk. Requests
    /// that reach the writer together are stored together, in a few
    /// statements for the whole group (see [`enqueue_many`]).
    pub async fn enqueue(&self, request: NewRequest) -> Result<EnqueueOutcome, StoreError> {
        self.submit_enqueue(Arc::new(request)).await
    }
}

/// A file of one of the requests being stored.
struct FileRow<'r> {
    request: usize,
    position: usize,
    target: &'r PurgeTarget,
    fact: Option<&'r CacheFact>,
}

impl FileRow<'_> {
    /// The URL the client asked for, where the item carries it under the
    /// object the edge caches.
    fn asked_as(&self) -> Option<&str> {
        self.fact.and_then(|f| f.asked_as.as_deref())
    }
}

/// Stores several requests in the current transaction. Directories are
/// handled one at a time (rare, and each may absorb other items); the files
/// of every request together, as sets: the statement count does not grow
/// with the number of requests or URLs.
///
/// Requests stored together are concurrent: a directory in one covers the
/// files of another, whichever arrived first.
pub(super) async fn enqueue_many(
    conn: &mut Conn<'_>,
    requests: &[Arc<NewRequest>],
) -> Result<Vec<EnqueueOutcome>, sqlx::Error> {
    let rows: Vec<(&str, String, &str, Option<&str>, &str)> = requests
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                timestamp(r.received_at),
                r.source.as_str(),
                r.label.as_deref(),
                r.priority.as_str(),
            )
        })
        .collect();
    let sql = conn.pick(
        "INSERT INTO requests (id, received_at, source, label, priority)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each($1)",
        "INSERT INTO requests (id, received_at, source, label, priority)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
         FROM json_array_elements($1::json)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(json_list(&rows)?)
    .execute(c).await.map(|r| r.rows_affected()))?;

    record_tags(conn, requests).await?;

    let mut new = vec![0usize; requests.len()];
    // The item of each URL, when a layer in front of the origin must purge
    // it first: the layers' rows are then written by item id.
    let mut links = requests
        .iter()
        .any(|r| !r.origin_purges.is_empty())
        .then(Links::default);
    for (index, request) in requests.iter().enumerate() {
        new[index] += enqueue_directories(conn, index, request, links.as_mut()).await?;
    }

    let files: Vec<FileRow<'_>> = requests
        .iter()
        .enumerate()
        .flat_map(|(request, r)| {
            r.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.kind == Kind::File)
                .map(move |(position, target)| FileRow {
                    request,
                    position,
                    target,
                    fact: r.cache_facts.get(&position),
                })
        })
        .collect();
    if !files.is_empty() {
        enqueue_files(conn, requests, &files, &mut new, links.as_mut()).await?;
    }
    mark_urgent(conn, requests).await?;
    if let Some(links) = links {
        let now = requests
            .iter()
            .map(|r| Timestamp::new(r.received_at))
            .max()
            .unwrap_or_else(|| Timestamp::new(time::OffsetDateTime::now_utc()));
        super::origin_purges::hold_for_origin(conn, requests, &links, now).await?;
    }
    let new_preloads = super::preloads::enqueue_for(conn, requests).await?;

    Ok(requests
        .iter()
        .zip(new.into_iter().zip(new_preloads))
        .map(|(request, (new, new_preloads))| {
            let urls = request.targets.len() + request.preload_only.len();
            let new = new + new_preloads;
            EnqueueOutcome {
                id: request.id.clone(),
                urls,
                new,
                deduplicated: urls.saturating_sub(new),
                preloads: request.preload_after_purge.len() + request.preload_only.len(),
            }
        })
        .collect())
}

/// The tags each request named, with how many URLs each gave (issue 35).
async fn record_tags(conn: &mut Conn<'_>, requests: &[Arc<NewRequest>]) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, &str, usize)> = requests
        .iter()
        .flat_map(|r| {
            r.tags
                .iter()
                .map(|(tag, urls)| (r.id.as_str(), tag.as_str(), *urls))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let sql = conn.pick(
        "INSERT OR IGNORE INTO request_tags (request_id, tag, urls)
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1)",
        "INSERT INTO request_tags (request_id, tag, urls)
         SELECT value ->> 0, value ->> 1, (value ->> 2)::bigint FROM json_array_elements($1::json)
         ON CONFLICT DO NOTHING",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(json_list(&rows)?)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The item each URL of the requests being stored is linked to, by
/// (index of the request, position in it), and the items this group
/// inserted held, whose layers' rows the origin stage writes.
#[derive(Debug, Default)]
pub(super) struct Links {
    pub items: HashMap<(usize, usize), i64>,
    pub fresh: HashSet<i64>,
}

/// A request's directories, one at a time (rare, and each may absorb
/// other items): a directory under a pending one links to it; a new one
/// absorbs what is pending under it. Returns how many were new.
async fn enqueue_directories(
    conn: &mut Conn<'_>,
    index: usize,
    request: &NewRequest,
    mut links: Option<&mut Links>,
) -> Result<usize, sqlx::Error> {
    let now = Timestamp::new(request.received_at);
    let mut directories: Vec<(usize, &PurgeTarget)> = request
        .targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == Kind::Directory)
        .collect();
    // Parents before children, so a child finds its parent pending.
    directories.sort_by_key(|(_, t)| t.url.len());
    let mut new = 0;
    for (position, directory) in directories {
        if let Some(id) = covering_directory(conn, directory).await? {
            link(conn, request.id.as_str(), id, position, Some(directory)).await?;
            if let Some(links) = links.as_deref_mut() {
                links.items.insert((index, position), id);
            }
            continue;
        }
        let (id, inserted) = insert_or_find(conn, directory, now).await?;
        if inserted {
            new += 1;
            let (endpoint, url) = (&directory.endpoint_id, &directory.url);
            absorb_under(conn, id, endpoint, url, MergeReason::Covered, now).await?;
        }
        link(conn, request.id.as_str(), id, position, None).await?;
        if let Some(links) = links.as_deref_mut() {
            links.items.insert((index, position), id);
        }
    }
    Ok(new)
}

/// Files: those under a pending directory link to it; the rest are
/// inserted unless already pending, and linked to their item.
async fn enqueue_files(
    conn: &mut Conn<'_>,
    requests: &[Arc<NewRequest>],
    files: &[FileRow<'_>],
    new: &mut [usize],
    mut links: Option<&mut Links>,
) -> Result<(), sqlx::Error> {
    let covered: HashMap<usize, i64> = covered_files(conn, files).await?.into_iter().collect();
    let mut covered_links = Vec::new();
    let mut remaining = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        match covered.get(&index) {
            Some(directory_id) => {
                if let Some(links) = links.as_deref_mut() {
                    links
                        .items
                        .insert((file.request, file.position), *directory_id);
                }
                covered_links.push((
                    requests[file.request].id.as_str(),
                    *directory_id,
                    file.position,
                    file.asked_as().unwrap_or(&file.target.url),
                    file.target.kind.as_str(),
                    requests[file.request]
                        .via_tag
                        .get(&file.position)
                        .map(String::as_str),
                ))
            }
            None => remaining.push(file),
        }
    }
    if !covered_links.is_empty() {
        let sql = conn.pick(
            "INSERT OR IGNORE INTO request_items (request_id, item_id, position, requested_url,
                                                 requested_kind, via_tag)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
             FROM json_each($1)",
            "INSERT INTO request_items (request_id, item_id, position, requested_url, requested_kind,
                                        via_tag)
             SELECT value ->> 0, (value ->> 1)::bigint, (value ->> 2)::bigint, value ->> 3, value ->> 4,
                    value ->> 5
             FROM json_array_elements($1::json)
             ON CONFLICT DO NOTHING",
        );
        on_conn!(conn, c => sqlx::query(sql)
        .bind(json_list(&covered_links)?)
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    if remaining.is_empty() {
        return Ok(());
    }

    // Files with something to say from the cache rules travel with four
    // more fields; a group without any keeps the plain statements (each
    // `->>` re-reads the row's JSON: the wide form cost 14 % of batch
    // ingest when every group paid for it).
    //
    // With origin caches, a file a layer must purge first is inserted
    // held (see `origin_purges::HELD`), in the wide form: holding it after
    // the insert rewrote every new item and halved batch intake.
    // A URL that came from a tag carries it to its link, in the same form.
    let held = links.is_some().then(|| held_positions(requests));
    let with_facts = held.is_some()
        || remaining.iter().any(|f| f.fact.is_some())
        || requests.iter().any(|r| !r.via_tag.is_empty());
    let rows = file_rows_json(requests, &remaining, with_facts, held.as_ref())?;
    let inserted = insert_items(conn, &rows, with_facts).await?;
    if !inserted.is_empty() {
        let mut first_asker: HashMap<(&str, &str), usize> = HashMap::new();
        for file in &remaining {
            first_asker
                .entry((file.target.endpoint_id.as_str(), file.target.url.as_str()))
                .or_insert(file.request);
        }
        for (endpoint_id, url) in &inserted {
            if let Some(request) = first_asker.get(&(endpoint_id.as_str(), url.as_str())) {
                new[*request] += 1;
            }
        }
    }
    let linked = link_items(conn, &rows, with_facts, links.is_some()).await?;
    if let Some(links) = links {
        let index: HashMap<&str, usize> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        for (request, item, position) in linked {
            if let Some(request) = index.get(request.as_str()) {
                links.items.insert((*request, position as usize), item);
            }
        }
        // Items this group inserted held: their layers' rows are the
        // origin stage's to write. Not when a request of the group skips
        // a layer: its rows (skipped ones among them) go in here, whole.
        if requests.iter().all(|r| r.skip_origin_caches.is_empty()) {
            let inserted: HashSet<(&str, &str)> = inserted
                .iter()
                .map(|(endpoint, url)| (endpoint.as_str(), url.as_str()))
                .collect();
            for file in &remaining {
                let key = (file.target.endpoint_id.as_str(), file.target.url.as_str());
                if inserted.contains(&key)
                    && let Some(item) = links.items.get(&(file.request, file.position))
                {
                    links.fresh.insert(*item);
                }
            }
        }
    }
    if remaining
        .iter()
        .any(|f| f.fact.is_some_and(|fact| fact.expires.is_some()))
    {
        extend_expiry(conn, &rows).await?;
    }
    Ok(())
}

/// The (request, position) of every URL a layer in front of the origin
/// purges before the CDN (a layer the request skips holds nothing).
fn held_positions(requests: &[Arc<NewRequest>]) -> HashSet<(usize, usize)> {
    requests
        .iter()
        .enumerate()
        .flat_map(|(index, request)| {
            request
                .origin_purges
                .iter()
                .filter(|(_, layer)| !request.skip_origin_caches.contains(layer))
                .map(move |(position, _)| (index, *position))
        })
        .collect()
}

/// The files as the statements read them (see [`FileJson`]); the cache
/// facts' four fields and the held items' `not_before` only `with_facts`.
fn file_rows_json(
    requests: &[Arc<NewRequest>],
    files: &[&FileRow<'_>],
    with_facts: bool,
    held: Option<&HashSet<(usize, usize)>>,
) -> Result<String, sqlx::Error> {
    let rows = files.iter().map(|f| {
        let request = &requests[f.request];
        let expires = f.fact.and_then(|fact| fact.expires.as_ref());
        (
            f.target.endpoint_id.as_str(),
            f.target.kind.as_str(),
            f.target.url.as_str(),
            f.position,
            request.id.as_str(),
            timestamp(request.received_at),
            f.asked_as(),
            f.asked_as().map(|_| "query_ignored"),
            expires.map(|(at, _)| timestamp(*at)),
            expires.map(|(_, rule)| rule.as_str()),
            held.is_some_and(|held| held.contains(&(f.request, f.position)))
                .then_some(super::origin_purges::HELD),
            request.via_tag.get(&f.position).map(String::as_str),
        )
    });
    if with_facts {
        json_list(&rows.collect::<Vec<FileJson<'_>>>())
    } else {
        json_list(
            &rows
                .map(|r| (r.0, r.1, r.2, r.3, r.4, r.5))
                .collect::<Vec<_>>(),
        )
    }
}

/// Inserts the pending items `rows` name, unless already pending. Only
/// the rows actually inserted come back; the first occurrence of a URL in
/// the list is the one inserted, so it is the first request that named it
/// that counts it as new. (`WHERE true` is required by SQLite's grammar
/// for an upsert on a SELECT.)
async fn insert_items(
    conn: &mut Conn<'_>,
    rows: &str,
    with_facts: bool,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = match with_facts {
        false => conn.pick(
            "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, 'pending', value ->> 5, value ->> 5, value ->> 5
             FROM json_each($1) WHERE true
             ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING
             RETURNING endpoint_id, url",
            "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, 'pending', value ->> 5, value ->> 5, value ->> 5
             FROM json_array_elements($1::json)
             ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING
             RETURNING endpoint_id, url",
        ),
        true => conn.pick(
            "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at,
                                expires_at, expiry_rule)
             SELECT value ->> 0, value ->> 1, value ->> 2, 'pending', coalesce(value ->> 10, value ->> 5),
                    value ->> 5, value ->> 5, value ->> 8, value ->> 9
             FROM json_each($1) WHERE true
             ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING
             RETURNING endpoint_id, url",
            "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at,
                                expires_at, expiry_rule)
             SELECT value ->> 0, value ->> 1, value ->> 2, 'pending', coalesce(value ->> 10, value ->> 5),
                    value ->> 5, value ->> 5, value ->> 8, value ->> 9
             FROM json_array_elements($1::json)
             ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING
             RETURNING endpoint_id, url",
        ),
    };
    on_conn!(conn, c => sqlx::query_as(sql)
    .bind(rows)
    .fetch_all(c).await)
}

// The link statements, as literals `concat!` can extend.
macro_rules! returning {
    () => {
        " RETURNING request_id, item_id, position"
    };
}

macro_rules! link_plain {
    () => {
        "INSERT OR IGNORE INTO request_items (request_id, item_id, position)
     SELECT j.value ->> 4, i.id, j.value ->> 3 FROM json_each($1) j
     CROSS JOIN items i ON i.state = 'pending' AND i.endpoint_id = j.value ->> 0
                 AND i.url = j.value ->> 2 AND i.kind = j.value ->> 1"
    };
}

macro_rules! link_plain_pg {
    () => {
        "INSERT INTO request_items (request_id, item_id, position)
     SELECT j.value ->> 4, i.id, (j.value ->> 3)::bigint
     FROM json_array_elements($1::json) AS j (value)
     JOIN items i ON i.state = 'pending' AND i.endpoint_id = j.value ->> 0
                 AND i.url = j.value ->> 2 AND i.kind = j.value ->> 1
     ON CONFLICT DO NOTHING"
    };
}

macro_rules! link_facts {
    () => {
        "INSERT OR IGNORE INTO request_items (request_id, item_id, position, requested_url,
                                         requested_kind, link_reason, via_tag)
     SELECT j.value ->> 4, i.id, j.value ->> 3, j.value ->> 6,
            CASE WHEN j.value ->> 6 IS NOT NULL THEN 'file' END, j.value ->> 7, j.value ->> 11
     FROM json_each($1) j
     CROSS JOIN items i ON i.state = 'pending' AND i.endpoint_id = j.value ->> 0
                 AND i.url = j.value ->> 2 AND i.kind = j.value ->> 1"
    };
}

macro_rules! link_facts_pg {
    () => {
        "INSERT INTO request_items (request_id, item_id, position, requested_url,
                                requested_kind, link_reason, via_tag)
     SELECT j.value ->> 4, i.id, (j.value ->> 3)::bigint, j.value ->> 6,
            CASE WHEN j.value ->> 6 IS NOT NULL THEN 'file' END, j.value ->> 7, j.value ->> 11
     FROM json_array_elements($1::json) AS j (value)
     JOIN items i ON i.state = 'pending' AND i.endpoint_id = j.value ->> 0
                 AND i.url = j.value ->> 2 AND i.kind = j.value ->> 1
     ON CONFLICT DO NOTHING"
    };
}

/// Links each file of `rows` to its pending item; with the URL asked for
/// where the item carries it under the cached object (query ignored).
/// With `returning`, the links come back as (request, item, position):
/// the origin caches' rows are then written by item id (issue 34).
async fn link_items(
    conn: &mut Conn<'_>,
    rows: &str,
    with_facts: bool,
    returning: bool,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let sql = match (with_facts, returning) {
        (false, false) => conn.pick(link_plain!(), link_plain_pg!()),
        (false, true) => conn.pick(
            concat!(link_plain!(), returning!()),
            concat!(link_plain_pg!(), returning!()),
        ),
        (true, false) => conn.pick(link_facts!(), link_facts_pg!()),
        (true, true) => conn.pick(
            concat!(link_facts!(), returning!()),
            concat!(link_facts_pg!(), returning!()),
        ),
    };
    if !returning {
        on_conn!(conn, c => sqlx::query(sql)
        .bind(rows)
        .execute(c).await.map(|r| r.rows_affected()))?;
        return Ok(Vec::new());
    }
    on_conn!(conn, c => sqlx::query_as(sql)
    .bind(rows)
    .fetch_all(c).await)
}

/// A file row as the statements read it: endpoint, kind, URL, position,
/// request, received at, URL asked for (query ignored), link reason,
/// expires at, expiry rule, `not_before` when held for the origin caches,
/// the tag the URL came from.
type FileJson<'r> = (
    &'r str,
    &'r str,
    &'r str,
    usize,
    &'r str,
    String,
    Option<&'r str>,
    Option<&'static str>,
    Option<String>,
    Option<&'r str>,
    Option<&'static str>,
    Option<&'r str>,
);

/// A new intent for a pending file moves its expiry to the newest
/// intent's (copies cached between the two may be the old content too);
/// an intent with no bound takes the bound away, so the URL is purged.
async fn extend_expiry(conn: &mut Conn<'_>, rows: &str) -> Result<(), sqlx::Error> {
    let sql = conn.pick(
        "UPDATE items SET
             expires_at = CASE WHEN items.expires_at IS NULL OR j.value ->> 8 IS NULL THEN NULL
                               ELSE max(items.expires_at, j.value ->> 8) END,
             expiry_rule = CASE WHEN j.value ->> 8 IS NULL THEN NULL ELSE j.value ->> 9 END
         FROM json_each($1) j
         WHERE items.state = 'pending' AND items.endpoint_id = j.value ->> 0
           AND items.url = j.value ->> 2 AND items.kind = j.value ->> 1",
        "UPDATE items SET
             expires_at = CASE WHEN items.expires_at IS NULL OR j.value ->> 8 IS NULL THEN NULL
                               ELSE greatest(items.expires_at, j.value ->> 8) END,
             expiry_rule = CASE WHEN j.value ->> 8 IS NULL THEN NULL ELSE j.value ->> 9 END
         FROM json_array_elements($1::json) AS j (value)
         WHERE items.state = 'pending' AND items.endpoint_id = j.value ->> 0
           AND items.url = j.value ->> 2 AND items.kind = j.value ->> 1",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(rows)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The items that carry an urgent request's URLs (its own, or the
/// directory a URL is merged into or covered by) are urgent, whoever else
/// asked for them.
async fn mark_urgent(conn: &mut Conn<'_>, requests: &[Arc<NewRequest>]) -> Result<(), sqlx::Error> {
    let urgent: Vec<&str> = requests
        .iter()
        .filter(|r| r.priority == Priority::Urgent)
        .map(|r| r.id.as_str())
        .collect();
    if urgent.is_empty() {
        return Ok(());
    }
    let sql = conn.pick(
        "UPDATE items SET urgent = 1
         WHERE state = 'pending' AND urgent = 0 AND id IN (
             SELECT CASE WHEN i.state = 'merged' THEN i.merged_into ELSE i.id END
             FROM request_items ri JOIN items i ON i.id = ri.item_id
             WHERE ri.request_id IN (SELECT value FROM json_each($1)))",
        "UPDATE items SET urgent = 1
         WHERE state = 'pending' AND urgent = 0 AND id IN (
             SELECT CASE WHEN i.state = 'merged' THEN i.merged_into ELSE i.id END
             FROM request_items ri JOIN items i ON i.id = ri.item_id
             WHERE ri.request_id IN (SELECT value FROM json_array_elements_text($1::json)))",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(json_list(&urgent)?)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A pending directory of the same endpoint above `target`, if any.
async fn covering_directory(
    conn: &mut Conn<'_>,
    target: &PurgeTarget,
) -> Result<Option<i64>, sqlx::Error> {
    let ancestors = ancestor_directories(&target.url);
    if ancestors.is_empty() {
        return Ok(None);
    }
    let ancestors = json_list(&ancestors)?;
    let sql = conn.pick(
        "SELECT i.id FROM json_each($2) a
         CROSS JOIN items i ON i.state = 'pending' AND i.endpoint_id = $1
                           AND i.url = a.value AND i.kind = 'directory'
         ORDER BY length(i.url) LIMIT 1",
        "SELECT i.id FROM json_array_elements_text($2::json) AS a (value)
         JOIN items i ON i.state = 'pending' AND i.endpoint_id = $1
                     AND i.url = a.value AND i.kind = 'directory'
         ORDER BY length(i.url) LIMIT 1",
    );
    on_conn!(conn, c => sqlx::query_scalar(sql)
    .bind(&target.endpoint_id)
    .bind(ancestors)
    .fetch_optional(c).await)
}

/// Inserts a pending item, or finds the pending twin. Returns its id and
/// whether it is new.
async fn insert_or_find(
    conn: &mut Conn<'_>,
    target: &PurgeTarget,
    now: Timestamp,
) -> Result<(i64, bool), sqlx::Error> {
    let inserted: Option<i64> = on_conn!(conn, c => sqlx::query_scalar(
        "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at)
         VALUES ($1, $2, $3, 'pending', $4, $4, $4)
         ON CONFLICT (endpoint_id, url, kind) WHERE state = 'pending' DO NOTHING
         RETURNING id",
    )
    .bind(&target.endpoint_id)
    .bind(target.kind.as_str())
    .bind(&target.url)
    .bind(now)
    .fetch_optional(c).await)?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT id FROM items WHERE state = 'pending' AND endpoint_id = $1 AND url = $2 AND kind = $3",
    )
    .bind(&target.endpoint_id)
    .bind(&target.url)
    .bind(target.kind.as_str())
    .fetch_one(c).await)?;
    Ok((id, false))
}

/// Links a URL of the request to its item; `covered` is the URL asked for
/// when the item is a directory covering it.
async fn link(
    conn: &mut Conn<'_>,
    request_id: &str,
    item_id: i64,
    position: usize,
    covered: Option<&PurgeTarget>,
) -> Result<(), sqlx::Error> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO request_items (request_id, item_id, position, requested_url, requested_kind)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(request_id)
    .bind(item_id)
    .bind(position as i64)
    .bind(covered.map(|t| t.url.as_str()))
    .bind(covered.map(|t| t.kind.as_str()))
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// For each file under a pending directory of its endpoint: (index in
/// `files`, directory id). One statement, skipped when no directory of
/// those endpoints is pending.
async fn covered_files(
    conn: &mut Conn<'_>,
    files: &[FileRow<'_>],
) -> Result<Vec<(usize, i64)>, sqlx::Error> {
    let mut endpoints: Vec<&str> = files
        .iter()
        .map(|f| f.target.endpoint_id.as_str())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let sql = conn.pick(
        "SELECT EXISTS (SELECT 1 FROM items
                        WHERE state = 'pending' AND kind = 'directory'
                          AND endpoint_id IN (SELECT value FROM json_each($1)))",
        "SELECT EXISTS (SELECT 1 FROM items
                        WHERE state = 'pending' AND kind = 'directory'
                          AND endpoint_id IN (SELECT value FROM json_array_elements_text($1::json)))",
    );
    let any_pending: bool = on_conn!(conn, c => sqlx::query_scalar(sql)
    .bind(json_list(&endpoints)?)
    .fetch_one(c).await)?;
    if !any_pending {
        return Ok(Vec::new());
    }
    let probes: Vec<(usize, &str, String)> = files
        .iter()
        .enumerate()
        .flat_map(|(index, file)| {
            ancestor_directories(&file.target.url)
                .into_iter()
                .map(move |ancestor| (index, file.target.endpoint_id.as_str(), ancestor))
        })
        .collect();
    let sql = conn.pick(
        "SELECT p.value ->> 0, i.id FROM json_each($1) p
         CROSS JOIN items i ON i.state = 'pending' AND i.kind = 'directory'
                     AND i.endpoint_id = p.value ->> 1 AND i.url = p.value ->> 2",
        "SELECT (p.value ->> 0)::bigint, i.id FROM json_array_elements($1::json) AS p (value)
         JOIN items i ON i.state = 'pending' AND i.kind = 'directory'
                     AND i.endpoint_id = p.value ->> 1 AND i.url = p.value ->> 2",
    );
    let rows: Vec<(i64, i64)> = on_conn!(conn, c => sqlx::query_as(sql)
    .bind(json_list(&probes)?)
    .fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(index, id)| (index as usize, id))
        .collect())
}

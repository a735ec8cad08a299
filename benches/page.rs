//! Status page benchmark: `cargo bench --bench page`.
//!
//! The page is refreshed every few seconds by every open browser; it must
//! not cost more as the history grows. The release daemon (with the
//! built-in emulator) is started on an empty database, then on one holding
//! a million finished items (100,000 requests of 10 URLs, 10,000 batches,
//! spread over 400 days, then over 30; and the last day's 86,400 calls),
//! and `GET /`, `GET /ui/requests/{id}`
//! and, for comparison, `GET /v1/stats` (which counts every state, so its
//! cost grows with the history) are timed over the socket, one client, 40
//! times each after a warm-up.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;

#[allow(dead_code)] // each benchmark uses part of the helpers
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const ITEMS: i64 = 1_000_000;

/// Fills `db` (schema applied by the daemon's own store) with a finished
/// history: rows as purgeq writes them, made by SQL in a few seconds.
async fn fill(db: &Path, days: i64) -> Duration {
    let started = Instant::now();
    let store = purgeq::store::Store::open(&purgeq::config::StoreSettings {
        path: db.to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("schema");
    store.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    // Times: 30 days back from now, in order. Request ids: UUIDv7 text
    // for their arrival time (ms), as the daemon writes them.
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let span_ms: i64 = days * 86_400_000;
    let sql = format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = OFF;
         BEGIN;
         CREATE TEMP TABLE n (i INTEGER PRIMARY KEY);
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {ITEMS} - 1)
         INSERT INTO n SELECT i FROM c;
         INSERT INTO batches (id, endpoint_id, state, not_before, files, directories, created_at,
                              task_track_id, sent_at, accepted_at, finished_at, attempts, operation)
         SELECT i + 1, 'ep', 'succeeded', t, 100, 0, t, 'task-' || i, t, t, t, 1, 'purge'
         FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%fZ', ({now_ms} - {span_ms} + i * ({span_ms} / 10000)) / 1000.0, 'unixepoch') AS t
               FROM n WHERE i < 10000);
         INSERT INTO items (id, endpoint_id, kind, url, state, attempts, not_before, batch_id,
                            created_at, updated_at, finished_at)
         SELECT i + 1, 'ep', 'file', 'http://www.example.com/h/' || i || '.js', 'succeeded', 1, t,
                i / 100 + 1, t, t, t
         FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%fZ', ({now_ms} - {span_ms} + i * ({span_ms} / {ITEMS})) / 1000.0, 'unixepoch') AS t
               FROM n);
         INSERT INTO requests (id, received_at, source, label, priority)
         SELECT printf('%08x-%04x-7000-8000-%012x', ms >> 16, ms & 65535, i), t, 'bench', 'deploy ' || i, 'normal'
         FROM (SELECT i, {now_ms} - {span_ms} + i * 10 * ({span_ms} / {ITEMS}) AS ms,
                      strftime('%Y-%m-%dT%H:%M:%fZ', ({now_ms} - {span_ms} + i * 10 * ({span_ms} / {ITEMS})) / 1000.0, 'unixepoch') AS t
               FROM n WHERE i < {ITEMS} / 10);
         INSERT INTO request_items (request_id, item_id, position)
         SELECT r.id, r.k * 10 + p.i + 1, p.i
         FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM requests WHERE source = 'bench') r
         CROSS JOIN (SELECT i FROM n WHERE i < 10) p;
         INSERT INTO calls (at, operation, outcome)
         SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ({now_ms} - 86400000 + i * 1000) / 1000.0, 'unixepoch'),
                CASE WHEN i % 2 = 0 THEN 'purge' ELSE 'query' END,
                CASE WHEN i % 50 = 0 THEN 'throttled' ELSE 'accepted' END
         FROM n WHERE i < 86400;
         COMMIT;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("fill");
    conn.close().await.expect("close");
    started.elapsed()
}

async fn time_gets(client: &reqwest::Client, path: &str) -> (f64, f64) {
    for _ in 0..3 {
        let _ = client.get(format!("http://localhost{path}")).send().await;
    }
    let mut ms = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let response = client
            .get(format!("http://localhost{path}"))
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.bytes().await.expect("body");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 39 / 40])
}

async fn measure(label: &str, db: Option<&Path>, request: Option<&str>) {
    let daemon = common::BenchDaemon::start_on(BIN, db, "", "", "");
    let client = reqwest::Client::builder()
        .unix_socket(daemon.socket.clone())
        .build()
        .expect("client");
    let mut paths = vec!["/".to_owned(), "/v1/stats".to_owned()];
    if let Some(id) = request {
        paths.push(format!("/ui/requests/{id}"));
    }
    for path in paths {
        let (median, p97) = time_gets(&client, &path).await;
        println!("{label:>28}  GET {path:<54} median {median:7.2} ms  p97.5 {p97:7.2} ms");
    }
}

#[tokio::main]
async fn main() {
    println!("status page: one client over the socket, 40 GETs each after 3 warm-ups");
    measure("empty database", None, None).await;
    // 400 days: the history of a subscription purging its whole quota
    // (2,500 URLs a day) for over a year. 30 days: ten times the quota's
    // URLs a day (coalesced twins, merged files), so the last day and
    // hour the charts read are heavy.
    for days in [400, 30] {
        // PURGEQ_BENCH_DB=path keeps the filled database there, to look
        // into a slow query with `sqlite3` (EXPLAIN QUERY PLAN).
        let dir = tempfile::tempdir().expect("tempdir");
        let db = std::env::var_os("PURGEQ_BENCH_DB")
            .map_or_else(|| dir.path().join("history.db"), std::path::PathBuf::from);
        let _ = std::fs::remove_file(&db);
        let took = fill(&db, days).await;
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        println!(
            "filled in {:.1} s: {ITEMS} finished items over {days} days, {} requests, 10,000 batches, 86,400 calls in the last day; {:.0} MB",
            took.as_secs_f64(),
            ITEMS / 10,
            size as f64 / 1e6
        );
        let newest = {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .expect("open");
            let id: String = sqlx::query_scalar("SELECT max(id) FROM requests")
                .fetch_one(&mut conn)
                .await
                .expect("id");
            conn.close().await.expect("close");
            id
        };
        measure(&format!("1M items, {days} days"), Some(&db), Some(&newest)).await;
    }
}

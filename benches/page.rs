//! Status page benchmark: `cargo bench --bench page`.
//!
//! The page is refreshed every few seconds by every open browser; it must
//! not cost more as the history grows. The release daemon (with the
//! built-in emulator) is started on an empty database, then on one holding
//! a million finished items (100,000 requests of 10 URLs, 10,000 batches,
//! spread over 400 days, then over 30; and the last day's 86,400 calls),
//! and `GET /`, `GET /ui/requests/{id}`
//! and `GET /v1/stats` are timed over the socket, one client, 40
//! times each after a warm-up.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const ITEMS: i64 = 1_000_000;

/// `tests/fixtures/finished_history.sql` for `items` over the `span_ms`
/// before `now_ms`.
fn history_sql(items: i64, now_ms: i64, span_ms: i64) -> String {
    include_str!("../tests/fixtures/finished_history.sql")
        .replace("$ITEMS", &items.to_string())
        .replace("$NOW_MS", &now_ms.to_string())
        .replace("$SPAN_MS", &span_ms.to_string())
}

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
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let span_ms: i64 = days * 86_400_000;
    let sql = history_sql(ITEMS, now_ms, span_ms);
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("fill");
    conn.close().await.expect("close");
    started.elapsed()
}

async fn time_gets(client: &reqwest::Client, path: &str) -> (f64, f64) {
    let ms = common::timed_gets(client, path, 40).await;
    (ms[ms.len() / 2], ms[ms.len() * 39 / 40])
}

/// The search page's questions about the URL purged 25 days ago in a
/// history of `days` (see `history_sql`: item `i` is `h/{i}.js`, in
/// request `deploy {i / 10}` and call `task-{i / 100}`).
fn searches(days: i64) -> Vec<String> {
    let i = ITEMS - ITEMS * 25 / days;
    let day = (time::OffsetDateTime::now_utc() - time::Duration::days(25)).date();
    vec![
        format!("/ui/search?url=http%3A%2F%2Fwww.example.com%2Fh%2F{i}.js&match=exact"),
        format!(
            "/ui/search?url=http%3A%2F%2Fwww.example.com%2Fh%2F{}",
            i / 10
        ),
        format!("/ui/search?task=task-{}", i / 100),
        format!("/ui/search?label=deploy+{}", i / 10),
        format!("/ui/search?since={day}&until={day}"),
        "/ui/search?state=failed".to_owned(),
    ]
}

async fn measure(label: &str, db: Option<&Path>, request: Option<&str>, days: Option<i64>) {
    let daemon = common::BenchDaemon::start_on(BIN, db, "", "", "");
    let client = reqwest::Client::builder()
        .unix_socket(daemon.socket.clone())
        .build()
        .expect("client");
    let mut paths = vec!["/".to_owned(), "/v1/stats".to_owned()];
    if let Some(id) = request {
        paths.push(format!("/ui/requests/{id}"));
    }
    if let Some(days) = days {
        let i = ITEMS - ITEMS * 25 / days;
        let found = client
            .get(format!("http://localhost{}", searches(days)[0]))
            .send()
            .await
            .expect("search")
            .text()
            .await
            .expect("body");
        assert!(
            found.contains(&format!("h/<wbr>{i}.js")),
            "the URL purged 25 days ago is found"
        );
        paths.extend(searches(days));
    }
    for path in paths {
        let (median, p97) = time_gets(&client, &path).await;
        println!("{label:>28}  GET {path:<72} median {median:7.2} ms  p97.5 {p97:7.2} ms");
    }
}

#[tokio::main]
async fn main() {
    println!("status page: one client over the socket, 40 GETs each after 3 warm-ups");
    measure("empty database", None, None, None).await;
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
        measure(
            &format!("1M items, {days} days"),
            Some(&db),
            Some(&newest),
            Some(days),
        )
        .await;
    }
}

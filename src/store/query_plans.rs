//! The status page's reads stay bounded: checked on SQLite's own plans.
//!
//! The page is refreshed every few seconds by every open browser, on a
//! history that grows for years, so none of its reads may walk a table or
//! an index from end to end. A timed test would pass on a small database
//! and fail by chance on a slow machine; the query plan says the same
//! thing exactly. Each read is planned on a real database with the
//! project's migrations, and every step of its plan must be a `SEARCH`
//! (an index range or a key) or a `SCAN` named here with what bounds it,
//! and the reads of a time window must not search by state (the range of
//! `succeeded` is the whole history).
//! The database is new and never analyzed, as the daemon's are (it does
//! not run `ANALYZE`): the planner has no statistics, so these are the
//! plans a field database gets. `benches/page.rs` measures the same
//! reads on a million items.

use sqlx::Connection;

use super::Store;
use super::batches::{PICK_URGENT, URGENT_ELIGIBLE, URGENT_WAITING};
use super::cache_policies::NEXT_EXPIRY;
use super::charts::{CHART_SQLITE, HISTORY_FROM_SQLITE, RECENT_ERRORS};
use super::origin_purges::{
    DUE_AT_LAYER, HOLD_ITEMS, NEXT_AT_LAYER, RELEASE_ITEMS, START_LAYERS, UNSTARTED_HELD,
};
use super::preloads::WAITING_PRELOADS;
use super::reads::{OLDEST_PENDING, REQUEST_SUMMARIES, REQUEST_URLS};
use super::search::{
    SEARCH_BY_LABEL_SQLITE, SEARCH_BY_REQUEST_SQLITE, SEARCH_BY_TASK_SQLITE, SEARCH_BY_TIME_SQLITE,
    SEARCH_BY_URL_SQLITE, WINDOW_END_LABEL_SQLITE, WINDOW_END_TIME_SQLITE,
};
use super::tags::EXPAND_TAG;
use super::verifications::{STALE_NOW, SUCCEEDED_UNVERIFIED};
use crate::config::StoreSettings;

/// What bounds a read.
#[derive(Clone, Copy, PartialEq)]
enum Bound {
    /// Only what is waiting or in flight: it may search the state indexes
    /// for the open states.
    Backlog,
    /// A key, a limit or a time window: it must not search by state.
    History,
}

/// The reads behind `GET /` and `GET /ui/requests/{id}`, with what bounds
/// each and the scans their plans may hold (a step starting with one of
/// these texts), and why those are bounded.
const READS: &[(&str, &str, Bound, &[&str])] = &[
    // The newest `limit` requests: the primary key walked from its end,
    // stopped by LIMIT; then each of them asked by its keys.
    (
        "request summaries",
        REQUEST_SUMMARIES,
        Bound::History,
        &["SCAN requests", "SCAN p", "SCAN k", "SCAN e"],
    ),
    // The view's output: `request_id = $1` is pushed into both of its
    // arms, which search by key.
    (
        "one request's URLs",
        REQUEST_URLS,
        Bound::History,
        &["SCAN history"],
    ),
    // The links that want a preload, by their partial index; each one's
    // item and the item it was merged into by key.
    (
        "preloads waiting",
        WAITING_PRELOADS,
        Bound::History,
        &[
            "SCAN ri USING INDEX request_items_preload",
            "SCAN ri USING COVERING INDEX request_items_preload",
        ],
    ),
    (
        "oldest pending",
        OLDEST_PENDING,
        Bound::History,
        &["SCAN oldest"],
    ),
    // The partial index of failed calls, from its end, stopped by LIMIT.
    (
        "recent errors",
        RECENT_ERRORS,
        Bound::History,
        &["SCAN calls USING INDEX calls_errors"],
    ),
    // A range of the per-minute totals' key.
    ("charts", CHART_SQLITE, Bound::History, &[]),
    // The first of the `urls` chart's key: one step of its index.
    ("history start", HISTORY_FROM_SQLITE, Bound::History, &[]),
    // Not the page's, but run on every intent with origin caches, every
    // origin-stage pass and every second of verification: bounded by
    // the ids or the time window they are given (the JSON list is
    // theirs), never by the backlog or the history (issues 33, 34).
    (
        "hold for origin caches",
        HOLD_ITEMS,
        Bound::History,
        &["SCAN json_each"],
    ),
    (
        "release from origin caches",
        RELEASE_ITEMS,
        Bound::History,
        &["SCAN json_each"],
    ),
    (
        "layer purges of new requests",
        START_LAYERS,
        Bound::History,
        &["SCAN p VIRTUAL TABLE"],
    ),
    (
        "succeeded, unverified",
        SUCCEEDED_UNVERIFIED,
        Bound::History,
        &[],
    ),
    ("stale now", STALE_NOW, Bound::History, &[]),
    // The origin stage, on each wake (each intake): one layer's range,
    // never the other layers' backlog (issue 34).
    (
        "origin purges due at a layer",
        DUE_AT_LAYER,
        Bound::Backlog,
        &[],
    ),
    (
        "next origin purge at a layer",
        NEXT_AT_LAYER,
        Bound::Backlog,
        &[],
    ),
    ("held items to start", UNSTARTED_HELD, Bound::History, &[]),
    // The expiry watch, at most once a second.
    ("next expiry", NEXT_EXPIRY, Bound::History, &[]),
    // The batcher's urgent lane, on each cut: the partial index of urgent
    // pending items only (a hotfix's few URLs, not the backlog).
    (
        "urgent items waiting",
        URGENT_WAITING,
        Bound::History,
        &["SCAN items USING COVERING INDEX items_pending_urgent"],
    ),
    ("urgent items to cut", PICK_URGENT, Bound::History, &[]),
    (
        "urgent items eligible",
        URGENT_ELIGIBLE,
        Bound::History,
        &["SCAN eligible"],
    ),
    // A purge by tag expands at the door (issue 35): one range of the
    // tag's key, each URL by id.
    ("expand a tag", EXPAND_TAG, Bound::History, &[]),
    // Search (issue 36): each driven by one index range, the window or
    // the cap bounding what a range may give; the rest by key.
    (
        "search by request",
        SEARCH_BY_REQUEST_SQLITE,
        Bound::History,
        &["SCAN l"],
    ),
    (
        "search by TaskTrackId",
        SEARCH_BY_TASK_SQLITE,
        Bound::History,
        &["SCAN l"],
    ),
    (
        "search by URL",
        SEARCH_BY_URL_SQLITE,
        Bound::History,
        &["SCAN l"],
    ),
    (
        "search by label",
        SEARCH_BY_LABEL_SQLITE,
        Bound::History,
        &["SCAN l"],
    ),
    (
        "search by time",
        SEARCH_BY_TIME_SQLITE,
        Bound::History,
        &["SCAN l"],
    ),
    (
        "search window, label",
        WINDOW_END_LABEL_SQLITE,
        Bound::History,
        &[],
    ),
    (
        "search window, time",
        WINDOW_END_TIME_SQLITE,
        Bound::History,
        &[],
    ),
];

/// Why a plan's step may walk the whole history, if it may.
fn unbounded(step: &str, bound: Bound, allowed: &[&str]) -> Option<&'static str> {
    if step.starts_with("SCAN ") && !allowed.iter().any(|a| step.starts_with(a)) {
        return Some("a scan");
    }
    let by_state = step.contains("INDEX items_state") || step.contains("INDEX preloads_state");
    if step.starts_with("SEARCH ") && by_state && bound == Bound::History {
        return Some("a search by state in a read of the history");
    }
    None
}

/// Every step of the page's reads that may walk a whole table or index,
/// as `read: step (why)`.
async fn unbounded_reads(store: &Store) -> Vec<String> {
    let mut found = Vec::new();
    for (name, sql, bound, allowed) in READS {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(store.reader.sqlite().expect("plans are SQLite's"))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!plan.is_empty(), "{name}: no plan");
        // Shown when the test fails (the harness keeps it otherwise).
        eprintln!("{name}:");
        for (id, parent, _, step) in &plan {
            eprintln!("  {id:>3} {parent:>3} {step}");
        }
        for (_, _, _, step) in &plan {
            if let Some(why) = unbounded(step, *bound, allowed) {
                found.push(format!("{name}: {step} ({why})"));
            }
        }
    }
    found
}

/// On a new database, on the same with a large history (100,000 finished
/// items, `tests/fixtures/finished_history.sql`) and once more after
/// `ANALYZE` (an operator may run it, and the plans then follow the
/// statistics).
#[tokio::test]
async fn every_read_of_the_status_page_is_an_index_range_or_bounded_by_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plans.db");
    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..Default::default()
    })
    .await
    .expect("store");
    let mut found = unbounded_reads(&store).await;

    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let history = include_str!("../../tests/fixtures/finished_history.sql")
        .replace("$ITEMS", "100000")
        .replace("$NOW_MS", &now_ms.to_string())
        .replace("$SPAN_MS", &(400 * 86_400_000_i64).to_string());
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    sqlx::raw_sql(sqlx::AssertSqlSafe(history))
        .execute(&mut conn)
        .await
        .expect("history");
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(items, 100_000);
    found.extend(
        unbounded_reads(&store)
            .await
            .into_iter()
            .map(|step| format!("large history: {step}")),
    );
    sqlx::raw_sql("ANALYZE")
        .execute(&mut conn)
        .await
        .expect("analyze");
    conn.close().await.expect("close");
    found.extend(
        unbounded_reads(&store)
            .await
            .into_iter()
            .map(|step| format!("analyzed: {step}")),
    );
    store.close().await;
    assert!(
        found.is_empty(),
        "reads that walk a whole table or index:\n{}",
        found.join("\n")
    );
}

/// The check itself catches a full scan (else the test above could pass
/// for nothing).
#[tokio::test]
async fn a_read_of_the_whole_history_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&StoreSettings {
        path: dir.path().join("plans.db"),
        ..Default::default()
    })
    .await
    .expect("store");
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM history WHERE request_id IN (SELECT id FROM requests LIMIT 5)",
    )
    .fetch_all(store.reader.sqlite().expect("plans are SQLite's"))
    .await
    .expect("plan");
    let by_state: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM items WHERE state = 'succeeded' AND finished_at >= $1",
    )
    .fetch_all(store.reader.sqlite().expect("plans are SQLite's"))
    .await
    .expect("plan");
    store.close().await;
    assert!(
        plan.iter()
            .any(|(_, _, _, step)| unbounded(step, Bound::History, &[]).is_some()),
        "{plan:?}"
    );
    assert!(
        by_state
            .iter()
            .any(|(_, _, _, step)| unbounded(step, Bound::History, &[]).is_some()),
        "{by_state:?}"
    );
}

/// Where SQLite is told an index (`INDEXED BY`: without statistics it
/// prefers `items_state` and walks every pending item), PostgreSQL's text
/// is the same statement without it.
#[test]
fn indexed_by_is_the_only_difference() {
    use super::batches::{PICK_URGENT_POSTGRES, URGENT_ELIGIBLE_POSTGRES, URGENT_WAITING_POSTGRES};
    use super::cache_policies::{EXPIRE_DUE, EXPIRE_DUE_POSTGRES, NEXT_EXPIRY_POSTGRES};
    use super::origin_purges::UNSTARTED_HELD_POSTGRES;
    use super::plan::{DEFER_EXPIRING, DEFER_EXPIRING_POSTGRES};
    use super::reads::OLDEST_PENDING_POSTGRES;
    let pairs = [
        (URGENT_ELIGIBLE, URGENT_ELIGIBLE_POSTGRES),
        (URGENT_WAITING, URGENT_WAITING_POSTGRES),
        (PICK_URGENT, PICK_URGENT_POSTGRES),
        (UNSTARTED_HELD, UNSTARTED_HELD_POSTGRES),
        (OLDEST_PENDING, OLDEST_PENDING_POSTGRES),
        (NEXT_EXPIRY, NEXT_EXPIRY_POSTGRES),
        (EXPIRE_DUE, EXPIRE_DUE_POSTGRES),
        (DEFER_EXPIRING, DEFER_EXPIRING_POSTGRES),
    ];
    for (sqlite, postgres) in pairs {
        assert!(sqlite.contains(" INDEXED BY "), "{sqlite}");
        let mut without = sqlite.to_owned();
        while let Some(at) = without.find(" INDEXED BY ") {
            let rest = &without[at + " INDEXED BY ".len()..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            without = format!("{}{}", &without[..at], &rest[end..]);
        }
        assert_eq!(without, postgres);
    }
}

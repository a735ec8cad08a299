//! Databases in the field upgrade in place: a database made by an earlier
//! released schema (its migrations applied by sqlx's migrator exactly as
//! that binary did) opens with this one, and nothing in it is lost. (The
//! first schema's own test is in `state_machine.rs`.)

mod common;

use common::{quota_chart_totals, series_total};
use purgeq::config::StoreSettings;
use purgeq::store::{ItemState, RequestId, RequestState, Store};
use sqlx::{Connection, SqliteConnection};

/// A database with the released migrations `names` applied.
async fn released_database(dir: &std::path::Path, names: &[&str]) -> SqliteConnection {
    let path = dir.join("purgeq.db");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("create");
    let released = dir.join("released-migrations");
    std::fs::create_dir(&released).expect("dir");
    for name in names {
        std::fs::copy(
            format!("{}/migrations/{name}", env!("CARGO_MANIFEST_DIR")),
            released.join(name),
        )
        .expect("copy");
    }
    sqlx::migrate::Migrator::new(released.as_path())
        .await
        .expect("migrator")
        .run(&mut conn)
        .await
        .expect("released schema");
    conn
}

/// Opens the released database at `path` with this build: its
/// migrations run, the upgrade under test.
async fn upgraded(path: &std::path::Path) -> Store {
    Store::open(&StoreSettings {
        path: path.to_owned(),
        ..StoreSettings::default()
    })
    .await
    .expect("upgrade")
}

/// request_id, url, merged_into_url, merge_reason, priority.
type HistoryRow = (String, String, Option<String>, Option<String>, String);

#[tokio::test]
async fn a_second_schema_database_upgrades_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &["0001_initial.sql", "0002_truthful_states.sql"],
    )
    .await;
    let t = "2026-11-25T00:00:00.000Z";
    // A finished request, one in flight with a URL merged into a pending
    // directory, a cancelled one, a charged batch, a wait.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests (id, received_at, source, label) VALUES
             ('r1', '{t}', 'test', 'deploy 1'), ('r2', '{t}', 'test', NULL),
             ('r3', '{t}', 'test', NULL);
         UPDATE requests SET cancelled_at = '{t}' WHERE id = 'r3';
         INSERT INTO batches (id, endpoint_id, state, not_before, files, directories, created_at,
                              task_track_id, charged_day, charged_subscription)
             VALUES (1, 'ep', 'succeeded', '{t}', 1, 0, '{t}', 'task-1', '2026-11-25', 'sub');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            merged_into, batch_id, finished_at) VALUES
             (1, 'ep', 'file', 'http://e.com/a', 'succeeded', '{t}', '{t}', '{t}', NULL, 1, '{t}'),
             (2, 'ep', 'directory', 'http://e.com/d/', 'pending', '{t}', '{t}', '{t}', NULL, NULL, NULL),
             (3, 'ep', 'file', 'http://e.com/d/f', 'merged', '{t}', '{t}', '{t}', 2, NULL, NULL),
             (4, 'ep', 'file', 'http://e.com/c', 'cancelled', '{t}', '{t}', '{t}', NULL, NULL, '{t}');
         INSERT INTO request_items VALUES ('r1', 1, 0, NULL, NULL), ('r2', 3, 0, NULL, NULL),
                                          ('r3', 4, 0, NULL, NULL);
         INSERT INTO quota_days VALUES ('sub', '2026-11-25', 1, 0);
         INSERT INTO waits VALUES ('quota:file', 'waiting for quota', '{t}');"
    )))
    .execute(&mut conn)
    .await
    .expect("rows of the second schema");
    conn.close().await.expect("close");

    let path = dir.path().join("purgeq.db");
    let store = upgraded(&path).await;
    let r1 = store
        .request_status(&RequestId::parse("r1"))
        .await
        .expect("r1")
        .expect("r1");
    assert_eq!(r1.state, RequestState::Succeeded);
    let r2 = store
        .request_status(&RequestId::parse("r2"))
        .await
        .expect("r2")
        .expect("r2");
    assert_eq!(r2.state, RequestState::InProgress);
    // A merged URL reads as the directory carrying it.
    assert_eq!(r2.items[0].state, ItemState::Pending);
    let r3 = store
        .request_status(&RequestId::parse("r3"))
        .await
        .expect("r3")
        .expect("r3");
    assert_eq!(r3.state, RequestState::Cancelled);
    assert_eq!(store.state_counts().await.expect("counts").pending, 1);
    assert_eq!(store.waits().await.expect("waits").len(), 1, "waits kept");

    // The new columns have their defaults; the views read old rows.
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT request_id, url, merged_into_url, merge_reason, priority FROM history
         ORDER BY request_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("history");
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(
        history[1],
        (
            "r2".into(),
            "http://e.com/d/f".into(),
            Some("http://e.com/d/".into()),
            None,
            "normal".into()
        ),
        "a merge made before the upgrade has no recorded reason"
    );
    let urgent: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE urgent = 1")
        .fetch_one(&mut conn)
        .await
        .expect("urgent");
    assert_eq!(urgent, 0);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM queue")
        .fetch_one(&mut conn)
        .await
        .expect("queue view");
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn a_third_schema_database_upgrades_to_preloads_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
        ],
    )
    .await;
    let t = "2026-11-25T00:00:00.000Z";
    // A finished request, one whose batch is on the wire (charged), one
    // with a URL promoted into a pending directory, and the day's ledger.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests (id, received_at, source, label, priority) VALUES
             ('r1', '{t}', 'test', 'deploy 1', 'normal'), ('r2', '{t}', 'test', NULL, 'urgent'),
             ('r3', '{t}', 'test', NULL, 'normal');
         INSERT INTO batches (id, endpoint_id, state, not_before, files, directories, created_at,
                              task_track_id, charged_day, charged_subscription) VALUES
             (1, 'ep', 'succeeded', '{t}', 1, 0, '{t}', 'task-1', '2026-11-25', 'sub'),
             (2, 'ep', 'sending', '{t}', 1, 0, '{t}', NULL, '2026-11-25', 'sub');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            merged_into, batch_id, finished_at, urgent, merge_reason, promoted) VALUES
             (1, 'ep', 'file', 'http://e.com/a', 'succeeded', '{t}', '{t}', '{t}', NULL, 1, '{t}', 0, NULL, 0),
             (2, 'ep', 'file', 'http://e.com/b', 'sending', '{t}', '{t}', '{t}', NULL, 2, NULL, 1, NULL, 0),
             (3, 'ep', 'directory', 'http://e.com/d/', 'pending', '{t}', '{t}', '{t}', NULL, NULL, NULL, 0, NULL, 1),
             (4, 'ep', 'file', 'http://e.com/d/f', 'merged', '{t}', '{t}', '{t}', 3, NULL, NULL, 0, 'promoted', 0);
         INSERT INTO request_items VALUES ('r1', 1, 0, NULL, NULL), ('r2', 2, 0, NULL, NULL),
                                          ('r3', 4, 0, NULL, NULL);
         INSERT INTO quota_days VALUES ('sub', '2026-11-25', 2, 0);"
    )))
    .execute(&mut conn)
    .await
    .expect("rows of the third schema");
    conn.close().await.expect("close");

    let path = dir.path().join("purgeq.db");
    let store = upgraded(&path).await;
    let state_of = |id: &'static str| {
        let store = &store;
        async move {
            store
                .request_status(&RequestId::parse(id))
                .await
                .expect("status")
                .expect("request")
        }
    };
    let r1 = state_of("r1").await;
    assert_eq!(r1.state, RequestState::Succeeded);
    assert_eq!(r1.items[0].preload_state, None, "no preload was asked");
    assert_eq!(state_of("r2").await.state, RequestState::InProgress);
    let r3 = state_of("r3").await;
    assert_eq!(r3.items[0].merge_reason.as_deref(), Some("promoted"));
    assert_eq!(r3.items[0].state, ItemState::Pending);

    // The batch on the wire is a purge, still charged to its day; the
    // ledger has a preload column at 0.
    let sending = store
        .sending_batches(&[purgeq::store::BatchId(2)])
        .await
        .expect("sending");
    assert_eq!(sending.len(), 1);
    assert_eq!(sending[0].operation, purgeq::store::Operation::Purge);
    assert_eq!(sending[0].file_urls(), vec!["http://e.com/b".to_owned()]);
    let quota = store
        .quota_use(&purgeq::store::QuotaAccount {
            subscription_id: "sub".into(),
            day: "2026-11-25".into(),
        })
        .await
        .expect("quota");
    assert_eq!((quota.files_used, quota.files_reserved), (2, 1));
    assert_eq!(quota.preloads_used, 0);

    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let history: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT request_id, url, operation, preload_state FROM history ORDER BY request_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("history");
    assert_eq!(
        history,
        vec![
            ("r1".into(), "http://e.com/a".into(), "purge".into(), None),
            ("r2".into(), "http://e.com/b".into(), "purge".into(), None),
            ("r3".into(), "http://e.com/d/f".into(), "purge".into(), None),
        ]
    );
    let queued: Vec<(String, String)> =
        sqlx::query_as("SELECT url, operation FROM queue ORDER BY url")
            .fetch_all(&mut conn)
            .await
            .expect("queue view");
    assert_eq!(queued.len(), 2, "{queued:?}");
}

/// The schema released with preloads (0001–0004) gains the status page's
/// `calls` table and `batches_accepted` index: requests, preloads and the
/// ledger read as before, and the page's reads work on the old rows.
#[tokio::test]
async fn a_fourth_schema_database_upgrades_to_the_status_page_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
            "0004_preloads.sql",
        ],
    )
    .await;
    let t = "2026-12-01T10:00:00.000Z";
    // r1: purged, then preloaded; r2: purged, its preload pending; r3: a
    // preload on its own, failed; r4: a purge on the wire.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests (id, received_at, source, label, priority) VALUES
             ('r1', '{t}', 'test', 'deploy 1', 'normal'), ('r2', '{t}', 'test', 'deploy 2', 'normal'),
             ('r3', '{t}', 'test', NULL, 'normal'), ('r4', '{t}', 'test', NULL, 'normal');
         INSERT INTO batches (id, endpoint_id, state, not_before, files, directories, created_at,
                              task_track_id, accepted_at, charged_day, charged_subscription, operation) VALUES
             (1, 'ep', 'succeeded', '{t}', 2, 0, '{t}', 'task-1', '{t}', '2026-12-01', 'sub', 'purge'),
             (2, 'ep', 'succeeded', '{t}', 1, 0, '{t}', 'task-2', '{t}', '2026-12-01', 'sub', 'preload'),
             (3, 'ep', 'sending', '{t}', 1, 0, '{t}', NULL, NULL, '2026-12-01', 'sub', 'purge');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            batch_id, finished_at) VALUES
             (1, 'ep', 'file', 'http://e.com/a', 'succeeded', '{t}', '{t}', '{t}', 1, '{t}'),
             (2, 'ep', 'file', 'http://e.com/b', 'succeeded', '{t}', '{t}', '{t}', 1, '{t}'),
             (3, 'ep', 'file', 'http://e.com/c', 'sending', '{t}', '{t}', '{t}', 3, NULL);
         INSERT INTO request_items (request_id, item_id, position, preload) VALUES
             ('r1', 1, 0, 1), ('r2', 2, 0, 1), ('r4', 3, 0, 0);
         INSERT INTO preloads (id, endpoint_id, url, state, attempts, not_before, batch_id, after_item,
                               last_error, created_at, updated_at, finished_at) VALUES
             (1, 'ep', 'http://e.com/a', 'succeeded', 1, '{t}', 2, 1, NULL, '{t}', '{t}', '{t}'),
             (2, 'ep', 'http://e.com/b', 'pending', 0, '{t}', NULL, 2, NULL, '{t}', '{t}', NULL),
             (3, 'ep', 'http://e.com/p', 'failed', 3, '{t}', NULL, NULL, 'OriginUnreachable', '{t}', '{t}', '{t}');
         INSERT INTO request_preloads VALUES ('r1', 0, 1), ('r2', 0, 2), ('r3', 0, 3);
         INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
             VALUES ('sub', '2026-12-01', 2, 0, 1);"
    )))
    .execute(&mut conn)
    .await
    .expect("rows of the fourth schema");
    conn.close().await.expect("close");

    let path = dir.path().join("purgeq.db");
    let store = upgraded(&path).await;
    let listed = store.list_requests(None, None, 10).await.expect("list");
    let states: Vec<(String, u64, RequestState)> = listed
        .into_iter()
        .map(|r| (r.id, r.urls, r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("r4".into(), 1, RequestState::InProgress),
            ("r3".into(), 1, RequestState::Failed),
            ("r2".into(), 1, RequestState::InProgress),
            ("r1".into(), 1, RequestState::Succeeded),
        ],
        "the list reads the old rows as the history view does"
    );
    let r2 = store
        .request_status(&RequestId::parse("r2"))
        .await
        .expect("status")
        .expect("r2");
    assert_eq!(r2.items[0].state, ItemState::Succeeded);
    assert_eq!(
        r2.items[0].preload_state,
        Some(purgeq::store::PreloadState::Pending)
    );
    let r3 = store
        .request_status(&RequestId::parse("r3"))
        .await
        .expect("status")
        .expect("r3");
    assert_eq!(r3.items[0].error.as_deref(), Some("OriginUnreachable"));
    let quota = store
        .quota_use(&purgeq::store::QuotaAccount {
            subscription_id: "sub".into(),
            day: "2026-12-01".into(),
        })
        .await
        .expect("quota");
    assert_eq!(
        (quota.files_used, quota.files_reserved, quota.preloads_used),
        (2, 1, 1)
    );
    // The page's new reads: no calls yet; the quota chart from the
    // ledger's rows, as kept (migration 0015): the day's files charged.
    assert!(store.recent_errors(10).await.expect("errors").is_empty());
    let quota_day = quota_chart_totals(&store, "sub", "2026-12-01").await;
    assert!(
        quota_day.contains(&("files".to_owned(), 2)),
        "{quota_day:?}"
    );
    store.close().await;
}

/// The schema released with the status page (0001–0005) gains the
/// ledger's uncertain counts (issue 28): the day's counts are kept as the
/// certain part, and nothing is uncertain yet.
#[tokio::test]
async fn a_fifth_schema_database_upgrades_to_the_two_part_ledger_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
            "0004_preloads.sql",
            "0005_calls.sql",
        ],
    )
    .await;
    sqlx::raw_sql(
        "INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
             VALUES ('sub', '2026-12-04', 1950, 12, 30), ('sub', '2026-12-05', 7, 0, 0);",
    )
    .execute(&mut conn)
    .await
    .expect("rows of the fifth schema");
    conn.close().await.expect("close");
    let store = upgraded(&dir.path().join("purgeq.db")).await;
    let day = |day: &str| purgeq::store::QuotaAccount {
        subscription_id: "sub".into(),
        day: day.into(),
    };
    let old = store.quota_use(&day("2026-12-04")).await.expect("quota");
    assert_eq!(
        (old.files_used, old.directories_used, old.preloads_used),
        (1950, 12, 30)
    );
    assert_eq!(
        (
            old.files_uncertain,
            old.directories_uncertain,
            old.preloads_uncertain
        ),
        (0, 0, 0)
    );
    let today = store.quota_use(&day("2026-12-05")).await.expect("quota");
    assert_eq!(today.files_used, 7);
}

/// The sixth schema (issue 28's ledger) gains the cache rules and the
/// `expired` state (issue 32). SQLite rebuilds `items` for its new CHECK:
/// every item, link, merge and preload must come through, and the
/// foreign keys must still hold (a DROP of `items` with foreign keys on
/// would have cascaded to `request_items`).
#[tokio::test]
async fn a_sixth_schema_database_upgrades_to_cache_rules_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
            "0004_preloads.sql",
            "0005_calls.sql",
            "0006_uncertain_charges.sql",
        ],
    )
    .await;
    sqlx::raw_sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO requests (id, received_at, source) VALUES
             ('r1', '2026-12-01T00:00:00.000Z', 'test'),
             ('r2', '2026-12-01T00:00:01.000Z', 'test');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            finished_at, merged_into, merge_reason, urgent) VALUES
             (1, 'e', 'directory', 'https://h/d/', 'succeeded', '2026-12-01T00:00:00.000Z',
              '2026-12-01T00:00:00.000Z', '2026-12-01T00:00:05.000Z', '2026-12-01T00:00:05.000Z', NULL, NULL, 1),
             (2, 'e', 'file', 'https://h/d/a.js', 'merged', '2026-12-01T00:00:00.000Z',
              '2026-12-01T00:00:00.000Z', '2026-12-01T00:00:00.000Z', NULL, 1, 'promoted', 0),
             (3, 'e', 'file', 'https://h/b.js', 'pending', '2026-12-01T00:00:01.000Z',
              '2026-12-01T00:00:01.000Z', '2026-12-01T00:00:01.000Z', NULL, NULL, NULL, 0),
             (4, 'e', 'file', 'https://h/c.js', 'failed', '2026-12-01T00:00:01.000Z',
              '2026-12-01T00:00:01.000Z', '2026-12-01T00:00:02.000Z', '2026-12-01T00:00:02.000Z', NULL, NULL, 0);
         INSERT INTO request_items (request_id, item_id, position, requested_url, requested_kind, preload) VALUES
             ('r1', 1, 0, NULL, NULL, 0),
             ('r1', 2, 1, NULL, NULL, 1),
             ('r1', 1, 2, 'https://h/d/e.js', 'file', 0),
             ('r2', 3, 0, NULL, NULL, 0),
             ('r2', 4, 1, NULL, NULL, 0);
         INSERT INTO preloads (id, endpoint_id, url, state, not_before, after_item, created_at, updated_at)
             VALUES (1, 'e', 'https://h/d/a.js', 'pending', '2026-12-01T00:00:05.000Z', 1,
                     '2026-12-01T00:00:05.000Z', '2026-12-01T00:00:05.000Z');
         INSERT INTO request_preloads (request_id, position, preload_id) VALUES ('r1', 1, 1);",
    )
    .execute(&mut conn)
    .await
    .expect("rows of the sixth schema");
    conn.close().await.expect("close");
    let path = dir.path().join("purgeq.db");
    let store = upgraded(&path).await;

    let r1 = store
        .request_status(&RequestId::parse("r1"))
        .await
        .expect("read")
        .expect("r1 kept");
    let urls: Vec<(&str, ItemState, Option<&str>)> = r1
        .items
        .iter()
        .map(|i| (i.url.as_str(), i.state, i.merge_reason.as_deref()))
        .collect();
    assert_eq!(
        urls,
        vec![
            ("https://h/d/", ItemState::Succeeded, None),
            ("https://h/d/a.js", ItemState::Succeeded, Some("promoted")),
            ("https://h/d/e.js", ItemState::Succeeded, Some("covered")),
        ]
    );
    assert_eq!(
        r1.items[1].preload_state.map(|p| p.as_str()),
        Some("pending")
    );
    let r2 = store
        .request_status(&RequestId::parse("r2"))
        .await
        .expect("read")
        .expect("r2 kept");
    assert_eq!(r2.state, RequestState::InProgress);
    assert_eq!(r2.items[1].state, ItemState::Failed);
    store.close().await;

    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("reopen");
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM request_items),
                (SELECT count(*) FROM preloads WHERE after_item = 1)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("counts");
    assert_eq!(counts, (4, 5, 1));
    let broken: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .expect("foreign_key_check");
    assert!(broken.is_empty(), "{broken:?}");
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("indexes");
    assert_eq!(
        indexes, 11,
        "every index of items, the expiry one, the held one of 0012 and the URL one of 0016"
    );
    sqlx::query("UPDATE items SET state = 'expired' WHERE id = 3")
        .execute(&mut conn)
        .await
        .expect("the new state is allowed");
}

/// Issue 35's migration (0011, the tag registry) on a database of the
/// schema before it (0001-0010: origin caches and verification included):
/// nothing lost, the old links have no tag, the registry starts empty.
#[tokio::test]
async fn a_tenth_schema_database_upgrades_to_the_tag_registry_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
            "0004_preloads.sql",
            "0005_calls.sql",
            "0006_uncertain_charges.sql",
            "0007_cache_rules.sql",
            "0008_expired_state.sql",
            "0009_origin_caches.sql",
            "0010_verifications.sql",
        ],
    )
    .await;
    sqlx::raw_sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO requests (id, received_at, source) VALUES
             ('r1', '2026-12-04T00:00:00.000Z', 'test');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            finished_at) VALUES
             (1, 'e', 'file', 'https://h/a.js', 'succeeded', '2026-12-04T00:00:00.000Z',
              '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:05.000Z', '2026-12-04T00:00:05.000Z'),
             (2, 'e', 'file', 'https://h/b.js', 'pending', '9999-12-31T23:59:59.999Z',
              '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:00.000Z', NULL);
         INSERT INTO request_items (request_id, item_id, position) VALUES ('r1', 1, 0), ('r1', 2, 1);
         INSERT INTO origin_purges (item_id, layer, state, not_before, created_at, updated_at, done_at, answer)
             VALUES (1, 'varnish-1', 'done', '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:00.000Z',
                     '2026-12-04T00:00:01.000Z', '2026-12-04T00:00:01.000Z', 'purged'),
                    (2, 'varnish-1', 'pending', '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:00.000Z',
                     '2026-12-04T00:00:00.000Z', NULL, NULL);
         INSERT INTO verifications (item_id, url, state, enqueued_at, started_at, not_before, fresh_at,
                                    finished_at)
             VALUES (1, 'https://h/a.js', 'fresh', '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:05.000Z',
                     '2026-12-04T00:00:05.000Z', '2026-12-04T00:00:07.000Z', '2026-12-04T00:00:07.000Z');",
    )
    .execute(&mut conn)
    .await
    .expect("rows of the tenth schema");
    conn.close().await.expect("close");
    let store = upgraded(&dir.path().join("purgeq.db")).await;
    let r1 = store
        .request_status(&RequestId::parse("r1"))
        .await
        .expect("read")
        .expect("r1 kept");
    assert!(r1.tags.is_empty());
    let items: Vec<(&str, ItemState, usize, bool, Option<&str>)> = r1
        .items
        .iter()
        .map(|i| {
            (
                i.url.as_str(),
                i.state,
                i.origin_caches.len(),
                i.verification.is_some(),
                i.via_tag.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            ("https://h/a.js", ItemState::Succeeded, 1, true, None),
            ("https://h/b.js", ItemState::Pending, 1, false, None),
        ]
    );
    assert!(
        r1.items[1]
            .waiting
            .as_deref()
            .is_some_and(|w| w.contains("origin cache varnish-1")),
        "{:?}",
        r1.items[1].waiting
    );
    let registry = store.tag_registry_counts().await.expect("registry");
    assert_eq!((registry.urls, registry.dropped), (0, 0));
    store.close().await;
}

/// Issue 31: the counts and the charts' minutes are filled from the rows a
/// twelfth-schema database holds, and kept from then on.
#[tokio::test]
async fn a_twelfth_schema_database_upgrades_to_kept_counts_and_chart_minutes_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut conn = released_database(
        dir.path(),
        &[
            "0001_initial.sql",
            "0002_truthful_states.sql",
            "0003_quota_planner.sql",
            "0004_preloads.sql",
            "0005_calls.sql",
            "0006_uncertain_charges.sql",
            "0007_cache_rules.sql",
            "0008_expired_state.sql",
            "0009_origin_caches.sql",
            "0010_verifications.sql",
            "0011_tags.sql",
            "0012_origin_due_by_layer.sql",
        ],
    )
    .await;
    // An hour ago: the charts' minutes are filled from the last two days.
    let recent =
        purgeq::store::Timestamp::new(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    let sql = format!(
        "PRAGMA foreign_keys = ON;
         INSERT INTO requests (id, received_at, source) VALUES
             ('r1', '{recent}', 'test');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            finished_at, urgent) VALUES
             (1, 'e', 'file', 'https://h/a.js', 'succeeded', '2026-12-04T00:00:00.000Z',
              '2026-12-04T00:00:00.000Z', '{recent}', '{recent}', 0),
             (2, 'e', 'file', 'https://h/b.js', 'pending', '2026-12-04T00:00:00.000Z',
              '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:00.000Z', NULL, 1),
             (3, 'f', 'directory', 'https://i/', 'pending', '2026-12-04T00:00:00.000Z',
              '2026-12-04T00:00:00.000Z', '2026-12-04T00:00:00.000Z', NULL, 0);
         INSERT INTO request_items (request_id, item_id, position)
             VALUES ('r1', 1, 0), ('r1', 2, 1), ('r1', 3, 2);
         INSERT INTO preloads (endpoint_id, url, state, not_before, created_at, updated_at)
             VALUES ('e', 'https://h/a.js', 'pending', '2026-12-04T00:00:06.000Z',
                     '2026-12-04T00:00:06.000Z', '2026-12-04T00:00:06.000Z');
         INSERT INTO calls (at, operation, outcome) VALUES ('{recent}', 'purge', 'accepted');
         INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
             VALUES ('sub', '2026-12-04', 7, 1, 2);"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("rows of the twelfth schema");
    conn.close().await.expect("close");
    let store = upgraded(&dir.path().join("purgeq.db")).await;
    let counts = store.state_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded), (2, 1));
    let lanes = store.lane_counts().await.expect("lanes");
    assert_eq!(
        (lanes.files, lanes.urgent_files, lanes.directories),
        (1, 1, 1)
    );
    let counts = store.queue_counts().await.expect("counts");
    assert_eq!(counts.preload_states().pending, 1);
    assert_eq!(
        counts.backlog_by_endpoint(),
        [("e".to_owned(), 2, 0), ("f".to_owned(), 1, 0)]
    );
    let since =
        purgeq::store::Timestamp::new(time::OffsetDateTime::now_utc() - time::Duration::hours(2));
    let flow = store
        .urls_flow(since, purgeq::store::Slot::Hour)
        .await
        .expect("chart");
    let total = |series: &str| series_total(&flow, series);
    assert_eq!((total("enqueued"), total("purged")), (3, 1));
    let calls = store
        .calls_by_outcome(since, purgeq::store::Slot::Hour)
        .await
        .expect("calls");
    assert_eq!(calls.iter().map(|(_, _, n)| n).sum::<i64>(), 1);
    // The quota chart (issue 36) starts from the ledger's rows.
    assert_eq!(
        quota_chart_totals(&store, "sub", "2026-12-04").await,
        [
            ("directories".to_owned(), 1),
            ("files".to_owned(), 7),
            ("preloads".to_owned(), 2)
        ]
    );
    // Kept from now on: a cancel moves the counts.
    let r1 = RequestId::parse("r1");
    store
        .cancel_pending(
            &r1,
            purgeq::store::Timestamp::new(time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("cancel");
    let counts = store.state_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.cancelled), (0, 2));
    store.close().await;
}

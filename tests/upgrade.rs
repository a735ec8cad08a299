//! Databases in the field upgrade in place: a database made by an earlier
//! released schema (its migrations applied by sqlx's migrator exactly as
//! that binary did) opens with this one, and nothing in it is lost. (The
//! first schema's own test is in `state_machine.rs`.)

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
    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..StoreSettings::default()
    })
    .await
    .expect("upgrade");
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
    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..StoreSettings::default()
    })
    .await
    .expect("upgrade");
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

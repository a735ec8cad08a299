//! PostgreSQL's schema is SQLite's, table by table and column by column.
//!
//! An operator reads a fleet's history with `psql` exactly as a host's with
//! `sqlite3`, and the store reads the same rows on both, so every table,
//! view, column (in order, with its NOT NULL) and index SQLite's migrations
//! build must exist in `migrations/postgres/` too. A SQLite migration
//! without its PostgreSQL twin fails here. PostgreSQL may have only the
//! fleet's own extras (the leader lease).

mod common;

use std::collections::BTreeMap;

use purgeq::config::StoreSettings;
use purgeq::store::Store;
use purgeq::store::fleet::FleetDb;
use sqlx::{Connection, Row, SqliteConnection};

use common::postgres::TestDatabase;
use common::{quota_chart_totals, series_total};

/// Tables and views, each with its columns as (name, not null).
type Shape = BTreeMap<String, Vec<(String, bool)>>;

/// Relations only PostgreSQL has, and why they are allowed: the leader
/// lease, and the deltas its statement triggers append for the kept
/// counts and chart minutes (several nodes write at once; SQLite's
/// triggers update the totals directly).
const FLEET_ONLY: [&str; 5] = [
    "fleet_leader",
    "fleet_nodes",
    "item_count_deltas",
    "preload_count_deltas",
    "chart_minute_deltas",
];

async fn sqlite_schema() -> (Shape, Shape, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("purgeq.db");
    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..StoreSettings::default()
    })
    .await
    .expect("open the SQLite store");
    store.close().await;
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mut shapes = [Shape::new(), Shape::new()];
    for (kind, shape) in ["table", "view"].iter().zip(shapes.iter_mut()) {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = ?1
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
        )
        .bind(kind)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for name in names {
            let columns = sqlx::query(
                "SELECT name, \"notnull\" OR pk > 0 AS required FROM pragma_table_info(?1) ORDER BY cid",
            )
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            // A view's columns carry no NOT NULL on either side.
            .map(|r| (r.get::<String, _>("name"), *kind == "table" && r.get::<bool, _>("required")))
            .collect();
            shape.insert(name, columns);
        }
    }
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let [tables, views] = shapes;
    (tables, views, indexes)
}

async fn postgres_schema(db: &FleetDb) -> (Shape, Shape, Vec<String>) {
    let pool = db.pool();
    let mut shapes = [Shape::new(), Shape::new()];
    for (kind, shape) in ["BASE TABLE", "VIEW"].iter().zip(shapes.iter_mut()) {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = $1
             AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name",
        )
        .bind(kind)
        .fetch_all(pool)
        .await
        .unwrap();
        for name in names {
            let columns = sqlx::query(
                "SELECT column_name::text AS name, is_nullable = 'NO' AS required
                 FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(&name)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>("name"), r.get::<bool, _>("required")))
            .collect();
            shape.insert(name, columns);
        }
    }
    // Primary keys' and UNIQUE constraints' indexes are implicit on
    // SQLite (no `sql`), so they are left out here too.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT i.indexname::text FROM pg_indexes i
         WHERE i.schemaname = 'public' AND i.tablename NOT LIKE '\\_sqlx%'
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
         ORDER BY i.indexname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let [tables, views] = shapes;
    (tables, views, indexes)
}

#[tokio::test]
async fn postgres_has_every_table_view_column_and_index_sqlite_has() {
    let Some(test_db) =
        TestDatabase::create("postgres_has_every_table_view_column_and_index_sqlite_has").await
    else {
        return;
    };
    let fleet = FleetDb::connect(&test_db.url)
        .await
        .expect("connect and migrate");
    let (sqlite_tables, sqlite_views, sqlite_indexes) = sqlite_schema().await;
    let (mut pg_tables, pg_views, pg_indexes) = postgres_schema(&fleet).await;
    fleet.pool().close().await;
    test_db.drop_now().await;

    for extra in FLEET_ONLY {
        assert!(
            pg_tables.remove(extra).is_some(),
            "{extra} is missing on PostgreSQL"
        );
    }
    assert!(!sqlite_tables.is_empty() && !sqlite_views.is_empty());
    for (name, columns) in &sqlite_tables {
        assert_eq!(pg_tables.get(name), Some(columns), "table {name} differs");
    }
    assert_eq!(
        pg_tables.keys().collect::<Vec<_>>(),
        sqlite_tables.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (name, columns) in &sqlite_views {
        assert_eq!(pg_views.get(name), Some(columns), "view {name} differs");
    }
    assert_eq!(pg_views.len(), sqlite_views.len(), "the same views");
    assert_eq!(pg_indexes, sqlite_indexes, "the same indexes");
}

#[tokio::test]
async fn every_node_may_migrate_at_once() {
    let Some(test_db) = TestDatabase::create("every_node_may_migrate_at_once").await else {
        return;
    };
    // Three nodes started together: sqlx's advisory lock lets one apply
    // the migrations, and the others find them applied.
    let (a, b, c) = tokio::join!(
        FleetDb::connect(&test_db.url),
        FleetDb::connect(&test_db.url),
        FleetDb::connect(&test_db.url)
    );
    for db in [a, b, c] {
        db.expect("connect and migrate").pool().close().await;
    }
    test_db.drop_now().await;
}

/// Issue 31: a fleet database of the seventh schema, with rows, upgrades
/// in place: the counts and the charts' recent minutes are filled from
/// its rows, and nothing is lost.
#[tokio::test]
async fn a_seventh_schema_fleet_database_upgrades_to_kept_counts_in_place() {
    use purgeq::store::{Slot, Store, Timestamp};
    let Some(test_db) =
        TestDatabase::create("a_seventh_schema_fleet_database_upgrades_to_kept_counts_in_place")
            .await
    else {
        return;
    };
    // The released migrations, applied by sqlx as a node of that release
    // did (same files, same checksums).
    let released = tempfile::tempdir().unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0008" {
            std::fs::copy(&path, released.path().join(&name)).unwrap();
        }
    }
    let pool = sqlx::PgPool::connect_with(test_db.url.connect_options().clone())
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(released.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .expect("the seventh schema");
    let recent = Timestamp::new(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests (id, received_at, source) VALUES ('r1', '{recent}', 'test');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at,
                            finished_at, urgent) VALUES
             (1, 'e', 'file', 'https://h/a.js', 'succeeded', '{recent}', '{recent}', '{recent}',
              '{recent}', 0),
             (2, 'e', 'file', 'https://h/b.js', 'pending', '{recent}', '{recent}', '{recent}',
              NULL, 1);
         INSERT INTO request_items (request_id, item_id, position) VALUES ('r1', 1, 0), ('r1', 2, 1);
         INSERT INTO preloads (endpoint_id, url, state, not_before, created_at, updated_at)
             VALUES ('e', 'https://h/a.js', 'pending', '{recent}', '{recent}', '{recent}');
         INSERT INTO calls (at, operation, outcome) VALUES ('{recent}', 'purge', 'accepted');
         INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
             VALUES ('sub', '2026-12-04', 7, 1, 2);"
    )))
    .execute(&pool)
    .await
    .expect("rows of the seventh schema");
    pool.close().await;

    let fleet = FleetDb::connect(&test_db.url).await.expect("upgrade");
    let store = Store::open_postgres(&fleet).await.expect("open");
    let counts = store.state_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded), (1, 1));
    let lanes = store.lane_counts().await.expect("lanes");
    assert_eq!((lanes.files, lanes.urgent_files), (1, 1));
    let counts = store.queue_counts().await.expect("counts");
    assert_eq!(counts.preload_states().pending, 1);
    let since = Timestamp::new(time::OffsetDateTime::now_utc() - time::Duration::hours(2));
    let flow = store.urls_flow(since, Slot::Hour).await.expect("chart");
    let total = |series: &str| series_total(&flow, series);
    assert_eq!((total("enqueued"), total("purged")), (2, 1));
    let calls = store
        .calls_by_outcome(since, Slot::Hour)
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
    // Kept from now on, through the deltas and a fold.
    store
        .cancel_pending(
            &purgeq::store::RequestId::parse("r1"),
            Timestamp::new(time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("cancel");
    for _ in 0..2 {
        let counts = store.state_counts().await.expect("counts");
        assert_eq!((counts.pending, counts.cancelled), (0, 1));
        store.fold_counts().await.expect("fold");
    }
    store.close().await;
    fleet.pool().close().await;
    test_db.drop_now().await;
}

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

/// Tables and views, each with its columns as (name, not null).
type Shape = BTreeMap<String, Vec<(String, bool)>>;

/// Relations only PostgreSQL has, and why they are allowed: the leader
/// lease, and the deltas its statement triggers append for the kept
/// counts and chart minutes (several nodes write at once; SQLite's
/// triggers update the totals directly).
const FLEET_ONLY: [&str; 4] = [
    "fleet_leader",
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

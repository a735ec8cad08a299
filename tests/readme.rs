//! The README's examples stay true: every `sqlite3` query it shows runs
//! against a real database, and the ones that filter by time return what
//! they say (issue 12, item 8: `received_at > datetime('now', '-1 day')`
//! compared `…T…Z` text with `… …` text and returned every row).

use purgeq::config::StoreSettings;
use purgeq::store::{CutLimits, ItemResult, NewRequest, QuotaAccount, Store, timestamp};
use purgeq::target::{Kind, PurgeTarget};
use sqlx::{Connection, SqliteConnection};

const README: &str = include_str!("../README.md");

/// Every query of a `sqlite3 … purgeq.db "QUERY"` line.
fn readme_queries() -> Vec<String> {
    README
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("sqlite3 -readonly purgeq.db \"")?;
            Some(rest.strip_suffix('"')?.to_owned())
        })
        .collect()
}

async fn failed_request(store: &Store, url: &str, received_at: time::OffsetDateTime) {
    let now = timestamp(time::OffsetDateTime::now_utc());
    store
        .enqueue(NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            received_at,
            source: "test".into(),
            label: None,
            targets: vec![PurgeTarget {
                endpoint_id: "ep".into(),
                kind: Kind::File,
                url: url.into(),
            }],
        })
        .await
        .expect("enqueue");
    let account = QuotaAccount {
        subscription_id: "sub".into(),
        day: "2026-11-25".into(),
    };
    let batch = store
        .cut_batch(
            "ep",
            CutLimits {
                max_files: 10,
                max_directories: 10,
                account: account.clone(),
                files_per_day: 100,
                directories_per_day: 100,
            },
            "9999-12-31T00:00:00.000Z",
        )
        .await
        .expect("cut")
        .expect("a batch");
    store
        .batch_accepted(&batch, "task", None, &account, &now)
        .await
        .expect("accepted");
    let item = batch.files[0].item_id;
    store
        .record_results(
            batch.id,
            vec![(
                item,
                ItemResult::Failed {
                    reason: "Failed".into(),
                },
            )],
            &now,
        )
        .await
        .expect("failed");
}

#[tokio::test]
async fn every_sql_example_in_the_readme_runs_and_means_what_it_says() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("purgeq.db");
    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..StoreSettings::default()
    })
    .await
    .expect("open");
    let now = time::OffsetDateTime::now_utc();
    failed_request(&store, "http://e.com/old.js", now - time::Duration::days(2)).await;
    failed_request(&store, "http://e.com/new.js", now).await;

    let queries = readme_queries();
    assert!(
        queries.len() >= 5,
        "the README's queries were not found: {queries:?}"
    );
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .expect("read-only");
    for query in &queries {
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        if query.contains("effective_state = 'failed'") && query.contains("-1 day") {
            assert_eq!(rows.len(), 1, "only the failure of the last day: {query}");
        }
    }
}

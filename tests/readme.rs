//! The README's examples stay true: every `sqlite3` query it shows runs
//! against a real database, and the ones that filter by time return what
//! they say (issue 12, item 8: `received_at > datetime('now', '-1 day')`
//! compared `…T…Z` text with `… …` text and returned every row).

mod common;

use purgeq::config::StoreSettings;
use purgeq::store::{CutLimits, ItemResult, NewRequest, QuotaAccount, Store, Timestamp};
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
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    store
        .enqueue(NewRequest {
            id: purgeq::store::RequestId::generate(),
            received_at,
            source: "test".into(),
            label: None,
            priority: purgeq::target::Priority::Normal,
            targets: vec![PurgeTarget {
                endpoint_id: "ep".into(),
                kind: Kind::File,
                url: url.into(),
            }],
            preload_after_purge: Vec::new(),
            preload_only: Vec::new(),
            cache_facts: Default::default(),
            origin_purges: Vec::new(),
            skip_origin_caches: Vec::new(),
            tags: Vec::new(),
            via_tag: Default::default(),
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
                reserve_files: 0,
                reserve_directories: 0,
            },
            Timestamp::parse("9999-12-31T00:00:00.000Z").expect("a time"),
        )
        .await
        .expect("cut")
        .expect("a batch");
    store
        .batch_accepted(&batch, "task", None, &account, now)
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
            now,
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

/// Every query of a `psql -X "postgres://…" -c "QUERY"` line (the Fleet
/// section).
fn readme_psql_queries() -> Vec<String> {
    README
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("psql -X \"postgres://")?;
            let (_, query) = rest.split_once("\" -c \"")?;
            Some(query.strip_suffix('"')?.to_owned())
        })
        .collect()
}

/// The Fleet section's `psql` examples run against a fleet's database
/// (the same tables and views as SQLite's, and the lease).
#[tokio::test]
async fn every_psql_example_in_the_readme_runs() {
    let Some(db) =
        common::postgres::TestDatabase::create("every_psql_example_in_the_readme_runs").await
    else {
        return;
    };
    let fleet = purgeq::store::fleet::FleetDb::connect(&db.url)
        .await
        .expect("connect");
    let node = purgeq::fleet::NodeName::parse("deploy-1").expect("name");
    fleet
        .claim(&node, None, std::time::Duration::from_secs(6))
        .await
        .expect("claim");
    let store = Store::open_postgres(&fleet).await.expect("open");
    // The node's heartbeat, as its daemon writes it.
    store
        .fleet_heartbeat(
            &purgeq::fleet::FleetStatus::of(
                &node,
                &purgeq::fleet::Role::Leader {
                    term: purgeq::fleet::Term::new(1).expect("term"),
                },
            ),
            env!("CARGO_PKG_VERSION"),
            purgeq::store::Timestamp::new(time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("heartbeat");
    failed_request(
        &store,
        "http://e.com/new.js",
        time::OffsetDateTime::now_utc(),
    )
    .await;
    let queries = readme_psql_queries();
    assert!(
        queries.len() >= 4,
        "the README's psql queries were not found: {queries:?}"
    );
    let mut conn = sqlx::PgConnection::connect_with(db.url.connect_options())
        .await
        .expect("psql");
    for query in &queries {
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(!rows.is_empty(), "{query} found nothing");
    }
    store.close().await;
    db.drop_now().await;
}

/// The README's shell block under "Posting intents", with the commands
/// around it, run by bash against `purgeq serve` started with the embedded
/// defaults (the socket and database in the working directory, the
/// built-in emulator), in a git repository whose last commit adds the file
/// names the old `sed` recipe got wrong. Only the TCP port is changed (to a
/// free one) and the example request id replaced by a real one.
#[test]
fn the_readme_shell_examples_do_what_they_say() {
    let bin = env!("CARGO_BIN_EXE_purgeq");
    let bin_dir = std::path::Path::new(bin).parent().expect("bin dir");
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("README"), "site\n").expect("write");
    std::fs::create_dir(repo.join("docs")).expect("mkdir");
    // Renamed in the last commit: its old URL must be purged too (issue
    // 29, item 7: with rename detection git lists only the new name).
    std::fs::write(repo.join("docs/old-name.js"), "renamed\n").expect("write");
    git(&["add", "README", "docs"]);
    git(&["commit", "-qm", "first"]);
    git(&["mv", "docs/old-name.js", "docs/new-name.js"]);
    for name in ["c#.html", "a b?.css", "100%.txt", "中.js"] {
        std::fs::write(repo.join("docs").join(name), name).expect("write");
    }
    git(&["add", "docs"]);
    git(&["commit", "-qm", "second"]);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut daemon = std::process::Command::new(bin)
        .arg("serve")
        .current_dir(repo)
        .env("PURGEQ__INGEST__HTTP", format!("127.0.0.1:{port}"))
        .env("PURGEQ__TRACKER__POLL_INTERVAL", "300ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !repo.join("purgeq.sock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "the daemon exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _stop = Stop(daemon);

    let block = README
        .split("### Posting intents")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the block under Posting intents");
    let block = block
        .replace("127.0.0.1:8088", &format!("127.0.0.1:{port}"))
        .replace("0193…", "$ID");
    // The quick start's enqueue, and the history command of "The database".
    // "Purge by tag": its commands, as they are written.
    let tags_block = README
        .split("## Purge by tag")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the block under Purge by tag");
    let script = format!(
        "set -euo pipefail\nexport PATH={}:$PATH\n\
         purgeq enqueue --wait http://www.example.com/index.html http://www.example.com/img/\n\
         ID=$(purgeq enqueue http://www.example.com/seed.js)\n{block}\n\
         purgeq history --state failed --since 1d\n{tags_block}\n",
        bin_dir.display()
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("succeeded: 2 URLs"), "{stdout}");
    assert!(
        stdout.contains("\"urls\":2,\"new\":2,\"deduplicated\":0"),
        "{stdout}"
    );
    // The tag purge: category-7 named both URLs; the curl answer counts
    // product-42's one URL and names the unknown tag.
    assert_eq!(
        stdout.matches("1 URL tagged, 0 forgotten").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("http://www.example.com/p/43"),
        "the dry run lists the tag's URLs: {stdout}"
    );
    assert!(stdout.contains("succeeded: 2 URLs"), "{stdout}");
    assert!(
        stdout.contains(
            "\"tags\":{\"no-such-tag\":0,\"product-42\":1},\"unknown_tags\":[\"no-such-tag\"]"
        ),
        "{stdout}"
    );

    // The deploy recipe queued exactly the files of the last commit.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let urls: Vec<String> = runtime.block_on(async {
        let mut conn = SqliteConnection::connect(&format!(
            "sqlite://{}?mode=ro",
            repo.join("purgeq.db").display()
        ))
        .await
        .expect("db");
        sqlx::query_scalar("SELECT url FROM items WHERE url LIKE '%/docs/%' ORDER BY url")
            .fetch_all(&mut conn)
            .await
            .expect("items")
    });
    assert_eq!(
        urls,
        [
            "http://www.example.com/docs/%E4%B8%AD.js",
            "http://www.example.com/docs/100%25.txt",
            "http://www.example.com/docs/a%20b%3F.css",
            "http://www.example.com/docs/c%23.html",
            "http://www.example.com/docs/new-name.js",
            "http://www.example.com/docs/old-name.js",
        ]
    );
}

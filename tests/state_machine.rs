//! The queue's state machine on a real SQLite file and on a real
//! PostgreSQL database (fleet mode), step by step through the store's API
//! (the same calls the batcher, sender, tracker and the operator routes
//! make): one regression test for each bug of issue 13 that lives in the
//! store, and the quota ledger's rules. Each runs on both backends
//! (`sqlite::` and `postgres::`), since both must keep the same rules.

mod common;

use purgeq::config::StoreSettings;
use purgeq::store::fleet::FleetDb;
use purgeq::store::{
    Batch, CallOutcome, CutLimits, ItemResult, NewRequest, QuotaAccount, RequestId, RequestState,
    Store, StoreError, Timestamp,
};
use purgeq::target::{Kind, PurgeTarget};
use sqlx::{Connection, PgConnection, SqliteConnection};

const EP: &str = "ep";

fn target(kind: Kind, url: &str) -> PurgeTarget {
    PurgeTarget {
        endpoint_id: EP.into(),
        kind,
        url: url.into(),
    }
}

fn file(url: &str) -> PurgeTarget {
    target(Kind::File, url)
}

fn dir(url: &str) -> PurgeTarget {
    target(Kind::Directory, url)
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

fn account(day: &str) -> QuotaAccount {
    QuotaAccount {
        subscription_id: "sub".into(),
        day: day.into(),
    }
}

const DAY: &str = "2026-11-25";

fn limits() -> CutLimits {
    CutLimits {
        max_files: 100,
        max_directories: 50,
        account: account(DAY),
        files_per_day: 2_000,
        directories_per_day: 500,
        reserve_files: 0,
        reserve_directories: 0,
    }
}

struct Queue {
    store: Store,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// The PostgreSQL database, when the store is on one; dropped after
    /// the store (fields drop in order).
    postgres: Option<common::postgres::TestDatabase>,
}

impl Queue {
    /// The store on a fresh PostgreSQL database, or `None` when there is
    /// no server (the test says it was skipped).
    async fn postgres(test: &str) -> Option<Queue> {
        let db = common::postgres::TestDatabase::create(test).await?;
        let fleet = FleetDb::connect(&db.url).await.expect("connect");
        let store = Store::open_postgres(&fleet).await.expect("open");
        let dir = tempfile::tempdir().expect("tmp");
        Some(Queue {
            store,
            path: dir.path().join("unused.db"),
            _dir: dir,
            postgres: Some(db),
        })
    }

    async fn new() -> Queue {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("purgeq.db");
        let store = Store::open(&StoreSettings {
            path: path.clone(),
            ..StoreSettings::default()
        })
        .await
        .expect("open");
        Queue {
            store,
            path,
            _dir: dir,
            postgres: None,
        }
    }

    async fn post(&self, targets: Vec<PurgeTarget>) -> RequestId {
        let id = purgeq::store::RequestId::generate();
        self.store
            .enqueue(NewRequest {
                id: id.clone(),
                received_at: time::OffsetDateTime::now_utc(),
                source: "test".into(),
                label: None,
                priority: purgeq::target::Priority::Normal,
                targets,
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
        id
    }

    /// The next batch, if anything may be cut.
    async fn try_cut(&self) -> Option<Batch> {
        self.store
            .cut_batch(EP, limits(), now())
            .await
            .expect("cut")
    }

    async fn cut(&self) -> Batch {
        self.try_cut().await.expect("something to cut")
    }

    async fn accept(&self, batch: &Batch) {
        self.store
            .batch_accepted(batch, "task", None, &account(DAY), now())
            .await
            .expect("accepted");
    }

    /// The CDN's final answer for every URL of an accepted batch.
    async fn finish(&self, batch: &Batch, result: ItemResult) {
        let items = self
            .store
            .submitted_items(batch.id)
            .await
            .expect("submitted items");
        let results = items
            .into_iter()
            .map(|i| (i.item_id, result.clone()))
            .collect();
        self.store
            .record_results(batch.id, results, now())
            .await
            .expect("record");
    }

    async fn state(&self, request: &RequestId) -> RequestState {
        self.store
            .request_status(request)
            .await
            .expect("status")
            .expect("known")
            .state
    }

    async fn sql(&self) -> SqliteConnection {
        SqliteConnection::connect(&format!("sqlite://{}", self.path.display()))
            .await
            .expect("sqlite")
    }

    /// One number from the database, read on a connection of the test's
    /// own (as an operator's `sqlite3` or `psql` would).
    async fn scalar(&self, query: &str) -> i64 {
        self.one(query).await
    }

    /// One value of any type both databases decode.
    async fn one<T>(&self, query: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        T: Send + Unpin,
    {
        let sql = sqlx::AssertSqlSafe(query.to_owned());
        match &self.postgres {
            Some(db) => {
                let mut conn = PgConnection::connect_with(db.url.connect_options())
                    .await
                    .expect("postgres");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await
            }
            None => {
                let mut conn = self.sql().await;
                sqlx::query_scalar(sql).fetch_one(&mut conn).await
            }
        }
        .expect(query)
    }
}

fn failed(reason: &str) -> ItemResult {
    ItemResult::Failed {
        reason: reason.into(),
    }
}

fn retry() -> ItemResult {
    ItemResult::Retry {
        not_before: now(),
        reason: "Failed at the CDN; retrying".into(),
    }
}

/// Bug 1: old → new twin → directory stayed two deep, and the first
/// request read `succeeded` while the directory was pending, then failed.
async fn a_request_follows_its_url_through_two_merges(q: Queue) {
    let r1 = q.post(vec![file("http://e.com/d/f.js")]).await;
    let first = q.cut().await;
    let r2 = q.post(vec![file("http://e.com/d/f.js")]).await;
    q.accept(&first).await;
    // R1's call fails at the CDN and is retried: merged into R2's copy.
    q.finish(&first, retry()).await;
    let r3 = q.post(vec![dir("http://e.com/d/")]).await;
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE state = 'merged' AND merged_into IN (SELECT id FROM items WHERE state = 'merged')")
            .await,
        0,
        "merges stay one level deep"
    );
    for r in [&r1, &r2, &r3] {
        assert_eq!(q.state(r).await, RequestState::InProgress, "{r}");
    }
    let directory = q.cut().await;
    assert_eq!(directory.directories.len(), 1);
    assert!(directory.files.is_empty(), "the file follows the directory");
    q.accept(&directory).await;
    q.finish(&directory, failed("the directory failed")).await;
    for r in [&r1, &r2, &r3] {
        assert_eq!(q.state(r).await, RequestState::Failed, "{r}");
    }
}

/// Bug 2: two failed generations of one URL, retried together, collided
/// on the unique index of pending items (a 500).
async fn retrying_two_failed_generations_keeps_one_pending_item(q: Queue) {
    let r1 = q.post(vec![file("http://e.com/x.js")]).await;
    let b1 = q.cut().await;
    q.accept(&b1).await;
    q.finish(&b1, failed("gen 1")).await;
    let r2 = q.post(vec![file("http://e.com/x.js")]).await;
    let b2 = q.cut().await;
    q.accept(&b2).await;
    q.finish(&b2, failed("gen 2")).await;
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE state = 'failed'")
            .await,
        2
    );

    let retried = q.store.retry_failed(None, now()).await.expect("no 500");
    assert_eq!(retried, 2);
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE state = 'pending'")
            .await,
        1
    );
    assert_eq!(q.state(&r1).await, RequestState::InProgress);
    assert_eq!(q.state(&r2).await, RequestState::InProgress);
    let again = q.cut().await;
    assert_eq!(again.files.len(), 1);
    q.accept(&again).await;
    q.finish(&again, ItemResult::Succeeded).await;
    assert_eq!(q.state(&r1).await, RequestState::Succeeded);
    assert_eq!(q.state(&r2).await, RequestState::Succeeded);
}

/// Bug 3: a request whose URL was merged into a directory that failed
/// answered `retried: 0`.
async fn retrying_a_request_retries_the_directory_its_url_followed(q: Queue) {
    let r1 = q.post(vec![file("http://e.com/d/a.js")]).await;
    let _r2 = q.post(vec![dir("http://e.com/d/")]).await;
    let batch = q.cut().await;
    q.accept(&batch).await;
    q.finish(&batch, failed("directory failed")).await;
    assert_eq!(q.state(&r1).await, RequestState::Failed);
    let retried = q.store.retry_failed(Some(&r1), now()).await.expect("retry");
    assert_eq!(retried, 1);
    assert_eq!(q.state(&r1).await, RequestState::InProgress);
    let again = q.cut().await;
    assert_eq!(again.directory_urls(), ["http://e.com/d/"]);
}

/// Bug 4: two requests for one URL, both cancelled, and the URL was sent
/// anyway; a directory with followers could never be cancelled.
async fn cancelling_every_request_that_wants_a_url_cancels_it(q: Queue) {
    let r1 = q.post(vec![file("http://e.com/x.js")]).await;
    let r2 = q.post(vec![file("http://e.com/x.js")]).await;
    let first = q.store.cancel_pending(&r1, now()).await.expect("cancel");
    assert_eq!((first.cancelled, first.kept), (0, 1));
    let second = q.store.cancel_pending(&r2, now()).await.expect("cancel");
    assert_eq!((second.cancelled, second.kept), (1, 0));
    assert!(q.try_cut().await.is_none());
    assert_eq!(q.state(&r1).await, RequestState::Cancelled);

    // A directory that absorbed another request's file.
    let f = q.post(vec![file("http://e.com/d/a.js")]).await;
    let d = q.post(vec![dir("http://e.com/d/")]).await;
    let kept = q.store.cancel_pending(&d, now()).await.expect("cancel");
    assert_eq!(
        (kept.cancelled, kept.kept),
        (0, 1),
        "the file's request still wants it"
    );
    let gone = q.store.cancel_pending(&f, now()).await.expect("cancel");
    assert_eq!((gone.cancelled, gone.kept), (1, 0));
    assert!(q.try_cut().await.is_none());
    assert_eq!(q.state(&f).await, RequestState::Cancelled);
    assert_eq!(q.state(&d).await, RequestState::Cancelled);
}

/// Bug 6: a lock held by another connection was an internal error, and
/// the sender gave up on an accepted call.
#[tokio::test]
async fn a_locked_database_is_a_retryable_error() {
    let q = Queue::new().await;
    q.post(vec![file("http://e.com/x.js")]).await;
    let mut holder = q.sql().await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let error = q
        .store
        .cut_batch(EP, limits(), now())
        .await
        .expect_err("locked");
    assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
    // The typed cause is kept under the words (issue 14).
    let cause = std::error::Error::source(&error).expect("a source");
    assert!(cause.downcast_ref::<sqlx::Error>().is_some(), "{cause:?}");
    assert!(error.is_retryable());
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("unlock");
    assert!(q.try_cut().await.is_some());
}

/// Issue 28, item 3, on SQLite: an operator's `sqlite3` holds the write
/// lock. An intent is answered within its deadline, told nothing was
/// stored, and is not stored once the lock is released; the next intent
/// is.
#[tokio::test]
async fn an_intent_past_its_deadline_is_never_stored_later() {
    let q = Queue::new().await;
    let mut holder = q.sql().await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let request = |url: &str| NewRequest {
        id: purgeq::store::RequestId::generate(),
        received_at: time::OffsetDateTime::now_utc(),
        source: "test".into(),
        label: None,
        priority: purgeq::target::Priority::Normal,
        targets: vec![file(url)],
        preload_after_purge: Vec::new(),
        preload_only: Vec::new(),
        cache_facts: Default::default(),
        origin_purges: Vec::new(),
        skip_origin_caches: Vec::new(),
        tags: Vec::new(),
        via_tag: Default::default(),
    };
    let error = q
        .store
        .enqueue_within(
            request("http://e.com/late.js"),
            std::time::Duration::from_millis(300),
        )
        .await
        .expect_err("the lock outlasts the deadline");
    assert!(
        matches!(
            error,
            StoreError::TimedOut {
                withdrawn: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("nothing was stored"), "{error}");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("unlock");
    q.store
        .enqueue_within(
            request("http://e.com/next.js"),
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("stored once the lock is gone");
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE url = 'http://e.com/late.js'")
            .await,
        0
    );
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE url = 'http://e.com/next.js'")
            .await,
        1
    );
}

/// Bug 8: attempts counted cuts, so releases used up the attempts and one
/// `Failed` was final.
async fn attempts_count_accepted_calls_not_cuts(q: Queue) {
    let r = q.post(vec![file("http://e.com/x.js")]).await;
    for _ in 0..8 {
        let batch = q.cut().await;
        q.store
            .release_batch(&batch, "endpoint inactive", now(), now())
            .await
            .expect("release");
    }
    assert_eq!(q.scalar("SELECT attempts FROM items").await, 0);
    let batch = q.cut().await;
    q.accept(&batch).await;
    assert_eq!(q.scalar("SELECT attempts FROM items").await, 1);
    assert_eq!(q.state(&r).await, RequestState::InProgress);
}

/// Items back to pending under a pending directory follow it, and a
/// directory back to pending absorbs what is pending under it.
async fn returned_items_keep_the_coverage_rule(q: Queue) {
    let rf = q.post(vec![file("http://e.com/d/a.js")]).await;
    let sent = q.cut().await;
    q.accept(&sent).await;
    let rd = q.post(vec![dir("http://e.com/d/")]).await;
    q.finish(&sent, retry()).await;
    let next = q.cut().await;
    assert_eq!(next.directory_urls(), ["http://e.com/d/"]);
    assert!(
        next.files.is_empty(),
        "the retried file follows the directory"
    );
    q.accept(&next).await;
    q.finish(&next, ItemResult::Succeeded).await;
    assert_eq!(q.state(&rf).await, RequestState::Succeeded);
    assert_eq!(q.state(&rd).await, RequestState::Succeeded);
}

/// A failed batch always says why.
async fn a_failed_batch_keeps_a_reason(q: Queue) {
    q.post(vec![file("http://e.com/a"), file("http://e.com/b")])
        .await;
    let batch = q.cut().await;
    q.accept(&batch).await;
    q.finish(&batch, failed("the CDN said Failed")).await;
    assert_eq!(
        q.scalar("SELECT count(*) FROM batches WHERE state = 'failed'")
            .await,
        1
    );
    let error: Option<String> = q.one("SELECT last_error FROM batches").await;
    let error = error.expect("a reason");
    assert!(error.contains("2 of 2 URLs not purged"), "{error}");
    assert!(error.contains("the CDN said Failed"), "{error}");
}

/// Issue 28: a deposed leader recorded a batch's acceptance 44 s late,
/// after the batch had finished under its successor: it went from
/// `succeeded` back to `submitted` and was polled for ever. A final batch
/// stays final, and is charged nothing more.
async fn a_final_batch_never_goes_back_to_submitted(q: Queue) {
    q.post(vec![file("http://e.com/a"), file("http://e.com/b")])
        .await;
    let batch = q.cut().await;
    q.accept(&batch).await;
    q.finish(&batch, purgeq::store::ItemResult::Succeeded).await;
    let before = used(&q, DAY).await;
    // The old leader's late record of the same call.
    q.accept(&batch).await;
    assert_eq!(
        q.scalar("SELECT count(*) FROM batches WHERE state = 'succeeded'")
            .await,
        1
    );
    assert_eq!(
        q.scalar("SELECT count(*) FROM items WHERE state = 'succeeded'")
            .await,
        2
    );
    assert!(
        q.store
            .submitted_batches()
            .await
            .expect("submitted")
            .is_empty(),
        "nothing left to poll"
    );
    assert_eq!(used(&q, DAY).await, before, "no charge moved or added");
}

/// What the day may have counted (certain and uncertain: issue 28 split
/// them), and the part under way.
async fn used(q: &Queue, day: &str) -> (u64, u64) {
    let quota = q.store.quota_use(&account(day)).await.expect("quota");
    (
        quota.files_used + quota.files_uncertain,
        quota.files_reserved,
    )
}

/// The certain and the uncertain part of the day's file count.
async fn ledger(q: &Queue, day: &str) -> (u64, u64) {
    let quota = q.store.quota_use(&account(day)).await.expect("quota");
    (quota.files_used, quota.files_uncertain)
}

/// Issue 12, item 3: the ledger counts what the CDN may have counted.
async fn the_ledger_never_counts_less_than_the_cdn(q: Queue) {
    q.post(
        (0..10)
            .map(|i| file(&format!("http://e.com/{i}")))
            .collect(),
    )
    .await;
    let batch = q.cut().await;
    assert_eq!(used(&q, DAY).await, (10, 10), "charged at the cut");
    // A timeout: the CDN may have counted it; the next try is charged too.
    q.store
        .batch_attempt_failed(
            &batch,
            "timeout",
            CallOutcome::Unknown,
            &account(DAY),
            now(),
        )
        .await
        .expect("attempt");
    assert_eq!(used(&q, DAY).await.0, 20);
    // Issue 28: the first call's charge is uncertain; only the attempt
    // under way holds sending back.
    assert_eq!(ledger(&q, DAY).await, (10, 10));
    // Throttled: an answer, not counted by the CDN: nothing changes.
    q.store
        .batch_attempt_failed(
            &batch,
            "throttled",
            CallOutcome::Refused,
            &account(DAY),
            now(),
        )
        .await
        .expect("attempt");
    assert_eq!(used(&q, DAY).await.0, 20);
    // A crash: the batch is adopted and charged again before it is re-sent.
    q.store
        .adopt_sending(&[batch.id], &account(DAY))
        .await
        .expect("adopt");
    assert_eq!(used(&q, DAY).await.0, 30);
    assert_eq!(ledger(&q, DAY).await, (10, 20));
    // Accepted on the next day: the pending charge moves there.
    q.store
        .batch_accepted(&batch, "task", None, &account("2026-11-26"), now())
        .await
        .expect("accepted");
    assert_eq!(used(&q, DAY).await, (20, 0));
    assert_eq!(used(&q, "2026-11-26").await, (10, 0));

    // Released unsent: refunded.
    q.post(vec![file("http://e.com/late")]).await;
    let late = q.cut().await;
    assert_eq!(used(&q, DAY).await.0, 21);
    q.store
        .release_batch(&late, "paused", now(), now())
        .await
        .expect("release");
    assert_eq!(used(&q, DAY).await.0, 20);

    // A quota refusal from the CDN: the day is spent, nothing more is cut.
    let refused = q.cut().await;
    q.store
        .release_batch(&refused, "QuotaExceeded", now(), now())
        .await
        .expect("release");
    q.store
        .quota_day_spent(
            &account(DAY),
            purgeq::ledger::on_quota_refusal(
                purgeq::ledger::Refusal {
                    preload: false,
                    files: refused.files.len() as u64,
                    directories: refused.directories.len() as u64,
                    message: "quota exceeded",
                },
                purgeq::ledger::PerDay {
                    files: 2_000,
                    directories: 500,
                    preloads: 1_000,
                },
            ),
        )
        .await
        .expect("spent");
    // Only the refused kind (the batch held files only) is spent: the
    // directory count stays true (issue 29, item 3). The refusal settles
    // the uncertain part (issue 28).
    assert_eq!(used(&q, DAY).await, (2_000, 0));
    assert_eq!(ledger(&q, DAY).await, (2_000, 0));
    assert!(q.try_cut().await.is_none());
}

/// The second schema upgrades a database of the first with nothing lost,
/// and repairs merge chains the first left two deep.
#[tokio::test]
async fn a_first_schema_database_upgrades_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("purgeq.db");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("create");
    // The first schema exactly as a released binary applied it: sqlx's
    // migrator, with only the first migration in its folder.
    let released = dir.path().join("released-migrations");
    std::fs::create_dir(&released).expect("dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_initial.sql"),
        released.join("0001_initial.sql"),
    )
    .expect("copy");
    sqlx::migrate::Migrator::new(released.as_path())
        .await
        .expect("migrator")
        .run(&mut conn)
        .await
        .expect("schema 1");
    let t = "2026-11-25T00:00:00.000Z";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests VALUES ('r1', '{t}', 'test', NULL);
         INSERT INTO batches (id, endpoint_id, state, not_before, files, directories, created_at)
             VALUES (1, 'ep', 'sending', '{t}', 1, 0, '{t}');
         INSERT INTO items (id, endpoint_id, kind, url, state, not_before, created_at, updated_at, merged_into)
             VALUES (3, 'ep', 'directory', 'http://e.com/d/', 'pending', '{t}', '{t}', '{t}', NULL),
                    (2, 'ep', 'file', 'http://e.com/d/f', 'merged', '{t}', '{t}', '{t}', 3),
                    (1, 'ep', 'file', 'http://e.com/d/f', 'merged', '{t}', '{t}', '{t}', 2),
                    (4, 'ep', 'file', 'http://e.com/g', 'sending', '{t}', '{t}', '{t}', NULL);
         UPDATE items SET batch_id = 1 WHERE id = 4;
         INSERT INTO request_items VALUES ('r1', 1, 0, NULL, NULL), ('r1', 4, 1, NULL, NULL);
         INSERT INTO quota_days VALUES ('sub', '2026-11-25', 7, 1);"
    )))
    .execute(&mut conn)
    .await
    .expect("rows of the first schema");
    conn.close().await.expect("close");

    let store = Store::open(&StoreSettings {
        path: path.clone(),
        ..StoreSettings::default()
    })
    .await
    .expect("upgrade");
    let status = store
        .request_status(&RequestId::parse("r1"))
        .await
        .expect("status")
        .expect("r1");
    assert_eq!(status.items.len(), 2, "nothing lost");
    assert_eq!(status.state, RequestState::InProgress);
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let root: i64 = sqlx::query_scalar("SELECT merged_into FROM items WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .expect("item 1");
    assert_eq!(root, 3, "the chain 1 → 2 → 3 now points at its end");
    // The batch cut by the first schema reserved its file: still counted.
    let quota = store.quota_use(&account(DAY)).await.expect("quota");
    assert_eq!((quota.files_used, quota.directories_used), (8, 1));
}

/// Retention removed finished items by age alone, so a request still
/// waiting for one URL lost the others from its status.
async fn retention_keeps_a_request_until_all_of_it_is_finished(q: Queue) {
    let r = q
        .post(vec![
            file("http://e.com/done.js"),
            file("http://e.com/d/late.js"),
        ])
        .await;
    let batch = q.cut().await;
    let done = batch
        .files
        .iter()
        .find(|i| i.url.ends_with("done.js"))
        .expect("done")
        .item_id;
    let late = batch
        .files
        .iter()
        .find(|i| i.url.ends_with("late.js"))
        .expect("late")
        .item_id;
    q.accept(&batch).await;
    q.store
        .record_results(
            batch.id,
            vec![
                (done, ItemResult::Succeeded),
                (
                    late,
                    ItemResult::Retry {
                        not_before: Timestamp::new(
                            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                        ),
                        reason: "retry later".into(),
                    },
                ),
            ],
            now(),
        )
        .await
        .expect("record");
    // Another request, finished: goes.
    let other = q.post(vec![file("http://e.com/other.js")]).await;
    let b2 = q.cut().await;
    q.accept(&b2).await;
    q.finish(&b2, ItemResult::Succeeded).await;

    let future = Timestamp::new(time::OffsetDateTime::now_utc() + time::Duration::days(1));
    let removed = q
        .store
        .remove_finished_before(future, "2099-01-01", 100)
        .await
        .expect("retention");
    assert_eq!(
        removed.requests, 1,
        "the finished request goes: {removed:?}"
    );
    assert!(
        q.store
            .request_status(&other)
            .await
            .expect("status")
            .is_none()
    );
    let status = q
        .store
        .request_status(&r)
        .await
        .expect("status")
        .expect("kept");
    assert_eq!(status.items.len(), 2, "both URLs still there");
    assert_eq!(status.state, RequestState::InProgress);
}

/// Issue 15: a URL in flight when the planner promoted its directory, put
/// back to pending (a released call), follows the promoted directory and
/// says why; its request follows the directory to its end.
async fn a_url_returned_under_a_promoted_directory_says_promoted(q: Queue) {
    let request = q.post(vec![file("http://e.com/a/1.js")]).await;
    let batch = q.cut().await;
    q.post(vec![file("http://e.com/a/2.js")]).await;
    let absorbed = q
        .store
        .promote(
            vec![purgeq::planner::Promotion {
                endpoint_id: EP.into(),
                directory: "http://e.com/a/".into(),
                files: 2,
            }],
            now(),
        )
        .await
        .expect("promote");
    assert_eq!(absorbed, 1, "only the pending file is absorbed");
    q.store
        .release_batch(&batch, "endpoint inactive", now(), now())
        .await
        .expect("release");
    let status = q
        .store
        .request_status(&request)
        .await
        .expect("status")
        .expect("known");
    assert_eq!(
        status.items[0].merged_into.as_deref(),
        Some("http://e.com/a/")
    );
    assert_eq!(status.items[0].merge_reason.as_deref(), Some("promoted"));
    let directory = q.cut().await;
    assert_eq!(directory.directory_urls(), ["http://e.com/a/"]);
    q.accept(&directory).await;
    q.finish(&directory, ItemResult::Succeeded).await;
    assert_eq!(q.state(&request).await, RequestState::Succeeded);
}

/// Each test above, once per backend: `sqlite::NAME` on a file,
/// `postgres::NAME` on a fresh database (skipped, saying so, without a
/// server unless `PURGEQ_REQUIRE_POSTGRES` is set).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Queue::new().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(q) = super::Queue::postgres(stringify!($name)).await {
                        super::$name(q).await
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    a_request_follows_its_url_through_two_merges,
    retrying_two_failed_generations_keeps_one_pending_item,
    retrying_a_request_retries_the_directory_its_url_followed,
    cancelling_every_request_that_wants_a_url_cancels_it,
    attempts_count_accepted_calls_not_cuts,
    returned_items_keep_the_coverage_rule,
    a_failed_batch_keeps_a_reason,
    a_final_batch_never_goes_back_to_submitted,
    the_ledger_never_counts_less_than_the_cdn,
    retention_keeps_a_request_until_all_of_it_is_finished,
    a_url_returned_under_a_promoted_directory_says_promoted,
);

//! The store on a real SQLite file and on a real PostgreSQL database:
//! deduplication, directory coverage and absorption, and durability across
//! a reopen, on both (`sqlite::` and `postgres::`); and, on PostgreSQL,
//! two nodes sharing one queue.

mod common;

use common::postgres::TestDatabase;
use common::series_total;
use purgeq::store::fleet::FleetDb;
use sqlx::Connection;

use purgeq::config::StoreSettings;
use purgeq::store::{ItemState, NewRequest, RequestState, Store};
use purgeq::target::{Kind, PurgeTarget};

fn file(url: &str) -> PurgeTarget {
    PurgeTarget {
        endpoint_id: "ep".into(),
        kind: Kind::File,
        url: url.into(),
    }
}

fn dir(url: &str) -> PurgeTarget {
    PurgeTarget {
        endpoint_id: "ep".into(),
        kind: Kind::Directory,
        url: url.into(),
    }
}

fn request(targets: Vec<PurgeTarget>) -> NewRequest {
    NewRequest {
        id: purgeq::store::RequestId::generate(),
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
    }
}

/// Where a test's store keeps its data: a SQLite file, or a fresh
/// PostgreSQL database. `open` can be called again (a reopen).
enum Place {
    File(tempfile::TempDir),
    Postgres(Box<TestDatabase>),
}

impl Place {
    fn file() -> Place {
        Place::File(tempfile::tempdir().expect("tmp"))
    }

    async fn postgres(test: &str) -> Option<Place> {
        TestDatabase::create(test)
            .await
            .map(|db| Place::Postgres(Box::new(db)))
    }

    async fn open(&self) -> Store {
        match self {
            Place::File(dir) => Store::open(&StoreSettings {
                path: dir.path().join("purgeq.db"),
                ..StoreSettings::default()
            })
            .await
            .expect("open"),
            Place::Postgres(db) => {
                let fleet = FleetDb::connect(&db.url).await.expect("connect");
                Store::open_postgres(&fleet).await.expect("open")
            }
        }
    }
}

/// The next batch of endpoint `ep`, cut as the batcher would on a day with
/// quota to spare, every item eligible.
async fn cut_one(
    store: &Store,
    account: &purgeq::store::QuotaAccount,
    max_files: usize,
    max_directories: usize,
) -> purgeq::store::Batch {
    let limits = purgeq::store::CutLimits {
        max_files,
        max_directories,
        account: account.clone(),
        files_per_day: 100,
        directories_per_day: 100,
        reserve_files: 0,
        reserve_directories: 0,
    };
    let end_of_time = purgeq::store::Timestamp::parse("9999-12-31T00:00:00.000Z").expect("a time");
    store
        .cut_batch("ep", limits, end_of_time)
        .await
        .expect("cut")
        .expect("a batch")
}

async fn deduplicates_pending_urls_within_and_across_requests(place: Place) {
    let store = place.open().await;
    let first = store
        .enqueue(request(vec![
            file("http://e.com/a"),
            file("http://e.com/b"),
            file("http://e.com/a"),
        ]))
        .await
        .expect("enqueue");
    assert_eq!((first.urls, first.new, first.deduplicated), (3, 2, 1));
    let second = store
        .enqueue(request(vec![
            file("http://e.com/b"),
            file("http://e.com/c"),
        ]))
        .await
        .expect("enqueue");
    assert_eq!((second.urls, second.new, second.deduplicated), (2, 1, 1));
    // Same URL on another endpoint, or as a directory, is another item.
    let mut other = file("http://e.com/a");
    other.endpoint_id = "ep2".into();
    let third = store.enqueue(request(vec![other])).await.expect("enqueue");
    assert_eq!(third.new, 1);
    let counts = store.state_counts().await.expect("counts");
    assert_eq!(counts.pending, 4);

    let status = store
        .request_status(&second.id)
        .await
        .expect("status")
        .expect("known");
    assert_eq!(status.items.len(), 2);
    assert_eq!(status.state, RequestState::InProgress);
    assert!(
        store
            .request_status(&purgeq::store::RequestId::parse("nope"))
            .await
            .expect("status")
            .is_none()
    );
}

async fn a_pending_directory_covers_and_absorbs_what_is_under_it(place: Place) {
    let store = place.open().await;
    let early = store
        .enqueue(request(vec![
            file("http://e.com/d/x.png"),
            dir("http://e.com/d/sub/"),
            file("http://e.com/other"),
        ]))
        .await
        .expect("enqueue");
    assert_eq!(early.new, 3);
    let directory = store
        .enqueue(request(vec![dir("http://e.com/d/")]))
        .await
        .expect("enqueue");
    assert_eq!(directory.new, 1);
    let counts = store.state_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.merged), (2, 2));

    // A file arriving under the pending directory links to it at once.
    let late = store
        .enqueue(request(vec![
            file("http://e.com/d/sub/y.png"),
            dir("http://e.com/d/sub/z/"),
        ]))
        .await
        .expect("enqueue");
    assert_eq!((late.new, late.deduplicated), (0, 2));
    let status = store
        .request_status(&late.id)
        .await
        .expect("status")
        .expect("known");
    assert!(status.items.iter().all(|i| i.state == ItemState::Pending));

    let status = store
        .request_status(&early.id)
        .await
        .expect("status")
        .expect("known");
    let merged: Vec<_> = status
        .items
        .iter()
        .filter(|i| i.merged_into.is_some())
        .collect();
    assert_eq!(merged.len(), 2);
    assert!(
        merged
            .iter()
            .all(|i| i.merged_into.as_deref() == Some("http://e.com/d/"))
    );
    // "http://e.com/d0" style neighbours are not under "http://e.com/d/".
    let neighbour = store
        .enqueue(request(vec![
            file("http://e.com/d0"),
            file("http://e.com/d"),
        ]))
        .await
        .expect("enqueue");
    assert_eq!(neighbour.new, 2);
}

async fn accepted_requests_survive_a_reopen(place: Place) {
    let id = {
        let store = place.open().await;
        let outcome = store
            .enqueue(request(vec![file("http://e.com/a")]))
            .await
            .expect("enqueue");
        store.close().await;
        outcome.id
    };
    let store = place.open().await;
    let status = store
        .request_status(&id)
        .await
        .expect("status")
        .expect("still there");
    assert_eq!(status.items[0].url, "http://e.com/a");
    assert_eq!(store.state_counts().await.expect("counts").pending, 1);
}

async fn concurrent_requests_stored_together_count_each_url_new_once(place: Place) {
    let store = place.open().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        // 200 requests over 50 distinct URLs, two URLs each.
        let targets = vec![
            file(&format!("http://e.com/{}", i % 50)),
            file(&format!("http://e.com/{}", (i + 1) % 50)),
        ];
        tasks.push(tokio::spawn(async move {
            store.enqueue(request(targets)).await.expect("enqueue")
        }));
    }
    let mut new = 0;
    let mut deduplicated = 0;
    for task in tasks {
        let outcome = task.await.expect("task");
        assert_eq!(outcome.urls, 2);
        new += outcome.new;
        deduplicated += outcome.deduplicated;
    }
    assert_eq!(new, 50, "each distinct URL is new exactly once");
    assert_eq!(deduplicated, 350);
    let counts = store.state_counts().await.expect("counts");
    assert_eq!(counts.pending, 50);
}

/// Issue 31: the counts the store keeps as rows change equal a recount,
/// with two writers at once (on PostgreSQL two nodes, each appending
/// deltas) and folds running meanwhile, through cuts and cancels.
async fn kept_counts_equal_a_recount_under_concurrent_writers(place: Place) {
    use purgeq::store::{QuotaAccount, Timestamp};
    let store = place.open().await;
    let other = match &place {
        Place::Postgres(_) => place.open().await,
        Place::File(_) => store.clone(),
    };
    let folding = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                store.fold_counts().await.expect("fold");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..120 {
        let node = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let mut targets = vec![file(&format!("http://e.com/f/{}", i % 70))];
        if i % 10 == 0 {
            targets.push(dir(&format!("http://e.com/d{}/", i % 3)));
            targets.push(file(&format!("http://e.com/d{}/x{i}", i % 3)));
        }
        let mut asked = request(targets);
        if i % 7 == 0 {
            asked.priority = purgeq::target::Priority::Urgent;
        }
        tasks.push(tokio::spawn(async move {
            let id = asked.id.clone();
            node.enqueue(asked).await.expect("enqueue");
            id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    folding.await.expect("folds");
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let account = QuotaAccount {
        subscription_id: "sub".into(),
        day: "2026-12-05".into(),
    };
    cut_one(&store, &account, 20, 2).await;
    for id in ids.iter().step_by(9) {
        other.cancel_pending(id, now).await.expect("cancel");
    }
    let kept = |counts: purgeq::store::QueueCounts| {
        let mut rows: Vec<(String, String, bool, u64)> = counts
            .items
            .into_iter()
            .map(|c| {
                (
                    c.kind.as_str().to_owned(),
                    c.state.as_str().to_owned(),
                    c.urgent,
                    c.n,
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let before_fold = kept(store.queue_counts().await.expect("counts"));
    store.fold_counts().await.expect("fold");
    let after_fold = kept(other.queue_counts().await.expect("counts"));
    let sql = "SELECT kind, state, urgent, CAST(count(*) AS BIGINT) FROM items
               GROUP BY kind, state, urgent ORDER BY kind, state, urgent";
    let recount: Vec<(String, String, i64, i64)> = match &place {
        Place::File(dir) => {
            let url = format!("sqlite://{}", dir.path().join("purgeq.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query_as(sql)
                .fetch_all(&mut conn)
                .await
                .expect("recount")
        }
        Place::Postgres(db) => {
            let mut conn = sqlx::PgConnection::connect_with(db.url.connect_options())
                .await
                .expect("postgres");
            sqlx::query_as(sql)
                .fetch_all(&mut conn)
                .await
                .expect("recount")
        }
    };
    let recount: Vec<(String, String, bool, u64)> = recount
        .into_iter()
        .map(|(k, s, u, n)| (k, s, u != 0, n as u64))
        .collect();
    assert!(
        recount.iter().any(|(_, s, _, _)| s == "sending"),
        "{recount:?}"
    );
    assert!(
        recount.iter().any(|(_, s, _, _)| s == "cancelled"),
        "{recount:?}"
    );
    assert_eq!(
        before_fold, recount,
        "the counts with deltas not yet folded"
    );
    assert_eq!(after_fold, recount, "the counts after a fold");
}

/// Issue 31: the charts read the per-minute totals kept as rows are
/// written; they say what was written, before and after a fold.
async fn charts_read_the_minutes_kept_as_rows_are_written(place: Place) {
    use purgeq::store::{CallRecord, Slot, Timestamp};
    let store = place.open().await;
    let hour_ago = Timestamp::new(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    store
        .enqueue(request(vec![
            file("http://e.com/1"),
            file("http://e.com/2"),
        ]))
        .await
        .expect("enqueue");
    // Asked again: a URL asked for counts as enqueued each time.
    store
        .enqueue(request(vec![
            file("http://e.com/1"),
            dir("http://e.com/d/"),
        ]))
        .await
        .expect("enqueue");
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let call = |outcome| CallRecord {
        at: now,
        operation: "purge",
        outcome,
        error: None,
    };
    store
        .record_calls(vec![call("accepted"), call("accepted"), call("throttled")])
        .await
        .expect("calls");
    let total = |counts: purgeq::store::Counts, series: &str| series_total(&counts, series);
    for round in ["before a fold", "after a fold"] {
        for slot in [Slot::Minute, Slot::Hour] {
            let urls = store.urls_flow(hour_ago, slot).await.expect("urls");
            assert_eq!(total(urls, "enqueued"), 4, "{round}, {slot:?}");
            let calls = store.calls_by_outcome(hour_ago, slot).await.expect("calls");
            assert_eq!(
                (total(calls.clone(), "accepted"), total(calls, "throttled")),
                (2, 1),
                "{round}, {slot:?}"
            );
        }
        store.fold_counts().await.expect("fold");
    }
}

/// Issue 36: the "Quota used today" chart is the quota ledger's own
/// changes, so it sums to what the quota bars say: charges at cut, a
/// refund when a batch is released, before and after a fold.
async fn the_quota_chart_sums_to_the_ledger(place: Place) {
    use purgeq::store::{QuotaAccount, Timestamp};
    let store = place.open().await;
    store
        .enqueue(request(
            (0..5)
                .map(|i| file(&format!("http://e.com/q{i}")))
                .chain([dir("http://e.com/qd/")])
                .collect(),
        ))
        .await
        .expect("enqueue");
    let account = QuotaAccount {
        subscription_id: "sub".into(),
        day: "2026-12-05".into(),
    };
    let first = cut_one(&store, &account, 2, 1).await;
    let second = cut_one(&store, &account, 2, 0).await;
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    store
        .release_batch(&second, "EndpointInactive", now, now)
        .await
        .expect("release");
    assert_eq!(
        (
            first.files.len(),
            first.directories.len(),
            second.files.len()
        ),
        (2, 1, 2)
    );
    for round in ["before a fold", "after a fold"] {
        let chart = store.quota_through_the_day(&account).await.expect("chart");
        let bars = store.quota_use(&account).await.expect("quota");
        assert_eq!((bars.files_used, bars.directories_used), (2, 1), "{round}");
        assert_eq!(
            (
                series_total(&chart, "files"),
                series_total(&chart, "directories")
            ),
            (bars.files_used as i64, bars.directories_used as i64),
            "{round}: {chart:?}"
        );
        // Another day's chart is its own.
        let other = QuotaAccount {
            day: "2026-12-04".into(),
            ..account.clone()
        };
        assert!(
            store
                .quota_through_the_day(&other)
                .await
                .expect("chart")
                .is_empty()
        );
        store.fold_counts().await.expect("fold");
    }
}

/// Issue 36: search finds every URL a request asked for by its URL
/// (exact, prefix), its request, the TaskTrackId of its call, its label,
/// its state and time, newest first, a page at a time, on both backends.
async fn search_finds_urls_by_every_key(place: Place) {
    use purgeq::store::{QuotaAccount, Search, Timestamp, UrlMatch};
    let store = place.open().await;
    let at = |minutes: i64| time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes);
    let labelled = |label: &str, minutes: i64, targets: Vec<PurgeTarget>| NewRequest {
        label: Some(label.into()),
        received_at: at(minutes),
        ..request(targets)
    };
    // Old: a deploy's two files, sent in one call.
    let old = labelled(
        "deploy-1",
        60 * 24 * 25,
        vec![file("http://e.com/app/a.js"), file("http://e.com/app/b.js")],
    );
    let old_id = old.id.clone();
    store.enqueue(old).await.expect("enqueue");
    let account = QuotaAccount {
        subscription_id: "sub".into(),
        day: "2026-11-10".into(),
    };
    let batch = cut_one(&store, &account, 10, 10).await;
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    store
        .batch_accepted(&batch, "task-old", None, &account, now)
        .await
        .expect("accepted");
    // Newer: a directory, then a file under it (linked to the directory:
    // asked as the file), and the same file again later.
    let newer = labelled("deploy-2", 30, vec![dir("http://e.com/app/")]);
    store.enqueue(newer).await.expect("enqueue");
    let covered = labelled("deploy-2", 20, vec![file("http://e.com/app/a.js")]);
    let covered_id = covered.id.clone();
    store.enqueue(covered).await.expect("enqueue");
    let other = labelled("other", 10, vec![file("http://f.com/x.css")]);
    store.enqueue(other).await.expect("enqueue");

    let urls = |page: &purgeq::store::SearchPage| -> Vec<(String, String)> {
        page.rows
            .iter()
            .map(|r| (r.url.clone(), r.request_id.clone()))
            .collect()
    };
    let search = |f: fn(&mut Search)| {
        let mut s = Search::default();
        f(&mut s);
        s
    };
    // Exact URL: both times it was asked, newest first; the newer one
    // through the directory that covers it.
    let page = store
        .search(&search(|s| {
            s.url = Some(UrlMatch::Exact("http://e.com/app/a.js".into()))
        }))
        .await
        .expect("search");
    assert_eq!(
        urls(&page),
        [
            (
                "http://e.com/app/a.js".to_owned(),
                covered_id.as_str().to_owned()
            ),
            (
                "http://e.com/app/a.js".to_owned(),
                old_id.as_str().to_owned()
            ),
        ]
    );
    assert_eq!(
        page.rows[0].merged_into_url.as_deref(),
        Some("http://e.com/app/")
    );
    assert_eq!(page.rows[0].state, "pending");
    assert_eq!(page.rows[1].state, "submitted");
    assert_eq!(page.rows[1].task_track_id.as_deref(), Some("task-old"));
    assert!(page.next.is_none() && !page.capped);
    // Prefix: the directory and the files under it, not f.com.
    let page = store
        .search(&search(|s| {
            s.url = Some(UrlMatch::Prefix("http://e.com/app/".into()))
        }))
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 4, "{page:?}");
    assert!(
        page.rows
            .iter()
            .all(|r| r.url.starts_with("http://e.com/app/"))
    );
    // TaskTrackId: the call's two URLs.
    let page = store
        .search(&search(|s| s.task_track_id = Some("task-old".into())))
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 2);
    assert!(page.rows.iter().all(|r| r.request_id == old_id.as_str()));
    // Label, and label with state.
    let page = store
        .search(&search(|s| s.label = Some("deploy-2".into())))
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 2);
    let page = store
        .search(&search(|s| {
            s.label = Some("deploy-1".into());
            s.state = Some("submitted".into());
        }))
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 2);
    // Time: the last hour holds the three newer requests.
    let hour_ago = Timestamp::new(at(60)).to_string();
    let page = store
        .search(&Search {
            since: Some(hour_ago.clone()),
            ..Search::default()
        })
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 3);
    assert_eq!(page.rows[0].url, "http://f.com/x.css", "newest first");
    let page = store
        .search(&Search {
            until: Some(hour_ago),
            ..Search::default()
        })
        .await
        .expect("search");
    assert_eq!(page.rows.len(), 2, "the old deploy only");
    // `merged`: the URL asked for through the directory that covers it.
    let page = store
        .search(&search(|s| s.state = Some("merged".into())))
        .await
        .expect("search");
    assert_eq!(
        urls(&page),
        [(
            "http://e.com/app/a.js".to_owned(),
            covered_id.as_str().to_owned()
        )]
    );
    // A request's URLs; nothing for an unknown URL.
    let page = store
        .search(&search(|s| s.request_id = Some("no-such".into())))
        .await
        .expect("search");
    assert!(page.rows.is_empty());
    let page = store
        .search(&search(|s| {
            s.url = Some(UrlMatch::Exact("http://e.com/app/c.js".into()))
        }))
        .await
        .expect("search");
    assert!(page.rows.is_empty());
}

/// Issue 36: search pages: every URL once, newest first, across pages and
/// windows, whichever range drives it.
async fn search_pages_through_everything_once(place: Place) {
    use purgeq::store::{Search, UrlMatch};
    let store = place.open().await;
    // 520 requests of 2 URLs: more requests than a window (500), more
    // URLs than a prefix reads (500), many pages (50).
    for r in 0..520_i64 {
        let mut new = request(
            (0..2)
                .map(|i| file(&format!("http://e.com/p/{r:03}/{i}.js")))
                .collect(),
        );
        new.received_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(1_000 - r);
        new.label = Some("bulk".into());
        store.enqueue(new).await.expect("enqueue");
    }
    for search in [
        Search::default(),
        Search {
            label: Some("bulk".into()),
            ..Search::default()
        },
        Search {
            url: Some(UrlMatch::Prefix("http://e.com/p/".into())),
            ..Search::default()
        },
    ] {
        let mut seen = Vec::new();
        let mut next = None;
        let mut pages = 0;
        loop {
            let page = store
                .search(&Search {
                    after: next.clone(),
                    ..search.clone()
                })
                .await
                .expect("search");
            pages += 1;
            seen.extend(page.rows.iter().map(|r| r.url.clone()));
            match page.next {
                Some(cursor) => next = Some(cursor),
                None => {
                    assert_eq!(page.capped, search.url.is_some(), "{search:?}");
                    break;
                }
            }
            assert!(pages < 100, "{search:?} does not end");
        }
        if search.url.is_some() {
            // Capped: among the first 500 URLs in URL order.
            assert_eq!(seen.len(), 500, "{search:?}");
        } else {
            let expected: Vec<String> = (0..520)
                .rev()
                .flat_map(|r| (0..2).map(move |i| format!("http://e.com/p/{r:03}/{i}.js")))
                .collect();
            assert_eq!(seen, expected, "{search:?}: newest first, each once");
        }
    }
}

/// Shutdown waits for the writer's last commit (issue 14): `close` returns
/// once what was queued is committed and the connection closed; writes
/// asked for after it fail with `Closed` instead of vanishing.
async fn close_waits_for_the_last_commit(place: Place) {
    let store = place.open().await;
    let writes: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue(request(vec![file(&format!("http://e.com/{i}"))]))
                    .await
            })
        })
        .collect();
    // Let the enqueues reach the writer's queue, then stop it.
    tokio::task::yield_now().await;
    store.close().await;
    let mut stored = 0;
    for write in writes {
        match write.await.expect("join") {
            Ok(_) => stored += 1,
            Err(purgeq::store::StoreError::Closed) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        store
            .enqueue(request(vec![file("http://e.com/late")]))
            .await,
        Err(purgeq::store::StoreError::Closed)
    ));
    let again = place.open().await;
    assert_eq!(
        again.state_counts().await.expect("counts").pending,
        stored,
        "every acknowledged write is on disk, nothing else"
    );
}

/// Issue 32: what the cache rules say is stored with the items on both
/// backends. Query variants link to the object the edge caches, a second
/// intent moves a file's expiry to its own, `expire_due` ends what is due
/// (and nothing else) as `expired`, and a policy that stops ignoring
/// `Cache-Control` takes every pending expiry away.
async fn cache_facts_expire_what_the_rules_allow(place: Place) {
    use purgeq::cdn::cache_rules::{CachePolicy, CacheRule, Policies, RuleType};
    let store = place.open().await;
    let policy = CachePolicy {
        rules: vec![CacheRule {
            rule_type: RuleType::Suffix,
            items: vec![".html".into()],
            ttl_secs: 60,
        }],
        ignore_cache_control: true,
        ignore_query_string: true,
        ignore_cookie: false,
    };
    let policies = Policies::default();
    policies.set(
        "ep",
        purgeq::cdn::cache_rules::KnownPolicy {
            policy: policy.clone(),
            fetched_at: String::new(),
            refresh_error: None,
        },
    );
    // Whole seconds: stored times keep milliseconds.
    let t0 = (time::OffsetDateTime::now_utc() - time::Duration::minutes(10))
        .replace_nanosecond(0)
        .expect("valid");
    let post = |urls: &[&str], at: time::OffsetDateTime| {
        let mut request = request(urls.iter().map(|u| file(u)).collect());
        request.received_at = at;
        request.cache_facts = policies.facts(&mut request.targets, at);
        request
    };
    let first = post(
        &[
            "http://e.com/a.html?v=1",
            "http://e.com/a.html?v=2",
            "http://e.com/b.js",
        ],
        t0,
    );
    let first_id = first.id.clone();
    let outcome = store.enqueue(first).await.expect("enqueue");
    assert_eq!((outcome.urls, outcome.new), (3, 2), "a.html once, b.js");
    // A second intent for a.html five minutes later: its copies live on.
    store
        .enqueue(post(
            &["http://e.com/a.html"],
            t0 + time::Duration::minutes(5),
        ))
        .await
        .expect("enqueue");
    assert_eq!(
        store.next_expiry().await.expect("next"),
        Some(t0 + time::Duration::minutes(6))
    );
    // Not due yet at t0 + 2 min; due at t0 + 6 min.
    assert_eq!(
        store
            .expire_due(t0 + time::Duration::minutes(2))
            .await
            .expect("expire"),
        0
    );
    assert_eq!(
        store
            .expire_due(t0 + time::Duration::minutes(6))
            .await
            .expect("expire"),
        1
    );
    let status = store
        .request_status(&first_id)
        .await
        .expect("read")
        .expect("request");
    let states: Vec<(ItemState, Option<&str>)> = status
        .items
        .iter()
        .map(|i| (i.state, i.merge_reason.as_deref()))
        .collect();
    assert_eq!(
        states,
        vec![
            (ItemState::Expired, Some("query_ignored")),
            (ItemState::Expired, Some("query_ignored")),
            (ItemState::Pending, None),
        ]
    );
    assert!(
        status.items[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("Suffix .html, TTL 60 s")
    );
    assert_eq!(store.next_expiry().await.expect("next"), None);

    // A new intent under the same policy, then the policy changes to
    // honour Cache-Control: the pending file no longer expires.
    store
        .enqueue(post(&["http://e.com/c.html"], t0))
        .await
        .expect("enqueue");
    assert!(store.next_expiry().await.expect("next").is_some());
    let honouring = CachePolicy {
        ignore_cache_control: false,
        ..policy.clone()
    };
    let now = time::OffsetDateTime::now_utc();
    assert!(
        store
            .save_cache_policy("ep", &honouring, now)
            .await
            .expect("save")
    );
    assert!(
        !store
            .save_cache_policy("ep", &honouring, now)
            .await
            .expect("save")
    );
    assert_eq!(store.next_expiry().await.expect("next"), None);
    assert_eq!(store.expire_due(now).await.expect("expire"), 0);
    // Back to ignoring it: the expiry comes back from the intent's time.
    assert!(
        store
            .save_cache_policy("ep", &policy, now)
            .await
            .expect("save")
    );
    assert_eq!(
        store.next_expiry().await.expect("next"),
        Some(t0 + time::Duration::minutes(1))
    );
    let kept = store.cache_policies().await.expect("kept");
    assert_eq!(kept.get("ep").map(|k| &k.policy), Some(&policy));
}

/// The page's and `GET /v1/purges`' summaries read the same on both
/// backends (PostgreSQL has its own spelling of the statement).
async fn request_summaries_read_alike(place: Place) {
    let store = place.open().await;
    let first = request(vec![file("http://e.com/s/a"), file("http://e.com/s/b")]);
    let second = request(vec![dir("http://e.com/t/")]);
    let (first_id, second_id) = (first.id.clone(), second.id.clone());
    store.enqueue(first).await.expect("enqueue");
    store.enqueue(second).await.expect("enqueue");
    let page = store
        .recent_requests(None, 10, None)
        .await
        .expect("summaries");
    let seen: Vec<(String, u64, RequestState, bool)> = page
        .iter()
        .map(|(s, matched)| (s.id.clone(), s.urls, s.state, *matched))
        .collect();
    assert_eq!(
        seen,
        vec![
            (second_id.to_string(), 1, RequestState::InProgress, true),
            (first_id.to_string(), 2, RequestState::InProgress, true),
        ]
    );
    let matched: Vec<bool> = store
        .recent_requests(None, 10, Some("http://e.com/s/"))
        .await
        .expect("summaries")
        .into_iter()
        .map(|(_, matched)| matched)
        .collect();
    assert_eq!(matched, vec![false, true]);
}

/// Issue 34: a URL's CDN purge waits for every origin-cache layer in
/// front of its host. Held items are not the batcher's; the last layer
/// done releases one; a new intent starts its layers again; a directory
/// the planner promotes is purged at its files' layers first.
async fn origin_caches_hold_items_until_every_layer_is_done(place: Place) {
    use purgeq::store::{OriginOutcome, Timestamp};
    let store = place.open().await;
    let (a, b) = ("http://e.com/p/a.css", "http://e.com/p/b.css");
    let mut first = request(vec![file(a), file(b)]);
    first.origin_purges = vec![
        (0, "varnish".into()),
        (0, "nginx".into()),
        (1, "varnish".into()),
    ];
    let first_id = first.id.clone();
    store.enqueue(first).await.expect("enqueue");
    // Until the origin stage writes their layers' rows, they say so.
    let status = store
        .request_status(&first_id)
        .await
        .expect("status")
        .expect("known");
    for item in &status.items {
        assert!(
            item.waiting
                .as_deref()
                .is_some_and(|w| w.starts_with("origin caches: not asked yet")),
            "{item:?}"
        );
    }
    let later =
        |secs| Timestamp::new(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs));
    let ready = store
        .readiness("ep", Kind::File, later(1), 100)
        .await
        .expect("readiness");
    assert_eq!((ready.eligible, ready.earliest_not_before), (0, None));

    // Intake stored them held; the origin stage writes their layers'
    // rows (here by hand: a behind both layers, b behind varnish).
    let held = store.unstarted_held_items(0, 100).await.expect("held");
    assert_eq!(held.len(), 2, "{held:?}");
    let rows: Vec<(i64, String)> = held
        .iter()
        .flat_map(|(id, url)| {
            let layers: &[&str] = if url == a {
                &["varnish", "nginx"]
            } else {
                &["varnish"]
            };
            layers
                .iter()
                .map(|l| (*id, l.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let ids = held.iter().map(|(id, _)| *id).collect();
    let released = store
        .start_held_items(rows, ids, later(0))
        .await
        .expect("start");
    assert_eq!(released, 0, "both wait for their layers");
    assert!(
        store
            .unstarted_held_items(0, 100)
            .await
            .expect("held")
            .is_empty()
    );

    let due = store
        .origin_purges_due(later(1), 100, &["varnish".to_owned(), "nginx".to_owned()])
        .await
        .expect("due");
    assert_eq!(due.len(), 3, "{due:?}");
    let outcomes = due
        .iter()
        .map(|row| {
            let outcome = match (row.url.as_str(), row.layer.as_str()) {
                (url, "nginx") if url == a => OriginOutcome::Retry {
                    reason: "answered 503".into(),
                    at: later(60),
                },
                _ => OriginOutcome::Done {
                    answer: "purged".into(),
                },
            };
            (row.id, row.item_id, outcome)
        })
        .collect();
    let released = store
        .record_origin_purges(outcomes, later(1))
        .await
        .expect("record");
    assert_eq!(released, 1, "b is done at its one layer; a waits for nginx");
    let ready = store
        .readiness("ep", Kind::File, later(2), 100)
        .await
        .expect("readiness");
    assert_eq!(ready.eligible, 1);

    // b changes again: its layer purges it again before the CDN.
    let mut again = request(vec![file(b)]);
    again.origin_purges = vec![(0, "varnish".into())];
    let again_id = again.id.clone();
    store.enqueue(again).await.expect("enqueue");
    let ready = store
        .readiness("ep", Kind::File, later(2), 100)
        .await
        .expect("readiness");
    assert_eq!(ready.eligible, 0, "b is held again");
    let status = store
        .request_status(&again_id)
        .await
        .expect("status")
        .expect("known");
    let layer = &status.items[0].origin_caches[0];
    assert_eq!(
        (layer.layer.as_str(), layer.state.as_str(), layer.attempts),
        ("varnish", "pending", 0)
    );

    // The planner promotes /p/: the directory waits for both layers.
    store
        .promote(
            vec![purgeq::planner::Promotion {
                endpoint_id: "ep".into(),
                directory: "http://e.com/p/".into(),
                files: 2,
            }],
            later(3),
        )
        .await
        .expect("promote");
    let ready = store
        .readiness("ep", Kind::Directory, later(4), 100)
        .await
        .expect("readiness");
    assert_eq!(ready.eligible, 0, "the promoted directory is held");
    let due = store
        .origin_purges_due(later(120), 100, &["varnish".to_owned(), "nginx".to_owned()])
        .await
        .expect("due");
    let mut directory: Vec<(&str, &str)> = due
        .iter()
        .filter(|row| row.kind == Kind::Directory)
        .map(|row| (row.layer.as_str(), row.item_state.as_str()))
        .collect();
    directory.sort_unstable();
    assert_eq!(directory, [("nginx", "pending"), ("varnish", "pending")]);
    assert!(
        due.iter()
            .filter(|row| row.kind == Kind::File)
            .all(|row| row.item_state == "merged"),
        "the files' own rows are left for the stage to close: {due:?}"
    );
}

/// Issue 34: files stored held whose layers' rows the origin stage has
/// not written yet, promoted by the planner: the directory is held too,
/// and is what the stage starts (it is never sent to the CDN first).
async fn a_promotion_of_unstarted_held_files_holds_the_directory(place: Place) {
    use purgeq::store::Timestamp;
    let store = place.open().await;
    let files = ["http://e.com/q/a.css", "http://e.com/q/b.css"];
    let mut held = request(files.iter().map(|f| file(f)).collect());
    held.origin_purges = vec![(0, "varnish".into()), (1, "varnish".into())];
    store.enqueue(held).await.expect("enqueue");
    let later =
        |secs| Timestamp::new(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs));
    store
        .promote(
            vec![purgeq::planner::Promotion {
                endpoint_id: "ep".into(),
                directory: "http://e.com/q/".into(),
                files: 2,
            }],
            later(1),
        )
        .await
        .expect("promote");
    let ready = store
        .readiness("ep", Kind::Directory, later(2), 100)
        .await
        .expect("readiness");
    assert_eq!(ready.eligible, 0, "the directory is held");
    let unstarted = store.unstarted_held_items(0, 100).await.expect("held");
    let urls: Vec<&str> = unstarted.iter().map(|(_, url)| url.as_str()).collect();
    assert_eq!(urls, ["http://e.com/q/"], "the stage starts the directory");
    store.close().await;
}

/// Issue 33: verification's rows on both backends: started for what
/// succeeded (a directory through the file asked under it), due, recorded
/// round by round, and read back per URL and for the page.
async fn verification_rows_read_alike(place: Place) {
    use purgeq::store::{
        EdgeRecord, ItemResult, QuotaAccount, RoundOutcome, Timestamp, VerificationState,
    };
    let store = place.open().await;
    let (a, b, d, x) = (
        "http://e.com/v/a.css",
        "http://e.com/v/b.css",
        "http://e.com/d/",
        "http://e.com/d/x.js",
    );
    let asked = request(vec![file(a), file(b), dir(d), file(x)]);
    let id = asked.id.clone();
    store.enqueue(asked).await.expect("enqueue");
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let account = QuotaAccount {
        subscription_id: "sub".into(),
        day: "2026-12-05".into(),
    };
    let batch = cut_one(&store, &account, 10, 10).await;
    store
        .batch_accepted(&batch, "task", None, &account, now)
        .await
        .expect("accepted");
    let results = batch
        .files
        .iter()
        .chain(&batch.directories)
        .map(|i| (i.item_id, ItemResult::Succeeded))
        .collect();
    store
        .record_results(batch.id, results, now)
        .await
        .expect("succeeded");

    let epoch = Timestamp::parse("2000-01-01T00:00:00.000Z").expect("a time");
    let started = store
        .start_verifications(epoch, now, 20, 100)
        .await
        .expect("start");
    assert_eq!(started, 3, "a, b, and x for the directory");
    let again = store
        .start_verifications(epoch, now, 20, 100)
        .await
        .expect("start");
    assert_eq!(again, 0, "started once");
    let due = store.verifications_due(now, 10).await.expect("due");
    let mut urls: Vec<&str> = due.iter().map(|d| d.url.as_str()).collect();
    urls.sort_unstable();
    assert_eq!(urls, [x, a, b]);
    let edge = |state| EdgeRecord {
        edge: "127.0.0.1:80".into(),
        state,
        served: "200".into(),
        origin: "200".into(),
        fresh_at: None,
    };
    for row in &due {
        let (record, outcome) = match row.url.as_str() {
            url if url == a => (
                edge(VerificationState::Fresh),
                RoundOutcome::Ended {
                    state: VerificationState::Fresh,
                    reason: None,
                },
            ),
            url if url == b => (
                edge(VerificationState::Stale),
                RoundOutcome::Ended {
                    state: VerificationState::Stale,
                    reason: Some("edge 127.0.0.1:80 serves 200, ETag \"v1\"".into()),
                },
            ),
            _ => (
                edge(VerificationState::Stale),
                RoundOutcome::Again {
                    at: Timestamp::new(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
                },
            ),
        };
        store
            .record_round(row.id, vec![record], outcome, now)
            .await
            .expect("round");
    }
    let views = store.verification_of_request(&id).await.expect("views");
    let state = |position: i64| views.get(&position).map(|v| v.state);
    assert_eq!(state(0), Some(VerificationState::Fresh));
    assert!(views[&0].time_to_fresh_seconds.is_some());
    assert_eq!(state(1), Some(VerificationState::Stale));
    assert!(
        views[&1]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("v1"))
    );
    assert_eq!(state(2), Some(VerificationState::Pending), "the directory");
    assert_eq!(views[&2].probed, vec![x.to_owned()]);
    assert_eq!(state(3), Some(VerificationState::Pending), "x itself");
    let summary = store
        .freshness(time::OffsetDateTime::now_utc())
        .await
        .expect("freshness");
    assert_eq!(summary.pending, 1);
    assert_eq!((summary.hour.fresh, summary.hour.stale), (1, 1));
    assert_eq!(summary.stale_now.len(), 1);
    assert_eq!(summary.stale_now[0].url, b);
}

/// Issue 35: the tag registry on both backends: a feed replaces a URL's
/// tags, an empty list forgets it, a tag expands to its URLs, the bound
/// drops the least recently seen and counts them; a request records its
/// tags and the tag each URL came from.
async fn the_tag_registry_reads_alike(place: Place) {
    use purgeq::store::{TagFeed, TagSource, Timestamp};
    let store = place.open().await;
    let at = |s: i64| Timestamp::new(time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s));
    let feed = |urls: &[(&str, &[&str])]| -> Vec<TagFeed> {
        urls.iter()
            .map(|(url, tags)| TagFeed {
                url: url.to_string(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            })
            .collect()
    };
    let outcome = store
        .feed_tags(
            feed(&[
                ("http://h/a", &["p1", "all"]),
                ("http://h/b", &["p2", "all"]),
                ("http://h/c", &["p1"]),
            ]),
            TagSource::Api,
            3,
            at(1),
        )
        .await
        .expect("feed");
    assert_eq!(
        (outcome.tagged, outcome.forgotten, outcome.dropped),
        (3, 0, 0)
    );
    // Re-tagged, forgotten, and one more past the bound of 3: the least
    // recently seen (`c`, seen at 1) goes.
    let outcome = store
        .feed_tags(
            feed(&[
                ("http://h/a", &["p2"]),
                ("http://h/b", &[]),
                ("http://h/d", &["p1"]),
                ("http://h/e", &["p1"]),
            ]),
            TagSource::Header,
            3,
            at(2),
        )
        .await
        .expect("feed");
    assert_eq!(
        (outcome.tagged, outcome.forgotten, outcome.dropped),
        (3, 1, 1)
    );
    let tags: Vec<String> = ["p1", "p2", "all", "none"].map(String::from).to_vec();
    let found = store.urls_of_tags(&tags, 100).await.expect("expand");
    assert_eq!(found["p1"], ["http://h/d", "http://h/e"]);
    assert_eq!(found["p2"], ["http://h/a"]);
    assert!(
        !found.contains_key("all") && !found.contains_key("none"),
        "{found:?}"
    );
    assert_eq!(store.tags_of_url("http://h/a").await.expect("tags"), ["p2"]);
    let counts = store.tag_registry_counts().await.expect("counts");
    assert_eq!((counts.urls, counts.dropped), (3, 1));

    let mut tagged = request(vec![file("http://h/d"), file("http://h/e")]);
    tagged.tags = vec![("p1".to_owned(), 2), ("none".to_owned(), 0)];
    tagged.via_tag = [(0, "p1".to_owned()), (1, "p1".to_owned())]
        .into_iter()
        .collect();
    let id = tagged.id.clone();
    store.enqueue(tagged).await.expect("enqueue");
    let status = store
        .request_status(&id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(status.tags.get("p1"), Some(&2));
    assert_eq!(status.tags.get("none"), Some(&0));
    assert!(
        status
            .items
            .iter()
            .all(|i| i.via_tag.as_deref() == Some("p1")),
        "{:?}",
        status.items
    );
    store.close().await;
}

/// Each test above, once per backend: `sqlite::NAME` on a file,
/// `postgres::NAME` on a fresh database (skipped, saying so, without a
/// server unless `PURGEQ_REQUIRE_POSTGRES` is set).
macro_rules! on_both_backends {
    ($flavor:tt: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test$flavor]
                async fn sqlite() {
                    super::$name(super::Place::file()).await
                }

                #[tokio::test$flavor]
                async fn postgres() {
                    if let Some(place) = super::Place::postgres(stringify!($name)).await {
                        super::$name(place).await
                    }
                }
            }
        )*
    };
}

on_both_backends!(():
    deduplicates_pending_urls_within_and_across_requests,
    a_pending_directory_covers_and_absorbs_what_is_under_it,
    accepted_requests_survive_a_reopen,
    close_waits_for_the_last_commit,
    cache_facts_expire_what_the_rules_allow,
    request_summaries_read_alike,
    origin_caches_hold_items_until_every_layer_is_done,
    a_promotion_of_unstarted_held_files_holds_the_directory,
    verification_rows_read_alike,
    the_tag_registry_reads_alike,
    charts_read_the_minutes_kept_as_rows_are_written,
    the_quota_chart_sums_to_the_ledger,
    search_finds_urls_by_every_key,
    search_pages_through_everything_once,
);
on_both_backends!((flavor = "multi_thread"):
    concurrent_requests_stored_together_count_each_url_new_once,
    kept_counts_equal_a_recount_under_concurrent_writers,
);

/// Issue 18: two nodes on one PostgreSQL database are one queue. Node A
/// posts directories while node B posts the files under them and the
/// same files again, all at once: afterwards no URL is pending twice, and
/// no file is pending under a pending directory (it was absorbed, or
/// linked to the directory, whichever node got there first).
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_queue() {
    let Some(place) = Place::postgres("two_nodes_share_one_queue").await else {
        return;
    };
    let (a, b) = (place.open().await, place.open().await);
    let mut tasks = Vec::new();
    for round in 0..20 {
        for (node, targets) in [
            (&a, vec![dir(&format!("http://e.com/d{}/", round % 5))]),
            (
                &b,
                (0..10)
                    .map(|f| file(&format!("http://e.com/d{}/f{f}", round % 5)))
                    .collect(),
            ),
            (&a, vec![file(&format!("http://e.com/top{}", round % 7))]),
            (&b, vec![file(&format!("http://e.com/top{}", round % 7))]),
        ] {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                node.enqueue(request(targets)).await.expect("enqueue")
            }));
        }
    }
    let mut new = 0;
    for task in tasks {
        new += task.await.expect("task").new;
    }
    let Place::Postgres(db) = &place else {
        unreachable!()
    };
    let mut psql = sqlx::PgConnection::connect_with(db.url.connect_options())
        .await
        .expect("psql");
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM items WHERE state = 'pending'
                               GROUP BY endpoint_id, kind, url HAVING count(*) > 1) AS t",
    )
    .fetch_one(&mut psql)
    .await
    .expect("query");
    assert_eq!(twice, 0, "a URL pending twice");
    let under: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM items f JOIN items d
           ON d.state = 'pending' AND d.kind = 'directory' AND f.state = 'pending'
          AND f.kind = 'file' AND f.endpoint_id = d.endpoint_id
          AND left(f.url, length(d.url)) = d.url",
    )
    .fetch_one(&mut psql)
    .await
    .expect("query");
    assert_eq!(under, 0, "a file pending under a pending directory");
    let pending = a.state_counts().await.expect("counts").pending;
    // 5 directories and 7 top-level files; every file under a directory
    // is merged into it.
    assert_eq!(pending, 12);
    assert_eq!(b.state_counts().await.expect("counts").pending, 12);
    assert!(new >= 12, "{new}");
}

/// Issue 35 in a fleet: one registry in PostgreSQL. Two nodes feed it at
/// once (the same URLs too), and either expands a tag to the same URLs;
/// the registry's count agrees with its rows.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_tag_registry() {
    use purgeq::store::{TagFeed, TagSource, Timestamp};
    let Some(place) = Place::postgres("two_nodes_share_one_tag_registry").await else {
        return;
    };
    let (a, b) = (place.open().await, place.open().await);
    let mut tasks = Vec::new();
    for round in 0..20usize {
        for (node, offset) in [(&a, 0usize), (&b, 5)] {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let feed = (offset..offset + 10)
                    .map(|n| TagFeed {
                        url: format!("http://e.com/p{n}"),
                        tags: vec![format!("round-{}", round % 3), "all".to_owned()],
                    })
                    .collect();
                let now = Timestamp::new(time::OffsetDateTime::now_utc());
                node.feed_tags(feed, TagSource::Api, 1_000, now)
                    .await
                    .expect("feed")
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let all = vec!["all".to_owned()];
    let from_a = a.urls_of_tags(&all, 100).await.expect("expand on a");
    let from_b = b.urls_of_tags(&all, 100).await.expect("expand on b");
    assert_eq!(from_a, from_b);
    assert_eq!(from_a["all"].len(), 15, "p0..p14, each once");
    let counts = b.tag_registry_counts().await.expect("counts");
    assert_eq!((counts.urls, counts.dropped), (15, 0));
    a.close().await;
    b.close().await;
}

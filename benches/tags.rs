//! Tag registry benchmark (issue 35): `cargo bench --bench tags`.
//!
//! On the store itself, SQLite (a file, `synchronous = full` as the
//! daemon runs it) then PostgreSQL (`PURGEQ_TEST_DATABASE_URL`, default
//! the local server; skipped, saying so, when none answers):
//! - feed throughput: 100,000 URLs with three tags each, in feeds of 1,000
//!   URLs (as `POST /v1/tags` or `purgeq tag --stdin` send them), into a
//!   registry that already holds 100,000 others;
//! - expanding a tag of 10,000 URLs (what `"tags"` in a purge does at the
//!   door), median and p95 of 20, and a tag of 10 URLs for comparison.
//!
//! `PURGEQ_BENCH_SCALE=0.1` shrinks the feed counts (not the 10,000).

use std::time::{Duration, Instant};

use purgeq::store::{Store, TagFeed, TagSource, Timestamp};
use sqlx::Connection;

mod common;

use common::{create_database, drop_database, pg_server, scale};

fn feed_of(from: usize, count: usize, tags: impl Fn(usize) -> Vec<String>) -> Vec<TagFeed> {
    (from..from + count)
        .map(|n| TagFeed {
            url: format!("https://www.example.com/catalog/{}/item-{n}.html", n % 500),
            tags: tags(n),
        })
        .collect()
}

fn now() -> Timestamp {
    Timestamp::new(time::OffsetDateTime::now_utc())
}

async fn feed_all(store: &Store, feeds: Vec<TagFeed>) -> Duration {
    let started = Instant::now();
    let mut rest = feeds;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(1_000));
        store
            .feed_tags(rest, TagSource::Api, 10_000_000, now())
            .await
            .expect("feed");
        rest = tail;
    }
    started.elapsed()
}

async fn expand(store: &Store, tag: &str) -> (f64, f64, usize) {
    let tags = vec![tag.to_owned()];
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let urls = store.urls_of_tags(&tags, 100_000).await.expect("expand");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        found = urls.get(tag).map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 95 / 100], found)
}

async fn run(name: &str, store: Store) {
    let base = scale(100_000);
    // The registry already holds `base` URLs, tagged by category.
    feed_all(
        &store,
        feed_of(0, base, |n| vec![format!("category-{}", n % 100)]),
    )
    .await;
    // The big tag: 10,000 URLs share it (whatever the scale).
    feed_all(
        &store,
        feed_of(base, 10_000, |n| {
            vec!["big-sale".to_owned(), format!("product-{n}")]
        }),
    )
    .await;
    let count = scale(100_000);
    let took = feed_all(
        &store,
        feed_of(base + 10_000, count, |n| {
            vec![
                format!("product-{n}"),
                format!("category-{}", n % 100),
                "all-products".to_owned(),
            ]
        }),
    )
    .await;
    println!(
        "{name}: feed {count} URLs x 3 tags in feeds of 1,000: {:.0} URLs/s ({:.1} s)",
        count as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    let (median, p95, found) = expand(&store, "big-sale").await;
    println!("{name}: expand a tag of {found} URLs: median {median:.1} ms, p95 {p95:.1} ms");
    let (median, p95, found) = expand(&store, &format!("product-{}", base + 10_000)).await;
    println!("{name}: expand a tag of {found} URL: median {median:.2} ms, p95 {p95:.2} ms");
    let counts = store.tag_registry_counts().await.expect("counts");
    println!("{name}: registry holds {} URLs", counts.urls);
    store.close().await;
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(&purgeq::config::StoreSettings {
        path: dir.path().join("purgeq.db"),
        ..Default::default()
    })
    .await
    .expect("open");
    run("sqlite", store).await;

    let server = pg_server();
    if sqlx::PgConnection::connect(&server).await.is_err() {
        println!("postgres: skipped, no server at {server} (PURGEQ_TEST_DATABASE_URL)");
        return;
    }
    let url = create_database("purgeq_bench_tags").await;
    let url = purgeq::store::fleet::DatabaseUrl::parse(&url).expect("a database URL");
    let fleet = purgeq::store::fleet::FleetDb::connect(&url)
        .await
        .expect("connect");
    let store = Store::open_postgres(&fleet).await.expect("open");
    run("postgres", store).await;
    if std::env::var_os("PURGEQ_BENCH_KEEP").is_none() {
        drop_database("purgeq_bench_tags").await;
    }
}

//! A backlog costs nothing (issue 31): `cargo bench --bench backlog`.
//!
//! A deploy host whose purges wait for the next quota day holds hundreds
//! of thousands of pending URLs for hours. Each part starts the release
//! daemon (built-in emulator) as a user does and measures from outside:
//!
//! 1. **Spent day**: a database holding a million finished items (the
//!    page benchmark's history, 30 days) and a million pending URLs posted
//!    over the socket behind a 10-file / 1-directory day: once settled,
//!    the daemon's CPU over 15 s, its RSS, and `GET /` and `GET /v1/stats`
//!    (median and p95 of 40, one client).
//! 2. **Ingest while sending**: single-URL requests (64 clients, 10 s) on
//!    an empty queue, then with 100,000 pending while the daemon sends
//!    (10 calls/s to the emulator, an unspent day), and batch ingest with
//!    that backlog against plain SQLite's ceiling on the same disk.
//!
//! With `PURGEQ_TEST_DATABASE_URL` (or a server on 127.0.0.1:5432) part 1
//! and 2 run again in fleet mode on a fresh PostgreSQL database (without
//! the finished history, which is SQLite SQL); `PURGEQ_BENCH_NO_PG=1`
//! skips them, `PURGEQ_BENCH_PARTS=spent` (or `sending`) runs one part.
//! `PURGEQ_BENCH_SCALE=0.1` shrinks every count;
//! `PURGEQ_BENCH_BINARY=path` runs another daemon binary (the previous
//! commit's, built in a worktree) so both can be measured in one session.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection;

mod common;

use common::{BenchDaemon, Latencies, batch_ingest, client, get, scale, single_url};

/// The daemon binary: this commit's, or `PURGEQ_BENCH_BINARY`.
fn binary() -> String {
    std::env::var("PURGEQ_BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_purgeq").into())
}

const ENDPOINT: &str =
    "[[cdn.endpoints]]\nid = \"bench\"\nhosts = [\"bench.example.com\", \"www.example.com\"]\n";

/// A day of 10 files and 1 directory: spent within seconds.
fn spent_day() -> String {
    format!(
        "[quota]\nfiles_per_day = 10\ndirectories_per_day = 1\npromote = \"never\"\n\
         [log]\nlevel = \"warn\"\n{ENDPOINT}"
    )
}

/// A day nothing spends, sending at 10 calls/s of 100 files.
fn sending() -> String {
    format!(
        "[quota]\nfiles_per_day = 100000000\ndirectories_per_day = 100000\npromote = \"never\"\n\
         [batch]\nlinger = \"200ms\"\n[sender]\nrequests_per_second = 10.0\nburst = 10\n\
         [log]\nlevel = \"warn\"\n{ENDPOINT}"
    )
}

/// Where a part keeps its data.
#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The daemon on a fresh store (`db`: a prepared SQLite file).
    async fn start(&self, db: Option<&Path>, sections: &str) -> BenchDaemon {
        match self {
            Backend::Sqlite => BenchDaemon::start_on(&binary(), db, "", "", sections),
            Backend::Postgres => {
                let url = common::create_database("purgeq_bench_backlog").await;
                BenchDaemon::start_with_store(
                    &binary(),
                    &format!("[store]\nurl = \"{url}\"\n"),
                    "",
                    &format!("[fleet]\nnode_name = \"bench\"\n{sections}"),
                )
            }
        }
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// A SQLite file with the daemon's schema and a million finished items
/// (`tests/fixtures/finished_history.sql`, 30 days).
async fn finished_history(dir: &Path) -> PathBuf {
    let db = dir.join("backlog.db");
    // The daemon makes the schema: the binary measured may be another
    // commit's, with other migrations than this crate's.
    drop(BenchDaemon::start_on(
        &binary(),
        Some(&db),
        "",
        "",
        &spent_day(),
    ));
    let items = scale(1_000_000) as i64;
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let sql = include_str!("../tests/fixtures/finished_history.sql")
        .replace("$ITEMS", &items.to_string())
        .replace("$NOW_MS", &now_ms.to_string())
        .replace("$SPAN_MS", &(30 * 86_400_000i64).to_string());
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("fill");
    conn.close().await.expect("close");
    db
}

/// Waits until the day is spent and nothing is under way.
async fn settled(client: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let stats = get(client, "/v1/stats").await;
        let items = &stats["items"];
        if items["sending"] == 0 && items["submitted"] == 0 && stats["quota"]["files_left"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the daemon did not settle");
}

/// Median and p95 of 40 GETs of `path`.
async fn time_gets(client: &reqwest::Client, path: &str) -> (f64, f64) {
    let ms = common::timed_gets(client, path, 40).await;
    (ms[ms.len() / 2], ms[ms.len() * 95 / 100])
}

/// Part 1: a million pending behind a spent day.
async fn spent(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, history) = match backend {
        Backend::Sqlite => (
            Some(finished_history(dir.path()).await),
            format!("{} finished + ", scale(1_000_000)),
        ),
        Backend::Postgres => (None, String::new()),
    };
    let daemon = backend.start(db.as_deref(), &spent_day()).await;
    let pending = scale(1_000_000);
    let started = Instant::now();
    batch_ingest(&daemon.socket, 4, (pending / 4000).max(1), "spent").await;
    let client = client(&daemon.socket);
    settled(&client).await;
    println!(
        "{}: {history}{pending} pending posted and settled in {:.0} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = daemon.child.id();
    for window in 1..=2 {
        let before = common::cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let used = common::cpu_seconds(pid) - before;
        println!(
            "  idle CPU, window {window} of 15 s: {used:.2} s ({:.1} % of a core), RSS {:.1} MB",
            used / 15.0 * 100.0,
            rss_mb(pid)
        );
    }
    for path in ["/", "/v1/stats"] {
        let (median, p95) = time_gets(&client, path).await;
        println!("  GET {path:<10} median {median:7.2} ms  p95 {p95:7.2} ms");
    }
    println!("  RSS after the GETs: {:.1} MB", rss_mb(pid));
}

/// Part 2: single-URL ingest on an empty queue, then with a backlog while
/// sending; batch ingest with that backlog.
async fn while_sending(backend: Backend) {
    let duration = Duration::from_secs(scale(10) as u64);
    let show = |label: &str, l: &Latencies| {
        println!(
            "  {label}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
            l.per_second,
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3,
            l.count
        );
    };
    println!(
        "{}: single-URL requests, 64 clients, {} s, sending at 10 calls/s",
        backend.name(),
        duration.as_secs()
    );
    let empty = {
        let daemon = backend.start(None, &sending()).await;
        batch_ingest(&daemon.socket, 1, 1, "warm").await;
        single_url(&[&daemon.socket], 64, duration, "empty").await
    };
    show("empty queue", &empty);
    let daemon = backend.start(None, &sending()).await;
    let backlog = scale(100_000);
    batch_ingest(&daemon.socket, 4, (backlog / 4000).max(1), "backlog").await;
    let loaded = single_url(&[&daemon.socket], 64, duration, "loaded").await;
    let pending = get(&client(&daemon.socket), "/v1/stats").await["items"]["pending"].clone();
    show(&format!("{backlog} pending, sending"), &loaded);
    println!(
        "  ratio: {:.2} (pending after: {pending})",
        loaded.per_second / empty.per_second
    );
    let per_client = scale(25);
    let rate = batch_ingest(&daemon.socket, 4, per_client, "batch").await;
    print!("  batch ingest with the backlog, 1,000-URL requests, 4 clients: {rate:.0} URLs/s");
    match (&backend, common::ceiling(4 * per_client * 1000)) {
        (Backend::Sqlite, Some(ceiling)) => println!(
            "; plain SQLite's ceiling {ceiling:.0} URLs/s, ratio {:.2}",
            rate / ceiling
        ),
        _ => println!(),
    }
}

fn postgres_wanted() -> bool {
    if std::env::var_os("PURGEQ_BENCH_NO_PG").is_some() {
        return false;
    }
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().expect("address"),
        Duration::from_secs(1),
    )
    .is_ok()
        || std::env::var_os("PURGEQ_TEST_DATABASE_URL").is_some()
}

#[tokio::main]
async fn main() {
    println!("backlog benchmark, daemon {}", binary());
    let mut backends = vec![Backend::Sqlite];
    if postgres_wanted() {
        backends.push(Backend::Postgres);
    } else {
        println!("PostgreSQL parts skipped: no server (PURGEQ_TEST_DATABASE_URL)");
    }
    let parts = std::env::var("PURGEQ_BENCH_PARTS").unwrap_or_else(|_| "spent,sending".into());
    for backend in backends {
        if parts.contains("spent") {
            spent(backend.clone()).await;
        }
        if parts.contains("sending") {
            while_sending(backend.clone()).await;
        }
        if matches!(backend, Backend::Postgres) {
            common::drop_database("purgeq_bench_backlog").await;
        }
    }
}

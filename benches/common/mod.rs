//! Helpers shared by the benchmarks.

// Each benchmark uses part of the helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// The release daemon, started in a temp dir with `[store]` and `[ingest]`
/// (the socket only) written for it, `store_extra` and `ingest_extra` added
/// to those tables, and `sections` appended.
pub struct BenchDaemon {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    pub fn start(
        binary: &str,
        store_extra: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        Self::start_on(binary, None, store_extra, ingest_extra, sections)
    }

    /// As [`BenchDaemon::start`], on the database `db` (prepared by the
    /// benchmark) instead of a new one.
    pub fn start_on(
        binary: &str,
        db: Option<&std::path::Path>,
        store_extra: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db.map_or_else(|| dir.path().join("purgeq.db"), PathBuf::from);
        let store = format!("[store]\npath = \"{}\"\n{store_extra}", db.display());
        Self::start_in(binary, dir, &store, ingest_extra, sections)
    }

    /// As [`BenchDaemon::start`], with `store` as the whole `[store]`
    /// section (fleet mode's `url`).
    pub fn start_with_store(
        binary: &str,
        store: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(binary, dir, store, ingest_extra, sections)
    }

    fn start_in(
        binary: &str,
        dir: tempfile::TempDir,
        store: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let socket = dir.path().join("purgeq.sock");
        let config = dir.path().join("purgeq.toml");
        std::fs::write(
            &config,
            format!(
                "{store}[ingest]\nsocket = \"{}\"\nhttp = \"\"\n{ingest_extra}{sections}",
                socket.display()
            ),
        )
        .expect("config");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn purgeq");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        BenchDaemon {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) used so far by process `pid`, from
/// `/proc/PID/stat` (clock ticks are 100 per second on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11) + field(12)) as f64 / 100.0
}

/// A client of the daemon's Unix socket, with room for many connections.
pub fn client(socket: &std::path::Path) -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(socket.to_owned())
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// `GET path`, as JSON.
pub async fn get(client: &reqwest::Client, path: &str) -> serde_json::Value {
    client
        .get(format!("http://localhost{path}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Posts `urls` as one intent, expects 202; how long the answer took.
pub async fn post(client: &reqwest::Client, urls: Vec<String>) -> Duration {
    let started = Instant::now();
    let response = client
        .post("http://localhost/v1/purges")
        .json(&serde_json::json!({ "urls": urls }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    started.elapsed()
}

/// `count` distinct file URLs under `prefix`, spread over 97 directories.
pub fn urls(prefix: &str, from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("http://bench.example.com/{prefix}/{}/{i}.js", i % 97))
        .collect()
}

/// 1,000-URL requests from `clients` clients, `requests_per_client`
/// each; returns URLs/s.
pub async fn batch_ingest(
    socket: &std::path::Path,
    clients: usize,
    requests_per_client: usize,
    prefix: &str,
) -> f64 {
    let client = client(socket);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let prefix = format!("{prefix}{c}");
        tasks.push(tokio::spawn(async move {
            for r in 0..requests_per_client {
                post(&client, urls(&prefix, r * 1000, 1000)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    (clients * requests_per_client * 1000) as f64 / started.elapsed().as_secs_f64()
}

/// The same rows, straight into the same schema with plain SQLite:
/// `benches/ceiling.py` (C-speed inserts through Python's sqlite3, one
/// transaction per 1,000 URLs). `None` without python3.
///
/// The schema is every migration, in order: the ceiling was measured on
/// the first one alone until 2026-12-05, which lacks three of the
/// indexes every item row now updates, so it read ~15 % high.
pub fn ceiling(total: usize) -> Option<f64> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut migrations: Vec<_> = std::fs::read_dir(root.join("migrations"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    migrations.sort();
    let mut schema = String::new();
    for path in migrations {
        schema.push_str(&std::fs::read_to_string(path).ok()?);
        schema.push('\n');
    }
    let dir = tempfile::tempdir().ok()?;
    let schema_path = dir.path().join("schema.sql");
    std::fs::write(&schema_path, schema).ok()?;
    let output = Command::new("python3")
        .arg(root.join("benches/ceiling.py"))
        .arg(&schema_path)
        .arg(total.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// What a run of single-URL requests saw, all sockets together.
pub struct Latencies {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub count: usize,
}

/// Single-URL requests from `clients` concurrent clients on each of
/// `sockets` at once, for `duration`.
pub async fn single_url(
    sockets: &[&std::path::Path],
    clients: usize,
    duration: Duration,
    prefix: &str,
) -> Latencies {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for (s, socket) in sockets.iter().enumerate() {
        let client = client(socket);
        for c in 0..clients {
            let client = client.clone();
            let prefix = format!("{prefix}{s}-{c}");
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    latencies.push(post(&client, urls(&prefix, i, 1)).await);
                    i += 1;
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Latencies {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        count: latencies.len(),
    }
}

/// `n` times `PURGEQ_BENCH_SCALE` (default 1), at least 1.
pub fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("PURGEQ_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor) as usize).max(1)
}

/// The PostgreSQL server the benchmarks use (`PURGEQ_TEST_DATABASE_URL`).
pub fn pg_server() -> String {
    std::env::var("PURGEQ_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the server; its URL.
pub async fn create_database(name: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(&pg_server())
        .await
        .expect("a PostgreSQL server (PURGEQ_TEST_DATABASE_URL)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create");
    let server = pg_server();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_server()).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

/// `n` GETs of `path` after 3 warm-ups, one at a time: the milliseconds
/// each took, sorted.
pub async fn timed_gets(client: &reqwest::Client, path: &str, n: usize) -> Vec<f64> {
    for _ in 0..3 {
        let _ = client.get(format!("http://localhost{path}")).send().await;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = client
            .get(format!("http://localhost{path}"))
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.bytes().await.expect("body");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

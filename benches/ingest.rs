//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! Starts the real daemon binary (release build) in a temp dir, with
//! sending held back (nothing is cut into batches) and the quota planner's
//! promotions off (`quota.promote = "never"`: with them on, it would
//! purge the benchmark's 97 directories instead of its million files, and
//! the backlog measured would be gone), and measures from a
//! second process over the Unix socket:
//!
//! 1. batch ingest: 1,000-URL requests from 4 clients, URLs/s, against a
//!    ceiling: the same rows inserted straight into the same schema with
//!    plain SQL statements, one transaction per 1,000 URLs;
//! 2. single-URL requests from 64 concurrent clients: requests/s, p50/p99;
//! 3. the daemon's resident memory with 1,000,000 pending items.
//!
//! `PURGEQ_BENCH_SCALE=0.1` shrinks every count (for a quick look);
//! `PURGEQ_BENCH_ORIGIN_CACHES=2` adds two origin-cache layers (down).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::{Latencies, batch_ingest, client, get, scale, single_url, urls};

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");

/// `PURGEQ_BENCH_ORIGIN_CACHES=N`: N `[[origin_cache]]` layers, at an
/// address nothing listens on, so every URL gets a row per layer and the
/// origin stage retries them while intake is measured (a layer down
/// during a deploy: the stage's busiest case, refusals being instant).
fn origin_caches() -> String {
    let layers: usize = std::env::var("PURGEQ_BENCH_ORIGIN_CACHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (0..layers)
        .map(|n| {
            format!(
                "[[origin_cache]]\nname = \"layer-{n}\"\nkind = \"varnish\"\nurl = \"http://127.0.0.1:9\"\n"
            )
        })
        .collect()
}

/// The daemon with sending held back: nothing is cut into batches.
struct Daemon(common::BenchDaemon);

impl std::ops::Deref for Daemon {
    type Target = common::BenchDaemon;
    fn deref(&self) -> &common::BenchDaemon {
        &self.0
    }
}

impl Daemon {
    fn start(synchronous: &str) -> Daemon {
        Self::start_with(synchronous, "")
    }

    fn start_with(synchronous: &str, ingest_extra: &str) -> Daemon {
        Daemon(common::BenchDaemon::start(
            BIN,
            &format!("synchronous = \"{synchronous}\"\n"),
            ingest_extra,
            &format!(
                "[batch]\nlinger = \"1000h\"\nmax_files = 1000000000\nmax_directories = 1000000000\n\
                 [quota]\npromote = \"never\"\n[log]\nlevel = \"warn\"\n[[cdn.endpoints]]\nid = \"bench\"\nhosts = [\"bench.example.com\"]\n{}",
                origin_caches()
            ),
        ))
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// `GET /v1/stats`.
async fn stats(daemon: &Daemon) -> serde_json::Value {
    get(&client(&daemon.socket), "/v1/stats").await
}

/// What an overload run saw.
struct Overload {
    accepted: Vec<Duration>,
    refused: Vec<Duration>,
    other: usize,
}

/// Single-URL requests from `clients` clients for `duration`, against a
/// daemon with `ingest.max_pending` set: counts 202s and 503s instead of
/// expecting every request in.
async fn overload(daemon: &Daemon, clients: usize, duration: Duration) -> Overload {
    let client = client(&daemon.socket);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Overload {
                accepted: Vec::new(),
                refused: Vec::new(),
                other: 0,
            };
            let mut i = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                let response = client
                    .post("http://localhost/v1/purges")
                    .json(&json!({ "urls": urls(&format!("flood{c}"), i, 1) }))
                    .send()
                    .await
                    .expect("post");
                let took = started.elapsed();
                match response.status().as_u16() {
                    202 => seen.accepted.push(took),
                    503 if response.headers().contains_key("retry-after") => {
                        seen.refused.push(took)
                    }
                    _ => seen.other += 1,
                }
                i += 1;
            }
            seen
        }));
    }
    let mut all = Overload {
        accepted: Vec::new(),
        refused: Vec::new(),
        other: 0,
    };
    for task in tasks {
        let seen = task.await.expect("client");
        all.accepted.extend(seen.accepted);
        all.refused.extend(seen.refused);
        all.other += seen.other;
    }
    all.accepted.sort();
    all.refused.sort();
    all
}

fn p99_ms(latencies: &[Duration]) -> f64 {
    latencies
        .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    println!(
        "purgeq ingest benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let daemon = Daemon::start("full");
    let per_client = scale(50);
    // Warm-up: connections, statement cache.
    batch_ingest(&daemon.socket, 4, 2, "warm").await;
    let rate = batch_ingest(&daemon.socket, 4, per_client, "batch").await;
    let ceiling = common::ceiling(4 * per_client * 1000);
    println!(
        "batch ingest, 1,000-URL requests, 4 clients, synchronous=full: {:.0} URLs/s ({} URLs)",
        rate,
        4 * per_client * 1000
    );
    match ceiling {
        Some(ceiling) => {
            println!(
                "ceiling, plain SQLite INSERTs into the same schema, 1 transaction per 1,000: {ceiling:.0} URLs/s"
            );
            println!("ratio to the ceiling: {:.2}", rate / ceiling);
        }
        None => println!("ceiling: skipped (python3 with sqlite3 not found)"),
    }

    let (daemon_cpu, bench_cpu, started) = (
        common::cpu_seconds(daemon.child.id()),
        common::cpu_seconds(std::process::id()),
        Instant::now(),
    );
    let Latencies {
        per_second: rps,
        p50,
        p99,
        count,
    } = single_url(
        &[&daemon.socket],
        64,
        Duration::from_secs(scale(10) as u64),
        "single",
    )
    .await;
    let wall = started.elapsed().as_secs_f64();
    println!(
        "single-URL requests, 64 clients, synchronous=full: {rps:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({count} requests)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "  CPU during it: daemon {:.0} %, load generator {:.0} % (of one core; 2 cores = 200 %)",
        (common::cpu_seconds(daemon.child.id()) - daemon_cpu) / wall * 100.0,
        (common::cpu_seconds(std::process::id()) - bench_cpu) / wall * 100.0
    );
    drop(daemon);

    // Overload: the same flood, past a backlog limit well below what it
    // brings. Every request must get a 202 or a 503 with Retry-After, and
    // the pending count must equal the 202s: nothing dropped silently.
    let max_pending = scale(20_000);
    let daemon = Daemon::start_with("full", &format!("max_pending = {max_pending}\n"));
    let flood = overload(&daemon, 64, Duration::from_secs(scale(10) as u64)).await;
    let pending = stats(&daemon).await["items"]["pending"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "overload, ingest.max_pending = {max_pending}, 64 clients: {} accepted (p99 {:.2} ms), \
         {} refused 503 with Retry-After (p99 {:.2} ms), {} other answers; \
         pending afterwards {pending} ({}); RSS {:.1} MB",
        flood.accepted.len(),
        p99_ms(&flood.accepted),
        flood.refused.len(),
        p99_ms(&flood.refused),
        flood.other,
        if pending == flood.accepted.len() as u64 {
            "equal to the 202s: nothing dropped"
        } else {
            "NOT equal to the 202s"
        },
        daemon.rss_kib() as f64 / 1024.0
    );
    drop(daemon);

    let daemon = Arc::new(Daemon::start("full"));
    let idle = daemon.rss_kib();
    let target = scale(1_000_000);
    let per_client = (target / 1000 / 4).max(1);
    batch_ingest(&daemon.socket, 4, per_client, "mem").await;
    let pending = &stats(&daemon).await["items"]["pending"];
    println!(
        "resident memory: {:.1} MB idle, {:.1} MB with {} pending items",
        idle as f64 / 1024.0,
        daemon.rss_kib() as f64 / 1024.0,
        pending
    );
}

//! Fleet benchmark (issue 18): `cargo bench --bench fleet`.
//!
//! Needs a PostgreSQL server (`PURGEQ_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each run creates a
//! fresh database and drops it after. Starts the real daemon binary
//! (release build) and measures, over the Unix socket:
//!
//! 1. one node on SQLite beside one node on PostgreSQL, same run, sending
//!    held back: 1,000-URL requests from 4 clients (URLs/s), and
//!    single-URL requests from 64 clients for 10 s (requests/s, p50, p99);
//! 2. three PostgreSQL nodes ingesting at once (single-URL requests, 32
//!    clients each): requests/s together, p99;
//! 3. failover: the leader killed (`kill -9`), time until another node's
//!    `/v1/stats` says it leads, and until its first purge call was
//!    answered (its own `sender.calls`), median of 5 runs.
//!
//! `PURGEQ_BENCH_SCALE=0.1` shrinks the counts.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{
    Latencies, batch_ingest, client, create_database, drop_database, post, scale, single_url,
};

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const HELD: &str = "[batch]\nlinger = \"1000h\"\nmax_files = 1000000000\nmax_directories = 1000000000\n\
                    [quota]\npromote = \"never\"\n[log]\nlevel = \"warn\"\n\
                    [[cdn.endpoints]]\nid = \"bench\"\nhosts = [\"bench.example.com\"]\n";

fn pg_node(url: &str, name: &str, sections: &str) -> common::BenchDaemon {
    common::BenchDaemon::start_with_store(
        BIN,
        &format!("[store]\nurl = \"{url}\"\n[fleet]\nnode_name = \"{name}\"\n"),
        "",
        sections,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The index of the node whose `/v1/stats` says it leads, once exactly
/// one of `sockets` does.
async fn leader_of(sockets: &[&Path], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for (i, socket) in sockets.iter().enumerate() {
            if common::get(&client(socket), "/v1/stats").await["fleet"]["role"] == "leader" {
                leaders.push(i);
            }
        }
        if let [one] = leaders[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let requests = scale(100);
    let single = Duration::from_secs_f64(10.0 * scale(10) as f64 / 10.0);

    // 1. One node on each store, same run.
    let sqlite = common::BenchDaemon::start(BIN, "", "", HELD);
    let db = create_database("purgeq_bench_one").await;
    let pg = pg_node(&db, "bench-1", HELD);
    leader_of(&[&pg.socket], Duration::from_secs(20)).await;
    println!(
        "== one node, {requests} x 1,000-URL requests from 4 clients; single-URL requests from 64 clients for {single:?}"
    );
    for (name, socket) in [("SQLite", &sqlite.socket), ("PostgreSQL", &pg.socket)] {
        let rate = batch_ingest(socket, 4, requests, "batch").await;
        let one = single_url(&[socket], 64, single, "one").await;
        println!(
            "{name:>10}: batch {rate:>9.0} URLs/s | single {:>7.0} req/s, p50 {:.1} ms, p99 {:.1} ms ({} requests)",
            one.per_second,
            ms(one.p50),
            ms(one.p99),
            one.count
        );
    }
    drop(sqlite);
    drop(pg);
    drop_database("purgeq_bench_one").await;

    // 2. Three nodes ingesting at once.
    let db = create_database("purgeq_bench_three").await;
    let nodes: Vec<common::BenchDaemon> = (1..=3)
        .map(|i| pg_node(&db, &format!("bench-{i}"), HELD))
        .collect();
    let sockets: Vec<&Path> = nodes.iter().map(|n| n.socket.as_path()).collect();
    leader_of(&sockets, Duration::from_secs(20)).await;
    let Latencies {
        per_second,
        p50,
        p99,
        count,
    } = single_url(&sockets, 32, single, "three").await;
    println!(
        "== three PostgreSQL nodes at once, 32 clients each: {per_second:.0} req/s together, p50 {:.1} ms, p99 {:.1} ms ({count} requests)",
        ms(p50),
        ms(p99)
    );
    drop(nodes);
    drop_database("purgeq_bench_three").await;

    // 3. Failover, median of 5: kill -9 the leader, time until another
    // node leads and makes its first purge call.
    let mut times = Vec::new();
    let sending = "[batch]\nlinger = \"50ms\"\n[sender]\nrequests_per_second = 2\nburst = 1\n\
                   [log]\nlevel = \"warn\"\n";
    for run in 0..5 {
        let name = format!("purgeq_bench_failover_{run}");
        let db = create_database(&name).await;
        let mut nodes: Vec<common::BenchDaemon> = (1..=3)
            .map(|i| pg_node(&db, &format!("bench-{i}"), sending))
            .collect();
        let sockets: Vec<std::path::PathBuf> = nodes.iter().map(|n| n.socket.clone()).collect();
        let refs: Vec<&Path> = sockets.iter().map(|p| p.as_path()).collect();
        let leader = leader_of(&refs, Duration::from_secs(20)).await;
        post(
            &client(refs[(leader + 1) % 3]),
            (0..200)
                .map(|i| format!("http://www.example.com/failover/{i}.js"))
                .collect(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = nodes[leader].child.kill();
        let _ = nodes[leader].child.wait();
        let killed = Instant::now();
        let rest: Vec<&Path> = (0..3).filter(|&i| i != leader).map(|i| refs[i]).collect();
        let new = leader_of(&rest, Duration::from_secs(30)).await;
        let elected = killed.elapsed();
        // The new leader's pipeline started at its election: its first
        // purge call shows in its own call counts.
        loop {
            let stats = common::get(&client(rest[new]), "/v1/stats").await;
            let called = stats["sender"]["calls"]
                .as_object()
                .is_some_and(|calls| calls.keys().any(|k| k.starts_with("purge:")));
            if called {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = killed.elapsed();
        println!("failover run {run}: new leader after {elected:.2?}, sending after {sent:.2?}");
        times.push(sent);
        drop(nodes);
        drop_database(&name).await;
    }
    times.sort();
    println!(
        "== failover (kill -9 -> the new leader sends): median {:.2?} of {}",
        times[times.len() / 2],
        times.len()
    );
}

//! Pipeline benchmark: `cargo bench --bench pipeline`.
//!
//! The daemon binary (release build) sends to an emulator running in this
//! process. Measured:
//!
//! 1. with a backlog, the achieved call rate (purges and progress queries
//!    together) against `sender.requests_per_second`, with the emulator's
//!    limit set 20 % above it: the rate should be >= 95 % of the setting
//!    with no throttled answers;
//! 2. enqueue-to-submitted latency with an idle queue (expected: about
//!    `batch.linger` plus one round trip);
//! 3. CPU used by an idle daemon over 10 s (expected: about zero).

use std::time::{Duration, Instant};

use purgeq::cdn::KeyValue;
use purgeq::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, Knobs};
use serde_json::{Value, json};

mod common;

use common::get;

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const RATE: f64 = 10.0;
const BURST: u32 = 5;
const LINGER_MS: u64 = 500;

#[tokio::main]
async fn main() {
    let mut config = EmulatorConfig::new(
        "bench-subscription",
        "bench-key",
        KeyValue::new("bench-secret"),
        vec![EmulatedEndpoint::new(
            "bench-endpoint",
            &["bench.example.com"],
        )],
    );
    config.knobs = Knobs {
        requests_per_second: RATE * 1.2,
        burst: BURST,
        files_per_day: 10_000_000,
        directories_per_day: 10_000_000,
        completion_delay: Duration::from_millis(200),
        ..Knobs::default()
    };
    let emulator = Emulator::start(config).await.expect("emulator");

    let daemon = common::BenchDaemon::start(
        BIN,
        "",
        "",
        &format!(
            "[log]\nlevel = \"warn\"\n\
             [cdn]\nbase_url = \"{}\"\nsubscription_id = \"bench-subscription\"\nkey_id = \"bench-key\"\nkey_value = \"bench-secret\"\n\
             [[cdn.endpoints]]\nid = \"bench-endpoint\"\nhosts = [\"bench.example.com\"]\n\
             [batch]\nmax_files = 10\nlinger = \"{LINGER_MS}ms\"\n[sender]\nrequests_per_second = {RATE}\nburst = {BURST}\nconcurrency = 4\n\
             [tracker]\npoll_interval = \"1s\"\n[quota]\nfiles_per_day = 10000000\n",
            emulator.base_url()
        ),
    );
    let socket = daemon.socket.clone();
    let client = reqwest::Client::builder()
        .unix_socket(socket.clone())
        .build()
        .expect("client");

    // 1. Backlog: 4,000 URLs = 400 purge calls, plus their progress queries.
    let urls: Vec<String> = (0..4_000)
        .map(|i| format!("http://bench.example.com/backlog/{i}.js"))
        .collect();
    client
        .post("http://localhost/v1/purges")
        .json(&json!({ "urls": urls }))
        .send()
        .await
        .expect("post");
    // Skip the initial burst, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = |stats: &std::collections::BTreeMap<String, u64>| -> u64 {
        ["accepted", "progress", "RequestThrottled"]
            .iter()
            .filter_map(|k| stats.get(*k))
            .sum()
    };
    let before = calls(&emulator.stats());
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let after_stats = emulator.stats();
    let rate = (calls(&after_stats) - before) as f64 / window.as_secs_f64();
    println!(
        "backlog: {rate:.2} calls/s over {}s with sender.requests_per_second = {RATE} ({:.1} %), emulator limit {:.1}/s; throttled answers: {}",
        window.as_secs(),
        rate / RATE * 100.0,
        RATE * 1.2,
        after_stats.get("RequestThrottled").copied().unwrap_or(0)
    );

    // Drain the backlog.
    loop {
        let stats = get(&client, "/v1/stats").await;
        if stats["items"]["succeeded"] == 4_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. Idle queue: enqueue one URL, wait until it is submitted.
    let mut latencies = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let started = Instant::now();
        let answer: Value = client
            .post("http://localhost/v1/purges")
            .json(&json!({ "urls": [format!("http://bench.example.com/idle/{i}.js")] }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        let id = answer["id"].as_str().expect("id").to_owned();
        loop {
            let view = get(&client, &format!("/v1/purges/{id}")).await;
            if view["items"][0]["task_track_id"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "idle queue, enqueue to submitted (batch.linger = {LINGER_MS} ms): median {:.0} ms, max {:.0} ms over {} purges",
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        latencies.len()
    );

    // 3. Idle CPU: let the tracker finish, then watch the process.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = daemon.child.id();
    let start = common::cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = common::cpu_seconds(pid) - start;
    println!(
        "idle daemon: {:.2} s of CPU over 10 s ({:.2} %)",
        used,
        used / 10.0 * 100.0
    );

    drop(daemon);
}

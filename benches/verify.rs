//! Edge verification benchmark: `cargo bench --bench verify` (issue 33).
//!
//! The daemon binary (release build), the emulator in this process as the
//! CDN and its edge (two nodes, purges arriving 2 s after the CDN accepts
//! them), a test origin. Measured:
//!
//! 1. time to fresh for 200 URLs (from the intent to every node fresh, as
//!    each URL's `verification.time_to_fresh_seconds` says): median, p95;
//! 2. intake and sending with verification on and off: the time to post
//!    2,000 URLs (20 requests of 100) and the time until the CDN has
//!    accepted them all, at 5 calls a second (so verification of the
//!    first calls' URLs runs while the last ones are sent).

use std::time::{Duration, Instant};

use purgeq::cdn::KeyValue;
use purgeq::cdn::emulator::{EdgeConfig, EmulatedEndpoint, Emulator, EmulatorConfig, Knobs};
use serde_json::{Value, json};

#[path = "../tests/common/caches.rs"]
#[allow(dead_code)]
mod caches;
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const HOST: &str = "bench.example.com";

#[tokio::main]
async fn main() {
    let origin = caches::TestOrigin::start().await;
    let mut config = EmulatorConfig::new(
        "bench-subscription",
        "bench-key",
        KeyValue::new("bench-secret"),
        vec![EmulatedEndpoint::new("bench-endpoint", &[HOST])],
    );
    config.knobs = Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        files_per_day: 10_000_000,
        directories_per_day: 10_000_000,
        completion_delay: Duration::from_millis(500),
        edge_propagation_delay: Duration::from_secs(2),
        ..Knobs::default()
    };
    config.edge = Some(EdgeConfig {
        origin: url::Url::parse(&format!("http://{}", origin.addr)).expect("url"),
        listen: vec!["127.0.0.1:0".parse().expect("addr"); 2],
        ttl: Duration::from_secs(3600),
    });
    let emulator = Emulator::start(config).await.expect("emulator");
    let edges: Vec<String> = emulator
        .edge_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let sections = |verify: bool, rate: u32| {
        format!(
            "[log]\nlevel = \"warn\"\n\
             [cdn]\nbase_url = \"{}\"\nsubscription_id = \"bench-subscription\"\nkey_id = \"bench-key\"\nkey_value = \"bench-secret\"\n\
             [[cdn.endpoints]]\nid = \"bench-endpoint\"\nhosts = [\"{HOST}\"]\n\
             [batch]\nmax_files = 100\nlinger = \"100ms\"\n[sender]\nrequests_per_second = {rate}\nburst = 1\nconcurrency = 4\n\
             [tracker]\npoll_interval = \"200ms\"\n[quota]\nfiles_per_day = 10000000\n\
             [verify]\nenabled = {verify}\norigin = \"http://{}\"\nedges = [{}]\ndeadline = \"60s\"\n\
             probes_per_second = 500\nconcurrency = 16\n",
            emulator.base_url(),
            origin.addr,
            edges.join(", ")
        )
    };

    // 1. Time to fresh, 200 URLs warmed at version 1 on both nodes.
    let daemon = common::BenchDaemon::start(BIN, "", "", &sections(true, 50));
    let client = common::client(&daemon.socket);
    let http = reqwest::Client::new();
    let paths: Vec<String> = (0..200).map(|n| format!("/fresh/{n}.css")).collect();
    for node in emulator.edge_addrs() {
        for path in &paths {
            http.get(format!("http://{node}{path}"))
                .header(reqwest::header::HOST, HOST)
                .send()
                .await
                .expect("warm");
        }
    }
    origin.set_version(2);
    let urls: Vec<String> = paths.iter().map(|p| format!("http://{HOST}{p}")).collect();
    let accepted: Value = client
        .post("http://localhost/v1/purges")
        .json(&json!({ "files": urls }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = accepted["id"].as_str().expect("id").to_owned();
    let status: Value = client
        .get(format!("http://localhost/v1/purges/{id}?wait=120"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let mut times: Vec<f64> = status["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["verification"]["time_to_fresh_seconds"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "time to fresh, 200 URLs, propagation 2 s: {} fresh, median {:.2} s, p95 {:.2} s, max {:.2} s",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 1.0)
    );
    drop(daemon);

    // 2. Intake and sending, verification on and off.
    for (round, verify) in [(0, false), (1, true), (2, false), (3, true)] {
        // Five calls a second: sending lasts about four seconds, so the
        // first batches are verified (probed at both nodes) while the
        // last ones are still being sent.
        let daemon = common::BenchDaemon::start(BIN, "", "", &sections(verify, 5));
        let client = common::client(&daemon.socket);
        let sent_before: usize = emulator.journal().iter().map(|e| e.files.len()).sum();
        let started = Instant::now();
        for request in 0..20 {
            let urls: Vec<String> = (0..100)
                .map(|n| format!("http://{HOST}/t{round}/r{request}/{n}.js"))
                .collect();
            let response = client
                .post("http://localhost/v1/purges")
                .json(&json!({ "files": urls }))
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 202);
        }
        let posted = started.elapsed();
        loop {
            let sent: usize = emulator.journal().iter().map(|e| e.files.len()).sum();
            if sent - sent_before >= 2000 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "sending stalled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "verification {:3}: 2,000 URLs posted in {:6.1} ms, all at the CDN after {:6.1} ms",
            if verify { "on" } else { "off" },
            posted.as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

//! Origin-cache benchmark: `cargo bench --bench origin` (issue 34).
//!
//! The daemon binary (release build) purges real Varnish and nginx (the
//! shipped VCL and snippet, in front of a test origin) before the CDN (an
//! emulator in this process). Measured: the time from an intent's
//! acceptance to the CDN's acceptance of each of its URLs, for 1,000 URLs
//! (ten requests of 100), with no layer, one (Varnish) and two (Varnish
//! and nginx); median and p95. Needs `varnish`, `nginx` and
//! `libnginx-mod-http-cache-purge`.

use std::time::{Duration, Instant, SystemTime};

use purgeq::cdn::KeyValue;
use purgeq::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, Knobs};
use serde_json::json;

#[path = "../tests/common/caches.rs"]
#[allow(dead_code)]
mod caches;
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_purgeq");
const HOST: &str = "bench.example.com";
const REQUESTS: usize = 10;
const URLS_PER_REQUEST: usize = 100;

#[tokio::main]
async fn main() {
    if !caches::available("cargo bench --bench origin") {
        return;
    }
    let origin = caches::TestOrigin::start().await;
    let varnish = caches::Varnish::start(origin.addr).await;
    let nginx = caches::Nginx::start(origin.addr).await;
    let layer = |name: &str, kind: &str, port: u16| {
        format!(
            "[[origin_cache]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"http://127.0.0.1:{port}\"\n"
        )
    };
    let scenarios = [
        ("no layer", String::new()),
        (
            "one layer (varnish)",
            layer("varnish-1", "varnish", varnish.port),
        ),
        (
            "two layers (varnish, nginx)",
            layer("varnish-1", "varnish", varnish.port) + &layer("nginx-1", "nginx", nginx.port),
        ),
    ];
    println!(
        "intent accepted -> CDN accepted, {} URLs ({REQUESTS} requests of {URLS_PER_REQUEST})",
        REQUESTS * URLS_PER_REQUEST
    );
    for (round, (name, layers)) in scenarios.iter().enumerate() {
        let latencies = run(round, layers).await;
        println!(
            "{name:28} median {:7.1} ms   p95 {:7.1} ms   max {:7.1} ms",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.95),
            percentile(&latencies, 1.0)
        );
    }
}

/// One scenario on a fresh daemon and emulator: the latency of each URL,
/// in milliseconds.
async fn run(round: usize, layers: &str) -> Vec<f64> {
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
        completion_delay: Duration::from_millis(100),
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
             [[cdn.endpoints]]\nid = \"bench-endpoint\"\nhosts = [\"{HOST}\"]\n\
             [batch]\nmax_files = 100\nlinger = \"100ms\"\n[sender]\nrequests_per_second = 100\nburst = 20\nconcurrency = 4\n\
             [tracker]\npoll_interval = \"200ms\"\n[quota]\nfiles_per_day = 10000000\n{layers}",
            emulator.base_url()
        ),
    );
    let client = common::client(&daemon.socket);
    let mut posted = std::collections::HashMap::new();
    for request in 0..REQUESTS {
        let urls: Vec<String> = (0..URLS_PER_REQUEST)
            .map(|n| format!("http://{HOST}/r{round}/q{request}/{n}.css"))
            .collect();
        let response = client
            .post("http://localhost/v1/purges")
            .json(&json!({ "files": urls }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202);
        let at = SystemTime::now();
        for url in urls {
            posted.insert(url, at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent: usize = emulator.journal().iter().map(|e| e.files.len()).sum();
        if sent >= posted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {sent} URLs reached the CDN"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::with_capacity(posted.len());
    for entry in emulator.journal() {
        let at = humantime::parse_rfc3339(&entry.at).expect("journal time");
        for url in &entry.files {
            if let Some(posted) = posted.get(url) {
                let ms = at
                    .duration_since(*posted)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                latencies.push(ms);
            }
        }
    }
    drop(daemon);
    emulator.shutdown().await;
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

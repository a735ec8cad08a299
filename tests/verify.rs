//! Issue 33: after the CDN says done, purgeq checks that its edge serves
//! the new content. A test origin serves version 1 then version 2; the
//! emulator is the CDN and its edge (two nodes that cache from the
//! origin, a propagation delay, a node that can drop purges); the daemon
//! is the real binary, followed with `enqueue --wait` as a deploy script
//! does.

mod common;

use std::time::Duration;

use common::caches::TestOrigin;
use common::{ENDPOINTS, KEY_ID, KEY_VALUE, SUBSCRIPTION, TestDaemon};
use purgeq::cdn::KeyValue;
use purgeq::cdn::emulator::{
    EdgeConfig, EmulatedEndpoint, Emulator, EmulatorConfig, EmulatorHandle, Knobs,
};
use serde_json::{Value, json};

const HOST: &str = ENDPOINTS[0].1;

async fn edge_emulator(origin: &TestOrigin, knobs: Knobs) -> EmulatorHandle {
    let endpoints = ENDPOINTS
        .iter()
        .map(|(id, host)| EmulatedEndpoint::new(*id, &[host]))
        .collect();
    let mut config = EmulatorConfig::new(SUBSCRIPTION, KEY_ID, KeyValue::new(KEY_VALUE), endpoints);
    config.knobs = Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        files_per_day: 1_000_000,
        directories_per_day: 1_000_000,
        completion_delay: Duration::from_millis(100),
        edge_propagation_delay: Duration::from_millis(300),
        ..knobs
    };
    config.edge = Some(EdgeConfig {
        origin: url::Url::parse(&format!("http://{}", origin.addr)).expect("url"),
        listen: vec!["127.0.0.1:0".parse().expect("addr"); 2],
        ttl: Duration::from_secs(3600),
    });
    Emulator::start(config).await.expect("emulator")
}

fn config(emulator: &EmulatorHandle, origin: &TestOrigin, deadline: &str) -> String {
    let edges: Vec<String> = emulator
        .edge_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "{}[batch]\nlinger = \"100ms\"\n[tracker]\npoll_interval = \"100ms\"\n\
         [verify]\nenabled = true\norigin = \"http://{}\"\nedges = [{}]\ndeadline = \"{deadline}\"\n\
         repurge = 1\nprobes_per_second = 1000\nconcurrency = 16\ntimeout = \"2s\"\n",
        common::cdn_section(emulator, KEY_VALUE),
        origin.addr,
        edges.join(", ")
    )
}

/// GET through one edge node: the body.
async fn at_edge(node: std::net::SocketAddr, path: &str) -> String {
    reqwest::Client::new()
        .get(format!("http://{node}{path}"))
        .header(reqwest::header::HOST, HOST)
        .send()
        .await
        .expect("GET at the edge")
        .text()
        .await
        .expect("body")
}

async fn warm(emulator: &EmulatorHandle, paths: &[String]) {
    for node in emulator.edge_addrs() {
        for path in paths {
            let body = at_edge(node, path).await;
            assert!(body.starts_with("v1 "), "{body}");
        }
    }
}

fn enqueue_wait(daemon: &TestDaemon, urls: &[String]) -> (i32, String, String) {
    let socket = daemon.socket.display().to_string();
    let mut args = vec!["enqueue", "--socket", &socket, "--wait", "--timeout", "60"];
    args.extend(urls.iter().map(String::as_str));
    common::run_with_input(&args, &[], "")
}

/// How many times the CDN was asked to purge `url`.
fn purges_of(emulator: &EmulatorHandle, url: &str) -> usize {
    emulator
        .journal()
        .iter()
        .filter(|e| e.files.iter().chain(&e.directories).any(|u| u == url))
        .count()
}

async fn request(daemon: &TestDaemon, id: &str) -> Value {
    daemon.get(&format!("/v1/purges/{id}?wait=30")).await.1
}

/// 200 files at version 1 on both nodes, version 2 deployed:
/// `enqueue --wait` returns 0 only once every file is fresh, and then
/// every node serves version 2.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_ends_when_every_edge_serves_the_new_files() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(&origin, Knobs::default()).await;
    // Purges reach the nodes two seconds after the CDN accepts them:
    // longer than the CDN takes to report `Succeed`, so only probing the
    // edge can tell when they are fresh.
    emulator
        .set_knobs(Knobs {
            edge_propagation_delay: Duration::from_secs(2),
            ..emulator.knobs()
        })
        .expect("knobs");
    let paths: Vec<String> = (0..200).map(|n| format!("/site/{n}.css")).collect();
    warm(&emulator, &paths).await;
    origin.set_version(2);
    let daemon = TestDaemon::start(&config(&emulator, &origin, "30s")).await;
    let urls: Vec<String> = paths.iter().map(|p| format!("http://{HOST}{p}")).collect();
    let (code, out, err) = enqueue_wait(&daemon, &urls);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", daemon.logs());
    assert!(
        out.contains("at the edge: 200 fresh (median "),
        "the summary says it: {out}"
    );
    for node in emulator.edge_addrs() {
        for path in &paths {
            assert_eq!(at_edge(node, path).await, format!("v2 {path}"));
        }
    }
    let id = err
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .or_else(|| {
            out.split_whitespace()
                .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        })
        .expect("the request id in the output")
        .to_owned();
    let status = request(&daemon, &id).await;
    for item in status["items"].as_array().expect("items") {
        let verification = &item["verification"];
        assert_eq!(verification["state"], "fresh", "{item}");
        assert!(
            verification["time_to_fresh_seconds"].as_f64().is_some(),
            "{item}"
        );
        let edges = verification["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), 2, "{item}");
        assert!(
            edges
                .iter()
                .all(|e| e["state"] == "fresh" && e["fresh_at"].is_string()),
            "{item}"
        );
    }
    let stats = daemon.stats().await;
    assert_eq!(
        stats["freshness"]["hour"]["fresh"], 200,
        "{}",
        stats["freshness"]
    );
    assert!(
        stats["freshness"]["hour"]["median_seconds"]
            .as_f64()
            .is_some()
    );
    // No re-purge was needed: one purge per URL.
    assert!(urls.iter().all(|u| purges_of(&emulator, u) == 1));
}

/// One node drops one URL's purges. Cleared after the first purge, the
/// re-purge at half the deadline reaches it: fresh, with one re-purge.
/// Left on, the re-purge is dropped too: stale with the node named, and
/// `--wait` exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_drops_a_purge_is_caught_and_repurged() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(
        &origin,
        Knobs {
            edge_drop_node: Some(1),
            edge_drop_urls_containing: Some("/drop-me".into()),
            ..Knobs::default()
        },
    )
    .await;
    let node1 = emulator.edge_addrs()[1];
    let paths = [
        "/drop-me-a.css".to_owned(),
        "/drop-me-b.css".to_owned(),
        "/kept.css".to_owned(),
    ];
    warm(&emulator, &paths).await;
    origin.set_version(2);
    let daemon = TestDaemon::start(&config(&emulator, &origin, "4s")).await;

    // A: the fault clears after the first purge.
    let a = format!("http://{HOST}/drop-me-a.css");
    let (status, accepted) = daemon.post("/v1/purges", &json!({ "files": [a] })).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while purges_of(&emulator, &a) == 0 {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emulator
        .set_knobs(Knobs {
            edge_drop_node: None,
            ..emulator.knobs()
        })
        .expect("knobs");
    let done = request(&daemon, &id).await;
    let verification = &done["items"][0]["verification"];
    assert_eq!(verification["state"], "fresh", "{done}\n{}", daemon.logs());
    assert_eq!(verification["repurges"], 1, "{done}");
    assert_eq!(
        purges_of(&emulator, &a),
        2,
        "the first purge, and one re-purge"
    );
    assert_eq!(at_edge(node1, "/drop-me-a.css").await, "v2 /drop-me-a.css");

    // B: the node keeps dropping.
    emulator
        .set_knobs(Knobs {
            edge_drop_node: Some(1),
            ..emulator.knobs()
        })
        .expect("knobs");
    let b = format!("http://{HOST}/drop-me-b.css");
    let kept = format!("http://{HOST}/kept.css");
    let (code, out, err) = enqueue_wait(&daemon, &[b.clone(), kept.clone()]);
    assert_eq!(code, 4, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!("stale\t{b}\tedge {node1} serves 200, ETag \"v1\"")),
        "the URL, the edge and what differed: {out}"
    );
    assert!(out.contains("1 fresh"), "{out}");
    assert_eq!(purges_of(&emulator, &b), 2, "re-purged once, no more");
    assert_eq!(purges_of(&emulator, &kept), 1);
    let stats = daemon.stats().await;
    let stale = &stats["freshness"]["stale_now"];
    assert_eq!(stale[0]["url"], b, "{stats}");
}

/// With the origin down, nothing can be compared: every URL ends
/// unverifiable (never fresh), and `--wait` exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_origin_nothing_is_called_fresh() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(&origin, Knobs::default()).await;
    let config = config(&emulator, &origin, "3s");
    let paths = ["/o/1.css".to_owned(), "/o/2.css".to_owned()];
    warm(&emulator, &paths).await;
    drop(origin);
    let daemon = TestDaemon::start(&config).await;
    let urls: Vec<String> = paths.iter().map(|p| format!("http://{HOST}{p}")).collect();
    let (code, out, err) = enqueue_wait(&daemon, &urls);
    assert_eq!(code, 4, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("0 fresh"), "{out}");
    for url in &urls {
        assert!(
            out.contains(&format!("unverifiable\t{url}\tthe origin: cannot connect")),
            "{out}"
        );
    }
}

/// A deleted file verifies when the edge answers 404 too; a directory is
/// verified through the files purgeq knows under it.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_files_and_directories_verify() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(&origin, Knobs::default()).await;
    let paths = [
        "/gone.css".to_owned(),
        "/dir/1.js".to_owned(),
        "/dir/2.js".to_owned(),
    ];
    warm(&emulator, &paths).await;
    origin.set_version(2);
    origin.delete("/gone.css");
    let daemon = TestDaemon::start(&config(&emulator, &origin, "30s")).await;
    let urls = [
        format!("http://{HOST}/gone.css"),
        format!("http://{HOST}/dir/"),
        format!("http://{HOST}/dir/1.js"),
        format!("http://{HOST}/dir/2.js"),
    ];
    let (code, out, err) = enqueue_wait(&daemon, &urls);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", daemon.logs());
    let (_, list) = daemon.get("/v1/purges?limit=1").await;
    let id = list["requests"][0]["id"].as_str().expect("id").to_owned();
    let status = request(&daemon, &id).await;
    let item = |url: &str| {
        status["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["url"] == url)
            .cloned()
            .unwrap_or_else(|| panic!("{url} in {status}"))
    };
    let gone = item(&urls[0]);
    assert_eq!(gone["verification"]["state"], "fresh", "{gone}");
    assert!(
        gone["verification"]["edges"][0]["served"]
            .as_str()
            .is_some_and(|s| s.starts_with("404")),
        "{gone}"
    );
    let directory = item(&urls[1]);
    assert_eq!(directory["verification"]["state"], "fresh", "{directory}");
    assert_eq!(
        directory["verification"]["probed"],
        json!([urls[2], urls[3]]),
        "{directory}"
    );
    for node in emulator.edge_addrs() {
        assert_eq!(at_edge(node, "/dir/2.js").await, "v2 /dir/2.js");
    }
}

/// `kill -9` while URLs are being verified; after a restart every URL
/// ends verified, and nothing was purged again.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_mid_verification_resumes_without_a_new_purge() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(
        &origin,
        Knobs {
            edge_propagation_delay: Duration::from_secs(3),
            ..Knobs::default()
        },
    )
    .await;
    // The propagation knob is set after the start: the helper's default
    // would override it.
    emulator
        .set_knobs(Knobs {
            edge_propagation_delay: Duration::from_secs(3),
            ..emulator.knobs()
        })
        .expect("knobs");
    let paths: Vec<String> = (0..20).map(|n| format!("/k/{n}.css")).collect();
    warm(&emulator, &paths).await;
    origin.set_version(2);
    let mut daemon = TestDaemon::start(&config(&emulator, &origin, "60s")).await;
    let urls: Vec<String> = paths.iter().map(|p| format!("http://{HOST}{p}")).collect();
    let (status, accepted) = daemon.post("/v1/purges", &json!({ "files": urls })).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_owned();
    daemon
        .wait_for("verification under way", Duration::from_secs(20), |s| {
            s["freshness"]["pending"].as_u64().unwrap_or(0) > 0
        })
        .await;
    daemon.kill9();
    daemon.launch().await;
    let done = request(&daemon, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", daemon.logs());
    for item in done["items"].as_array().expect("items") {
        assert_eq!(item["verification"]["state"], "fresh", "{item}");
        assert_eq!(item["verification"]["repurges"], 0, "{item}");
    }
    assert!(
        urls.iter().all(|u| purges_of(&emulator, u) == 1),
        "no URL was purged again"
    );
}

/// A new user's machine: no credentials (the built-in emulator, which is
/// then the edge too) and a local origin: `enqueue --wait` follows a URL
/// to fresh at the emulated edge.
#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_emulator_is_the_edge_on_one_machine() {
    let origin = TestOrigin::start().await;
    let daemon = TestDaemon::start(&format!(
        "[batch]\nlinger = \"100ms\"\n[tracker]\npoll_interval = \"100ms\"\n\
         [verify]\nenabled = true\norigin = \"http://{}\"\ndeadline = \"20s\"\n",
        origin.addr
    ))
    .await;
    let logs = daemon.logs();
    assert!(
        logs.matches("emulated edge node").count() == 2,
        "two edge nodes are announced: {logs}"
    );
    let url = "http://www.example.com/first.css".to_owned();
    let (code, out, err) = enqueue_wait(&daemon, std::slice::from_ref(&url));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", daemon.logs());
    assert!(out.contains("at the edge: 1 fresh"), "{out}");
}

/// The README's `[verify]` example is a configuration `check-config`
/// accepts.
#[test]
fn the_readme_example_checks() {
    let (code, out, err) = common::check_readme_example("## Fresh at the edge");
    assert_eq!(code, 0, "{out}{err}");
}

/// Issue 35: the origin's `Cache-Tag` header, read by verification's
/// origin probe, teaches the tag registry; a purge of one of those tags
/// then purges the URL again.
#[tokio::test(flavor = "multi_thread")]
async fn the_origins_cache_tags_are_learned_and_purge_by_tag() {
    let origin = TestOrigin::start().await;
    let emulator = edge_emulator(&origin, Knobs::default()).await;
    let paths = vec![
        "/tag-alpha/tag-beta/page.html".to_owned(),
        "/tag-alpha/other.html".to_owned(),
        "/untagged.html".to_owned(),
    ];
    warm(&emulator, &paths).await;
    origin.set_version(2);
    let daemon = TestDaemon::start(&config(&emulator, &origin, "30s")).await;
    let urls: Vec<String> = paths.iter().map(|p| format!("http://{HOST}{p}")).collect();
    let (code, out, err) = enqueue_wait(&daemon, &urls);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", daemon.logs());
    let (status, alpha) = daemon.get("/v1/tags/tag-alpha").await;
    assert_eq!(status, 200, "{alpha}");
    let mut learned: Vec<&str> = alpha["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    learned.sort_unstable();
    assert_eq!(learned, [urls[1].as_str(), urls[0].as_str()], "{alpha}");
    let (_, beta) = daemon.get("/v1/tags/tag-beta").await;
    assert_eq!(beta["urls"], json!([urls[0]]), "{beta}");
    assert_eq!(daemon.stats().await["tags"]["urls"], 2);

    let (status, accepted) = daemon
        .post("/v1/purges", &json!({ "tags": ["tag-beta"] }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id");
    let done = request(&daemon, id).await;
    assert_eq!(done["items"][0]["via_tag"], "tag-beta", "{done}");
    assert_eq!(purges_of(&emulator, &urls[0]), 2, "purged again by its tag");
    assert_eq!(purges_of(&emulator, &urls[1]), 1);
    assert_eq!(purges_of(&emulator, &urls[2]), 1);
    emulator.shutdown().await;
}

//! Issue 34: every cache layer in front of the origin is purged before the
//! CDN, with real Varnish and nginx (Debian's packages, the shipped VCL and
//! snippet) in front of a test origin, and the emulator as the CDN.
//! Skipped, saying so, where the programs are not installed (unless
//! `PURGEQ_REQUIRE_ORIGIN_CACHES` is set, as in CI).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::caches::{self, Nginx, TestOrigin, Varnish};
use common::{ENDPOINTS, TestDaemon, cdn_section, emulator, fast_knobs};
use serde_json::{Value, json};

const HOST: &str = ENDPOINTS[0].1;

fn config(emulator: &purgeq::cdn::emulator::EmulatorHandle, layers: &str) -> String {
    format!(
        "{}[batch]\nlinger = \"100ms\"\n[tracker]\npoll_interval = \"100ms\"\n{layers}",
        cdn_section(emulator, common::KEY_VALUE)
    )
}

fn layer(name: &str, kind: &str, port: u16) -> String {
    format!(
        "[[origin_cache]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"http://127.0.0.1:{port}\"\n"
    )
}

/// When the emulator accepted each URL (files and directories), in
/// seconds since the epoch.
fn cdn_times(emulator: &purgeq::cdn::emulator::EmulatorHandle) -> HashMap<String, f64> {
    let mut times = HashMap::new();
    for entry in emulator.journal() {
        let at = humantime::parse_rfc3339(&entry.at)
            .expect("journal time")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        for url in entry.files.iter().chain(&entry.directories) {
            times.entry(url.clone()).or_insert(at);
        }
    }
    times
}

/// Warm both caches with version 1 of 100 files and the files of one
/// directory, deploy version 2, `enqueue --wait`: every layer serves
/// version 2, and the CDN got each URL only after both layers had purged
/// it, by the layers' own logs and the emulator's journal.
#[tokio::test(flavor = "multi_thread")]
async fn every_layer_is_purged_before_the_cdn() {
    if !caches::available("every_layer_is_purged_before_the_cdn") {
        return;
    }
    let origin = TestOrigin::start().await;
    let varnish = Varnish::start(origin.addr).await;
    let nginx = Nginx::start(origin.addr).await;
    let files: Vec<String> = (0..100).map(|n| format!("/f/{n}.css?v=1")).collect();
    let under: Vec<String> = (0..5).map(|n| format!("/d/{n}.js")).collect();
    for path in files.iter().chain(&under) {
        for cache in [varnish.port, nginx.port] {
            assert_eq!(caches::fetch(cache, HOST, path).await, format!("v1 {path}"));
        }
    }
    origin.set_version(2);
    for cache in [varnish.port, nginx.port] {
        assert_eq!(
            caches::fetch(cache, HOST, &files[0]).await,
            format!("v1 {}", files[0]),
            "the layers cache: without a purge they keep serving version 1"
        );
    }

    let emulator = emulator(fast_knobs()).await;
    let daemon = TestDaemon::start(&config(
        &emulator,
        &(layer("varnish-1", "varnish", varnish.port) + &layer("nginx-1", "nginx", nginx.port)),
    ))
    .await;
    let mut args: Vec<String> = vec![
        "enqueue".into(),
        "--socket".into(),
        daemon.socket.display().to_string(),
        "--wait".into(),
        format!("http://{HOST}/d/"),
    ];
    args.extend(
        files
            .iter()
            .chain(&under)
            .map(|path| format!("http://{HOST}{path}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = common::run_with_input(&args, &[], "");
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{}", daemon.logs());

    for path in files.iter().chain(&under) {
        for cache in [varnish.port, nginx.port] {
            assert_eq!(
                caches::fetch(cache, HOST, path).await,
                format!("v2 {path}"),
                "port {cache}"
            );
        }
    }

    // The order, from both sides: each layer's log, the CDN's journal.
    let cdn = cdn_times(&emulator);
    let varnish_log = varnish.purges();
    let nginx_log = nginx.purges();
    let purged_at = |log: &[caches::Logged], method: &str, path: &str| {
        log.iter()
            .find(|l| l.method == method && l.path == path && l.host == HOST)
            .map(|l| l.at)
            .unwrap_or_else(|| panic!("no {method} {path} in {log:?}"))
    };
    for path in &files {
        let at_cdn = cdn[&format!("http://{HOST}{path}")];
        for (name, at) in [
            ("varnish", purged_at(&varnish_log, "PURGE", path)),
            ("nginx", purged_at(&nginx_log, "PURGE", path)),
        ] {
            assert!(
                at <= at_cdn,
                "{path}: {name} purged at {at}, the CDN got it at {at_cdn}"
            );
        }
    }
    // The directory: a BAN at Varnish, its known files at nginx (Debian's
    // module purges one key per request), all before the CDN's call.
    let at_cdn = cdn[&format!("http://{HOST}/d/")];
    assert!(purged_at(&varnish_log, "BAN", "/d/") <= at_cdn);
    for path in &under {
        assert!(purged_at(&nginx_log, "PURGE", path) <= at_cdn, "{path}");
    }
    assert!(
        !nginx.errors().contains("signal"),
        "no nginx worker crashed: {}",
        nginx.errors()
    );

    // The history says the same: each layer, done, with its time.
    let (code, history, err) = common::run_with_input(
        &[
            "history",
            "--db",
            daemon.db_path().to_str().expect("utf-8"),
            "--url-prefix",
            &format!("http://{HOST}/f/0.css"),
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(history.contains("\tORIGIN"), "{history}");
    assert!(
        history.contains("varnish-1 done 20") && history.contains("nginx-1 done 20"),
        "{history}"
    );
}

/// With Varnish stopped, the CDN receives nothing for its hosts and every
/// URL says why; a request may skip the layer on purpose; after a
/// `kill -9`, with Varnish back, everything completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_layer_that_is_down_holds_the_cdn_back_until_it_returns() {
    if !caches::available("a_layer_that_is_down_holds_the_cdn_back_until_it_returns") {
        return;
    }
    let origin = TestOrigin::start().await;
    let mut varnish = Varnish::start(origin.addr).await;
    varnish.stop();
    let emulator = emulator(fast_knobs()).await;
    let mut daemon = TestDaemon::start(&config(
        &emulator,
        &layer("varnish-1", "varnish", varnish.port),
    ))
    .await;
    let urls = [
        format!("http://{HOST}/held/1.css"),
        format!("http://{HOST}/held/2.css"),
    ];
    let (status, accepted) = daemon.post("/v1/purges", &json!({ "files": urls })).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_owned();

    // Held: failing, retried, and said everywhere.
    let stats = daemon
        .wait_for("varnish-1 failing", Duration::from_secs(15), |s| {
            s["origin_caches"][0]["failing"] == 2
        })
        .await;
    assert_eq!(stats["origin_caches"][0]["layer"], "varnish-1", "{stats}");
    assert_eq!(stats["origin_caches"][0]["pending"], 2, "{stats}");
    let (_, request) = daemon.get(&format!("/v1/purges/{id}")).await;
    for item in request["items"].as_array().expect("items") {
        assert_eq!(item["state"], "pending", "{item}");
        let waiting = item["waiting"].as_str().unwrap_or_default();
        assert!(
            waiting.starts_with("origin cache varnish-1: cannot connect")
                && waiting.contains("retrying at"),
            "{item}"
        );
        assert_eq!(item["origin_caches"][0]["state"], "pending", "{item}");
    }
    let socket = daemon.socket.display().to_string();
    let (code, status_text, err) =
        common::run_with_input(&["status", "--socket", &socket], &[], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        status_text
            .contains("origin:    varnish-1: 2 URLs to purge before their CDN purge; 2 failing"),
        "{status_text}"
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("purgeq_origin_pending{layer=\"varnish-1\"} 2"),
        "{metrics}"
    );
    assert!(
        emulator.journal().is_empty(),
        "the CDN got nothing while the layer was down: {:?}",
        emulator.journal()
    );
    // The `queue` view, for an operator with sqlite3, says the same.
    let why: Vec<String> = {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}?mode=ro",
            daemon.db_path().display()
        ))
        .await
        .expect("open the database");
        sqlx::query_scalar("SELECT why FROM queue ORDER BY url")
            .fetch_all(&mut db)
            .await
            .expect("queue view")
    };
    assert_eq!(why.len(), 2, "{why:?}");
    for why in &why {
        assert!(
            why.starts_with("waiting for origin caches: varnish-1 (cannot connect"),
            "{why}"
        );
    }

    // An explicit skip: a misspelt layer is refused, a known one goes
    // through and is recorded as skipped.
    let skipped = format!("http://{HOST}/skipped.css");
    let (status, refused) = daemon
        .post(
            "/v1/purges",
            &json!({ "files": [skipped], "skip_origin_caches": ["varnish-2"] }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("\\\"varnish-2\\\" is not a configured origin cache (configured: varnish-1)"),
        "{refused}"
    );
    let (status, accepted) = daemon
        .post(
            "/v1/purges",
            &json!({ "files": [skipped], "skip_origin_caches": ["varnish-1"] }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let skip_id = accepted["id"].as_str().expect("id");
    let (_, done) = daemon.get(&format!("/v1/purges/{skip_id}?wait=20")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let layer = &done["items"][0]["origin_caches"][0];
    assert_eq!(layer["state"], "skipped", "{done}");
    assert_eq!(
        layer["error"],
        format!("skipped by request {skip_id}"),
        "{done}"
    );
    assert!(
        !cdn_times(&emulator).contains_key(&urls[0]),
        "the held URLs still wait"
    );

    // kill -9 while held; the layer returns; a new start finishes.
    daemon.kill9();
    varnish.launch().await;
    daemon.launch().await;
    let (_, done) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", daemon.logs());
    let cdn = cdn_times(&emulator);
    let log = varnish.purges();
    for url in &urls {
        let path = url.trim_start_matches(&format!("http://{HOST}"));
        let purged = log
            .iter()
            .find(|l| l.method == "PURGE" && l.path == path)
            .unwrap_or_else(|| panic!("no PURGE {path} in {log:?}"));
        assert!(purged.at <= cdn[url], "{url}");
    }
    let item: &Value = &done["items"][0];
    assert_eq!(item["origin_caches"][0]["state"], "done", "{item}");
    assert!(
        item["origin_caches"][0]["attempts"].as_i64().unwrap_or(0) > 1,
        "{item}"
    );
}

/// `check-config` refuses an origin cache of an unknown kind, with a bad
/// URL or a host no endpoint serves, and warns of a loopback address in a
/// fleet.
#[test]
fn check_config_refuses_bad_origin_caches() {
    let dir = tempfile::tempdir().expect("tmp");
    let endpoints = "[[cdn.endpoints]]\nid = \"aaaaaaaa-0000-4000-8000-00000000000a\"\nhosts = [\"a.example.com\"]\n";
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{endpoints}\
             [[origin_cache]]\nname = \"squid-1\"\nkind = \"squid\"\nurl = \"http://127.0.0.1:3128\"\n\
             [[origin_cache]]\nname = \"varnish-1\"\nkind = \"varnish\"\nurl = \"127.0.0.1:6081/purge\"\n\
             [[origin_cache]]\nname = \"nginx-1\"\nkind = \"nginx\"\nurl = \"http://127.0.0.1:8081\"\nhosts = [\"www.other.org\"]\n"
        ),
    )
    .expect("write");
    let (code, out, err) = common::run_with_input(
        &["check-config", "--config", bad.to_str().expect("utf-8")],
        &[],
        "",
    );
    assert_eq!(code, 78, "{out}{err}");
    for expected in [
        "origin_cache[0].kind: \"squid\" is not one of its values (write \"varnish\", \"nginx\" or \"http\")",
        "origin_cache[1].url: \"127.0.0.1:6081/purge\" must be an http(s) address",
        "origin_cache[2].hosts[0]: \"www.other.org\" is served by no endpoint",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }

    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "[store]\nurl = \"postgres://purgeq@db.internal/purgeq\"\n{endpoints}\
             [[origin_cache]]\nname = \"nginx-1\"\nkind = \"nginx\"\nurl = \"http://127.0.0.1:8081\"\n"
        ),
    )
    .expect("write");
    let (code, out, err) = common::run_with_input(
        &["check-config", "--config", fleet.to_str().expect("utf-8")],
        &[],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("origin:    nginx-1 (nginx) at http://127.0.0.1:8081 for every host"),
        "{out}"
    );
    assert!(
        out.contains("warning: origin cache nginx-1 is at a loopback address"),
        "{out}"
    );
    assert!(
        out.contains("a directory is purged there as each file purgeq knows under it"),
        "{out}"
    );
}

/// The README's `[[origin_cache]]` example is a configuration
/// `check-config` accepts, as it says.
#[test]
fn the_readme_example_checks() {
    let (code, out, err) = common::check_readme_example("## Origin caches");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("origin:    varnish-1 (varnish) at http://127.0.0.1:6081 for www.example.com")
            && out.contains("origin:    nginx-1 (nginx) at http://127.0.0.1:8081 for every host"),
        "{out}"
    );
}

/// The `http` kind, with a site's own purge endpoint (a recorder): each
/// file is sent `PURGE /path?query` with its `Host`, a directory as the
/// files purgeq knows under it, every one before the CDN's call.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_layer_gets_a_purge_per_file_before_the_cdn() {
    let emulator = emulator(fast_knobs()).await;
    let recorder = caches::PurgeRecorder::start().await;
    let daemon = TestDaemon::start(&config(
        &emulator,
        &layer("site", "http", recorder.addr.port()),
    ))
    .await;
    let files: Vec<String> = (0..20)
        .map(|n| format!("http://{HOST}/http-kind/{n}.js?v={n}"))
        .collect();
    // A directory asked for while files under it are pending: they are
    // what the layer is sent for it.
    let (status, first) = daemon.post("/v1/purges", &json!({ "files": files })).await;
    assert_eq!(status, 202, "{first}");
    let directory = format!("http://{HOST}/http-kind/");
    let (status, second) = daemon
        .post("/v1/purges", &json!({ "directories": [directory] }))
        .await;
    assert_eq!(status, 202, "{second}");
    for accepted in [&first, &second] {
        let id = accepted["id"].as_str().expect("id");
        let (_, request) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
        assert_eq!(
            request["state"],
            "succeeded",
            "{request}\n{}",
            daemon.logs()
        );
    }
    let seen = recorder.seen();
    let cdn = cdn_times(&emulator);
    for (n, url) in files.iter().enumerate() {
        let path = format!("/http-kind/{n}.js?v={n}");
        let purge = seen
            .iter()
            .find(|(method, host, p, _)| method == "PURGE" && host == HOST && *p == path)
            .unwrap_or_else(|| panic!("no PURGE {path} at the layer: {seen:?}"));
        let at_cdn = cdn
            .get(url)
            .or_else(|| cdn.get(&directory))
            .unwrap_or_else(|| panic!("{url} never reached the CDN"));
        assert!(
            purge.3 <= *at_cdn,
            "{path}: layer {} after CDN {at_cdn}",
            purge.3
        );
    }
    assert!(
        seen.iter().all(|(method, ..)| method == "PURGE"),
        "only PURGE: {seen:?}"
    );
    emulator.shutdown().await;
}

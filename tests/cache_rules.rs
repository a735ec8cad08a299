//! The endpoints' cache rules, end to end against the emulator (issue 32):
//! the daemon reads each endpoint's policy, purges URLs that differ only
//! in their query once where the endpoint ignores query strings, and ends
//! URLs whose cached copies have all expired without spending quota.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ENDPOINTS, KEY_ID, KEY_VALUE, SUBSCRIPTION, TestDaemon, cdn_section, emulator};
use purgeq::cdn::cache_rules::{CachePolicy, CacheRule, RuleType};
use purgeq::cdn::emulator::{EmulatorHandle, Knobs};
use purgeq::cdn::{CdnClient, ClientSettings, Credentials, KeyId, KeyValue};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

fn client(emulator: &EmulatorHandle) -> CdnClient {
    CdnClient::new(ClientSettings::new(
        emulator.base_url(),
        SUBSCRIPTION,
        Credentials {
            key_id: KeyId::new(KEY_ID),
            key_value: KeyValue::new(KEY_VALUE),
        },
    ))
    .expect("client")
}

/// Sets an endpoint's policy through the API, as an operator would.
async fn set_policy(emulator: &EmulatorHandle, endpoint: usize, policy: &CachePolicy) {
    client(emulator)
        .put_cache_policy(ENDPOINTS[endpoint].0, policy)
        .await
        .expect("PUT cacherules");
}

fn ignoring_queries() -> CachePolicy {
    CachePolicy {
        ignore_query_string: true,
        ..CachePolicy::default()
    }
}

/// `.html` lives `ttl` seconds; `Cache-Control` honoured or not.
fn html_for(ttl_secs: u64, ignore_cache_control: bool) -> CachePolicy {
    CachePolicy {
        rules: vec![CacheRule {
            rule_type: RuleType::Suffix,
            items: vec![".html".to_owned()],
            ttl_secs,
        }],
        ignore_cache_control,
        ..CachePolicy::default()
    }
}

fn knobs() -> Knobs {
    Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        files_per_day: 1_000_000,
        directories_per_day: 1_000_000,
        completion_delay: Duration::from_millis(100),
        ..Knobs::default()
    }
}

fn config(emulator: &EmulatorHandle, extra: &str) -> String {
    format!(
        "{}[batch]\nlinger = \"100ms\"\n[tracker]\npoll_interval = \"100ms\"\n{extra}",
        cdn_section(emulator, KEY_VALUE)
    )
}

/// Waits until the daemon has kept a policy for every test endpoint.
async fn policies_read(daemon: &TestDaemon) {
    let url = format!("sqlite://{}?mode=ro", daemon.db_path().display());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut conn) = SqliteConnection::connect(&url).await {
            let kept: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM cache_policies")
                .fetch_one(&mut conn)
                .await;
            if kept.is_ok_and(|n| n as usize == ENDPOINTS.len()) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not read the cache policies:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn journal_counts(emulator: &EmulatorHandle) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in emulator.journal() {
        for url in entry.files.iter().chain(&entry.directories) {
            *counts.entry(url.clone()).or_default() += 1;
        }
    }
    counts
}

async fn post_and_wait(daemon: &TestDaemon, urls: &[String]) -> Value {
    let (status, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id");
    let (status, view) = daemon.get(&format!("/v1/purges/{id}?wait=20")).await;
    assert_eq!(status, 200, "{view}");
    view
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_that_differ_only_in_their_query_are_one_purge_where_the_endpoint_ignores_queries() {
    let emulator = emulator(knobs()).await;
    set_policy(&emulator, 0, &ignoring_queries()).await;
    let daemon = TestDaemon::start(&config(&emulator, "")).await;
    policies_read(&daemon).await;

    let on = |endpoint: usize| {
        let host = ENDPOINTS[endpoint].1;
        vec![
            format!("http://{host}/a.js?v=1"),
            format!("http://{host}/a.js?v=2"),
            format!("http://{host}/a.js"),
        ]
    };
    // Endpoint 0 ignores query strings: one purge of the cached object.
    let view = post_and_wait(&daemon, &on(0)).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let items = view["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(item["state"], "succeeded", "{item}");
    }
    let coalesced: Vec<&Value> = items
        .iter()
        .filter(|i| i["merge_reason"] == "query_ignored")
        .collect();
    assert_eq!(coalesced.len(), 2, "{view}");
    for item in coalesced {
        assert_eq!(item["merged_into"], "http://a.example.com/a.js", "{item}");
        assert!(item["url"].as_str().unwrap().contains("?v="), "{item}");
    }
    // Endpoint 1 keeps them apart (the emulator's default policy).
    let view = post_and_wait(&daemon, &on(1)).await;
    assert_eq!(view["state"], "succeeded", "{view}");

    let counts = journal_counts(&emulator);
    let sent_for = |host: &str| {
        let mut urls: Vec<&String> = counts.keys().filter(|u| u.contains(host)).collect();
        urls.sort();
        urls
    };
    assert_eq!(
        sent_for(ENDPOINTS[0].1),
        vec!["http://a.example.com/a.js"],
        "{counts:?}"
    );
    assert_eq!(sent_for(ENDPOINTS[1].1).len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    // The status page shows each endpoint's rules as read.
    let page = daemon
        .client()
        .get("http://localhost/")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    let section = page
        .split("<h2 id=\"cache-rules\">")
        .nth(1)
        .expect("a cache rules section");
    assert!(
        section.contains(ENDPOINTS[0].0)
            && section.contains("query strings ignored, Cache-Control honoured"),
        "{section}"
    );
    assert!(
        section.contains("query strings kept, Cache-Control honoured; Suffix .html .htm 300 s"),
        "{section}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_whose_copies_have_expired_ends_without_a_purge_behind_a_spent_day() {
    let emulator = emulator(knobs()).await;
    // Endpoint 0 caches `.html` for 2 s whatever the origin says; endpoint
    // 1 has the same rule but honours the origin's Cache-Control.
    set_policy(&emulator, 0, &html_for(2, true)).await;
    set_policy(&emulator, 1, &html_for(2, false)).await;
    let daemon = TestDaemon::start(&config(
        &emulator,
        "[quota]\nfiles_per_day = 1\npromote = \"never\"\n",
    ))
    .await;
    policies_read(&daemon).await;
    // Spend the day.
    let view = post_and_wait(&daemon, &["http://c.example.com/filler.js".to_owned()]).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let calls_before = emulator.journal().len();

    let urls = vec![
        "http://a.example.com/page.html".to_owned(),
        "http://a.example.com/app.js".to_owned(),
        "http://b.example.com/page.html".to_owned(),
    ];
    // Preloads asked: an expired URL is still preloaded.
    let (status, body) = daemon
        .post("/v1/purges", &json!({ "urls": urls, "preload": true }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
        if view["items"][0]["state"] == "expired" {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "page.html did not expire: {view}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expired = &view["items"][0];
    assert!(
        expired["error"]
            .as_str()
            .is_some_and(|e| e.contains("Suffix .html, TTL 2 s")),
        "{expired}"
    );
    // No rule for `.js`, and endpoint 1 honours Cache-Control: both wait.
    assert_eq!(view["items"][1]["state"], "pending", "{view}");
    assert_eq!(view["items"][2]["state"], "pending", "{view}");
    assert_eq!(view["state"], "in_progress");
    // No purge was sent, nothing charged; the preload went.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
        if view["items"][0]["preload_state"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no preload: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let journal = emulator.journal();
    let purges_after: Vec<_> = journal[calls_before..]
        .iter()
        .filter(|e| e.operation == purgeq::cdn::emulator::TaskKind::Purge)
        .collect();
    assert!(purges_after.is_empty(), "{purges_after:?}");
    assert!(
        journal[calls_before..]
            .iter()
            .any(|e| e.files == ["http://a.example.com/page.html"]),
        "{journal:?}"
    );
    let stats = daemon.stats().await;
    assert_eq!(stats["items"]["expired"], 1, "{stats}");
    assert_eq!(stats["quota"]["files_used"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_without_the_cdn_plans_with_the_kept_policy() {
    let emulator = emulator(knobs()).await;
    set_policy(&emulator, 0, &ignoring_queries()).await;
    let mut daemon = TestDaemon::start(&config(&emulator, "")).await;
    policies_read(&daemon).await;
    daemon.terminate();
    // The CDN refuses every call now; the kept copy still applies.
    let mut refused = emulator.knobs();
    refused.force_error_type = Some("ApiKeyNotFound".to_owned());
    emulator.set_knobs(refused).expect("knobs");
    daemon.launch().await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://a.example.com/x.css?v=9"] }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    assert_eq!(view["items"][0]["merge_reason"], "query_ignored", "{view}");
    assert_eq!(
        view["items"][0]["merged_into"], "http://a.example.com/x.css",
        "{view}"
    );
}

/// Issue 32: a 2,600-file deploy under a 2,000-file day hears at once
/// that 600 of its URLs wait for the next quota day, and that is what
/// happens. With `--wait --until-today` the CLI says so and exits 3
/// instead of waiting hours.
#[tokio::test(flavor = "multi_thread")]
async fn the_forecast_of_a_deploy_larger_than_the_day_matches_what_happens() {
    let emulator = emulator(knobs()).await;
    let daemon = TestDaemon::start(&config(
        &emulator,
        "[sender]\nrequests_per_second = 200\nburst = 50\nconcurrency = 4\n\
         [quota]\nfiles_per_day = 2000\npromote = \"never\"\n",
    ))
    .await;
    let urls: Vec<String> = (0..2600)
        .map(|i| format!("http://a.example.com/deploy/d{}/f{i}.js", i / 50))
        .collect();
    // A dry run (`enqueue --dry-run`) says the same before anything is
    // stored.
    let (status, plan) = daemon.post("/v1/plan", &json!({ "urls": urls })).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["forecast"]["expected"], "next_quota_day", "{plan}");
    assert_eq!(plan["forecast"]["urls_next_quota_day"], 600, "{plan}");
    let (status, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{body}");
    let forecast = &body["forecast"];
    assert_eq!(forecast["expected"], "next_quota_day", "{body}");
    assert_eq!(forecast["urls_today"], 2000, "{body}");
    assert_eq!(forecast["urls_next_quota_day"], 600, "{body}");
    assert_eq!(forecast["urls_promoted"], 0, "{body}");
    assert!(forecast["estimated_done_at"].is_string(), "{body}");

    // What happens: 2,000 purged today, 600 waiting.
    daemon
        .wait_for("2,000 purged", Duration::from_secs(120), |s| {
            common::items(s, "succeeded") == 2000
        })
        .await;
    let stats = daemon.stats().await;
    assert_eq!(common::items(&stats, "pending"), 600, "{stats}");
    assert_eq!(stats["quota"]["files_left"], 0, "{stats}");

    // A later request through the CLI: all of it waits, and
    // --until-today does not wait for it.
    let socket = daemon.socket.to_str().expect("utf-8").to_owned();
    let (code, out, err) = common::run_with_input(
        &[
            "enqueue",
            "--socket",
            &socket,
            "--wait",
            "--until-today",
            "http://a.example.com/late.js",
        ],
        &[],
        "",
    );
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("forecast: 1 URL waits for the next quota day"),
        "{err}"
    );
    assert!(err.contains("--until-today"), "{err}");
}

/// With promotions allowed, the planner purges directories for what the
/// day cannot take as files, and the forecast says so: today.
#[tokio::test(flavor = "multi_thread")]
async fn the_forecast_counts_the_directories_the_planner_promotes() {
    let emulator = emulator(knobs()).await;
    let daemon = TestDaemon::start(&config(
        &emulator,
        "[sender]\nrequests_per_second = 200\nburst = 50\nconcurrency = 4\n\
         [quota]\nfiles_per_day = 2000\n",
    ))
    .await;
    let urls: Vec<String> = (0..2600)
        .map(|i| format!("http://a.example.com/deploy/d{}/f{i}.js", i / 50))
        .collect();
    let (status, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{body}");
    let forecast = &body["forecast"];
    assert_eq!(forecast["expected"], "today", "{body}");
    assert_eq!(forecast["urls_today"], 2600, "{body}");
    assert_eq!(forecast["urls_next_quota_day"], 0, "{body}");
    assert!(
        forecast["urls_promoted"].as_u64().unwrap_or(0) >= 600,
        "{body}"
    );
    let id = body["id"].as_str().expect("id");
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(view["state"], "succeeded", "{view}");
}

/// A changed policy is read again on SIGHUP (not only every
/// `cdn.cache_rules_refresh`), and kept in the store.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_policies_again() {
    let emulator = emulator(knobs()).await;
    let daemon = TestDaemon::start(&config(&emulator, "")).await;
    policies_read(&daemon).await;
    let kept = || async {
        let url = format!("sqlite://{}?mode=ro", daemon.db_path().display());
        let mut conn = SqliteConnection::connect(&url).await.expect("open");
        let policy: String =
            sqlx::query_scalar("SELECT policy FROM cache_policies WHERE endpoint_id = $1")
                .bind(ENDPOINTS[0].0)
                .fetch_one(&mut conn)
                .await
                .expect("kept");
        policy
    };
    assert!(kept().await.contains(r#""IgnoreQueryString":"false""#));
    set_policy(&emulator, 0, &ignoring_queries()).await;
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !kept().await.contains(r#""IgnoreQueryString":"true""#) {
        assert!(
            std::time::Instant::now() < deadline,
            "not read again after SIGHUP:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://a.example.com/y.js?v=1"] }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    assert_eq!(view["items"][0]["merge_reason"], "query_ignored", "{view}");
}

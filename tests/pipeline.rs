//! The whole pipeline: the daemon binary sending to the emulator over real
//! HTTP, through throttling, faults, bad credentials, bad URLs and crashes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::held::HeldDaemon;
use common::{ENDPOINTS, Edit, KEY_VALUE, TestDaemon, cdn_section, emulator, fast_knobs, items};
use purgeq::cdn::emulator::{EmulatorHandle, Knobs};
use serde_json::json;

fn pipeline_config(emulator: &EmulatorHandle, extra: &str) -> String {
    format!(
        "{}[batch]\nlinger = \"100ms\"\n[sender]\nrequests_per_second = 200\nburst = 20\nconcurrency = 4\n\
         [tracker]\npoll_interval = \"200ms\"\n[quota]\nfiles_per_day = 1000000\ndirectories_per_day = 1000000\n{extra}",
        cdn_section(emulator, KEY_VALUE)
    )
}

/// How many times each URL reached the emulator's journal.
fn journal_counts(emulator: &EmulatorHandle) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in emulator.journal() {
        for url in entry.files.iter().chain(&entry.directories) {
            *counts.entry(url.clone()).or_default() += 1;
        }
    }
    counts
}

fn urls_for(count: usize, tag: &str) -> Vec<String> {
    (0..count)
        .map(|i| format!("http://{}/{tag}/{i}.js", ENDPOINTS[i % 3].1))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_urls_arrive_exactly_once_in_the_fewest_calls() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = TestDaemon::start(&pipeline_config(&emulator, "")).await;
    let urls = urls_for(10_000, "bulk");
    let (status, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();

    daemon
        .wait_for("10,000 succeeded", Duration::from_secs(120), |s| {
            items(s, "succeeded") == 10_000
        })
        .await;
    let counts = journal_counts(&emulator);
    assert_eq!(counts.len(), 10_000);
    assert!(counts.values().all(|n| *n == 1), "a URL was sent twice");
    // 3,334 + 3,333 + 3,333 URLs in batches of 100: 34 + 34 + 34 calls.
    assert_eq!(emulator.journal().len(), 102);
    let stats = emulator.stats();
    assert_eq!(stats.get("accepted"), Some(&102));
    for rejected in [
        "WrongSignature",
        "InvalidAuthorizationHeader",
        "AuthorizationHeaderExpired",
        "ParameterInvalid",
    ] {
        assert_eq!(stats.get(rejected), None, "{rejected}: {stats:?}");
    }
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=5")).await;
    assert_eq!(view["state"], "succeeded");
    assert!(view["items"][0]["task_track_id"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttle_storm_slows_the_sender_instead_of_hammering() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = TestDaemon::start(
        &pipeline_config(&emulator, "")
            .edit(
                "[batch]\nlinger = \"100ms\"\n",
                "[batch]\nlinger = \"100ms\"\nmax_files = 10\n",
            )
            .edit("requests_per_second = 200", "requests_per_second = 20"),
    )
    .await;
    let urls = urls_for(600, "storm");
    let (status, _) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202);
    // Mid-run, the service starts allowing far less than we send.
    daemon
        .wait_for("some progress", Duration::from_secs(30), |s| {
            items(s, "submitted") + items(s, "succeeded") >= 60
        })
        .await;
    let mut knobs = emulator.knobs();
    knobs.requests_per_second = 4.0;
    knobs.burst = 2;
    emulator.set_knobs(knobs).expect("knobs");

    daemon
        .wait_for("600 succeeded", Duration::from_secs(120), |s| {
            items(s, "succeeded") == 600
        })
        .await;
    let counts = journal_counts(&emulator);
    assert_eq!(counts.len(), 600, "every URL arrived");
    let stats = emulator.stats();
    let throttled = stats.get("RequestThrottled").copied().unwrap_or(0);
    let accepted = stats.get("accepted").copied().unwrap_or(0);
    let progress = stats.get("progress").copied().unwrap_or(0);
    eprintln!(
        "throttle storm: {accepted} purges accepted, {progress} progress answers, {throttled} throttled"
    );
    assert!(throttled >= 1, "the storm happened: {stats:?}");
    assert!(
        throttled * 4 <= accepted + progress,
        "throttled answers should stay few: {throttled} of {} calls",
        accepted + progress + throttled
    );
    let daemon_stats = daemon.stats().await;
    assert!(
        daemon_stats["sender"]["throttled_total"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_percent_faults_lose_nothing() {
    let knobs = Knobs {
        error_500_rate: 0.08,
        error_503_rate: 0.06,
        slow_rate: 0.04,
        slow_delay: Duration::from_secs(5),
        drop_rate: 0.06,
        malformed_rate: 0.06,
        // Drawn from a seed: the assertions below on which faults were
        // injected cannot fail by chance (with random draws, one kind was
        // missing in about one run in twelve). This seed injects each
        // kind within the first five calls; the test makes at least 24.
        fault_seed: Some(1048),
        ..fast_knobs()
    };
    let emulator = emulator(knobs).await;
    let config = pipeline_config(&emulator, "").edit(
        "[batch]\nlinger = \"100ms\"\n",
        "[batch]\nlinger = \"100ms\"\nmax_files = 25\n",
    );
    let daemon = TestDaemon::start(&config).await;
    let urls = urls_for(600, "faulty");
    let (status, _) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202);
    daemon
        .wait_for("600 succeeded", Duration::from_secs(180), |s| {
            items(s, "succeeded") == 600
        })
        .await;
    let counts = journal_counts(&emulator);
    assert_eq!(counts.len(), 600, "every URL arrived");
    let stats = emulator.stats();
    eprintln!("faults: {stats:?}");
    for fault in ["fault_500", "fault_503", "fault_drop", "fault_malformed"] {
        assert!(
            stats.get(fault).copied().unwrap_or(0) > 0,
            "{fault} was injected: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_pauses_until_a_reload_brings_the_right_one() {
    let emulator = emulator(fast_knobs()).await;
    let wrong = pipeline_config(&emulator, "").edit(KEY_VALUE, "not-the-key");
    let daemon = TestDaemon::start(&wrong).await;
    let urls = urls_for(30, "creds");
    let (status, _) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202);
    let stats = daemon
        // The pause is published before the refused batches are put back:
        // wait for both.
        .wait_for("the pause, every item back", Duration::from_secs(20), |s| {
            s["sender"]["state"] == "paused" && items(s, "pending") == 30
        })
        .await;
    assert!(
        stats["sender"]["paused_reason"]
            .as_str()
            .expect("reason")
            .contains("WrongSignature")
    );
    assert_eq!(items(&stats, "pending"), 30, "every item kept");
    daemon.assert_not_ready("credentials").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        emulator.journal().is_empty(),
        "nothing sent while the key is wrong"
    );
    let refused = emulator.stats().get("WrongSignature").copied().unwrap_or(0);
    // At most the calls already under way when the first refusal came back.
    assert!(refused <= 4, "no retry loop against a wrong key: {refused}");
    let logs = daemon.logs();
    assert_eq!(
        logs.matches("sending is paused").count(),
        1,
        "reported once:\n{logs}"
    );
    assert!(
        !logs.contains("not-the-key"),
        "the key value never appears in logs"
    );

    daemon.write_config(&pipeline_config(&emulator, ""));
    daemon.signal("HUP");
    daemon
        .wait_for("30 succeeded", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 30
        })
        .await;
    assert_eq!(journal_counts(&emulator).len(), 30);
    let (status, _) = daemon.get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_refused_urls_in_a_batch_of_100_fail_alone() {
    let emulator = emulator(fast_knobs()).await;
    // The daemon routes bad.example.com to endpoint A; the service does not
    // know that host on A, and refuses those URLs.
    let config = pipeline_config(&emulator, "")
        .edit(
            "hosts = [\"a.example.com\"]",
            "hosts = [\"a.example.com\", \"bad.example.com\"]",
        )
        .edit(
            "[batch]\nlinger = \"100ms\"\n",
            "[batch]\nlinger = \"300ms\"\nmax_files = 100\n",
        );
    let daemon = TestDaemon::start(&config).await;
    let mut urls: Vec<String> = (0..97)
        .map(|i| format!("http://a.example.com/good/{i}"))
        .collect();
    for (position, bad) in [(10, "x"), (50, "y"), (90, "z")] {
        urls.insert(position, format!("http://bad.example.com/{bad}"));
    }
    let (status, body) = daemon.post("/v1/purges", &json!({ "files": urls })).await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(view["state"], "failed", "{view:#}");
    let failed: Vec<&serde_json::Value> = view["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 3, "{view:#}");
    for item in failed {
        assert!(
            item["url"]
                .as_str()
                .expect("url")
                .starts_with("http://bad.example.com/")
        );
        let error = item["error"].as_str().expect("error");
        assert!(
            error.contains("ParameterInvalid") && error.contains("not a domain of endpoint"),
            "{error}"
        );
    }
    let counts = journal_counts(&emulator);
    assert_eq!(counts.len(), 97);
    assert_eq!(items(&daemon.stats().await, "succeeded"), 97);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing() {
    let emulator = emulator(Knobs {
        requests_per_second: 50.0,
        burst: 10,
        completion_delay: Duration::from_millis(300),
        ..fast_knobs()
    })
    .await;
    let config = pipeline_config(&emulator, "")
        .edit("requests_per_second = 200", "requests_per_second = 20")
        .edit(
            "[batch]\nlinger = \"100ms\"\n",
            "[batch]\nlinger = \"100ms\"\nmax_files = 20\n",
        );
    let mut daemon = TestDaemon::start(&config).await;
    let mut accepted = Vec::new();
    for round in 0..6 {
        let urls = urls_for(300, &format!("crash{round}"));
        let (status, _) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
        assert_eq!(status, 202);
        accepted.extend(urls);
        let pause = 200 + rand::random::<u64>() % 1200;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        daemon.kill9();
        daemon.launch().await;
    }
    daemon
        .wait_for("1,800 succeeded", Duration::from_secs(180), |s| {
            items(s, "succeeded") == 1_800
        })
        .await;
    let counts = journal_counts(&emulator);
    for url in &accepted {
        assert!(counts.contains_key(url), "{url} never reached the CDN");
    }
    let resent: usize = counts.values().filter(|n| **n > 1).count();
    eprintln!(
        "kill -9 x6: {} URLs, {resent} sent more than once (calls cut short by a kill)",
        accepted.len()
    );
    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "failed"), 0);
    assert_eq!(
        items(&stats, "pending") + items(&stats, "sending") + items(&stats, "submitted"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_zero_and_the_next_start_finishes() {
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_millis(200),
        ..fast_knobs()
    })
    .await;
    let config = pipeline_config(&emulator, "")
        .edit("requests_per_second = 200", "requests_per_second = 10")
        .edit(
            "[batch]\nlinger = \"100ms\"\n",
            "[batch]\nlinger = \"100ms\"\nmax_files = 10\n",
        );
    let mut daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon
        .post("/v1/purges", &json!({ "urls": urls_for(300, "term") }))
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit}\n{}", daemon.logs());
    daemon.launch().await;
    daemon
        .wait_for("300 succeeded", Duration::from_secs(90), |s| {
            items(s, "succeeded") == 300
        })
        .await;
    assert_eq!(journal_counts(&emulator).len(), 300);
}

/// Issue 13, bug 5: with a call on the wire at SIGTERM, the record of its
/// acceptance raced shutdown and was often dropped; the next start sent
/// the batch again (charged twice by the CDN, once by purgeq).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_call_on_the_wire_keeps_its_task_track_id() {
    let emulator = emulator(Knobs {
        slow_rate: 1.0,
        slow_delay: Duration::from_millis(1500),
        completion_delay: Duration::from_millis(100),
        ..fast_knobs()
    })
    .await;
    // Every call is slow, and the first slow one must be the purge: the
    // cache policies are not read here.
    let mut daemon = TestDaemon::start_with_env(
        &pipeline_config(&emulator, ""),
        &[("PURGEQ__CDN__CACHE_RULES_REFRESH", "0s")],
    )
    .await;
    let (status, _) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{}/wire.js", ENDPOINTS[0].1)] }),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while emulator.stats().get("fault_slow").copied().unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the call never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit}\n{}", daemon.logs());
    assert_eq!(emulator.journal().len(), 1, "the CDN accepted the call");

    let db = batch_states(&daemon.db_path()).await;
    assert_eq!(
        db,
        vec![("submitted".to_owned(), true)],
        "{}",
        daemon.logs()
    );

    let mut knobs = emulator.knobs();
    knobs.slow_rate = 0.0;
    emulator.set_knobs(knobs).expect("knobs");
    daemon.launch().await;
    daemon
        .wait_for("succeeded", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 1
        })
        .await;
    assert_eq!(emulator.journal().len(), 1, "not sent a second time");
}

/// Issue 12, item 5: after a `kill -9` the built-in emulator had forgotten
/// its TaskTrackIds, so purged URLs were queued and sent again.
#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_emulator_remembers_its_tasks_across_a_kill() {
    // No credentials: the built-in emulator, with its 2 s completion delay.
    let mut daemon =
        TestDaemon::start("[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"300ms\"\n")
            .await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://www.example.com/a.js", "http://www.example.com/b.js"] }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    daemon
        .wait_for("accepted by the CDN", Duration::from_secs(20), |s| {
            items(s, "submitted") == 2
        })
        .await;
    daemon.kill9();
    daemon.launch().await;
    daemon
        .wait_for("succeeded", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 2
        })
        .await;
    let batches = batch_states(&daemon.db_path()).await;
    assert_eq!(
        batches,
        vec![("succeeded".to_owned(), true)],
        "sent once: {}",
        daemon.logs()
    );
}

/// Every batch's state and whether it has a TaskTrackId, read from the
/// database file.
async fn batch_states(path: &std::path::Path) -> Vec<(String, bool)> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the database");
    sqlx::query_as("SELECT state, task_track_id IS NOT NULL FROM batches ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("batches")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inactive_endpoint_waits_while_the_others_go_on() {
    let emulator = emulator(Knobs {
        inactive_endpoints: vec![ENDPOINTS[1].0.to_owned()],
        ..fast_knobs()
    })
    .await;
    let config = pipeline_config(&emulator, "").edit(
        "concurrency = 4\n",
        "concurrency = 4\nendpoint_inactive_retry = \"1s\"\n",
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon
        .post("/v1/purges", &json!({ "urls": urls_for(30, "inactive") }))
        .await;
    assert_eq!(status, 202);
    let stats = daemon
        .wait_for("A and C done, B waiting", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 20 && s["endpoints_paused"].get(ENDPOINTS[1].0).is_some()
        })
        .await;
    assert_eq!(items(&stats, "pending"), 10, "{stats:#}");
    assert!(
        stats["endpoints_paused"][ENDPOINTS[1].0]["reason"]
            .as_str()
            .expect("reason")
            .contains("EndpointNotInActiveState")
    );
    let refused = emulator
        .stats()
        .get("EndpointNotInActiveState")
        .copied()
        .unwrap_or(0);

    let mut knobs = emulator.knobs();
    knobs.inactive_endpoints.clear();
    emulator.set_knobs(knobs).expect("knobs");
    daemon
        .wait_for("B done too", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 30
        })
        .await;
    assert!(refused <= 3, "retried slowly, not in a loop: {refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misconfigured_endpoint_fails_its_urls_and_the_others_go_on() {
    let emulator = emulator(fast_knobs()).await;
    // The daemon believes in an endpoint the service does not know.
    let config =
        pipeline_config(&emulator, "").edit(ENDPOINTS[2].0, "dddddddd-0000-4000-8000-00000000dead");
    let daemon = TestDaemon::start(&config).await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": urls_for(30, "misconfigured") }),
        )
        .await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "failed");
    for item in view["items"].as_array().expect("items") {
        if item["url"].as_str().expect("url").contains(ENDPOINTS[2].1) {
            assert_eq!(item["state"], "failed");
            assert!(
                item["error"]
                    .as_str()
                    .expect("error")
                    .contains("EndpointNotFound"),
                "{item}"
            );
        } else {
            assert_eq!(item["state"], "succeeded", "{item}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_the_cdn_fails_are_retried_then_fail_with_the_reason() {
    let emulator = emulator(Knobs {
        fail_urls_containing: Some("always-fails".into()),
        ..fast_knobs()
    })
    .await;
    // pipeline_config sets no max_attempts (the default is 5): this adds 3.
    let config = pipeline_config(&emulator, "")
        .edit("concurrency = 4\n", "concurrency = 4\nmax_attempts = 3\n");
    assert!(config.contains("max_attempts = 3\n"), "{config}");
    let daemon = TestDaemon::start(&config).await;
    let urls = vec![
        format!("http://{}/fine.js", ENDPOINTS[0].1),
        format!("http://{}/always-fails.js", ENDPOINTS[0].1),
    ];
    let (_, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(view["state"], "failed", "{view:#}");
    assert_eq!(view["items"][0]["state"], "succeeded");
    let failed = &view["items"][1];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("Failed on all 3 attempts"),
        "{failed}"
    );
    let sent = journal_counts(&emulator);
    assert_eq!(sent.get(&urls[1]), Some(&3), "sent once per attempt");
    assert_eq!(sent.get(&urls[0]), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_final_answer_in_time_ends_in_an_explicit_state() {
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_secs(3600),
        ..fast_knobs()
    })
    .await;
    let config = pipeline_config(&emulator, "").edit(
        "poll_interval = \"200ms\"\n",
        "poll_interval = \"200ms\"\ngive_up_after = \"1s\"\n",
    );
    let daemon = TestDaemon::start(&config).await;
    let (_, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{}/slow.js", ENDPOINTS[0].1)] }),
        )
        .await;
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "failed", "{view:#}");
    let error = view["items"][0]["error"].as_str().expect("error");
    assert!(
        error.contains("gave up: no final result from the CDN within 1s"),
        "{error}"
    );
    assert!(view["items"][0]["task_track_id"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_rate_limit_mid_run() {
    let emulator = emulator(fast_knobs()).await;
    let slow = pipeline_config(&emulator, "")
        .edit(
            "requests_per_second = 200\nburst = 20",
            "requests_per_second = 1\nburst = 1",
        )
        .edit(
            "[batch]\nlinger = \"100ms\"\n",
            "[batch]\nlinger = \"100ms\"\nmax_files = 10\n",
        );
    let daemon = HeldDaemon::start(&slow, &[]).await;
    let (status, _) = daemon
        .post("/v1/purges", &json!({ "urls": urls_for(300, "rate") }))
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = emulator.stats().get("accepted").copied().unwrap_or(0);
    assert!(early <= 4, "at 1 call/s, {early} purges in 2 s");

    // 30 purge calls (plus progress queries) would take over 30 s at 1/s.
    daemon
        .reload_with(&[
            ("sender.requests_per_second", "100"),
            ("sender.burst", "10"),
        ])
        .await
        .expect("reloaded");
    daemon
        .wait_for(
            "300 succeeded at the new rate",
            Duration::from_secs(15),
            |s| items(s, "succeeded") == 300,
        )
        .await;
}

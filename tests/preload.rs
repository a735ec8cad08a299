//! Purge, then preload (issue 16): a preload starts exactly when its
//! purge is confirmed, never before, once per URL, and its end is
//! recorded beside the purge's without changing it. The emulator is the
//! CDN: it journals each preloaded URL with whether its purge had finished.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use purgeq::cdn::emulator::{EmulatorHandle, Knobs, TaskKind};
use serde_json::{Value, json};

fn config(emulator: &EmulatorHandle, extra: &str) -> String {
    format!(
        "{}[batch]\nlinger = \"100ms\"\n[sender]\nrequests_per_second = 200\nburst = 20\nconcurrency = 4\n\
         max_attempts = 2\n[tracker]\npoll_interval = \"100ms\"\n{extra}",
        cdn_section(emulator, KEY_VALUE)
    )
}

/// Every preloaded URL, with how often, and whether its purge had
/// finished each time.
fn preloaded(emulator: &EmulatorHandle) -> BTreeMap<String, Vec<bool>> {
    let mut seen: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for entry in emulator
        .journal()
        .into_iter()
        .filter(|e| e.operation == TaskKind::Preload)
    {
        assert!(entry.directories.is_empty(), "a preload carries files only");
        assert_eq!(entry.files.len(), entry.purge_finished.len());
        for (url, finished) in entry.files.iter().zip(entry.purge_finished) {
            seen.entry(url.clone()).or_default().push(finished);
        }
    }
    seen
}

fn purged(emulator: &EmulatorHandle) -> BTreeSet<String> {
    emulator
        .journal()
        .into_iter()
        .filter(|e| e.operation == TaskKind::Purge)
        .flat_map(|e| e.files.into_iter().chain(e.directories))
        .collect()
}

fn host(i: usize) -> &'static str {
    ENDPOINTS[i % 3].1
}

/// The request once every purge and preload of it is final.
async fn final_view(client: &reqwest::Client, id: &str) -> Value {
    let (status, view) = get(client, &format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(status, 200, "{view}");
    assert_ne!(view["state"], "in_progress", "{view:#}");
    view
}

async fn post_ok(daemon: &common::held::HeldDaemon, path: &str, body: Value) -> String {
    let (status, accepted) = daemon.post(path, &body).await;
    assert_eq!(status, 202, "{accepted}");
    accepted["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_posted_with_preload_are_preloaded_once_each_after_their_purge_succeeded() {
    // Slow enough that a preload sent early would see its purge Running.
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_millis(400),
        ..fast_knobs()
    })
    .await;
    let daemon = common::held::HeldDaemon::start(&config(&emulator, ""), &[]).await;
    let wanted: Vec<String> = (0..30)
        .map(|i| format!("http://{}/app/{i}.js", host(i)))
        .collect();
    let not_wanted: Vec<String> = (0..9)
        .map(|i| format!("http://{}/plain/{i}.js", host(i)))
        .collect();
    // A directory (purged, never preloaded) and a file under it, merged
    // into it: the file is preloaded after the directory's purge.
    let directory = format!("http://{}/assets/", host(0));
    let covered = format!("http://{}/assets/logo.png", host(0));

    let first = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "files": wanted, "preload": true }),
    )
    .await;
    // The same URLs again, while pending: coalesced, and still preloaded
    // once.
    let twice = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "files": &wanted[..10], "preload": true }),
    )
    .await;
    let plain = post_ok(&daemon, "/v1/purges", json!({ "files": not_wanted })).await;
    let merged = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "directories": [directory], "files": [covered], "preload": true }),
    )
    .await;

    let client = daemon.client();
    for id in [&first, &twice, &merged] {
        let view = final_view(&client, id).await;
        assert_eq!(view["state"], "succeeded", "{view:#}");
        for item in view["items"].as_array().expect("items") {
            let expected = if item["kind"] == "directory" {
                Value::Null
            } else {
                json!("succeeded")
            };
            assert_eq!(item["preload_state"], expected, "{item}");
            if item["kind"] == "file" {
                assert!(item["preload_task_track_id"].is_string(), "{item}");
            }
        }
    }
    let view = final_view(&client, &plain).await;
    assert!(
        view["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i.get("preload_state").is_none()),
        "{view:#}"
    );

    let seen = preloaded(&emulator);
    let mut expected: BTreeSet<String> = wanted.iter().cloned().collect();
    expected.insert(covered.clone());
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "exactly the files asked for, never the directory or the others"
    );
    for (url, times) in &seen {
        assert_eq!(times.len(), 1, "{url} preloaded {} times", times.len());
        assert!(times[0], "{url} was preloaded before its purge finished");
    }
    assert!(purged(&emulator).contains(&directory));
    assert!(
        !purged(&emulator).contains(&covered),
        "the covered file goes by its directory"
    );

    let stats = daemon.stats().await;
    assert_eq!(stats["preloads"]["succeeded"], 31, "{stats:#}");
    assert_eq!(stats["preloads"]["waiting"], 0);
    assert_eq!(stats["quota"]["preloads_used"], 31, "{stats:#}");
    assert!(
        stats["sender"]["calls"]["preload:accepted"].as_u64() >= Some(1),
        "{stats:#}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_preload_is_recorded_and_never_fails_its_purge() {
    let emulator = emulator(Knobs {
        preload_fail_urls_containing: Some("cold".into()),
        ..fast_knobs()
    })
    .await;
    let daemon = common::held::HeldDaemon::start(&config(&emulator, ""), &[]).await;
    let cold = format!("http://{}/cold.js", host(0));
    let warm = format!("http://{}/warm.js", host(0));
    let id = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "files": [cold, warm], "preload": true }),
    )
    .await;
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "succeeded", "the purge succeeded: {view:#}");
    let item = |url: &str| {
        view["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["url"] == url)
            .cloned()
            .expect("item")
    };
    let cold_item = item(&cold);
    assert_eq!(cold_item["state"], "succeeded");
    assert_eq!(cold_item["preload_state"], "failed", "{cold_item}");
    assert!(
        cold_item["preload_error"]
            .as_str()
            .is_some_and(|e| e.contains("preload as Failed on all 2 attempts")),
        "{cold_item}"
    );
    assert_eq!(item(&warm)["preload_state"], "succeeded");
    // Tried max_attempts times, then recorded.
    assert_eq!(preloaded(&emulator)[&cold].len(), 2);

    // The history says both, for sqlite3 users.
    let rows: Vec<(String, String, Option<String>)> = {
        use sqlx::Connection;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", daemon.db_path().display()))
                .await
                .expect("open");
        sqlx::query_as(
            "SELECT url, effective_state, preload_state FROM history WHERE request_id = ?1 ORDER BY url",
        )
        .bind(&id)
        .fetch_all(&mut conn)
        .await
        .expect("history")
    };
    assert_eq!(
        rows,
        vec![
            (cold.clone(), "succeeded".into(), Some("failed".into())),
            (warm.clone(), "succeeded".into(), Some("succeeded".into())),
        ]
    );

    // An operator's retry sends the failed preload again (the purge is
    // not repeated).
    let purges_before = purged(&emulator).len();
    let (status, retried) = daemon
        .post(&format!("/v1/purges/{id}/retry"), &json!({}))
        .await;
    assert_eq!((status, retried["retried"].as_u64()), (200, Some(1)));
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "succeeded");
    assert_eq!(preloaded(&emulator)[&cold].len(), 4);
    assert_eq!(purged(&emulator).len(), purges_before);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_purge_skips_its_preload() {
    let emulator = emulator(Knobs {
        fail_urls_containing: Some("broken".into()),
        ..fast_knobs()
    })
    .await;
    let daemon = common::held::HeldDaemon::start(&config(&emulator, ""), &[]).await;
    let broken = format!("http://{}/broken.js", host(1));
    let id = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "files": [broken], "preload": true }),
    )
    .await;
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["items"][0]["preload_state"], "skipped", "{view:#}");
    assert!(preloaded(&emulator).is_empty(), "nothing new to warm");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_with_preload_after_purge_preloads_every_purged_file() {
    let emulator = emulator(fast_knobs()).await;
    let config = config(&emulator, "").edit(
        &format!("id = \"{}\"\n", ENDPOINTS[2].0),
        &format!("id = \"{}\"\npreload_after_purge = true\n", ENDPOINTS[2].0),
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let on = format!("http://{}/x.css", ENDPOINTS[2].1);
    let off = format!("http://{}/x.css", ENDPOINTS[0].1);
    let id = post_ok(&daemon, "/v1/purges", json!({ "urls": [on, off] })).await;
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "succeeded");
    assert_eq!(
        preloaded(&emulator).keys().cloned().collect::<Vec<_>>(),
        vec![on]
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preloads_asked_for_on_their_own_are_never_purged() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = common::held::HeldDaemon::start(&config(&emulator, ""), &[]).await;
    let file = format!("http://{}/warm-only.js", host(0));
    let id = post_ok(
        &daemon,
        "/v1/preloads",
        json!({ "files": [file], "label": "warm" }),
    )
    .await;
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    assert_eq!(view["items"][0]["operation"], "preload");
    assert_eq!(view["items"][0]["preload_state"], "succeeded");
    assert!(purged(&emulator).is_empty(), "a preload is not a purge");
    // No purge was asked: the emulator says none had finished.
    assert_eq!(preloaded(&emulator)[&file], vec![false]);

    // All or nothing, as for purges: a bad URL is named and refused.
    let (status, refused) = daemon
        .post("/v1/preloads", &json!({ "files": ["not a url"] }))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["field"], "files[0]",
        "{refused}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cdn_shaped_routes_speak_preloads_endpoints_and_the_api_error_shape() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = common::held::HeldDaemon::start(&config(&emulator, ""), &[]).await;
    let client = daemon.client();
    let (eid, host) = ENDPOINTS[0];
    let base = format!("/subscriptions/{SUBSCRIPTION}/endpoints");
    let file = format!("http://{host}/dropin.js");

    let (status, accepted) = post(
        &client,
        &format!("{base}/{eid}/preloads?apiVersion=1.0"),
        &json!({ "Files": [file] }),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["Succeeded"], true);
    let task = accepted["AsyncInfo"]["TaskTrackId"]
        .as_str()
        .expect("TaskTrackId")
        .to_owned();
    final_view(&client, &task).await;
    let (status, progress) = get(
        &client,
        &format!("{base}/{eid}/preloads/{task}?apiVersion=1.0"),
    )
    .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(
        progress,
        json!({ "Files": [{ "Url": file, "Status": "Succeed" }] })
    );
    // A preload is not a purge: the purge route does not know it.
    let (status, _) = get(
        &client,
        &format!("{base}/{eid}/purges/{task}?apiVersion=1.0"),
    )
    .await;
    assert_eq!(status, 404);

    let (status, missing) = post(
        &client,
        &format!("{base}/{eid}/preloads?apiVersion=1.0"),
        &json!({ "Directories": [format!("http://{host}/d/")] }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        missing["ErrorInfo"]["Type"], "ParameterMissing",
        "{missing}"
    );

    let (status, list) = get(&client, &format!("{base}?apiVersion=1.0")).await;
    assert_eq!(status, 200, "{list}");
    let listed: BTreeSet<(String, String)> = list
        .as_array()
        .expect("EndpointList")
        .iter()
        .map(|e| {
            (
                e["EndpointID"].as_str().expect("id").to_owned(),
                e["Setting"]["CustomDomain"]
                    .as_str()
                    .expect("domain")
                    .to_owned(),
            )
        })
        .collect();
    let configured: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(id, host)| (id.to_string(), host.to_string()))
        .collect();
    assert_eq!(listed, configured);
    let (status, one) = get(&client, &format!("{base}/{eid}?apiVersion=1.0")).await;
    assert_eq!((status, one["EndpointID"].as_str()), (200, Some(eid)));
    assert_eq!(one["Status"]["Enabled"], "true");

    // Whatever else: the API's error shape, never purgeq's own JSON.
    for path in [
        format!("{base}/{eid}/cacherules?apiVersion=1.0"),
        format!("/subscriptions/{SUBSCRIPTION}/volume?apiVersion=1.0"),
    ] {
        let (status, error) = get(&client, &path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(error["Succeeded"], false, "{path}: {error}");
        assert_eq!(error["ErrorInfo"]["Type"], "ParameterInvalid", "{error}");
    }
    let response = client
        .delete(format!("http://purgeq{base}/{eid}?apiVersion=1.0"))
        .send()
        .await
        .expect("DELETE");
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["ErrorInfo"]["Type"], "ParameterInvalid", "{error}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_request_makes_no_preload() {
    let emulator = emulator(fast_knobs()).await;
    // Nothing is cut for an hour: the request is cancelled while pending.
    let daemon = common::held::HeldDaemon::start(
        &config(&emulator, ""),
        &[("batch.linger", "1h"), ("batch.max_files", "1000")],
    )
    .await;
    let file = format!("http://{}/never.js", host(0));
    let id = post_ok(
        &daemon,
        "/v1/purges",
        json!({ "files": [file], "preload": true }),
    )
    .await;
    let (status, cancelled) = daemon
        .post(&format!("/v1/purges/{id}/cancel"), &json!({}))
        .await;
    assert_eq!((status, cancelled["cancelled"].as_u64()), (200, Some(1)));
    let view = final_view(&daemon.client(), &id).await;
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["items"][0]["preload_state"], "cancelled", "{view:#}");
    daemon.stop().await;
}

/// `kill -9` after the purges succeeded and before their preloads were
/// sent (held back by a spent preload quota): the next start sends every
/// preload, once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_a_purge_success_and_its_preload_loses_no_preload() {
    let emulator = emulator(fast_knobs()).await;
    let held = config(&emulator, "[quota]\npreloads_per_day = 0\n");
    let mut daemon = TestDaemon::start(&held).await;
    let urls: Vec<String> = (0..12)
        .map(|i| format!("http://{}/k9/{i}.js", host(i)))
        .collect();
    let (status, accepted) = daemon
        .post("/v1/purges", &json!({ "files": urls, "preload": true }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    daemon
        .wait_for("purged, preloads pending", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 12 && s["preloads"]["pending"] == 12
        })
        .await;
    daemon.kill9();
    assert!(preloaded(&emulator).is_empty());
    daemon.edit_config(|text| text.edit("preloads_per_day = 0", "preloads_per_day = 100"));
    daemon.launch().await;
    let id = accepted["id"].as_str().expect("id");
    let view = final_view(&daemon.client(), id).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let seen = preloaded(&emulator);
    assert_eq!(seen.len(), 12, "{seen:?}");
    for (url, times) in seen {
        assert_eq!(times, vec![true], "{url}");
    }
}

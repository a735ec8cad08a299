//! Fleet mode (issue 18), as a user runs it: three `purgeq serve`
//! processes on one fresh PostgreSQL database, one emulator as the
//! subscription's CDN. Skipped, saying so, without a server (unless
//! `PURGEQ_REQUIRE_POSTGRES` is set, as in CI).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::*;
use purgeq::cdn::emulator::{EmulatorHandle, Knobs, TaskKind};
use serde_json::{Value, json};
use sqlx::Connection;

/// A node's configuration: the shared database, its own name, and the
/// emulator as the CDN.
fn node_config(db: &TestDatabase, name: &str, emulator: &EmulatorHandle, extra: &str) -> String {
    format!(
        "[store]\nurl = \"{}\"\n[fleet]\nnode_name = \"{name}\"\n{}\
         [tracker]\npoll_interval = \"100ms\"\n{extra}",
        db.url,
        cdn_section(emulator, KEY_VALUE)
    )
}

async fn start_nodes(db: &TestDatabase, emulator: &EmulatorHandle, extra: &str) -> Vec<TestDaemon> {
    let mut nodes = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        nodes.push(TestDaemon::start(&node_config(db, name, emulator, extra)).await);
    }
    nodes
}

/// Each node's `fleet` object, once exactly one node leads and every
/// other names it.
async fn one_leader(nodes: &[&TestDaemon], within: Duration) -> (usize, Vec<Value>) {
    let deadline = Instant::now() + within;
    loop {
        let mut fleets = Vec::new();
        for node in nodes {
            fleets.push(node.stats().await["fleet"].clone());
        }
        let leaders: Vec<usize> = (0..fleets.len())
            .filter(|&i| fleets[i]["role"] == "leader")
            .collect();
        if let [leader] = leaders[..] {
            let name = fleets[leader]["node"].clone();
            if fleets.iter().all(|f| f["leader"] == name) {
                return (leader, fleets);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {within:?}: {fleets:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often the emulator was asked to purge each URL.
fn purges(emulator: &EmulatorHandle) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for entry in emulator.journal() {
        if entry.operation == TaskKind::Purge {
            for url in entry.files.into_iter().chain(entry.directories) {
                *seen.entry(url).or_default() += 1;
            }
        }
    }
    seen
}

fn host(i: usize) -> &'static str {
    ENDPOINTS[i % 3].1
}

/// Posts `urls` to `node`; the request's id.
async fn post(node: &TestDaemon, urls: &[String]) -> String {
    let (status, body) = node.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Every node's URLs purged, the shared ones once, and the emulator's
/// rate limit (below the three nodes' configured rates together, above
/// one node's) never answered `RequestThrottled`: the fleet sends as one.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_are_one_queue_and_one_rate_budget() {
    let Some(db) = TestDatabase::create("three_nodes_are_one_queue_and_one_rate_budget").await
    else {
        return;
    };
    let emulator = emulator(Knobs {
        requests_per_second: 8.0,
        burst: 8,
        ..fast_knobs()
    })
    .await;
    // Each node may send 5 calls a second: 15 together, over the 8 the
    // subscription allows; one node alone stays under it. A 3 s linger:
    // the shared URLs are posted on every node while they are pending
    // (dedup is against what is pending; one posted after its purge
    // succeeded is purged again, as on a single host).
    let nodes = start_nodes(
        &db,
        &emulator,
        "[sender]\nrequests_per_second = 5\nburst = 5\n\
         [batch]\nlinger = \"3s\"\nmax_files = 5\n",
    )
    .await;
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let (leader, fleets) = one_leader(&all, Duration::from_secs(15)).await;
    let term = fleets[leader]["term"].as_i64().expect("a term");
    assert!(term >= 1);

    let mut requests = Vec::new();
    let mut expected = Vec::new();
    // First the shared URLs, each round on every node: at most 4 per
    // endpoint, under a full batch (5), so they wait out the linger and
    // are pending when the other nodes post them.
    for r in 0..4 {
        let shared: Vec<String> = (0..3)
            .map(|u| format!("http://{}/shared/r{r}/u{u}.css", host(u)))
            .collect();
        expected.extend(shared.iter().cloned());
        for (n, node) in nodes.iter().enumerate() {
            requests.push((n, post(node, &shared).await));
        }
    }
    for (n, node) in nodes.iter().enumerate() {
        for r in 0..4 {
            let own: Vec<String> = (0..5)
                .map(|u| format!("http://{}/node{n}/r{r}/u{u}.js", host(u)))
                .collect();
            expected.extend(own.iter().cloned());
            requests.push((n, post(node, &own).await));
        }
    }
    // Every request reads `succeeded` on the node it was posted to: the
    // leader recorded the results; the others' ?wait heard of them.
    for (n, id) in &requests {
        let (status, view) = nodes[*n].get(&format!("/v1/purges/{id}?wait=60")).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["state"], "succeeded", "{view:#}");
    }
    let seen = purges(&emulator);
    for url in &expected {
        assert_eq!(
            seen.get(url),
            Some(&1),
            "{url} purged {:?} times",
            seen.get(url)
        );
    }
    assert_eq!(seen.len(), expected.len(), "nothing else purged");
    let stats = emulator.stats();
    assert_eq!(stats.get("RequestThrottled"), None, "{stats:?}");
    // Only the leader read the endpoints' cache policies (issue 32: every
    // node reading them at start was throttled once here); the others
    // load its copy from the shared store.
    assert_eq!(stats.get("cache_rules"), Some(&3), "{stats:?}");
    // Every node reads the same history.
    for node in &nodes {
        let stats = node.stats().await;
        assert_eq!(
            items(&stats, "succeeded"),
            expected.len() as u64,
            "{stats:#}"
        );
    }
    // The leader says so on /metrics; a follower does not.
    for (n, node) in nodes.iter().enumerate() {
        let text = node
            .client()
            .get(format!("http://{}/metrics", node.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let expected = if n == leader { 1 } else { 0 };
        assert!(
            text.lines()
                .any(|l| l == format!("purgeq_fleet_leader {expected}")),
            "node {n}: {text}"
        );
    }
    drop(nodes);
    db.drop_now().await;
}

/// The leader is killed (`kill -9`) while it drains: another node leads
/// within 10 s, a request posted to a follower is answered `succeeded` by
/// `?wait`, and every URL accepted before the kill is purged.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_within_ten_seconds() {
    let Some(db) = TestDatabase::create("a_killed_leader_is_replaced_within_ten_seconds").await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    // Slow sending, so the kill lands mid-drain.
    let mut nodes = start_nodes(
        &db,
        &emulator,
        "[sender]\nrequests_per_second = 4\nburst = 1\n[batch]\nlinger = \"100ms\"\nmax_files = 2\n",
    )
    .await;
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let (leader, _) = one_leader(&all, Duration::from_secs(15)).await;
    let follower = (leader + 1) % 3;
    let urls: Vec<String> = (0..40)
        .map(|u| format!("http://{}/drain/u{u}.js", host(u)))
        .collect();
    let before = post(&nodes[follower], &urls).await;
    // Let the leader start sending, then kill it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while purges(&emulator).is_empty() {
        assert!(Instant::now() < deadline, "the leader never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[leader].kill9();
    let killed_at = Instant::now();
    let survivors: Vec<&TestDaemon> = (0..3).filter(|&i| i != leader).map(|i| &nodes[i]).collect();
    let (_, fleets) = one_leader(&survivors, Duration::from_secs(10)).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    eprintln!("failover: a new leader after {took:?}: {fleets:?}");

    let after = post(
        &nodes[follower],
        &["http://a.example.com/after.js".to_owned()],
    )
    .await;
    for id in [&before, &after] {
        let (status, view) = nodes[follower]
            .get(&format!("/v1/purges/{id}?wait=90"))
            .await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["state"], "succeeded", "{view:#}");
    }
    let seen = purges(&emulator);
    for url in &urls {
        assert!(seen.contains_key(url), "{url} never purged");
    }
    // The killed node comes back as a follower: it does not lead again
    // under its old term, and reads what the new leader did.
    nodes[leader].launch().await;
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let (now_leading, fleets) = one_leader(&all, Duration::from_secs(15)).await;
    assert_ne!(now_leading, leader, "{fleets:?}");
    drop(nodes);
    db.drop_now().await;
}

/// PostgreSQL's connections are killed (`pg_terminate_backend`, as a
/// server restart does) while a node ingests: a request it cannot commit
/// is answered 503 with `Retry-After`, never 202; the node reconnects by
/// itself, and every request answered 202 is purged.
#[tokio::test(flavor = "multi_thread")]
async fn lost_connections_are_503s_then_work_resumes_with_nothing_lost() {
    let Some(db) =
        TestDatabase::create("lost_connections_are_503s_then_work_resumes_with_nothing_lost").await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let node = TestDaemon::start(&node_config(
        &db,
        "node-1",
        &emulator,
        "[batch]\nlinger = \"100ms\"\n",
    ))
    .await;
    one_leader(&[&node], Duration::from_secs(15)).await;
    let mut admin = sqlx::PgConnection::connect_with(db.url.connect_options())
        .await
        .expect("admin");
    let mut accepted = Vec::new();
    let mut refused = 0;
    for round in 0..30 {
        if round % 10 == 5 {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
            assert!(!killed.is_empty());
        }
        let url = format!("http://a.example.com/outage/{round}.js");
        let response = node
            .client()
            .post(format!("http://{}/v1/purges", node.http))
            .json(&json!({ "urls": [&url] }))
            .send()
            .await
            .expect("an answer");
        match response.status().as_u16() {
            202 => accepted.push(url),
            503 => {
                assert!(response.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("{other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    assert!(
        accepted.len() >= 25,
        "{} accepted, {refused} refused",
        accepted.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = purges(&emulator);
        let missing: Vec<&String> = accepted.iter().filter(|u| !seen.contains_key(*u)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never purged: {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
    db.drop_now().await;
}

/// A leader stopped (SIGSTOP) past its lease is replaced; resumed
/// (SIGCONT), it stops sending on its own at once and follows, and its
/// pipeline records nothing under the old term: every URL ends
/// `succeeded` exactly as the new leader recorded it.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_comes_back_as_a_follower_and_writes_nothing() {
    let Some(db) =
        TestDatabase::create("a_paused_leader_comes_back_as_a_follower_and_writes_nothing").await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let nodes = start_nodes(
        &db,
        &emulator,
        "[sender]\nrequests_per_second = 4\nburst = 1\n[batch]\nlinger = \"100ms\"\nmax_files = 2\n",
    )
    .await;
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let (old, fleets) = one_leader(&all, Duration::from_secs(15)).await;
    let old_term = fleets[old]["term"].as_i64().expect("term");
    let follower = (old + 1) % 3;
    let urls: Vec<String> = (0..20)
        .map(|u| format!("http://{}/paused/u{u}.js", host(u)))
        .collect();
    let id = post(&nodes[follower], &urls).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while purges(&emulator).is_empty() {
        assert!(Instant::now() < deadline, "the leader never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[old].signal("STOP");
    let others: Vec<&TestDaemon> = (0..3).filter(|&i| i != old).map(|i| &nodes[i]).collect();
    let (_, fleets) = one_leader(&others, Duration::from_secs(10)).await;
    let new_term = fleets[0]["term"].as_i64().expect("term");
    assert!(new_term > old_term, "{fleets:?}");
    nodes[old].signal("CONT");
    // Back, it sees its lease lapsed and follows the new leader.
    let (now_leading, fleets) = one_leader(&all, Duration::from_secs(10)).await;
    assert_ne!(now_leading, old, "{fleets:?}");
    assert_eq!(fleets[old]["role"], "follower", "{fleets:?}");
    let (status, view) = nodes[follower]
        .get(&format!("/v1/purges/{id}?wait=90"))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let logs = nodes[old].logs();
    assert!(
        logs.contains("stopped sending") || logs.contains("no longer leads"),
        "the old leader did not say it stopped:\n{logs}"
    );
    drop(nodes);
    db.drop_now().await;
}

/// The day's quota belongs to the subscription: three nodes, each posting
/// more than the day allows, together send exactly what it allows, and
/// the emulator never refuses a call for quota. The rest waits, pending,
/// for the next quota day.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_one_quota_and_never_overspend_it() {
    let Some(db) = TestDatabase::create("three_nodes_share_one_quota_and_never_overspend_it").await
    else {
        return;
    };
    const DAY: u64 = 30;
    let emulator = emulator(Knobs {
        files_per_day: DAY,
        ..fast_knobs()
    })
    .await;
    let nodes = start_nodes(
        &db,
        &emulator,
        &format!(
            "[batch]\nlinger = \"100ms\"\nmax_files = 4\n\
             [quota]\nfiles_per_day = {DAY}\npromote = \"never\"\n"
        ),
    )
    .await;
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    let (leader, _) = one_leader(&all, Duration::from_secs(15)).await;
    for (n, node) in nodes.iter().enumerate() {
        for r in 0..4 {
            let urls: Vec<String> = (0..5)
                .map(|u| format!("http://{}/quota/n{n}/r{r}/{u}.js", host(u)))
                .collect();
            post(node, &urls).await;
        }
    }
    // 60 files asked for, 30 allowed: wait until the day is spent and
    // nothing is in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = nodes[leader].stats().await;
        if items(&stats, "succeeded") == DAY
            && items(&stats, "sending") == 0
            && items(&stats, "submitted") == 0
        {
            assert_eq!(items(&stats, "pending"), 60 - DAY, "{stats:#}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let purged: usize = purges(&emulator).values().sum();
    assert_eq!(purged as u64, DAY, "exactly the day's quota was sent");
    let stats = emulator.stats();
    assert_eq!(stats.get("QuotaExceeded"), None, "{stats:?}");
    // Every node says why the rest waits (the leader wrote it to the
    // shared `waits` table), and shows the fleet's quota (issue 32:
    // followers said `quota: null`).
    for node in &nodes {
        let stats = node.stats().await;
        assert!(
            stats["waiting"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w["scope"] == "quota:file")),
            "{stats:#}"
        );
        assert_eq!(stats["quota"]["files_used"], DAY, "{stats:#}");
        assert_eq!(stats["quota"]["files_left"], 0, "{stats:#}");
        assert_eq!(stats["quota"]["files_waiting"], 60 - DAY, "{stats:#}");
        let metrics = node
            .client()
            .get(format!("http://{}/metrics", node.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("purgeq_quota_left{kind=\"file\"} 0"),
            "{metrics}"
        );
    }
    // Any node forecasts from the shared quota: the day is spent.
    for node in &nodes {
        let (status, body) = node
            .post(
                "/v1/purges",
                &serde_json::json!({ "urls": [format!("http://{}/late.js", host(0))] }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["forecast"]["expected"], "next_quota_day", "{body}");
    }
    drop(nodes);
    db.drop_now().await;
}

/// Issue 28, item 3: with the path from a node to PostgreSQL silently
/// dropping packets, `POST /v1/purges` got no answer for 40 s, and the
/// intent was committed after the network healed, unknown to its client.
/// Now intake answers 503 with `Retry-After` within `ingest.store_timeout`,
/// saying nothing was stored, and that intent is never stored later; once
/// the network heals the node takes intents again by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_black_holed_database_gets_a_503_in_time_and_stores_nothing_late() {
    let Some(db) =
        TestDatabase::create("a_black_holed_database_gets_a_503_in_time_and_stores_nothing_late")
            .await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let (proxy, through_proxy) = proxied(&db).await;
    let config = format!(
        "[store]\nurl = \"{through_proxy}\"\n[fleet]\nnode_name = \"cut-off\"\n{}\
         [batch]\nlinger = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let node =
        TestDaemon::start_with_env(&config, &[("PURGEQ__INGEST__STORE_TIMEOUT", "2s")]).await;
    one_leader(&[&node], Duration::from_secs(15)).await;
    let post = |url: &str| {
        let request = node
            .client()
            .post(format!("http://{}/v1/purges", node.http))
            .timeout(Duration::from_secs(15))
            .json(&json!({ "urls": [url] }));
        async move { request.send().await }
    };
    let before = post("http://a.example.com/before.js")
        .await
        .expect("an answer");
    assert_eq!(before.status(), 202);

    proxy.black_hole();
    let late = "http://a.example.com/during-the-outage.js";
    let response = post(late)
        .await
        .expect("an answer before the client's own 15 s timeout");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("nothing was stored"), "{message}");

    proxy.heal();
    // The node takes intents again by itself (its writer reconnects).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = post("http://a.example.com/after.js").await.expect("answer");
        if response.status() == 202 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(Instant::now() < deadline, "never took intents again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The refused intent was not stored behind its client's back.
    let mut admin = sqlx::PgConnection::connect_with(db.url.connect_options())
        .await
        .expect("admin");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE url = $1")
        .bind(late)
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(stored, 0, "the intent answered 503 was stored later");
    drop(node);
    db.drop_now().await;
}

/// When `at` (the emulator's RFC 3339 time) is.
fn journal_time(at: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(at).expect("an RFC 3339 time")
}

/// What every fault drill ends by checking, once every URL is purged: no
/// write of an old term (no batch finished before it was accepted, the
/// trace a late write leaves), no batch left open, and no progress call
/// once the queue is empty (a stale batch was polled for ever).
async fn assert_clean_end(db: &TestDatabase, emulator: &EmulatorHandle) {
    let mut admin = sqlx::PgConnection::connect_with(db.url.connect_options())
        .await
        .expect("admin");
    let backwards: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM batches WHERE finished_at IS NOT NULL AND finished_at < accepted_at",
    )
    .fetch_one(&mut admin)
    .await
    .expect("count");
    assert_eq!(
        backwards, 0,
        "a batch recorded as finished before it was accepted"
    );
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM batches WHERE state IN ('sending', 'submitted')")
            .fetch_one(&mut admin)
            .await
            .expect("count");
    assert_eq!(open, 0, "batches still open with an empty queue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let polled = emulator.stats().get("progress").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = emulator.stats().get("progress").copied().unwrap_or(0);
    assert_eq!(later, polled, "progress calls with nothing in flight");
}

/// A proxy (see `common::proxy`) in front of the test's PostgreSQL, and
/// the database's URL through it.
async fn proxied(db: &TestDatabase) -> (common::proxy::Proxy, String) {
    let server = db.url.connect_options();
    let upstream = format!("{}:{}", server.get_host(), server.get_port())
        .parse()
        .expect("the test server's address");
    let proxy = common::proxy::Proxy::start(upstream).await;
    let url = format!(
        "postgres://{}@{}/{}",
        server.get_username(),
        proxy.addr,
        db.url.database()
    );
    (proxy, url)
}

/// Issue 28, item 1, as the fault drill ran it: two nodes, the sender at
/// 3 calls/s, the leader `SIGSTOP`ped past its lease three times while it
/// drains, then `SIGCONT`. Before: the resumed leader sent within
/// milliseconds of `SIGCONT` (duplicate URLs), recorded a result under its
/// old term 44 s later (a batch back from `succeeded` to `submitted`, with
/// `finished_at` before `accepted_at`) and the stuck batches were polled
/// for ever. Checked: no call from a node between its pause and the
/// moment it could lead again; no batch finished before it was accepted;
/// nothing left `submitted`; every URL purged; and once the queue is
/// empty, no more progress calls.
#[tokio::test(flavor = "multi_thread")]
async fn paused_leaders_make_no_call_and_no_write_after_their_lease() {
    let Some(db) =
        TestDatabase::create("paused_leaders_make_no_call_and_no_write_after_their_lease").await
    else {
        return;
    };
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_millis(300),
        ..fast_knobs()
    })
    .await;
    let extra = "[sender]\nrequests_per_second = 3\nburst = 1\n\
                 [batch]\nlinger = \"100ms\"\nmax_files = 2\n";
    let nodes = vec![
        TestDaemon::start(&node_config(&db, "node-1", &emulator, extra)).await,
        TestDaemon::start(&node_config(&db, "node-2", &emulator, extra)).await,
    ];
    let all: Vec<&TestDaemon> = nodes.iter().collect();
    one_leader(&all, Duration::from_secs(15)).await;
    let urls: Vec<String> = (0..150)
        .map(|u| format!("http://{}/drill/u{u}.js", host(u)))
        .collect();
    let id = post(&nodes[0], &urls).await;

    // (node name, paused at, could lead again from)
    let mut quiet: Vec<(String, std::time::SystemTime, Option<std::time::SystemTime>)> = Vec::new();
    for _ in 0..3 {
        let (leader, fleets) = one_leader(&all, Duration::from_secs(20)).await;
        let name = fleets[leader]["node"].as_str().expect("name").to_owned();
        let sent_before = emulator.journal().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while emulator.journal().len() == sent_before {
            assert!(Instant::now() < deadline, "{name} never sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The other node could lead again only once this one pauses.
        let paused_at = std::time::SystemTime::now();
        if let Some(last) = quiet.last_mut() {
            last.2 = Some(paused_at);
        }
        nodes[leader].signal("STOP");
        let other = 1 - leader;
        one_leader(&[&nodes[other]], Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        nodes[leader].signal("CONT");
        quiet.push((name, paused_at, None));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (status, view) = nodes[0].get(&format!("/v1/purges/{id}?wait=120")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["state"], "succeeded",
        "nothing lost: {:#}",
        view["counts"]
    );

    // No call from a node after its lease lapsed: between its pause (plus
    // a call already on the wire) and the moment it could lead again.
    let on_the_wire = Duration::from_millis(300);
    for entry in emulator.journal() {
        let at = journal_time(&entry.at);
        for (name, paused_at, until) in &quiet {
            let inside = at > *paused_at + on_the_wire && until.is_none_or(|u| at < u);
            assert!(
                !(inside && entry.client.contains(&format!("(node {name})"))),
                "{name} called at {} after its pause at {}: {entry:?}",
                entry.at,
                humantime::format_rfc3339_millis(*paused_at)
            );
        }
    }
    assert_clean_end(&db, &emulator).await;
    drop(nodes);
    db.drop_now().await;
}

/// Issue 29, item 2: with a fleet configuration `purgeq history` read
/// `./purgeq.db` (a host moved from standalone showed its old history as
/// the fleet's) and `check-config` printed `store: purgeq.db`. Both now
/// use the configured PostgreSQL, and `--db postgres://…` works too.
#[tokio::test(flavor = "multi_thread")]
async fn history_and_check_config_read_the_fleets_database() {
    let Some(db) = TestDatabase::create("history_and_check_config_read_the_fleets_database").await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let node = TestDaemon::start(&node_config(
        &db,
        "node-1",
        &emulator,
        "[batch]\nlinger = \"50ms\"\n",
    ))
    .await;
    one_leader(&[&node], Duration::from_secs(15)).await;
    let id = post(&node, &["http://a.example.com/fleet-history.js".to_owned()]).await;
    let (_, view) = node.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    // A stale standalone database in the working directory, as on a host
    // moved to the fleet: never read.
    let cwd = tempfile::tempdir().expect("cwd");
    std::fs::write(cwd.path().join("purgeq.db"), b"not this one").expect("stale file");
    let config = node.config.to_str().expect("utf-8").to_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(cwd.path())
            .output()
            .expect("run")
    };
    let output = run(&["history", "--config", &config]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("fleet-history.js"), "{stdout}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    let output = run(&["history", "--db", &db.url.to_string(), "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("fleet-history.js"));
    let output = run(&["check-config", "--config", &config]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("store:     {} (fleet mode, node node-1)", db.url)),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(node);
    db.drop_now().await;
}

/// A node's configuration with its own path to the database: `url`,
/// through a proxy the test can black-hole (see [`proxied`]).
fn proxied_node_config(url: &str, name: &str, emulator: &EmulatorHandle, extra: &str) -> String {
    format!(
        "[store]\nurl = \"{url}\"\n[fleet]\nnode_name = \"{name}\"\n{}\
         [tracker]\npoll_interval = \"100ms\"\n{extra}",
        cdn_section(emulator, KEY_VALUE)
    )
}

/// Issue 28, item 1, the partition half of the drill: two nodes, each
/// reaching PostgreSQL through a proxy of its own. The leader's path is
/// black-holed (it can neither renew nor write, and nothing tells it so),
/// healed; the new follower's path is black-holed and healed; then the
/// leader is killed with `-9` and restarted. Checked: a cut-off leader
/// makes no call past its lease's trust deadline (4 s after its last
/// renewal, which came before the cut), nothing is lost, no batch is
/// finished before it was accepted or left open, and polling stops when
/// the queue is empty.
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_and_killed_leaders_make_no_call_past_their_lease() {
    let Some(db) =
        TestDatabase::create("partitioned_and_killed_leaders_make_no_call_past_their_lease").await
    else {
        return;
    };
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_millis(300),
        ..fast_knobs()
    })
    .await;
    let (first, first_url) = proxied(&db).await;
    let (second, second_url) = proxied(&db).await;
    let proxies = [first, second];
    let extra = "[sender]\nrequests_per_second = 3\nburst = 1\n\
                 [batch]\nlinger = \"100ms\"\nmax_files = 2\n";
    let mut nodes = vec![
        TestDaemon::start(&proxied_node_config(&first_url, "node-1", &emulator, extra)).await,
        TestDaemon::start(&proxied_node_config(
            &second_url,
            "node-2",
            &emulator,
            extra,
        ))
        .await,
    ];
    let (leader, fleets) = one_leader(&[&nodes[0], &nodes[1]], Duration::from_secs(15)).await;
    let leader_name = fleets[leader]["node"].as_str().expect("name").to_owned();
    let urls: Vec<String> = (0..90)
        .map(|u| format!("http://{}/partition/u{u}.js", host(u)))
        .collect();
    let follower = 1 - leader;
    let id = post(&nodes[follower], &urls).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while emulator.journal().is_empty() {
        assert!(Instant::now() < deadline, "the leader never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The leader's path to the database goes silent.
    let cut_at = std::time::SystemTime::now();
    proxies[leader].black_hole();
    one_leader(&[&nodes[follower]], Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxies[leader].heal();
    let healed_at = std::time::SystemTime::now();
    // Back, it follows (its writer and lease loop reconnect by themselves).
    let (now_leading, _) = one_leader(&[&nodes[0], &nodes[1]], Duration::from_secs(40)).await;
    assert_eq!(
        now_leading, follower,
        "the node that took over keeps leading"
    );

    // Now the follower's path (the old leader's) goes silent: the leader
    // goes on undisturbed.
    proxies[leader].black_hole();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxies[leader].heal();

    // The leader dies hard and comes back.
    nodes[follower].kill9();
    nodes[follower].launch().await;
    let (status, view) = nodes[leader]
        .get(&format!("/v1/purges/{id}?wait=120"))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["state"], "succeeded",
        "nothing lost: {:#}",
        view["counts"]
    );

    // No call from the cut-off leader past its trust deadline: its last
    // renewal came before the cut, so it trusted its lease 4 s after the
    // cut at most (ttl 6 s - margin 2 s), plus a call already on the wire.
    let deadline = cut_at + Duration::from_secs(4) + Duration::from_millis(300);
    for entry in emulator.journal() {
        let at = journal_time(&entry.at);
        assert!(
            !(at > deadline
                && at < healed_at
                && entry.client.contains(&format!("(node {leader_name})"))),
            "{leader_name} called at {} while cut off (cut at {}): {entry:?}",
            entry.at,
            humantime::format_rfc3339_millis(cut_at)
        );
    }
    assert_clean_end(&db, &emulator).await;
    drop(nodes);
    db.drop_now().await;
}

/// Issue 35 in a fleet: one tag registry. Each node follows its own
/// host's access log, the followers' too (the follower runs beside the
/// pipeline, not in it); a tag fed on one node expands on any; the
/// leader purges what a follower's purge by tag named.
#[tokio::test(flavor = "multi_thread")]
async fn every_node_feeds_one_tag_registry() {
    let Some(db) = TestDatabase::create("every_node_feeds_one_tag_registry").await else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let logs = tempfile::tempdir().expect("tmp");
    let mut nodes = Vec::new();
    for name in ["node-1", "node-2"] {
        let log = logs.path().join(format!("{name}.log"));
        nodes.push(
            TestDaemon::start(&node_config(
                &db,
                name,
                &emulator,
                &format!("[tags]\naccess_log = \"{}\"\n", log.display()),
            ))
            .await,
        );
    }
    let (leader, _) = one_leader(&[&nodes[0], &nodes[1]], Duration::from_secs(20)).await;
    let follower = 1 - leader;
    let url = |n: usize| format!("http://{}/fleet-tags/{n}.html", host(0));
    // Each node's own log: lines for its own URLs.
    for (index, name) in ["node-1", "node-2"].iter().enumerate() {
        std::fs::write(
            logs.path().join(format!("{name}.log")),
            format!("200 {} shared-tag\n", url(index)),
        )
        .expect("write the log");
    }
    // A feed over the follower's API.
    let (status, fed) = nodes[follower]
        .post("/v1/tags", &json!({ "urls": { (url(2)): ["shared-tag"] } }))
        .await;
    assert_eq!(status, 200, "{fed}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, tagged) = nodes[leader].get("/v1/tags/shared-tag").await;
        if tagged["urls"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both logs and the feed, on the leader: {tagged}\n{}",
            nodes[follower].logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, accepted) = nodes[follower]
        .post("/v1/purges", &json!({ "tags": ["shared-tag"] }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["urls"], 3, "{accepted}");
    let id = accepted["id"].as_str().expect("id");
    let (_, request) = nodes[leader].get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(request["state"], "succeeded", "{request}");
    let sent = purges(&emulator);
    for n in 0..3 {
        assert_eq!(sent.get(&url(n)), Some(&1), "{sent:?}");
    }
    emulator.shutdown().await;
}

/// Issue 34 in a fleet: the origin caches are the fleet's. A URL posted
/// to a follower is purged at the layer by the leader, then at the CDN;
/// the follower never asks the layer.
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_purges_the_origin_caches_before_the_cdn() {
    let Some(db) = TestDatabase::create("the_leader_purges_the_origin_caches_before_the_cdn").await
    else {
        return;
    };
    let emulator = emulator(fast_knobs()).await;
    let recorder = caches::PurgeRecorder::start().await;
    let layer = format!(
        "[batch]\nlinger = \"100ms\"\n[[origin_cache]]\nname = \"site\"\nkind = \"http\"\n\
         url = \"http://{}\"\n",
        recorder.addr
    );
    let mut nodes = Vec::new();
    for name in ["node-1", "node-2"] {
        nodes.push(TestDaemon::start(&node_config(&db, name, &emulator, &layer)).await);
    }
    let (leader, fleets) = one_leader(&[&nodes[0], &nodes[1]], Duration::from_secs(20)).await;
    let follower = 1 - leader;
    // The page names the role and the leader on each node, and a
    // follower does not say it is sending (issue 36).
    let leader_name = fleets[leader]["node"].as_str().expect("name").to_owned();
    let page = |node: &TestDaemon| {
        let client = node.client();
        async move {
            client
                .get("http://localhost/")
                .send()
                .await
                .expect("the page")
                .text()
                .await
                .expect("html")
        }
    };
    let on_follower = page(&nodes[follower]).await;
    assert!(
        on_follower.contains(&format!("Not sending: {leader_name} leads and sends")),
        "{on_follower}"
    );
    assert!(
        on_follower.contains("(follower); the leader is"),
        "{on_follower}"
    );
    let on_leader = page(&nodes[leader]).await;
    assert!(
        on_leader.contains(&format!(
            "Fleet: this node is <strong>{leader_name}</strong> (leader)"
        )),
        "{on_leader}"
    );
    assert!(!on_leader.contains("Not sending"), "{on_leader}");
    let urls: Vec<String> = (0..10)
        .map(|n| format!("http://{}/fleet-layer/{n}.css", host(0)))
        .collect();
    let id = post(&nodes[follower], &urls).await;
    let (_, request) = nodes[leader].get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(request["state"], "succeeded", "{request}");
    let seen = recorder.seen();
    let journal = emulator.journal();
    for url in &urls {
        let path = url.trim_start_matches(&format!("http://{}", host(0)));
        let purged = seen
            .iter()
            .filter(|(method, _, p, _)| method == "PURGE" && p == path)
            .map(|(.., at)| *at)
            .collect::<Vec<_>>();
        assert_eq!(purged.len(), 1, "{path} once at the layer: {seen:?}");
        let at_cdn = journal
            .iter()
            .find(|e| e.files.contains(url))
            .map(|e| {
                journal_time(&e.at)
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs_f64()
            })
            .expect("at the CDN");
        assert!(purged[0] <= at_cdn, "{url}: layer after the CDN");
    }
    emulator.shutdown().await;
}

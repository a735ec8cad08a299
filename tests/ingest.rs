//! Durable ingest, through the real binary: the Unix socket and TCP, dedup,
//! directory absorption, every rejection, the CDN-shaped routes, `enqueue
//! --wait`, socket files and restarts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::held::HeldDaemon;
use common::{BIN, Edit, TestDaemon, items};
use serde_json::{Value, json};

/// Nothing is ever sent: the batcher lingers for an hour.
const HOLD: &str = "[batch]\nlinger = \"1h\"\nmax_files = 10000\nmax_directories = 10000\n[[cdn.endpoints]]\nid = \"ep-a\"\nhosts = [\"a.example.com\", \"*.cdn.example.com\"]\n\
                    [[cdn.endpoints]]\nid = \"ep-b\"\nhosts = [\"b.example.com\"]\n";

#[tokio::test(flavor = "multi_thread")]
async fn accepts_and_deduplicates_on_the_socket_and_tcp() {
    let daemon = TestDaemon::start(HOLD).await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({"files": ["http://a.example.com/x.png", "HTTP://A.example.com:80/x.png", "http://b.example.com/y"]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (
            body["urls"].as_u64(),
            body["new"].as_u64(),
            body["deduplicated"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    let first_id = body["id"].as_str().expect("id").to_owned();

    // The same URL over TCP links to the pending item.
    let tcp = reqwest::Client::new();
    let response = tcp
        .post(format!("http://{}/v1/purges", daemon.http))
        .json(&json!({"Files": ["http://a.example.com/x.png"], "urls": ["http://img.cdn.example.com/z.css"]}))
        .send()
        .await
        .expect("tcp");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (body["new"].as_u64(), body["deduplicated"].as_u64()),
        (Some(1), Some(1))
    );
    let tcp_id = body["id"].as_str().expect("id").to_owned();

    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "pending"), 3);
    assert!(stats["oldest_pending_age_seconds"].as_f64().is_some());

    let (status, first) = daemon.get(&format!("/v1/purges/{first_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(first["state"], "in_progress");
    assert_eq!(first["items"][0]["url"], "http://a.example.com/x.png");
    assert_eq!(first["items"][0]["endpoint_id"], "ep-a");
    // Each URL of the request is listed, the duplicate too (same item).
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["items"][1]["url"], "http://a.example.com/x.png");
    assert_eq!(first["items"][2]["endpoint_id"], "ep-b");
    assert!(
        first["source"]
            .as_str()
            .expect("source")
            .starts_with("uds:uid="),
        "{first}"
    );
    let (_, by_tcp) = daemon.get(&format!("/v1/purges/{tcp_id}")).await;
    assert_eq!(by_tcp["source"], "tcp:127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_absorbs_pending_files_under_it() {
    let daemon = TestDaemon::start(HOLD).await;
    let (_, early) = daemon
        .post(
            "/v1/purges",
            &json!({"files": ["http://a.example.com/img/a.png", "http://a.example.com/other.png"]}),
        )
        .await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({"directories": ["http://a.example.com/img"]}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["new"], 1);
    let stats = daemon.stats().await;
    assert_eq!((items(&stats, "pending"), items(&stats, "merged")), (2, 1));
    let (_, view) = daemon
        .get(&format!("/v1/purges/{}", early["id"].as_str().expect("id")))
        .await;
    assert_eq!(view["items"][0]["merged_into"], "http://a.example.com/img/");
    assert_eq!(
        view["items"][0]["state"], "pending",
        "follows the directory"
    );
    // A file arriving under the pending directory is covered at once.
    let (_, late) = daemon
        .post(
            "/v1/purges",
            &json!({"urls": ["http://a.example.com/img/b.png"]}),
        )
        .await;
    assert_eq!(
        (late["new"].as_u64(), late["deduplicated"].as_u64()),
        (Some(0), Some(1))
    );
}

async fn expect_error(daemon: &TestDaemon, body: Value, status: u16, error_type: &str) -> Value {
    let (got, answer) = daemon.post("/v1/purges", &body).await;
    assert_eq!(got, status, "{answer}");
    assert_eq!(answer["error"]["type"], error_type, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rejection_names_the_url_and_accepts_nothing() {
    let daemon = TestDaemon::start(HOLD).await;

    let answer = expect_error(
        &daemon,
        json!({"files": ["http://a.example.com/ok", "/relative", "http://user:pw@a.example.com/x", "ftp://a.example.com/f"]}),
        400,
        "InvalidUrl",
    )
    .await;
    let details = answer["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 3, "{answer}");
    assert_eq!(details[0]["field"], "files[1]");
    assert_eq!(details[0]["url"], "/relative");
    assert!(
        details[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("user information")
    );

    let answer = expect_error(
        &daemon,
        json!({"urls": ["http://nowhere.example.org/x"]}),
        422,
        "NoEndpointForHost",
    )
    .await;
    assert!(
        answer["error"]["details"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("nowhere.example.org")
    );

    expect_error(&daemon, json!({"files": []}), 400, "BadRequest").await;
    expect_error(
        &daemon,
        json!({"files": "http://a.example.com/x"}),
        400,
        "BadRequest",
    )
    .await;
    expect_error(
        &daemon,
        json!({"fils": ["http://a.example.com/x"]}),
        400,
        "BadRequest",
    )
    .await;
    expect_error(
        &daemon,
        json!({"directories": ["http://a.example.com/d/?q=1"]}),
        400,
        "InvalidUrl",
    )
    .await;

    let many: Vec<String> = (0..10_001)
        .map(|i| format!("http://a.example.com/{i}"))
        .collect();
    expect_error(&daemon, json!({ "urls": many }), 413, "TooLarge").await;

    let response = daemon
        .client()
        .post("http://localhost/v1/purges")
        .header("content-type", "text/plain")
        .body("http://a.example.com/x")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 415);

    let (status, body) = daemon
        .get("/v1/purges/01900000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("NotFound"))
    );
    let (status, _) = daemon.get("/no/such/route").await;
    assert_eq!(status, 404);

    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "pending"), 0, "nothing was half-accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_limits_are_enforced() {
    let daemon = TestDaemon::start(
        "[batch]\nlinger = \"1h\"\n[[cdn.endpoints]]\nid = \"ep-a\"\nhosts = [\"a.example.com\"]\n",
    )
    .await;
    // Rewrite [ingest] with small limits and restart.
    let text = std::fs::read_to_string(&daemon.config)
        .expect("config")
        .edit(
            "[ingest]\n",
            "[ingest]\nmax_urls_per_request = 5\nmax_body_bytes = 2000\nmax_url_length = 60\n",
        );
    std::fs::write(&daemon.config, text).expect("write");
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    daemon.launch().await;

    let six: Vec<String> = (0..6)
        .map(|i| format!("http://a.example.com/{i}"))
        .collect();
    let answer = expect_error(&daemon, json!({ "urls": six }), 413, "TooLarge").await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .contains("max_urls_per_request")
    );
    let long = format!("http://a.example.com/{}", "x".repeat(100));
    let answer = expect_error(&daemon, json!({ "urls": [long] }), 400, "InvalidUrl").await;
    assert_eq!(answer["error"]["details"][0]["code"], "UrlTooLong");
    assert!(
        answer["error"]["details"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("limit of 60")
    );
    let big = json!({ "label": "y".repeat(3000), "urls": ["http://a.example.com/x"] });
    expect_error(&daemon, big, 413, "TooLarge").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_compatible_routes_queue_and_report_progress() {
    let daemon = TestDaemon::start(HOLD).await;
    let path = "/subscriptions/any-subscription/endpoints/ep-a/purges?apiVersion=1.0";
    let (status, body) = daemon
        .post(path, &json!({"Files": ["http://a.example.com/p/city.png"], "Directories": ["http://a.example.com/p/"]}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["Succeeded"], true);
    assert_eq!(body["AsyncInfo"]["TaskStatus"], "Processing");
    let task = body["AsyncInfo"]["TaskTrackId"]
        .as_str()
        .expect("task id")
        .to_owned();

    let (status, progress) = daemon
        .get(&format!(
            "/subscriptions/any-subscription/endpoints/ep-a/purges/{task}?apiVersion=1.0"
        ))
        .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(
        progress["Files"][0]["Url"],
        "http://a.example.com/p/city.png"
    );
    assert_eq!(progress["Files"][0]["Status"], "Running");
    assert_eq!(progress["Directories"][0]["Status"], "Running");
    // The file is covered by the directory of the same request.
    let (_, view) = daemon.get(&format!("/v1/purges/{task}")).await;
    assert_eq!(view["items"][0]["url"], "http://a.example.com/p/city.png");
    assert_eq!(view["items"][0]["merged_into"], "http://a.example.com/p/");
    // Our own API sees the same request.
    let (status, _) = daemon.get(&format!("/v1/purges/{task}")).await;
    assert_eq!(status, 200);

    let (status, body) = daemon
        .post(
            "/subscriptions/s/endpoints/ep-a/purges?apiVersion=1.0",
            &json!({"Files": ["http://b.example.com/x"]}),
        )
        .await;
    assert_eq!(
        (status, body["ErrorInfo"]["Type"].as_str()),
        (400, Some("ParameterInvalid")),
        "{body}"
    );
    let (status, body) = daemon
        .post(
            "/subscriptions/s/endpoints/nope/purges?apiVersion=1.0",
            &json!({"Files": ["http://a.example.com/x"]}),
        )
        .await;
    assert_eq!(
        (status, body["ErrorInfo"]["Type"].as_str()),
        (404, Some("EndpointNotFound"))
    );
    let (status, body) = daemon.post(path, &json!({})).await;
    assert_eq!(
        (status, body["ErrorInfo"]["Type"].as_str()),
        (400, Some("ParameterMissing"))
    );
    // apiVersion as the service requires it (issue 12, item 18).
    for (query, error_type) in [
        ("", "ParameterMissing"),
        ("?apiVersion=2.0", "ParameterInvalid"),
    ] {
        let (status, body) = daemon
            .post(
                &format!("/subscriptions/s/endpoints/ep-a/purges{query}"),
                &json!({"Files": ["http://a.example.com/x"]}),
            )
            .await;
        assert_eq!(
            (status, body["ErrorInfo"]["Type"].as_str()),
            (400, Some(error_type)),
            "{query}: {body}"
        );
    }
    // Each refused URL is named once.
    let (status, body) = daemon
        .post(path, &json!({"Files": ["http://nobody.example.org/x"]}))
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["ErrorInfo"]["Message"].as_str().expect("message");
    assert_eq!(
        message.matches("nobody.example.org").count(),
        2,
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_wait_follows_a_purge_through_the_built_in_emulator() {
    // No credentials: the built-in emulator answers, with its demo endpoint.
    let daemon =
        TestDaemon::start("[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n")
            .await;
    let output = Command::new(BIN)
        .args(["enqueue", "--socket"])
        .arg(&daemon.socket)
        .args([
            "--wait",
            "--timeout",
            "30",
            "http://www.example.com/index.html",
            "http://www.example.com/assets/",
        ])
        .output()
        .expect("enqueue");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("succeeded: 2 URLs"), "{stdout}");

    // Input the daemon refuses: its words, and exit code 65.
    let output = Command::new(BIN)
        .args([
            "enqueue",
            "--http",
            &daemon.http.to_string(),
            "http://not-routed.org/x",
        ])
        .output()
        .expect("enqueue");
    assert_eq!(output.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no configured CDN endpoint serves host \"not-routed.org\""),
        "{stderr}"
    );

    // From stdin, as a deploy script would, printing the request id.
    let mut child = Command::new(BIN)
        .args(["enqueue", "--socket"])
        .arg(&daemon.socket)
        .args(["--json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("enqueue");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"http://www.example.com/a.js\n# a comment\n\nhttp://www.example.com/b.js\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let answer: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answer["urls"], 2);

    // No daemon there: exit code 69.
    let output = Command::new(BIN)
        .args([
            "enqueue",
            "--socket",
            "/nonexistent/purgeq.sock",
            "http://www.example.com/x",
        ])
        .output()
        .expect("enqueue");
    assert_eq!(output.status.code(), Some(69));
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_returns_when_time_is_up() {
    let daemon = TestDaemon::start(HOLD).await;
    let (_, body) = daemon
        .post("/v1/purges", &json!({"urls": ["http://a.example.com/x"]}))
        .await;
    let id = body["id"].as_str().expect("id");
    let started = std::time::Instant::now();
    let (status, view) = daemon.get(&format!("/v1/purges/{id}?wait=0.5")).await;
    assert_eq!(status, 200);
    assert_eq!(view["state"], "in_progress");
    assert!(started.elapsed() >= Duration::from_millis(450));
    let (status, _) = daemon.get(&format!("/v1/purges/{id}?wait=-1")).await;
    assert_eq!(status, 400);
    let (status, body) = daemon.get(&format!("/v1/purges/{id}?wait=soon")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "BadRequest");

    // Regression (found by schemathesis): a wait too large for a Duration
    // panicked the handler. Cancelled, the request is final, so the huge
    // wait answers at once.
    let (status, _) = daemon
        .post(&format!("/v1/purges/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, view) = daemon.get(&format!("/v1/purges/{id}?wait=1e300")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_sockets_are_replaced_and_live_ones_are_not_stolen() {
    let mut daemon = TestDaemon::start(HOLD).await;
    // A second daemon on the same socket refuses to start, saying why.
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&daemon.config)
        .env("PURGEQ__INGEST__HTTP", "")
        .env("PURGEQ__STORE__PATH", daemon.dir.path().join("other.db"))
        .output()
        .expect("second daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another process is listening"), "{stderr}");
    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, 200, "the first daemon still serves");

    // A crash leaves the socket file behind; the next start replaces it.
    daemon.kill9();
    assert!(daemon.socket.exists());
    daemon.launch().await;
    let (status, _) = daemon.get("/readyz").await;
    assert_eq!(status, 200);
    // A clean stop removes it.
    assert!(daemon.terminate().success());
    assert!(!daemon.socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_finds_every_accepted_url() {
    let mut daemon = TestDaemon::start(HOLD).await;
    let urls: Vec<String> = (0..500)
        .map(|i| format!("http://a.example.com/file-{i}.js"))
        .collect();
    let (status, body) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().expect("id").to_owned();
    daemon.kill9();
    daemon.launch().await;
    let (status, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["items"].as_array().expect("items").len(), 500);
    assert_eq!(items(&daemon.stats().await, "pending"), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_78_and_check_config_explains() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[cdn.endpoints]]\nid = \"e\"\nhosts = [\"exa mple.com\"]\n",
    )
    .expect("write");
    for command in ["serve", "check-config"] {
        let output = Command::new(BIN)
            .args([command, "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(78), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cdn.endpoints[0].hosts[0]: \"exa mple.com\" is not a host name"),
            "{stderr}"
        );
        assert!(stderr.contains("bad.toml"), "{stderr}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[cdn.endpoints]]\nid = \"e\"\nhosts = [\"example.com\"]\n",
    )
    .expect("write");
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("endpoint:  e <- example.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_answers_503_stays_up_and_recovers() {
    let daemon = HeldDaemon::start(HOLD, &[("store.max_size_bytes", "400000")]).await;

    let mut accepted_new = 0;
    let mut refusal = None;
    for round in 0..200 {
        let urls: Vec<String> = (0..100)
            .map(|i| format!("http://a.example.com/fill/{round}/{i}"))
            .collect();
        let response = daemon
            .client()
            .post("http://localhost/v1/purges")
            .json(&json!({ "urls": urls }))
            .send()
            .await
            .expect("post");
        if response.status() == 503 {
            let retry_after = response.headers().get("retry-after").cloned();
            refusal = Some((retry_after, response.json::<Value>().await.expect("json")));
            break;
        }
        assert_eq!(response.status(), 202);
        accepted_new += response.json::<Value>().await.expect("json")["new"]
            .as_u64()
            .expect("new");
    }
    let (retry_after, body) = refusal.expect("the store filled up");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(body["error"]["type"], "StoreUnavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("nothing was accepted")
    );

    // Still up, says why it is not ready, and nothing was half-accepted.
    assert_eq!(daemon.get("/healthz").await.0, 200);
    daemon.assert_not_ready("database or disk is full").await;
    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "pending"), accepted_new);
    assert_eq!(stats["store"]["writable"], false);

    // Room again (the cap lifted by a reload): accepted again.
    daemon
        .reload_with(&[("store.max_size_bytes", "0")])
        .await
        .expect("reloaded");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = daemon
            .post(
                "/v1/purges",
                &json!({"urls": ["http://a.example.com/after"]}),
            )
            .await;
        if status == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered after the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(daemon.get("/readyz").await.0, 200);
    assert_eq!(items(&daemon.stats().await, "pending"), accepted_new + 1);
}

//! `GET /metrics` after a real purge, and `promtool check metrics` on it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestDaemon, items};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn exposes_the_pipeline_in_prometheus_text_format() {
    let daemon =
        TestDaemon::start("[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n")
            .await;
    let urls = [
        "http://www.example.com/a.js",
        "http://www.example.com/b.js",
        "http://www.example.com/img/",
    ];
    let (status, _) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["ftp://www.example.com/x"] }),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202);
    daemon
        .wait_for("3 succeeded", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 3
        })
        .await;

    let response = daemon
        .client()
        .get("http://localhost/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
    for expected in [
        "purgeq_items{state=\"succeeded\"} 3",
        "purgeq_items{state=\"pending\"} 0",
        "purgeq_enqueued_urls_total 3",
        "purgeq_enqueued_requests_total 1",
        "purgeq_refused_requests_total{type=\"InvalidUrl\"} 1",
        "purgeq_api_calls_total{operation=\"purge\",outcome=\"accepted\"} 1",
        "purgeq_api_call_duration_seconds_bucket{operation=\"purge\",le=\"+Inf\"} 1",
        "purgeq_batch_urls_count 1",
        "purgeq_quota_used{kind=\"file\"} 2",
        "purgeq_quota_used{kind=\"directory\"} 1",
        "purgeq_quota_left{kind=\"file\"} 1998",
        "purgeq_sender_paused 0",
        "purgeq_fleet_leader 1",
        "purgeq_oldest_pending_age_seconds 0",
        "# HELP purgeq_items Items by state",
        "# TYPE purgeq_api_call_duration_seconds histogram",
    ] {
        assert!(
            text.lines()
                .any(|l| l == expected || l.starts_with(&format!("{expected} "))),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("purgeq_api_calls_total{operation=\"query\",outcome=\"ok\"}"),
        "{text}"
    );

    // No fleet.node_name: the node is named after the host.
    let stats = daemon.stats().await;
    let host = Command::new("hostname").output().expect("hostname");
    let host = String::from_utf8_lossy(&host.stdout).trim().to_owned();
    assert_eq!(stats["fleet"]["role"], "standalone");
    assert_eq!(stats["fleet"]["node"], host.as_str());

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            promtool
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
            let output = promtool.wait_with_output().expect("promtool");
            assert!(
                output.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(_) if std::env::var_os("PURGEQ_REQUIRE_PROMTOOL").is_some() => {
            panic!("promtool is required (PURGEQ_REQUIRE_PROMTOOL is set) but not installed")
        }
        Err(_) => {
            eprintln!("promtool not installed: exposition format not checked (CI installs it)")
        }
    }
}

//! Reload and logging behaviour of the daemon binary.

mod common;

use std::time::{Duration, Instant};

use common::{Edit, TestDaemon};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_on_reload_keeps_the_running_configuration() {
    let daemon = TestDaemon::start(
        "[batch]\nlinger = \"1h\"\n[[cdn.endpoints]]\nid = \"ep\"\nhosts = [\"a.example.com\"]\n",
    )
    .await;
    daemon
        .edit_config(|text| text.edit("hosts = [\"a.example.com\"]", "hosts = [\"exa mple.com\"]"));
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.logs().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = daemon.logs();
    assert!(
        logs.contains("cdn.endpoints[0].hosts[0]: \"exa mple.com\" is not a host name"),
        "{logs}"
    );
    // Still serving, with the old routes.
    let (status, body) = daemon
        .post("/v1/purges", &json!({"urls": ["http://a.example.com/x"]}))
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_writes_one_json_object_per_line() {
    // [log] is written by the harness: switch its format in place.
    let mut daemon = TestDaemon::start("").await;
    daemon.edit_config(|text| text.edit("[log]\n", "[log]\nformat = \"json\"\n"));
    assert!(daemon.terminate().success());
    daemon.launch().await;
    let logs = daemon.logs();
    let last_start = logs.rsplit("--- start").next().unwrap_or_default();
    let lines: Vec<&str> = last_start
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
}

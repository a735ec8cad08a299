//! Retention through the real daemon: finished rows older than
//! `retention.keep_finished` go; pending ones never do.

mod common;

use std::time::Duration;

use common::{TestDaemon, items};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn removes_only_old_finished_rows() {
    // Built-in emulator; full batches of 5 go at once, a partial one
    // lingers for an hour.
    let daemon = TestDaemon::start(
        "[batch]\nmax_files = 5\nlinger = \"1h\"\n[tracker]\npoll_interval = \"100ms\"\n\
         [retention]\nkeep_finished = \"2s\"\ninterval = \"300ms\"\n",
    )
    .await;
    let done: Vec<String> = (0..10)
        .map(|i| format!("http://www.example.com/done/{i}"))
        .collect();
    let (_, finished) = daemon.post("/v1/purges", &json!({ "files": done })).await;
    let finished_id = finished["id"].as_str().expect("id").to_owned();
    let stats = daemon
        .wait_for("10 succeeded", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 10
        })
        .await;
    assert_eq!(items(&stats, "succeeded"), 10);
    // Three more wait: a partial batch.
    let waiting: Vec<String> = (0..3)
        .map(|i| format!("http://www.example.com/waiting/{i}"))
        .collect();
    let (_, pending) = daemon
        .post("/v1/purges", &json!({ "files": waiting }))
        .await;
    let pending_id = pending["id"].as_str().expect("id").to_owned();
    assert_eq!(
        daemon.get(&format!("/v1/purges/{finished_id}")).await.0,
        200
    );

    let stats = daemon
        .wait_for("the finished rows removed", Duration::from_secs(20), |s| {
            items(s, "succeeded") == 0
        })
        .await;
    assert_eq!(
        items(&stats, "pending"),
        3,
        "pending items are never removed"
    );
    assert_eq!(
        daemon.get(&format!("/v1/purges/{finished_id}")).await.0,
        404
    );
    assert_eq!(daemon.get(&format!("/v1/purges/{pending_id}")).await.0, 200);

    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('file:{}?mode=ro', uri=True); \
             print(c.execute(\"select count(*) from batches where state = 'succeeded'\").fetchone()[0])",
            daemon.db_path().display()
        ))
        .output();
    if let Ok(output) = output
        && output.status.success()
    {
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "0",
            "old batches removed too"
        );
    }
    assert!(
        daemon
            .logs()
            .contains("retention: removed finished history")
    );
}

//! The operator commands against a running (and then a stopped) daemon.

mod common;

use std::process::Command;
use std::time::Duration;

use common::held::HeldDaemon;
use common::{BIN, ENDPOINTS, KEY_VALUE, TestDaemon, cdn_section, emulator, fast_knobs, items};
use purgeq::cdn::emulator::Knobs;
use serde_json::{Value, json};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().expect("run purgeq");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn status_show_and_history_tell_what_happened() {
    let emulator = emulator(Knobs {
        fail_urls_containing: Some("bad".into()),
        ..fast_knobs()
    })
    .await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n[sender]\nmax_attempts = 1\n[tracker]\npoll_interval = \"100ms\"\n[fleet]\nnode_name = \"deploy-7\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let mut daemon = TestDaemon::start(&config).await;
    let host = ENDPOINTS[0].1;
    let urls = [
        format!("http://{host}/ok1"),
        format!("http://{host}/ok2"),
        format!("http://{host}/bad"),
    ];
    let (_, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "files": urls, "label": "deploy 42" }),
        )
        .await;
    let id = body["id"].as_str().expect("id").to_owned();
    daemon
        .wait_for("all final", Duration::from_secs(30), |s| {
            items(s, "succeeded") == 2 && items(s, "failed") == 1
        })
        .await;
    let socket = daemon.socket.to_str().expect("utf-8").to_owned();

    let (code, out, _) = run(&["status", "--socket", &socket]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("node:      deploy-7, standalone\n"),
        "{out}"
    );
    assert!(out.contains("sending:   running"), "{out}");
    assert!(
        out.contains("backlog:   0 pending, 0 sending, 0 submitted"),
        "{out}"
    );
    assert!(
        out.contains("finished:  2 succeeded, 1 failed, 0 cancelled"),
        "{out}"
    );
    assert!(out.contains("files and"), "{out}");
    let (code, out, _) = run(&["status", "--socket", &socket, "--json"]);
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(stats["items"]["failed"], 1);
    assert_eq!(
        stats["fleet"],
        json!({"role": "standalone", "node": "deploy-7", "leader": "deploy-7", "term": null})
    );

    let (code, out, _) = run(&["show", &id, "--socket", &socket]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("request {id} (failed)")), "{out}");
    assert!(out.contains("label: deploy 42"), "{out}");
    let bad = out
        .lines()
        .find(|l| l.contains("/bad"))
        .expect("the failed URL");
    assert!(bad.starts_with("failed\t1\t"), "{bad}");
    assert!(
        bad.contains("the CDN reported the purge as Failed"),
        "{bad}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("succeeded\t1\t"))
            .count(),
        2,
        "{out}"
    );
    let (code, _, err) = run(&[
        "show",
        "01900000-0000-7000-8000-000000000000",
        "--socket",
        &socket,
    ]);
    assert_eq!(code, 65);
    assert!(err.contains("no request with id"), "{err}");

    // history reads the file itself: it works with the daemon stopped.
    assert!(daemon.terminate().success());
    let db = daemon.db_path().to_str().expect("utf-8").to_owned();
    let (code, out, _) = run(&["history", "--db", &db, "--state", "failed"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(
        rows[0].contains(&format!("http://{host}/bad")) && rows[0].contains("\tfailed\t1\t"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "history",
        "--db",
        &db,
        "--url-prefix",
        &format!("http://{host}/ok"),
        "--since",
        "1h",
        "--json",
    ]);
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["state"] == "succeeded" && e["task_track_id"].is_string())
    );
    let (code, _, err) = run(&["history", "--db", "/nonexistent/purgeq.db"]);
    assert_eq!(code, 69);
    assert!(err.contains("does not exist"), "{err}");

    // And status says plainly that the daemon is not there.
    let (code, _, err) = run(&["status", "--socket", &socket]);
    assert_eq!(code, 69);
    assert!(err.contains("cannot reach the daemon"), "{err}");
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let (code, out, _) = run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("purgeq") && out.contains("enqueue") && out.contains("history"));
    let (code, out, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(out.contains(".TH purgeq"), "{out}");
    assert!(
        out.contains("enqueue") && out.contains("check\\-config"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_sends_failed_urls_again_and_cancel_spares_shared_ones() {
    let emulator = emulator(Knobs {
        fail_urls_containing: Some("flaky".into()),
        ..fast_knobs()
    })
    .await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\nmax_files = 100\n[sender]\nmax_attempts = 1\n[tracker]\npoll_interval = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = HeldDaemon::start(&config, &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let host = ENDPOINTS[0].1;
    let (_, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "files": [format!("http://{host}/fine"), format!("http://{host}/flaky")] }),
        )
        .await;
    let id = body["id"].as_str().expect("id").to_owned();
    daemon
        .wait_for("one failed", Duration::from_secs(30), |s| {
            items(s, "failed") == 1
        })
        .await;

    // The CDN recovers; the operator sends the failed URL again.
    let mut knobs = emulator.knobs();
    knobs.fail_urls_containing = None;
    emulator.set_knobs(knobs).expect("knobs");
    let (code, out, err) = run(&["retry", &id, "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    // Issue 12, item 15: "1 failed URLs".
    assert_eq!(out.trim(), "1 failed URL sent again");
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let (code, out, _) = run(&["retry", "--failed", "--socket", &socket]);
    assert_eq!((code, out.trim()), (0, "0 failed URLs sent again"));
    // Issue 29, item 16: one request with nothing to retry says so, as
    // `cancel` does with nothing to cancel.
    let (code, _, err) = run(&["retry", &id, "--socket", &socket]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("nothing to retry"), "{err}");
    let (code, _, _) = run(&["retry", "--socket", &socket]);
    assert_eq!(code, 2, "an id or --failed is required");

    // Cancel: a URL another request also wants is kept.
    let hold = [
        format!("http://{}/x", ENDPOINTS[1].1),
        format!("http://{}/y", ENDPOINTS[1].1),
    ];
    daemon
        .reload_with(&[("batch.linger", "1h")])
        .await
        .expect("reloaded");
    let (_, a) = daemon.post("/v1/purges", &json!({ "files": hold })).await;
    let (_, _b) = daemon
        .post("/v1/purges", &json!({ "files": [hold[1].clone()] }))
        .await;
    let a = a["id"].as_str().expect("id").to_owned();
    let (code, out, err) = run(&["cancel", &a, "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "1 URL cancelled, 1 URL kept (another request also wants them)"
    );
    let (_, view) = daemon.get(&format!("/v1/purges/{a}")).await;
    assert_eq!(view["items"][0]["state"], "cancelled");
    assert_eq!(view["items"][1]["state"], "pending");
    // Nothing left to cancel: said, and not a success (issue 12, item 15).
    let (code, out, err) = run(&["cancel", &id, "--socket", &socket]);
    assert_eq!(code, 65, "{out}{err}");
    assert!(err.contains("nothing to cancel"), "{err}");
    let (code, _, err) = run(&[
        "cancel",
        "01900000-0000-7000-8000-000000000000",
        "--socket",
        &socket,
    ]);
    assert_eq!(code, 65);
    assert!(err.contains("no request with id"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_prints_configuration_from_the_api() {
    let emulator = emulator(fast_knobs()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("purgeq.toml");
    std::fs::write(&config, cdn_section(&emulator, KEY_VALUE)).expect("config");
    let path = config.to_str().expect("utf-8");
    let (code, out, err) = run(&["endpoints", "--config", path]);
    assert_eq!(code, 0, "{err}");
    for (id, host) in ENDPOINTS {
        assert!(
            out.contains(&format!(
                "[[cdn.endpoints]]\nid = \"{id}\"\nhosts = [\"{host}\"]"
            )),
            "{out}"
        );
    }
    // Each with its cache rules (the emulator's default policy).
    assert_eq!(
        out.matches(
            "# cache rules: query strings kept, Cache-Control honoured; Suffix .html .htm 300 s"
        )
        .count(),
        ENDPOINTS.len(),
        "{out}"
    );
    // What it prints is valid configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).expect("write");
    let (code, _, err) = run(&["check-config", "--config", printed.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    std::fs::write(&config, cdn_section(&emulator, "wrong-key")).expect("config");
    let (code, _, err) = run(&["endpoints", "--config", path]);
    assert_eq!(code, 78);
    assert!(
        err.contains("WrongSignature") && !err.contains("wrong-key"),
        "{err}"
    );
    // Without credentials it describes the built-in emulator's endpoints
    // instead of giving up (issue 12, item 19).
    std::fs::write(&config, "").expect("config");
    let (code, out, err) = run(&["endpoints", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("built-in emulator"), "{out}");
    assert!(
        out.contains(&format!(
            "[[cdn.endpoints]]\nid = {:?}\nhosts = [\"example.com\", \"*.example.com\"]",
            purgeq::config::DEMO_ENDPOINT_ID
        )),
        "{out}"
    );
}

/// The emulator listed only the first host of an endpoint; `purgeq
/// endpoints` prints one table per endpoint with every host.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_with_several_hosts_is_listed_whole() {
    use purgeq::cdn::KeyValue;
    use purgeq::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig};
    let id = "dddddddd-0000-4000-8000-00000000000d";
    let config = EmulatorConfig::new(
        common::SUBSCRIPTION,
        common::KEY_ID,
        KeyValue::new(KEY_VALUE),
        vec![EmulatedEndpoint::new(
            id,
            &["www.example.net", "*.static.example.net"],
        )],
    );
    let emulator = Emulator::start(config).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("purgeq.toml");
    let text = format!(
        "[cdn]\nbase_url = \"{}\"\nsubscription_id = \"{}\"\nkey_id = \"{}\"\nkey_value = \"{KEY_VALUE}\"\n",
        emulator.base_url(),
        common::SUBSCRIPTION,
        common::KEY_ID
    );
    std::fs::write(&path, text).expect("config");
    let (code, out, err) = run(&["endpoints", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "[[cdn.endpoints]]\nid = \"{id}\"\nhosts = [\"www.example.net\", \"*.static.example.net\"]"
        )),
        "{out}"
    );
}

#[test]
fn the_shipped_man_page_matches_the_commands() {
    let (code, out, _) = run(&["man"]);
    assert_eq!(code, 0);
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/purgeq.1"))
        .expect("doc/purgeq.1");
    assert!(
        shipped == out,
        "doc/purgeq.1 is out of date: regenerate it with `cargo run -- man > doc/purgeq.1`"
    );
    // Every page it refers to is shipped, and up to date (issue 12, item
    // 19: purgeq-enqueue(1) and the others did not exist).
    let referred: Vec<String> = shipped
        .split("purgeq\\-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)"))
        .map(|(name, _)| name.replace("\\-", "-"))
        .collect();
    assert!(referred.len() >= 10, "{referred:?}");
    for name in referred {
        let (code, page, err) = run(&["man", &name]);
        assert_eq!(code, 0, "{name}: {err}");
        let path = format!("{}/doc/purgeq-{name}.1", env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path} is referred to by purgeq(1): {e}"));
        assert!(
            shipped == page,
            "{path} is out of date: regenerate it with `cargo run -- man {name} > {path}`"
        );
    }
}

/// Runs `purgeq ARGS` with `input` on standard input.
fn run_with_stdin(args: &[&str], input: &[u8]) -> (i32, String, String) {
    common::run_with_input(args, &[], input)
}

/// Issue 12, items 2 and 4: the README's deploy recipe queued `…/docs/c`,
/// `…/docs/a%20b?.css`, `…/docs/100%.txt` and a mangled quoted name; an
/// inline comment became part of a URL.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_paths_and_url_lists_queue_exactly_the_named_files() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = HeldDaemon::start(&cdn_section(&emulator, KEY_VALUE), &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let host = ENDPOINTS[0].1;
    let base = format!("http://{host}/");
    let stored = |id: String| {
        let daemon = &daemon;
        async move {
            let (_, status) = daemon.get(&format!("/v1/purges/{id}")).await;
            status["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["url"].as_str().expect("url").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let expected: Vec<String> = [
        "docs/c%23.html",
        "docs/a%20b%3F.css",
        "docs/100%25.txt",
        "docs/%E4%B8%AD.js",
    ]
    .iter()
    .map(|p| format!("{base}{p}"))
    .collect();

    // NUL-separated, as `git diff --name-only -z` writes them.
    let input = b"docs/c#.html\0docs/a b?.css\0docs/100%.txt\0docs/\xe4\xb8\xad.js\0";
    let (code, out, err) = run_with_stdin(
        &[
            "enqueue",
            "--socket",
            &socket,
            "--paths",
            "--base-url",
            &base,
            "-z",
            "-",
        ],
        input,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(out.trim().to_owned()).await, expected);

    // One per line, with git's quoting of a non-ASCII name.
    let input = "docs/c#.html\ndocs/a b?.css\ndocs/100%.txt\n\"docs/\\344\\270\\255.js\"\n";
    let (code, out, err) = run_with_stdin(
        &[
            "enqueue",
            "--socket",
            &socket,
            "--paths",
            "--base-url",
            &base,
            "-",
        ],
        input.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored(out.trim().to_owned()).await, expected);

    // URL lists: comments are not part of a URL.
    let input = format!("# deploy 7\nhttp://{host}/x.js # inline comment\n\nhttp://{host}/y.js\n");
    let (code, out, err) = run_with_stdin(&["enqueue", "--socket", &socket, "-"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        stored(out.trim().to_owned()).await,
        [format!("http://{host}/x.js"), format!("http://{host}/y.js")]
    );
    let (code, _, err) = run_with_stdin(
        &["enqueue", "--socket", &socket, "-"],
        format!("http://{host}/a b.js\n").as_bytes(),
    );
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("line 1") && err.contains("white space"),
        "{err}"
    );
}

/// Issue 12, item 12: `purgeq history | head -1` panicked (`failed
/// printing to stdout: Broken pipe`, exit 101). A closed pipe ends the
/// command quietly.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    for args in [
        vec!["completions", "bash"],
        vec!["man"],
        vec!["check-config"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run purgeq");
        // The reader goes away before anything is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// Issue 12, items 13 and 14: control characters in labels, `history
/// --state merged` always empty, `--state bogus` accepted, upper-case ids
/// unknown, `merged` counted 0 by a request while `status` counted it.
#[tokio::test(flavor = "multi_thread")]
async fn labels_states_and_ids_are_checked_and_counted_alike() {
    let daemon = HeldDaemon::start("[batch]\nlinger = \"1h\"\n", &[]).await;
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://www.example.com/x.js"], "label": "deploy\u{1b}[31m 7\nforged\trow" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("label"), "{body}");
    // Issue 28: a text-direction mark disguises what follows it.
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://www.example.com/x.js"], "label": "deploy \u{202e}7 yolpedr" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("text-direction"), "{body}");

    let (_, first) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://www.example.com/d/x.js"], "label": "deploy 7" }),
        )
        .await;
    let (_, _) = daemon
        .post(
            "/v1/purges",
            &json!({ "directories": ["http://www.example.com/d/"] }),
        )
        .await;
    let id = first["id"].as_str().expect("id").to_owned();
    let (code, view) = daemon
        .get(&format!("/v1/purges/{}", id.to_ascii_uppercase()))
        .await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["counts"]["merged"], 1, "{view}");
    assert_eq!(view["counts"]["pending"], 1, "{view}");
    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "merged"), 1);

    let db = daemon.db_path().to_str().expect("utf-8").to_owned();
    let (code, out, err) = run(&["history", "--db", &db, "--state", "merged"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "a header and the merged URL: {out}");
    assert!(out.contains("/d/x.js"), "{out}");
    let (code, _, err) = run(&["history", "--db", &db, "--state", "bogus"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run(&["history", "--db", &db, "--label", "deploy 7"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    let (code, out, _) = run(&[
        "history",
        "--db",
        &db,
        "--request",
        &id.to_ascii_uppercase(),
    ]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
}

/// Issue 12, item 10: "cannot reach the daemon: error sending request for
/// url (http://localhost/v1/purges)" named neither the socket nor the OS
/// error; the installed configuration and the unit disagreed on paths.
#[test]
fn an_unreachable_daemon_is_named_with_the_reason() {
    let (code, _, err) = run(&["status", "--socket", "/nonexistent/purgeq.sock"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("the socket /nonexistent/purgeq.sock"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");

    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/config/purgeq.toml");
    let text = std::fs::read_to_string(sample).expect("sample");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/purgeq.service"
    ))
    .expect("unit");
    let socket = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/purgeq.socket"
    ))
    .expect("socket unit");
    assert!(text.contains("path = \"/var/lib/purgeq/purgeq.db\""));
    assert!(unit.contains("StateDirectory=purgeq"));
    assert!(text.contains("socket = \"/run/purgeq/purgeq.sock\""));
    assert!(socket.contains("ListenStream=/run/purgeq/purgeq.sock"));
    assert!(
        !unit.contains("PURGEQ__STORE__PATH") && !unit.contains("PURGEQ__INGEST__SOCKET"),
        "one place says where the files are: the configuration the CLI reads too"
    );
}

/// Issue 12, items 6 and 7: what waits for quota said "waiting for a
/// batch", `--wait` printed nothing and ended without a state, and a
/// credentials pause was waited out to the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_urls_say_why_and_until_when() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n[quota]\nfiles_per_day = 2\nutc_offset = \"+08:00\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = HeldDaemon::start(&config, &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let urls: Vec<String> = (0..5)
        .map(|i| format!("http://{}/q{i}.js", ENDPOINTS[0].1))
        .collect();
    let mut args = vec!["enqueue", "--socket", &socket, "--wait", "--timeout", "4"];
    args.extend(urls.iter().map(String::as_str));
    let (code, _, err) = run(&args);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("not finished after 4s"), "{err}");
    assert!(err.contains("2 succeeded, 3 pending"), "{err}");
    assert!(
        err.contains(
            "waiting: waiting for quota: the day's 2 file URLs are spent; the next quota day starts"
        ) && err.contains("+08:00"),
        "{err}"
    );

    let (code, out, _) = run(&["status", "--socket", &socket]);
    assert_eq!(code, 0);
    assert!(out.contains("waiting:   waiting for quota"), "{out}");

    use sqlx::Connection;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", daemon.db_path().display()))
            .await
            .expect("db");
    let why: Vec<String> = sqlx::query_scalar("SELECT why FROM queue")
        .fetch_all(&mut conn)
        .await
        .expect("queue");
    assert_eq!(why.len(), 3);
    assert!(
        why.iter()
            .all(|w| w.starts_with("waiting for quota") && w.contains("(until ")),
        "{why:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credentials_pause_ends_the_wait_at_once() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n",
        cdn_section(&emulator, "not-the-key")
    );
    let daemon = HeldDaemon::start(&config, &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let url = format!("http://{}/paused.js", ENDPOINTS[0].1);
    let started = std::time::Instant::now();
    let (code, _, err) = run(&[
        "enqueue",
        "--socket",
        &socket,
        "--wait",
        "--timeout",
        "120",
        &url,
    ]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("sending is paused"), "{err}");
    assert!(err.contains("WrongSignature"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "said at once, not after the timeout"
    );
}

/// Issue 12, item 20: a list past `ingest.max_urls_per_request` is posted
/// in parts (all checked first: one bad URL posts nothing); requests are
/// listed and filtered by `GET /v1/purges`; status estimates the drain.
#[tokio::test(flavor = "multi_thread")]
async fn long_lists_are_split_listed_and_estimated() {
    let env = [("PURGEQ__INGEST__MAX_URLS_PER_REQUEST", "3")];
    let daemon = TestDaemon::start_with_env("[batch]\nlinger = \"1h\"\n", &env).await;
    let config = daemon.config.to_str().expect("utf-8").to_owned();
    let enqueue = |input: String| {
        let config = config.clone();
        move || {
            common::run_with_input(
                &["enqueue", "--config", &config, "--label", "big deploy", "-"],
                &env,
                &input,
            )
        }
    };
    let mut lines: Vec<String> = (0..7)
        .map(|i| format!("http://www.example.com/big/{i}.js"))
        .collect();
    lines.push("http://nowhere.example.org/x.js".into());
    let (code, _, err) = tokio::task::spawn_blocking(enqueue(lines.join("\n")))
        .await
        .expect("join");
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("nothing was posted") && err.contains("URL 8"),
        "{err}"
    );
    assert_eq!(
        items(&daemon.stats().await, "pending"),
        0,
        "nothing half-accepted"
    );

    lines.pop();
    let (code, out, err) = tokio::task::spawn_blocking(enqueue(lines.join("\n")))
        .await
        .expect("join");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "3 + 3 + 1: {out}");
    let stats = daemon.stats().await;
    assert_eq!(items(&stats, "pending"), 7);
    assert_eq!(stats["drain"]["pending_files"], 7);
    assert_eq!(stats["drain"]["calls"], 1);

    let (code, list) = daemon.get("/v1/purges?label=big%20deploy&limit=2").await;
    assert_eq!(code, 200, "{list}");
    let first: Vec<&str> = list["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(first.len(), 2);
    assert_eq!(list["requests"][0]["state"], "in_progress");
    let before = list["next_before"].as_str().expect("another page");
    let (_, rest) = daemon
        .get(&format!(
            "/v1/purges?label=big%20deploy&limit=2&before={before}"
        ))
        .await;
    assert_eq!(rest["requests"].as_array().expect("requests").len(), 1);
    assert!(rest["next_before"].is_null(), "{rest}");
    let (_, none) = daemon.get("/v1/purges?state=succeeded").await;
    assert_eq!(none["requests"].as_array().expect("requests").len(), 0);
    let (code, _) = daemon.get("/v1/purges?state=bogus").await;
    assert_eq!(code, 400);

    let socket = daemon.socket.to_str().expect("utf-8").to_owned();
    let (code, out, _) = run(&["status", "--socket", &socket]);
    assert_eq!(code, 0);
    assert!(out.contains("drains:    1 call, "), "{out}");
}

/// Issue 29, item 8: the README makes `cdn.key_value_file` readable by
/// root alone; a non-root operator's `status`, `history` and `enqueue`
/// exited 78 with "credentials are partly configured". Client commands
/// leave the daemon's secret files unread. (Tests run as root, who reads
/// any file: a key file the operator cannot open is stood in for by one
/// that is not there, which fails the same read.)
#[tokio::test(flavor = "multi_thread")]
async fn client_commands_do_not_need_the_cdn_key() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let operators = daemon.dir.path().join("operator.toml");
    let text = std::fs::read_to_string(&daemon.config).expect("config");
    let text = text.replace(
        &format!("key_value = \"{KEY_VALUE}\""),
        "key_value_file = \"/nonexistent/cdn-key-value\"",
    );
    assert!(text.contains("key_value_file"), "{text}");
    std::fs::write(&operators, text).expect("write");
    let config = operators.to_str().expect("utf-8");
    let host = ENDPOINTS[0].1;
    let url = format!("http://{host}/operator.js");

    let (code, out, err) = run(&["enqueue", "--config", config, "--wait", &url]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["status", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sending:"), "{out}");
    let (code, out, err) = run(&["history", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("operator.js"), "{out}");
    // The daemon itself still needs the key: check-config reads it.
    let (code, _, err) = run(&["check-config", "--config", config]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cdn.key_value_file"), "{err}");
}

/// Issue 29, item 12: `history --db /nonexistent` said "the store cannot
/// write" for a read-only command; `history --request bogus` printed an
/// empty table and exited 0.
#[tokio::test(flavor = "multi_thread")]
async fn history_says_what_it_could_not_read() {
    let (code, _, err) = run(&["history", "--db", "/nonexistent/purgeq.db"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot read the history"), "{err}");
    assert!(!err.contains("cannot write"), "{err}");
    let daemon = HeldDaemon::start("[batch]\nlinger = \"1h\"\n", &[]).await;
    let db = daemon.db_path().to_str().expect("utf-8").to_owned();
    let (code, out, err) = run(&["history", "--db", &db, "--request", "bogus"]);
    assert_eq!(code, 66, "{out}{err}");
    assert!(err.contains("no request with id \"bogus\""), "{err}");
    // The prefix is normalized like the URLs it is compared with.
    let (status, _) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": ["http://www.example.com/d/x.js"] }),
        )
        .await;
    assert_eq!(status, 202);
    let (code, out, err) = run(&[
        "history",
        "--db",
        &db,
        "--url-prefix",
        "HTTP://WWW.Example.COM/d/",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("http://www.example.com/d/x.js"), "{out}");
    let (code, _, err) = run(&[
        "history",
        "--db",
        &db,
        "--url-prefix",
        "http://www.example.com/c#",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("fragment"), "{err}");
}

/// Issue 29, item 16: `purgeq emulate > log` wrote ANSI colour codes into
/// the file.
#[test]
fn the_emulators_log_has_no_colour_codes_when_redirected() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = std::fs::File::create(dir.path().join("emulate.log")).expect("log");
    let mut child = std::process::Command::new(BIN)
        .args(["emulate", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("emulate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(dir.path().join("emulate.log")).expect("read");
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.is_empty(), "the emulator logged nothing");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// Issue 29, item 16: a URL with a space was refused on standard input but
/// accepted as an argument.
#[test]
fn a_url_with_a_space_is_refused_however_it_is_given() {
    let url = "http://www.example.com/a b.js";
    let (code, _, err) = run(&["enqueue", url, "--socket", "/nonexistent.sock"]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("white space"), "{err}");
    let (code, _, err) = run_with_stdin(
        &["enqueue", "-", "--socket", "/nonexistent.sock"],
        format!("{url}\n").as_bytes(),
    );
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("white space"), "{err}");
}

/// Issue 29, item 10: `status` said the backlog "drains … (within today's
/// quota)" beside "waiting for quota … spent" (the day's rest held back
/// for urgent intents), and counted merged URLs still in flight as
/// finished.
#[tokio::test(flavor = "multi_thread")]
async fn status_does_not_contradict_itself() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n\
         [quota]\nfiles_per_day = 4\nurgent_reserve_files = 2\npromote = \"never\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = HeldDaemon::start(&config, &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let urls: Vec<String> = (0..4)
        .map(|i| format!("http://{}/held/{i}.js", ENDPOINTS[0].1))
        .collect();
    let (status, _) = daemon.post("/v1/purges", &json!({ "files": urls })).await;
    assert_eq!(status, 202);
    daemon
        .wait_for("two sent, two held", Duration::from_secs(20), |s| {
            items(s, "succeeded") == 2 && items(s, "pending") == 2
        })
        .await;
    let (code, out, err) = run(&["status", "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("waiting:   waiting for quota"), "{out}");
    assert!(!out.contains("within today's quota"), "{out}");
    assert!(
        out.contains("today's quota takes none of it, the rest needs 1 more quota day"),
        "{out}"
    );
    assert!(
        !out.contains("merged,"),
        "merged URLs are not 'finished': {out}"
    );
}

/// Issue 29, item 16: a refusal named the first bad URL twice (in the
/// message and in the list below it).
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_names_each_bad_url_once() {
    let daemon = HeldDaemon::start("[batch]\nlinger = \"1h\"\n", &[]).await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let (code, _, err) = run(&[
        "enqueue",
        "--socket",
        &socket,
        "http://www.example.com/ok.js",
        "http://www.example.com/bad#frag",
    ]);
    assert_eq!(code, 65, "{err}");
    assert_eq!(err.matches("www.example.com/bad").count(), 1, "{err}");
    assert!(
        err.contains("1 of 2 URLs refused, nothing was accepted"),
        "{err}"
    );
    assert!(err.contains("fragment"), "{err}");
}

//! The quota planner against the emulator with the service's quota (2,000
//! files and 500 directories a day): a deploy bigger than the file quota
//! is purged today as `enqueue --dry-run` said it would be, and a hotfix
//! goes out behind a backlog that waits for tomorrow's quota.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::held::HeldDaemon;
use common::{ENDPOINTS, KEY_VALUE, cdn_section, emulator};
use purgeq::cdn::emulator::Knobs;
use purgeq::ingest::PlanView;
use serde_json::{Value, json};

/// The service's own limits, and no rate or completion trouble.
fn service_knobs() -> Knobs {
    Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        completion_delay: Duration::from_millis(100),
        ..Knobs::default()
    }
}

const DAEMON: &str = "[batch]\nlinger = \"100ms\"\n[sender]\nrequests_per_second = 200\nburst = 20\n\
                      [tracker]\npoll_interval = \"200ms\"\n";

/// `purgeq ARGS` with `input` on standard input.
fn run_with_input(args: &[&str], input: &str) -> (i32, String, String) {
    common::run_with_input(args, &[], input)
}

/// `count` files in each of `dirs` directories under /assets/.
fn deploy(dirs: usize, count: usize) -> Vec<String> {
    (0..dirs)
        .flat_map(|d| {
            (0..count).map(move |f| format!("http://{}/assets/d{d:02}/f{f}.js", ENDPOINTS[0].1))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_over_the_file_quota_is_purged_today_as_planned() {
    let emulator = emulator(service_knobs()).await;
    let daemon = HeldDaemon::start(
        &format!("{}{DAEMON}", cdn_section(&emulator, KEY_VALUE)),
        &[],
    )
    .await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let urls = deploy(26, 100);

    // The plan before the run, as a deploy script would ask for it.
    let (code, out, err) = run_with_input(
        &["enqueue", "--dry-run", "--json", "--socket", &socket, "-"],
        &urls.join("\n"),
    );
    assert_eq!(code, 0, "{err}");
    let plan: PlanView = serde_json::from_str(&out).expect("a plan");
    assert!(plan.dry_run);
    assert_eq!(
        daemon.stats().await["items"]["pending"],
        0,
        "nothing stored"
    );
    let planned = &plan.plan.endpoints[ENDPOINTS[0].0];
    assert_eq!((planned.files, planned.directories), (2_000, 6), "{plan:?}");
    assert_eq!(
        (plan.plan.waiting_files, plan.plan.waiting_directories),
        (0, 0)
    );
    let (code, text, _) = run_with_input(
        &["enqueue", "--dry-run", "--socket", &socket, "-"],
        &urls.join("\n"),
    );
    assert_eq!(code, 0);
    assert!(
        text.contains(
            "promoted: http://a.example.com/assets/d00/ (instead of 100 pending files under it)"
        ),
        "{text}"
    );

    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": urls, "label": "big deploy" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=120")).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let promoted = view["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|item| item["merge_reason"] == "promoted")
        .count();
    assert_eq!(
        promoted, 600,
        "the request says which URLs went by a promoted directory"
    );

    // The journal is the plan: the same calls, files and directories.
    let journal = emulator.journal();
    let files: usize = journal.iter().map(|e| e.files.len()).sum();
    let directories: BTreeSet<String> = journal
        .iter()
        .flat_map(|e| e.directories.iter().cloned())
        .collect();
    let promoted: BTreeSet<String> = planned
        .promotions
        .iter()
        .map(|p| p.directory.clone())
        .collect();
    assert_eq!(files as u64, planned.files);
    assert_eq!(directories, promoted);
    assert_eq!(journal.len() as u64, planned.calls);
    assert_eq!(
        emulator.stats().get("QuotaExceeded"),
        None,
        "the CDN never refused a call for quota"
    );
    // Every URL reached the CDN today, as itself or under a directory.
    let sent: BTreeSet<&String> = journal.iter().flat_map(|e| &e.files).collect();
    for url in &urls {
        assert!(
            sent.contains(url) || directories.iter().any(|d| url.starts_with(d.as_str())),
            "{url} was not purged"
        );
    }

    // History says which directory purged a promoted file, and why.
    let db = daemon.db_path().to_str().expect("utf-8").to_owned();
    let (code, out, err) = run_with_input(
        &[
            "history",
            "--db",
            &db,
            "--url-prefix",
            "http://a.example.com/assets/d00/f1.js",
            "--json",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let entry: Value = serde_json::from_str(out.trim()).expect("one row");
    assert_eq!(entry["merged_into_url"], "http://a.example.com/assets/d00/");
    assert_eq!(entry["merge_reason"], "promoted");
    assert_eq!(entry["state"], "succeeded");
    let (_, out, _) = run_with_input(
        &[
            "history",
            "--db",
            &db,
            "--url-prefix",
            "http://a.example.com/assets/d00/f1.js",
        ],
        "",
    );
    assert!(
        out.contains("http://a.example.com/assets/d00/ (promoted)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_urgent_hotfix_goes_out_behind_a_backlog_waiting_for_quota() {
    let emulator = emulator(service_knobs()).await;
    let daemon = HeldDaemon::start(
        &format!(
            "{}{DAEMON}[quota]\nfiles_per_day = 30\nurgent_reserve_files = 5\npromote = \"never\"\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let backlog: Vec<String> = (0..100)
        .map(|i| format!("http://{}/deploy/{i}.js", ENDPOINTS[0].1))
        .collect();
    let (status, _) = daemon.post("/v1/purges", &json!({ "urls": backlog })).await;
    assert_eq!(status, 202);
    // 30 a day, 5 held back: 25 go, 75 wait for the next quota day.
    let stats = daemon
        .wait_for(
            "the backlog to wait for quota",
            Duration::from_secs(30),
            |s| s["quota"]["files_waiting"] == 75 && s["items"]["succeeded"] == 25,
        )
        .await;
    assert!(stats["quota"]["next_day_at"].is_string());
    let (_, status_text, _) = run_with_input(
        &[
            "status",
            "--socket",
            daemon.socket().to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(
        status_text.contains("75 files and 0 directories wait for the next quota day (starts "),
        "{status_text}"
    );
    assert!(
        status_text.contains("5 files and 0 directories held back"),
        "{status_text}"
    );
    let (code, plan_text, err) = run_with_input(
        &["plan", "--socket", daemon.socket().to_str().expect("utf-8")],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        plan_text.contains("waiting for the next quota day: 75 files, 0 directories"),
        "{plan_text}"
    );

    // The hotfix leaves at once, from the reserve.
    let started = Instant::now();
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{}/hotfix.js", ENDPOINTS[0].1)], "priority": "urgent" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id");
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hotfix waited {:?}",
        started.elapsed()
    );
    // Through the CDN-shaped route too.
    let path = format!(
        "/subscriptions/{}/endpoints/{}/purges?apiVersion=1.0&priority=urgent",
        common::SUBSCRIPTION,
        ENDPOINTS[0].0
    );
    let (status, body) = daemon
        .post(
            &path,
            &json!({ "Files": [format!("http://{}/hotfix2.js", ENDPOINTS[0].1)] }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["AsyncInfo"]["TaskTrackId"].as_str().expect("id");
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    // The backlog still waits: the hotfixes came out of the reserve.
    let stats = daemon.stats().await;
    assert_eq!(stats["items"]["pending"], 75, "{stats:#}");
    let (status, _) = daemon
        .post(
            &path.replace("priority=urgent", "priority=soon"),
            &json!({ "Files": [format!("http://{}/x.js", ENDPOINTS[0].1)] }),
        )
        .await;
    assert_eq!(status, 400, "an unknown priority is refused");
}

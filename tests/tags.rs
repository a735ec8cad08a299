//! Issue 35: purge by tag on a CDN that has none. The tag registry is fed
//! over HTTP, by the CLI and from an access log; a purge names tags and
//! the CDN (the emulator) receives exactly their URLs. The daemon is the
//! real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{ENDPOINTS, KEY_VALUE, TestDaemon};
use serde_json::{Value, json};

const HOST: &str = ENDPOINTS[0].1;

fn url(n: usize) -> String {
    format!("http://{HOST}/catalog/{}/item-{n}.html", n % 50)
}

async fn daemon(emulator: &purgeq::cdn::emulator::EmulatorHandle, extra: &str) -> TestDaemon {
    TestDaemon::start(&format!(
        "{}[batch]\nlinger = \"100ms\"\n[tracker]\npoll_interval = \"100ms\"\n\
         [quota]\nfiles_per_day = 100000\n{extra}",
        common::cdn_section(emulator, KEY_VALUE)
    ))
    .await
}

/// Sets the tags of `urls` with `POST /v1/tags`: the answer.
async fn tag(daemon: &TestDaemon, urls: &BTreeMap<String, Vec<String>>) -> Value {
    let (status, body) = daemon.post("/v1/tags", &json!({ "urls": urls })).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn urls_of(daemon: &TestDaemon, tag: &str) -> BTreeSet<String> {
    let (status, body) = daemon.get(&format!("/v1/tags/{tag}")).await;
    assert_eq!(status, 200, "{body}");
    body["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .map(|u| u.as_str().expect("a URL").to_owned())
        .collect()
}

/// How many times the CDN was asked to purge each URL.
fn purged(emulator: &purgeq::cdn::emulator::EmulatorHandle) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in emulator.journal() {
        assert!(
            entry.directories.is_empty(),
            "tags expand to files: {entry:?}"
        );
        for file in entry.files {
            *counts.entry(file).or_default() += 1;
        }
    }
    counts
}

/// 5,000 URLs tagged (some tags shared), two URLs re-tagged before the
/// purge, then a purge of two tags and one the registry does not know:
/// the CDN receives exactly the union of the two tags' URLs as they are
/// tagged at that moment, each once; the answer names the unknown tag.
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_purge_sends_exactly_the_tags_urls_each_once() {
    let emulator = common::emulator(common::fast_knobs()).await;
    let daemon = daemon(&emulator, "").await;
    let mut tags_of: BTreeMap<String, Vec<String>> = (0..5_000)
        .map(|n| {
            let mut tags = vec![format!("t-{}", n % 10)];
            if n % 7 == 0 {
                tags.push("seven".to_owned());
            }
            (url(n), tags)
        })
        .collect();
    let all: Vec<(String, Vec<String>)> = tags_of.clone().into_iter().collect();
    for chunk in all.chunks(1_000) {
        let fed = tag(&daemon, &chunk.iter().cloned().collect()).await;
        assert_eq!(fed["tagged"], 1_000, "{fed}");
        assert_eq!(fed["dropped"], 0, "{fed}");
    }
    // Re-tagged before the purge: one leaves t-2, one joins `seven`, one
    // is forgotten.
    let retagged: BTreeMap<String, Vec<String>> = [
        (url(2), vec!["t-9".to_owned()]),
        (url(5), vec!["t-5".to_owned(), "seven".to_owned()]),
        (url(12), vec![]),
    ]
    .into_iter()
    .collect();
    let fed = tag(&daemon, &retagged).await;
    assert_eq!(
        (fed["tagged"].as_u64(), fed["forgotten"].as_u64()),
        (Some(2), Some(1))
    );
    tags_of.extend(retagged.clone());

    let expected: BTreeSet<String> = tags_of
        .iter()
        .filter(|(_, tags)| tags.iter().any(|t| t == "t-2" || t == "seven"))
        .map(|(url, _)| url.clone())
        .collect();
    assert!(expected.contains(&url(5)) && !expected.contains(&url(2)));
    assert!(!expected.contains(&url(12)));
    assert_eq!(
        urls_of(&daemon, "t-2").await.len() + urls_of(&daemon, "seven").await.len() - {
            tags_of
                .values()
                .filter(|t| t.iter().any(|t| t == "t-2") && t.iter().any(|t| t == "seven"))
                .count()
        },
        expected.len()
    );

    let (status, accepted) = daemon
        .post(
            "/v1/purges",
            &json!({ "tags": ["t-2", "seven", "no-such-tag"], "label": "by tag" }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["urls"], expected.len(), "{accepted}");
    assert_eq!(
        accepted["unknown_tags"],
        json!(["no-such-tag"]),
        "{accepted}"
    );
    assert!(
        accepted["warning"]
            .as_str()
            .is_some_and(|w| w.contains("\"no-such-tag\" is not in the registry")),
        "{accepted}"
    );
    assert_eq!(accepted["tags"]["no-such-tag"], 0, "{accepted}");
    assert_eq!(
        accepted["tags"]["t-2"],
        tags_of
            .values()
            .filter(|t| t.iter().any(|t| t == "t-2"))
            .count(),
        "{accepted}"
    );
    let id = accepted["id"].as_str().expect("id").to_owned();
    let (_, request) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(
        request["state"],
        "succeeded",
        "{request}\n{}",
        daemon.logs()
    );
    assert_eq!(
        request["tags"]["seven"], accepted["tags"]["seven"],
        "{request}"
    );
    let items = request["items"].as_array().expect("items");
    assert_eq!(items.len(), expected.len());
    for item in items {
        let via = item["via_tag"].as_str().expect("each URL says its tag");
        let url = item["url"].as_str().expect("url");
        assert!(tags_of[url].iter().any(|t| t == via), "{item}");
    }

    let sent = purged(&emulator);
    assert_eq!(
        sent.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "exactly the union reached the CDN"
    );
    assert!(sent.values().all(|n| *n == 1), "each once: {sent:?}");
    emulator.shutdown().await;
}

/// A purge naming only unknown tags is accepted with nothing to purge,
/// and says so; a tag that is not one is refused with its place.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_bad_tags_in_a_purge() {
    let emulator = common::emulator(common::fast_knobs()).await;
    let daemon = daemon(&emulator, "").await;
    let (status, accepted) = daemon
        .post("/v1/purges", &json!({ "tags": ["ghost"] }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["urls"], 0, "{accepted}");
    assert_eq!(accepted["unknown_tags"], json!(["ghost"]));
    let (status, refused) = daemon
        .post(
            "/v1/purges",
            &json!({ "files": [url(1)], "tags": ["ok", "not ok"] }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["field"], "tags[1]",
        "{refused}"
    );
    assert!(purged(&emulator).is_empty());
    emulator.shutdown().await;
}

/// `POST /v1/tags` is all or nothing: one URL on a host no endpoint
/// serves, or one bad tag, and nothing is stored; the error names it.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_url_or_tag_refuses_the_whole_feed() {
    let emulator = common::emulator(common::fast_knobs()).await;
    let daemon = daemon(&emulator, "").await;
    let (status, refused) = daemon
        .post(
            "/v1/tags",
            &json!({ "urls": {
                (url(1)): ["good"],
                "http://nobody.example.net/x": ["good"],
            }}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["url"], "http://nobody.example.net/x",
        "{refused}"
    );
    let (status, refused) = daemon
        .post(
            "/v1/tags",
            &json!({ "urls": { (url(1)): ["good", "bad,tag"] } }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad,tag")),
        "{refused}"
    );
    assert!(
        urls_of(&daemon, "good").await.is_empty(),
        "nothing was stored"
    );
    emulator.shutdown().await;
}

/// Past `tags.max_urls`, the least recently seen URLs are dropped and
/// counted; the registry holds the bound, no more.
#[tokio::test(flavor = "multi_thread")]
async fn the_registry_drops_the_least_recently_seen_past_its_bound() {
    let emulator = common::emulator(common::fast_knobs()).await;
    let daemon = daemon(&emulator, "[tags]\nmax_urls = 100\nmax_tags_per_url = 2\n").await;
    let first: BTreeMap<String, Vec<String>> =
        (0..100).map(|n| (url(n), vec!["old".to_owned()])).collect();
    assert_eq!(tag(&daemon, &first).await["dropped"], 0);
    // Seen again: no longer among the least recent.
    let again: BTreeMap<String, Vec<String>> = [(
        url(0),
        vec!["old".to_owned(), "again".to_owned(), "third".to_owned()],
    )]
    .into_iter()
    .collect();
    let fed = tag(&daemon, &again).await;
    assert_eq!(fed["tags_dropped"], 1, "{fed}");
    let second: BTreeMap<String, Vec<String>> = (100..150)
        .map(|n| (url(n), vec!["new".to_owned()]))
        .collect();
    let fed = tag(&daemon, &second).await;
    assert_eq!(fed["dropped"], 50, "{fed}");
    let old = urls_of(&daemon, "old").await;
    assert_eq!(old.len(), 50);
    assert!(old.contains(&url(0)), "the URL seen again stays");
    assert!(!old.contains(&url(1)), "the least recently seen went first");
    assert_eq!(urls_of(&daemon, "new").await.len(), 50);
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("purgeq_tag_registry_urls 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("purgeq_tag_registry_dropped_urls 50"),
        "{metrics}"
    );
    let stats = daemon.stats().await;
    assert_eq!(stats["tags"]["urls"], 100, "{stats}");
    assert_eq!(stats["tags"]["dropped"], 50, "{stats}");
    emulator.shutdown().await;
}

/// The origin's access log, followed while it is written, rotated
/// (renamed and created again) and truncated: every tagged line is
/// learned, bad lines are counted; a purge of a learned tag then reaches
/// the CDN.
#[tokio::test(flavor = "multi_thread")]
async fn tags_are_learned_from_the_access_log_across_rotation() {
    use std::io::Write;
    let emulator = common::emulator(common::fast_knobs()).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("access.log");
    let daemon = daemon(
        &emulator,
        &format!("[tags]\naccess_log = \"{}\"\n", log.display()),
    )
    .await;
    let append = |path: &std::path::Path, lines: &[String]| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the log");
        for line in lines {
            writeln!(file, "{line}").expect("write");
        }
    };
    let line = |n: usize| format!("200 {} log-{} ,shared-log", url(n), n % 3);
    append(&log, &(0..30).map(line).collect::<Vec<_>>());
    append(
        &log,
        &["garbage".to_owned(), "200 /relative log-0".to_owned()],
    );
    append(
        &log,
        &["404 http://x/ y".to_owned(), format!("200 {} -", url(99))],
    );
    wait_until(&daemon, "the log is read", || async {
        urls_of(&daemon, "shared-log").await.len() == 30
    })
    .await;
    // Rotated with a line written to the old file after the rename (a
    // request still being logged), then the new file.
    std::fs::rename(&log, logs.path().join("access.log.1")).expect("rotate");
    append(&logs.path().join("access.log.1"), &[line(30)]);
    append(&log, &(31..40).map(line).collect::<Vec<_>>());
    wait_until(&daemon, "the rotated log is read", || async {
        urls_of(&daemon, "shared-log").await.len() == 40
    })
    .await;
    std::fs::File::create(&log).expect("truncate");
    append(&log, &(40..45).map(line).collect::<Vec<_>>());
    wait_until(&daemon, "the truncated log is read", || async {
        urls_of(&daemon, "shared-log").await.len() == 45
    })
    .await;
    assert_eq!(urls_of(&daemon, "log-1").await.len(), 15);
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("purgeq_tag_log_lines_total{result=\"bad\"} 2"),
        "two bad lines: {metrics}"
    );
    let (status, accepted) = daemon
        .post("/v1/purges", &json!({ "tags": ["log-2"] }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id");
    let (_, request) = daemon.get(&format!("/v1/purges/{id}?wait=60")).await;
    assert_eq!(request["state"], "succeeded", "{request}");
    assert_eq!(purged(&emulator).len(), 15);
    emulator.shutdown().await;
}

/// `purgeq tag` sets tags (and the bulk form reads lines from stdin);
/// `purgeq enqueue --tag T --dry-run` lists the URLs without purging;
/// `purgeq enqueue --tag T` purges them.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_tags_and_purges_by_tag() {
    let emulator = common::emulator(common::fast_knobs()).await;
    let daemon = daemon(&emulator, "").await;
    let socket = daemon.socket.display().to_string();
    let (code, out, err) = common::run_with_input(
        &["tag", "--socket", &socket, &url(1), "cli-a", "cli-b"],
        &[],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    let stdin = format!("{} cli-a\n\n# a comment\n{} cli-b cli-c\n", url(2), url(3));
    let (code, out, err) =
        common::run_with_input(&["tag", "--socket", &socket, "--stdin"], &[], stdin);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 URLs tagged"), "{out}");
    assert_eq!(
        urls_of(&daemon, "cli-a").await,
        [url(1), url(2)].into_iter().collect()
    );
    let (code, out, err) = common::run_with_input(
        &[
            "enqueue",
            "--socket",
            &socket,
            "--tag",
            "cli-b",
            "--dry-run",
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&url(1)) && out.contains(&url(3)), "{out}");
    assert!(purged(&emulator).is_empty(), "a dry run purges nothing");
    let (code, out, err) = common::run_with_input(
        &[
            "enqueue",
            "--socket",
            &socket,
            "--tag",
            "cli-b",
            "--wait",
            "--timeout",
            "60",
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        purged(&emulator).keys().cloned().collect::<BTreeSet<_>>(),
        [url(1), url(3)].into_iter().collect()
    );

    // The request page and `history` say which tag each URL came from.
    let (_, list) = daemon.get("/v1/purges?limit=1").await;
    let id = list["requests"][0]["id"]
        .as_str()
        .expect("the request")
        .to_owned();
    let html = daemon
        .client()
        .get(format!("http://localhost/ui/requests/{id}"))
        .send()
        .await
        .expect("the request page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("Tags: <code>cli-b</code> (2 URLs)"), "{html}");
    assert!(html.contains("tag <code>cli-b</code>"), "{html}");
    let status_page = daemon
        .client()
        .get("http://localhost/")
        .send()
        .await
        .expect("the status page")
        .text()
        .await
        .expect("html");
    assert!(
        status_page.contains("The tag registry knows the tags of 3 URLs"),
        "{status_page}"
    );
    let db = daemon.db_path().display().to_string();
    let (code, out, err) =
        common::run_with_input(&["history", "--db", &db, "--request", &id], &[], "");
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().expect("header");
    assert!(header.ends_with("\tEDGE\tTAG"), "{header}");
    assert_eq!(
        out.lines()
            .skip(1)
            .filter(|l| l.ends_with("\tcli-b"))
            .count(),
        2,
        "{out}"
    );
    emulator.shutdown().await;
}

async fn wait_until<F, Fut>(daemon: &TestDaemon, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The README's `[tags]` example is a configuration `check-config`
/// takes; a bad one is refused naming each key.
#[test]
fn the_tags_configuration_is_checked() {
    let (code, out, err) = common::check_readme_example("## Purge by tag");
    assert_eq!(code, 0, "{out}{err}");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("purgeq.toml");
    std::fs::write(
        &path,
        "[tags]\nmax_urls = 0\nmax_tags_per_url = 0\nheaders = [\"Cache Tag\"]\n\
         access_log = \"relative.log\"\n",
    )
    .expect("write");
    let (code, out, err) = common::run_with_input(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
        "",
    );
    assert_eq!(code, 78, "{out}{err}");
    for problem in [
        "tags.max_urls: must be at least 1",
        "tags.max_tags_per_url: must be at least 1",
        "tags.headers[0]: \"Cache Tag\" is not a header name",
        "tags.access_log:",
    ] {
        assert!(err.contains(problem), "{problem}: {err}");
    }
}

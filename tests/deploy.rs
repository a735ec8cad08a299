//! From a deploy to purged URLs: `purgeq enqueue --git OLD..NEW` in a
//! real git repository, mapped through `[[deploy.map]]`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::held::HeldDaemon;
use common::{BIN, ENDPOINTS, KEY_VALUE, cdn_section, emulator, fast_knobs};

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn write(repo: &Path, path: &str, text: &str) {
    let path = repo.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, text).expect("write");
}

/// A repository whose history has adds, edits, a delete, a rename, a
/// merge and files outside every map. Returns the first and last commits.
fn repository(repo: &Path) -> (String, String) {
    git(repo, &["init", "-q", "-b", "main"]);
    for (path, text) in [
        ("public/index.html", "home"),
        ("public/app.js", "1"),
        ("public/old.css", "old"),
        ("public/docs/index.html", "docs"),
        ("src/main.rs", "fn main() {}"),
    ] {
        write(repo, path, text);
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "first"]);
    let first = git(repo, &["rev-parse", "HEAD"]);
    write(repo, "public/app.js", "2");
    git(repo, &["rm", "-q", "public/old.css"]);
    git(repo, &["commit", "-q", "-am", "edit and delete"]);
    git(repo, &["checkout", "-q", "-b", "feature"]);
    write(repo, "public/feature.js", "new");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "feature"]);
    git(repo, &["checkout", "-q", "main"]);
    std::fs::create_dir_all(repo.join("public/guide")).expect("dir");
    git(
        repo,
        &["mv", "public/docs/index.html", "public/guide/index.html"],
    );
    git(repo, &["commit", "-q", "-m", "rename"]);
    git(repo, &["merge", "-q", "--no-ff", "-m", "merge", "feature"]);
    write(repo, "src/main.rs", "fn main() { println!(); }");
    git(repo, &["commit", "-q", "-am", "outside the maps"]);
    (first, git(repo, &["rev-parse", "HEAD"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploys_range_purges_exactly_what_it_changed() {
    let emulator = emulator(fast_knobs()).await;
    let host = ENDPOINTS[0].1;
    let daemon = HeldDaemon::start(
        &format!(
            "{}[batch]\nlinger = \"1h\"\n[[deploy.map]]\npath = \"public/\"\nurl = \"http://{host}/\"\n\
             index = [\"index.html\"]\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let repo = tempfile::tempdir().expect("repo");
    let (first, last) = repository(repo.path());
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let config = daemon.config.to_str().expect("utf-8").to_owned();
    let range = format!("{first}..{last}");
    let repo_dir = repo.path().to_str().expect("utf-8");
    let args = [
        "enqueue",
        "--git",
        &range,
        "--repo",
        repo_dir,
        "--config",
        &config,
        "--socket",
        &socket,
        "--verbose",
    ];
    let output = Command::new(BIN).args(args).output().expect("enqueue");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("6 changed files, 7 URLs; 1 files outside every [[deploy.map]]"),
        "{stderr}"
    );
    assert!(stderr.contains("no map   src/main.rs"), "{stderr}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    let urls = daemon.request_urls(&id).await;
    let expected: BTreeSet<String> = [
        "app.js",
        "old.css",
        "feature.js",
        "docs/index.html",
        "docs/",
        "guide/index.html",
        "guide/",
    ]
    .iter()
    .map(|path| format!("http://{host}/{path}"))
    .collect();
    assert_eq!(urls, expected, "the whole range, merge included");
    assert_eq!(view["label"], format!("git {range}"));

    // The last commit alone touched only a file outside the maps.
    let last_only = format!("{last}~1..{last}");
    let output = Command::new(BIN)
        .args([
            "enqueue", "--git", &last_only, "--repo", repo_dir, "--config", &config, "--socket",
            &socket,
        ])
        .output()
        .expect("enqueue");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).trim().is_empty());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 changed files, 0 URLs"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A revision git does not know: its words, exit 65.
    let output = Command::new(BIN)
        .args([
            "enqueue",
            "--git",
            "nope..HEAD",
            "--repo",
            repo_dir,
            "--config",
            &config,
            "--socket",
            &socket,
        ])
        .output()
        .expect("enqueue");
    assert_eq!(output.status.code(), Some(65));
}

#[test]
fn check_config_refuses_maps_no_endpoint_serves() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("purgeq.toml");
    std::fs::write(
        &config,
        "[[cdn.endpoints]]\nid = \"ep\"\nhosts = [\"a.example.com\"]\n\
         [[deploy.map]]\npath = \"public/\"\nurl = \"https://elsewhere.example.org/\"\n\
         [[deploy.map]]\npath = \"/abs\"\nurl = \"https://a.example.com/x\"\n",
    )
    .expect("config");
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "deploy.map[0].url: no configured CDN endpoint serves host \"elsewhere.example.org\""
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("deploy.map[1].path: \"/abs\" must be relative"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "deploy.map[1].url: \"https://a.example.com/x\" must be an http(s) directory URL"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_build_manifests_purge_what_changed_or_went() {
    let emulator = emulator(fast_knobs()).await;
    let host = ENDPOINTS[0].1;
    let daemon = HeldDaemon::start(
        &format!(
            "{}[batch]\nlinger = \"1h\"\n[[deploy.map]]\npath = \"\"\nurl = \"http://{host}/\"\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    std::fs::write(
        &old,
        r#"{"index.html": "a1", "app.css": "b2", "gone.js": "c3", "a b.js": "d4"}"#,
    )
    .expect("old");
    std::fs::write(
        &new,
        r#"{"index.html": "a9", "app.css": "b2", "a b.js": "d5", "new.js": "e5"}"#,
    )
    .expect("new");
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let base = format!("http://{host}/");
    let output = Command::new(BIN)
        .args(["enqueue", "--manifest"])
        .args([&old, &new])
        .args(["--base-url", &base, "--socket", &socket])
        .output()
        .expect("enqueue");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    let urls = daemon.request_urls(&id).await;
    assert!(
        view["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("manifest ") && l.ends_with("new.json")),
        "{view}"
    );
    let expected: BTreeSet<String> = ["index.html", "gone.js", "a%20b.js"]
        .iter()
        .map(|path| format!("{base}{path}"))
        .collect();
    assert_eq!(urls, expected);

    // Without --base-url: through [[deploy.map]] (path "" is the whole
    // build); the same URLs.
    let config = daemon.config.to_str().expect("utf-8").to_owned();
    let output = Command::new(BIN)
        .args(["enqueue", "--manifest"])
        .args([&old, &new])
        .args(["--config", &config, "--socket", &socket])
        .output()
        .expect("enqueue");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--manifest: 3 changed files, 3 URLs"),
        "{stderr}"
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(daemon.request_urls(&id).await, urls);
}

/// Runs the binary with its standard error on a new pseudo-terminal;
/// returns what was drawn there, and standard output.
fn run_on_a_terminal(args: &[&str]) -> (String, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the two ints; the
    // other arguments may be null (no name, default terminal settings).
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    // SAFETY: both descriptors were just opened for us and are owned once.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .expect("spawn");
    let mut terminal = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut drawn = Vec::new();
        let mut chunk = [0u8; 4096];
        // EIO once the child (the last holder of the terminal) is gone.
        while let Ok(n) = terminal.read(&mut chunk) {
            if n == 0 {
                break;
            }
            drawn.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&drawn).into_owned()
    });
    let output = child.wait_with_output().expect("wait");
    let drawn = reader.join().expect("reader");
    (drawn, String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_progress_bar_draws_on_a_terminal_and_not_on_a_pipe() {
    // Each purge takes 3 s: the first look (after 2 s) finds it running.
    let emulator = emulator(purgeq::cdn::emulator::Knobs {
        completion_delay: std::time::Duration::from_secs(3),
        ..fast_knobs()
    })
    .await;
    let daemon = HeldDaemon::start(
        &format!(
            "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"200ms\"\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let host = ENDPOINTS[0].1;
    let url = format!("http://{host}/bar.js");
    let args: Vec<String> = ["enqueue", "--wait", "--socket", &socket, &url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (drawn, stdout) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_on_a_terminal(&args)
    })
    .await
    .expect("terminal run");
    assert!(
        drawn.contains("URLs final"),
        "no bar on the terminal: {drawn:?}"
    );
    assert!(drawn.contains("0/1"), "{drawn:?}");
    assert!(stdout.contains("succeeded: 1 URL"), "{stdout}");

    // The same on a pipe: progress lines, no bar, no escape sequences.
    let url = format!("http://{host}/pipe.js");
    let output = Command::new(BIN)
        .args(["enqueue", "--wait", "--socket", &socket, &url])
        .output()
        .expect("enqueue");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("URLs final") && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("] 1 submitted")
            || stderr.contains("] 1 sending")
            || stderr.contains("] 1 pending"),
        "{stderr}"
    );
    // And --quiet: nothing but the summary.
    let url = format!("http://{host}/quiet.js");
    let output = Command::new(BIN)
        .args(["enqueue", "--wait", "--quiet", "--socket", &socket, &url])
        .output()
        .expect("enqueue");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("] 1 "), "{stderr}");
}

/// The keys `value` may have, and must, by the OpenAPI schema `name`.
fn check_against_schema(value: &serde_json::Value, name: &str) {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../doc/openapi.json")).expect("the OpenAPI document");
    let schema = &doc["components"]["schemas"][name];
    let object = value.as_object().expect("an object");
    for key in schema["required"].as_array().expect("required") {
        let key = key.as_str().expect("key");
        assert!(object.contains_key(key), "{name}: {key} missing in {value}");
    }
    let properties = schema["properties"].as_object().expect("properties");
    for key in object.keys() {
        assert!(
            properties.contains_key(key),
            "{name}: {key} is not documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_with_json_prints_one_document_of_the_documented_shape() {
    let emulator = emulator(fast_knobs()).await;
    let daemon = HeldDaemon::start(
        &format!(
            "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let host = ENDPOINTS[0].1;
    let output = Command::new(BIN)
        .args(["enqueue", "--wait", "--json", "--socket", &socket])
        .args([format!("http://{host}/a.js"), format!("http://{host}/b/")])
        .output()
        .expect("enqueue");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let document: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("one JSON document");
    check_against_schema(&document, "Request");
    assert_eq!(document["state"], "succeeded");
    let items = document["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    for item in items {
        check_against_schema(item, "Item");
        assert_eq!(item["state"], "succeeded");
    }
}

/// Issue 29, item 1: with the README's `index = ["index.html"]`, a change
/// to the root `public/index.html` became a *directory* purge of the site
/// root, and every other URL of the deploy was merged into it. The page at
/// a directory's URL is one object: it is purged as a file, and
/// `--dry-run` names every URL with its kind.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_file_purges_its_page_never_the_directory() {
    let emulator = emulator(fast_knobs()).await;
    let host = ENDPOINTS[0].1;
    let daemon = HeldDaemon::start(
        &format!(
            "{}[[deploy.map]]\npath = \"public/\"\nurl = \"http://{host}/\"\n\
             index = [\"index.html\"]\n",
            cdn_section(&emulator, KEY_VALUE)
        ),
        &[],
    )
    .await;
    let repo = tempfile::tempdir().expect("repo");
    let repo_dir = repo.path();
    git(repo_dir, &["init", "-q", "-b", "main"]);
    write(repo_dir, "public/index.html", "home");
    write(repo_dir, "public/app.js", "1");
    write(repo_dir, "public/docs/index.html", "docs");
    git(repo_dir, &["add", "-A"]);
    git(repo_dir, &["commit", "-q", "-m", "first"]);
    write(repo_dir, "public/index.html", "home 2");
    write(repo_dir, "public/app.js", "2");
    write(repo_dir, "public/docs/index.html", "docs 2");
    git(repo_dir, &["commit", "-q", "-am", "second"]);
    let socket = daemon.socket().to_str().expect("utf-8").to_owned();
    let config = daemon.config.to_str().expect("utf-8").to_owned();
    let repo_arg = repo_dir.to_str().expect("utf-8");
    let enqueue = |extra: &[&str]| {
        Command::new(BIN)
            .args(["enqueue", "--git", "HEAD~1..HEAD", "--repo", repo_arg])
            .args(["--config", &config, "--socket", &socket])
            .args(extra)
            .output()
            .expect("enqueue")
    };

    let output = enqueue(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for path in ["", "index.html", "app.js", "docs/", "docs/index.html"] {
        assert!(
            stdout.contains(&format!("  file       http://{host}/{path}\n")),
            "{path:?} is listed as a file:\n{stdout}"
        );
    }
    assert!(!stdout.contains("directory  "), "{stdout}");
    assert!(stdout.contains("5 files, 0 directories"), "{stdout}");

    let output = enqueue(&["--wait", "--quiet"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, stats) = daemon.get("/v1/stats").await;
    let (_, requests) = daemon.get("/v1/purges?limit=1").await;
    let id = requests["requests"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
    let items = view["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "{view}");
    for item in items {
        assert_eq!(item["kind"], "file", "{item}");
        assert!(item["merged_into"].is_null(), "nothing merged: {item}");
        assert_eq!(item["state"], "succeeded", "{item}");
    }
    assert_eq!(
        stats["quota"]["directories_used"], 0,
        "no directory purge: {stats}"
    );
}

/// Issue 29, item 11: one type error hid the other problems of its
/// section, an unknown enum value named Rust internals, and without
/// `[[cdn.endpoints]]` a map to any host was accepted.
#[test]
fn check_config_reports_every_problem_at_once_in_its_words() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("purgeq.toml");
    std::fs::write(
        &config,
        "[sender]\nburst = -1\nmax_attempts = 0\n[quota]\npromote = \"sometimes\"\n\
         [[deploy.map]]\npath = \"public/\"\nurl = \"https://www.elsewhere.org/\"\n",
    )
    .expect("config");
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "sender.burst: invalid type",
        "sender.max_attempts: must be at least 1",
        "quota.promote: \"sometimes\" is not one of its values (write \"auto\" or \"never\")",
        "deploy.map[0].url: no configured CDN endpoint serves host \"www.elsewhere.org\" \
         (no [[cdn.endpoints]] are configured, so the built-in emulator's hosts are served",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected}\n--- stderr\n{stderr}"
        );
    }
    assert!(!stderr.contains("variant constructor"), "{stderr}");
}

//! The ingest surface: tokens for TCP beyond loopback, idle and slow
//! connections.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::held::HeldDaemon;
use common::{BIN, Edit, TestDaemon};
use serde_json::json;

const ROUTES: &str =
    "[[cdn.endpoints]]\nid = \"ep\"\nhosts = [\"a.example.com\"]\n[batch]\nlinger = \"1h\"\n";

#[test]
fn tcp_beyond_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("purgeq.toml");
    // Refused before anything is bound: any port will do.
    let port = 18088;
    std::fs::write(
        &config,
        format!("[ingest]\nsocket = \"\"\nhttp = \"0.0.0.0:{port}\"\n"),
    )
    .expect("config");
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "ingest.http: 0.0.0.0:{port} is reachable from other hosts"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_clients_need_the_token_and_the_socket_does_not() {
    let token = "s3cret-t0ken-value";
    let mut daemon = TestDaemon::start(ROUTES).await;
    std::fs::write(daemon.dir.path().join("token"), format!("{token}\n")).expect("token");
    let token_file = daemon.dir.path().join("token");
    daemon.edit_config(|text| {
        text.edit(
            "http = \"127.0.0.1:0\"\n",
            &format!(
                "http = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
                token_file.display()
            ),
        )
    });
    assert!(daemon.terminate().success());
    daemon.launch().await;
    let port = daemon.http.port();

    let tcp = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/purges");
    let body = json!({"urls": ["http://a.example.com/x"]});
    let response = tcp.post(&url).json(&body).send().await.expect("post");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = tcp
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 401);
    // Issue 29, item 12: a wrong token is told it is wrong, not missing.
    let said = response.text().await.expect("body");
    assert!(said.contains("not this daemon's ingest.token"), "{said}");
    let response = tcp
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let response = tcp
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(response.status(), 200, "health checks need no token");
    let (status, _) = daemon.post("/v1/purges", &body).await;
    assert_eq!(status, 202, "the socket relies on its file mode");

    let http = format!("127.0.0.1:{port}");
    let output = Command::new(BIN)
        .args(["enqueue", "--http", &http, "http://a.example.com/y"])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(BIN)
        .args(["enqueue", "--http", &http, "http://a.example.com/y"])
        .env("PURGEQ_TOKEN", token)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(BIN)
        .args(["status", "--http", &http, "--config"])
        .arg(&daemon.config)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "the configuration's token is used: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !daemon.logs().contains(token),
        "the token never appears in logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_dribbling_connections_do_not_stall_others() {
    let daemon = TestDaemon::start(ROUTES).await;
    // 300 connections that never send a byte, and 20 that dribble a
    // request's headers one byte at a time.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(daemon.http).expect("connect"))
        .collect();
    let mut dribblers: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(daemon.http).expect("connect"))
        .collect();
    for stream in &mut dribblers {
        stream
            .write_all(b"POST /v1/purges HTTP/1.1\r\nHo")
            .expect("write");
    }
    // Meanwhile real clients are served promptly, on TCP and on the socket.
    let started = Instant::now();
    for i in 0..20 {
        let (status, _) = daemon
            .post(
                "/v1/purges",
                &json!({"urls": [format!("http://a.example.com/{i}")]}),
            )
            .await;
        assert_eq!(status, 202);
        let response = reqwest::Client::new()
            .get(format!("http://{}/healthz", daemon.http))
            .send()
            .await
            .expect("tcp while others idle");
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served while 320 connections hang"
    );

    // Clients that never finish their headers are cut off
    // (header read timeout, 10 s).
    let mut stream = dribblers.pop().expect("a dribbler");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let deadline = Instant::now();
    let mut buffer = Vec::new();
    let _ = stream.read_to_end(&mut buffer);
    assert!(
        deadline.elapsed() < Duration::from_secs(19),
        "the slow client was cut off"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_backlog_limit_intents_are_refused_not_queued() {
    let mut daemon = TestDaemon::start(ROUTES).await;
    daemon.edit_config(|text| text.edit("[ingest]\n", "[ingest]\nmax_pending = 5\n"));
    assert!(daemon.terminate().success());
    daemon.launch().await;
    let urls = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("http://a.example.com/{i}"))
            .collect()
    };
    let (status, _) = daemon
        .post("/v1/purges", &json!({ "urls": urls(0, 3) }))
        .await;
    assert_eq!(status, 202);
    let response = daemon
        .client()
        .post("http://localhost/v1/purges")
        .json(&json!({ "urls": urls(3, 3) }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "BacklogFull");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("ingest.max_pending = 5"), "{message}");
    // The request itself is the overflow (issue 12, item 15).
    assert!(
        message.contains("this request's 3 URLs would make 6 waiting")
            && message.contains("(3 waiting now)"),
        "{message}"
    );
    // Within the limit: still accepted; nothing refused was half-stored.
    let (status, _) = daemon
        .post("/v1/purges", &json!({ "urls": urls(3, 2) }))
        .await;
    assert_eq!(status, 202);
    assert_eq!(common::items(&daemon.stats().await, "pending"), 5);
}

/// Posts one URL; returns the status and the error message, if any.
async fn post_one(daemon: &TestDaemon, n: usize) -> (u16, String) {
    let (status, body) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://a.example.com/file-{n}")] }),
        )
        .await;
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, message)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_database_file_refuses_intents_until_it_is_back() {
    let daemon = TestDaemon::start(ROUTES).await;
    assert_eq!(post_one(&daemon, 0).await.0, 202);

    // `rm` while a hard link keeps the inode, so it can be put back.
    let db = daemon.db_path();
    let kept = db.with_extension("kept");
    std::fs::hard_link(&db, &kept).expect("link");
    std::fs::remove_file(&db).expect("rm");

    let (status, message) = post_one(&daemon, 1).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("was removed"), "{message}");
    daemon.assert_not_ready("was removed").await;
    assert_eq!(daemon.get("/healthz").await.0, 200);

    std::fs::hard_link(&kept, &db).expect("put back");
    assert_eq!(daemon.get("/readyz").await.0, 200);
    assert_eq!(post_one(&daemon, 2).await.0, 202);
    // Nothing refused was stored; both accepted intents are there.
    let stats = daemon.stats().await;
    let total: u64 = ["pending", "sending", "submitted", "succeeded"]
        .iter()
        .map(|s| common::items(&stats, s))
        .sum();
    assert_eq!(total, 2, "{stats}");
}

/// Makes `path` unwritable even for root (`chattr +i`), or by mode for
/// others; `false` puts it back.
fn set_read_only(path: &std::path::Path, read_only: bool) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let flag = if read_only { "+i" } else { "-i" };
        let status = Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .expect("chattr");
        assert!(
            status.success(),
            "chattr {flag} failed: run as non-root, or on ext4/xfs"
        );
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = if read_only { 0o444 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_file_is_reported_and_never_a_crash_loop() {
    let mut daemon = TestDaemon::start(ROUTES).await;
    assert_eq!(post_one(&daemon, 0).await.0, 202);
    let db = daemon.db_path();

    // Made read-only under the running daemon.
    set_read_only(&db, true);
    let (status, message) = post_one(&daemon, 1).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("no longer writable"), "{message}");
    daemon.assert_not_ready("no longer writable").await;

    // Restarted on it: the daemon runs and says why, rather than exit
    // and be restarted by systemd again and again.
    assert!(daemon.terminate().success());
    daemon.launch().await;
    daemon.assert_not_ready("no longer writable").await;
    let (status, message) = post_one(&daemon, 2).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("no longer writable"), "{message}");
    // Reads still work: the queue can be inspected.
    assert_eq!(common::items(&daemon.stats().await, "pending"), 1);

    set_read_only(&db, false);
    assert_eq!(daemon.get("/readyz").await.0, 200);
    assert_eq!(post_one(&daemon, 3).await.0, 202);
    assert_eq!(common::items(&daemon.stats().await, "pending"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_dribbles_in_is_cut_off_with_408() {
    let daemon = HeldDaemon::start(ROUTES, &[]).await;
    daemon
        .reload_with(&[("ingest.body_timeout", "1s")])
        .await
        .expect("reloaded");

    // Honest headers, then 10 of the 100 bytes promised, then silence.
    let started = Instant::now();
    let mut stream = TcpStream::connect(daemon.http()).expect("connect");
    stream
        .write_all(
            b"POST /v1/purges HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"urls\": [",
        )
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off after the 1 s body timeout, not the client's patience"
    );
    // A body sent in time is unaffected.
    let (status, _) = daemon
        .post("/v1/purges", &json!({"urls": ["http://a.example.com/x"]}))
        .await;
    assert_eq!(status, 202);
}

/// Issue 12, item 16: `Content-Length: 99999999999` waited for the body and
/// ended in a 408 with axum's text; the size alone says it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_declared_oversize_body_is_refused_at_once() {
    let daemon = HeldDaemon::start(ROUTES, &[]).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(daemon.http()).expect("connect");
    stream
        .write_all(
            b"POST /v1/purges HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 99999999999\r\n\r\n{\"urls\": [",
        )
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("PayloadTooLarge") || answer.contains("99999999999"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
}

/// `VmRSS` and `VmHWM` (the peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .expect("a /proc field")
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One slow upload: headers for an 8 MB body (declared, or chunked), then
/// `sent` bytes of it in 64 KiB pieces, and never the rest. Returns the
/// connection (held open) and what the daemon answered, if it did.
fn slow_upload(addr: std::net::SocketAddr, chunked: bool, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let length = if chunked {
        "Transfer-Encoding: chunked\r\n".to_owned()
    } else {
        "Content-Length: 8300000\r\n".to_owned()
    };
    let head = format!(
        "POST /v1/purges HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{length}\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return stream;
    }
    let piece = vec![b' '; 64 * 1024];
    let mut written = 0;
    while written < sent {
        let framed = if chunked {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(&piece);
            framed.extend_from_slice(b"\r\n");
            framed
        } else {
            piece.clone()
        };
        // Refused (503) and closed by the daemon: the client stops.
        if stream.write_all(&framed).is_err() {
            break;
        }
        written += piece.len();
    }
    stream
}

/// Issue 28, item 5: 100 clients each sending an 8 MB body and never
/// finishing took the daemon from 84 MB to 839 MB. With
/// `ingest.max_body_bytes_in_flight` (32 MiB by default) the peak stays
/// bounded, the refused uploads are answered 503 at once, a small intent
/// is still taken, and the memory comes back afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn many_slow_large_bodies_keep_memory_bounded() {
    let daemon = TestDaemon::start(ROUTES).await;
    let pid = daemon.pid();
    // Warm up: one ordinary request, so the baseline is a working daemon.
    let (status, _) = daemon
        .post(
            "/v1/purges",
            &json!({"urls": ["http://a.example.com/warm.js"]}),
        )
        .await;
    assert_eq!(status, 202);
    let (before, _) = memory_mib(pid);

    let addr = daemon.http;
    let uploads: Vec<TcpStream> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|i| scope.spawn(move || slow_upload(addr, i % 2 == 1, 8_000_000)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("upload thread"))
            .collect()
    });
    // Every upload that could not be held was answered at once.
    let mut refused = 0;
    for mut stream in uploads.iter().map(|s| s.try_clone().expect("clone")) {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut answer = [0u8; 64];
        if let Ok(n) = stream.read(&mut answer)
            && String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 503")
        {
            refused += 1;
        }
    }
    assert!(refused >= 90, "{refused} of 100 uploads refused with 503");

    // Others are still served while the held uploads wait.
    let mut served = false;
    for _ in 0..20 {
        let (status, body) = daemon
            .post(
                "/v1/purges",
                &json!({"urls": ["http://a.example.com/meanwhile.js"]}),
            )
            .await;
        if status == 202 {
            served = true;
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a small intent was taken during the uploads");
    let (during, peak) = memory_mib(pid);
    drop(uploads);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = memory_mib(pid);
    eprintln!("RSS MiB: before {before}, during {during}, peak {peak}, after {after}");
    assert!(
        peak < before + 150,
        "peak {peak} MiB, from {before} MiB: 100 x 8 MB would be 800"
    );
    assert!(
        after <= before + 40,
        "after {after} MiB, from {before} MiB: the memory came back"
    );
}

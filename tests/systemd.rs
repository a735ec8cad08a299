//! systemd integration without systemd: a test `NOTIFY_SOCKET` receives the
//! daemon's notifications, and listeners are passed the way socket
//! activation passes them (`LISTEN_FDS`, descriptors 3 and 4).

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, TestDaemon, unix_client};
use serde_json::{Value, json};

const HOLD: &str =
    "[batch]\nlinger = \"1h\"\n[[cdn.endpoints]]\nid = \"ep-a\"\nhosts = [\"a.example.com\"]\n";

/// Reads notifications until one contains `wanted`; returns it.
fn expect_message(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            seen.push(message.clone());
            if message.lines().any(|l| l == wanted) {
                return message;
            }
        }
    }
    panic!("no {wanted} among {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notifies_ready_reloading_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let notify = path.to_str().expect("utf-8").to_owned();
    let mut daemon = TestDaemon::start_with_env(
        HOLD,
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    )
    .await;
    let mut seen = Vec::new();

    let ready = expect_message(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=0 pending, 0 in flight"), "{ready}");
    expect_message(&socket, "WATCHDOG=1", &mut seen);

    let (status, _) = daemon
        .post("/v1/purges", &json!({"urls": ["http://a.example.com/x"]}))
        .await;
    assert_eq!(status, 202);
    let status = expect_message(&socket, "STATUS=1 pending, 0 in flight", &mut seen);
    assert!(!status.contains("READY"));

    daemon.signal("HUP");
    let reloading = expect_message(&socket, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    expect_message(&socket, "READY=1", &mut seen);

    daemon.signal("TERM");
    expect_message(&socket, "STOPPING=1", &mut seen);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_passed_listeners_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket_path = dir.path().join("activated.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind unix");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let tcp_addr = tcp.local_addr().expect("addr");
    let config = dir.path().join("purgeq.toml");
    // The configured listeners differ: the passed ones must win.
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[ingest]\nsocket = \"\"\nhttp = \"\"\n{HOLD}",
            dir.path().join("purgeq.db").display()
        ),
    )
    .expect("config");

    let spawn = || {
        let (unix_fd, tcp_fd) = (unix.as_raw_fd(), tcp.as_raw_fd());
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" serve --config \"$1\"",
            ])
            .arg(BIN)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec:
        // move the two listeners to descriptors 3 and 4, as systemd does.
        unsafe {
            command.pre_exec(move || {
                let a = libc::fcntl(unix_fd, libc::F_DUPFD, 100);
                let b = libc::fcntl(tcp_fd, libc::F_DUPFD, 100);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().expect("spawn")
    };
    let client = unix_client(&socket_path);
    let healthy = |client: reqwest::Client| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get("http://localhost/healthz").send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not answer on the passed socket"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let mut child = spawn();
    healthy(client.clone()).await;
    let response = reqwest::Client::new()
        .post(format!("http://{tcp_addr}/v1/purges"))
        .json(&json!({"urls": ["http://a.example.com/over-tcp"]}))
        .send()
        .await
        .expect("tcp");
    assert_eq!(response.status(), 202);

    // While the daemon is down, the kernel keeps queueing connections on
    // the passed socket; the next start answers them.
    child.kill().expect("kill");
    child.wait().expect("wait");
    let pending = tokio::spawn({
        // A new client: the pooled connection died with the process.
        let client = unix_client(&socket_path);
        async move {
            let response = client
                .post("http://localhost/v1/purges")
                .json(&json!({"urls": ["http://a.example.com/during-restart"]}))
                .send()
                .await
                .expect("post during restart");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut child = spawn();
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("answered after the restart")
        .expect("task");
    assert_eq!(status, 202, "{body}");

    let stats: Value = unix_client(&socket_path)
        .get("http://localhost/v1/stats")
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["items"]["pending"], 2);

    // A clean stop leaves systemd's socket file alone.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(child.wait().expect("wait").success());
    assert!(socket_path.exists());
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_is_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("purgeq.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n",
            dir.path().join("p.db").display()
        ),
    )
    .expect("config");
    let file = std::fs::File::create(dir.path().join("not-a-socket")).expect("file");
    let fd = file.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"",
        ])
        .arg(BIN)
        .arg(&config)
        .env("PURGEQ__INGEST__SOCKET", dir.path().join("p.sock"))
        .env("PURGEQ__INGEST__HTTP", "");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let high = libc::fcntl(fd, libc::F_DUPFD, 100);
            if high < 0 || libc::dup2(high, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a clean error exit, not a crash"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot take the sockets passed by systemd"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

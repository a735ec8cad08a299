//! Starting `purgeq serve` the way a user does: a config file in a temp
//! dir, the real binary, a real socket and a real TCP port ([`TestDaemon`]);
//! or the daemon held in the test's process ([`held::HeldDaemon`]) when no
//! process boundary is needed.

#![allow(dead_code)]

pub mod caches;
pub mod held;
pub mod postgres;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use purgeq::cdn::KeyValue;
use purgeq::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, EmulatorHandle, Knobs};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_purgeq");

pub const SUBSCRIPTION: &str = "11111111-2222-4333-8444-555555555555";
pub const KEY_ID: &str = "test-key-id";
pub const KEY_VALUE: &str = "test-key-value-secret";
pub const ENDPOINTS: [(&str, &str); 3] = [
    ("aaaaaaaa-0000-4000-8000-00000000000a", "a.example.com"),
    ("bbbbbbbb-0000-4000-8000-00000000000b", "b.example.com"),
    ("cccccccc-0000-4000-8000-00000000000c", "c.example.com"),
];

/// A checked text edit for test configurations: `from` must be in the
/// text, so an edit can never silently do nothing (one test's
/// `.replace("max_attempts = 5", "")` matched nothing for months).
pub trait Edit {
    fn edit(&self, from: &str, to: &str) -> String;
}

impl Edit for str {
    fn edit(&self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "the configuration has no {from:?} to replace:\n{self}"
        );
        self.replace(from, to)
    }
}

/// An emulator with the three test endpoints and generous limits.
pub async fn emulator(knobs: Knobs) -> EmulatorHandle {
    let endpoints = ENDPOINTS
        .iter()
        .map(|(id, host)| EmulatedEndpoint::new(*id, &[host]))
        .collect();
    let mut config = EmulatorConfig::new(SUBSCRIPTION, KEY_ID, KeyValue::new(KEY_VALUE), endpoints);
    config.knobs = knobs;
    Emulator::start(config).await.expect("emulator")
}

/// Emulator knobs for tests: fast completion, no rate or quota trouble.
pub fn fast_knobs() -> Knobs {
    Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        files_per_day: 1_000_000,
        directories_per_day: 1_000_000,
        completion_delay: Duration::from_millis(100),
        ..Knobs::default()
    }
}

/// The `[cdn]` section pointing at `emulator` with the three endpoints.
pub fn cdn_section(emulator: &EmulatorHandle, key_value: &str) -> String {
    let mut text = format!(
        "[cdn]\nbase_url = \"{}\"\nsubscription_id = \"{SUBSCRIPTION}\"\nkey_id = \"{KEY_ID}\"\n\
         key_value = \"{key_value}\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\n",
        emulator.base_url()
    );
    for (id, host) in ENDPOINTS {
        text.push_str(&format!(
            "[[cdn.endpoints]]\nid = \"{id}\"\nhosts = [\"{host}\"]\n"
        ));
    }
    text
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub config: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl TestDaemon {
    /// Writes a config (`extra` is appended: sections of its own) and starts
    /// the daemon.
    pub async fn start(extra: &str) -> TestDaemon {
        Self::start_with_env(extra, &[]).await
    }

    /// [`TestDaemon::start`] with extra environment variables.
    pub async fn start_with_env(extra: &str, env: &[(&str, &str)]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("purgeq.sock");
        // Port 0: the daemon binds a free port and logs it; read after each
        // start (no bind-then-release race for a "free" port).
        let http = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = dir.path().join("purgeq.toml");
        let mut daemon = TestDaemon {
            socket,
            http,
            config,
            dir,
            child: None,
            starts: 0,
        };
        daemon.write_config(extra);
        daemon.launch_with_env(env).await;
        daemon
    }

    pub fn write_config(&self, extra: &str) {
        // A test that brings its own `[store]` (fleet mode's store.url)
        // gets no SQLite file.
        let store = if extra.contains("[store]") {
            String::new()
        } else {
            format!(
                "[store]\npath = \"{}\"\n",
                self.dir.path().join("purgeq.db").display()
            )
        };
        let text = format!(
            "{store}[ingest]\nsocket = \"{}\"\nhttp = \"{}\"\n[log]\nlevel = \"info,purgeq=debug\"\n{extra}",
            self.socket.display(),
            self.http
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Rewrites the config file through `edit` (apply with a restart or
    /// SIGHUP).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(&self.config, edit(text)).expect("write config");
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("purgeq.db")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("daemon-{}.log", self.starts))
    }

    /// Spawns the binary and waits until it answers on its socket.
    pub async fn launch(&mut self) {
        self.launch_with_env(&[]).await;
    }

    /// [`TestDaemon::launch`] with extra environment variables.
    pub async fn launch_with_env(&mut self, env: &[(&str, &str)]) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn purgeq serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.try_get("/healthz").await {
                if let Some(http) = self.bound_http() {
                    self.http = http;
                }
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "daemon exited with {status} while starting:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The TCP address the last start logged as bound, on loopback.
    fn bound_http(&self) -> Option<SocketAddr> {
        let logs = std::fs::read_to_string(self.log_path()).ok()?;
        let line = logs
            .lines()
            .find(|l| l.contains("listening") && l.contains("tcp:"))?;
        let addr: String = line
            .split("tcp:")
            .nth(1)?
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        let addr: SocketAddr = addr.parse().ok()?;
        Some(SocketAddr::from(([127, 0, 0, 1], addr.port())))
    }

    /// Everything the daemon printed, every start.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.path().join(format!("daemon-{n}.log"));
                format!(
                    "--- start {n}\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit in time:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> reqwest::Client {
        unix_client(&self.socket)
    }

    async fn try_get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        try_get(&self.client(), path).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        get(&self.client(), path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        post(&self.client(), path, body).await
    }

    /// `/readyz` answers 503 with a reason containing `why`.
    pub async fn assert_not_ready(&self, why: &str) {
        assert_not_ready(&self.client(), why).await;
    }

    pub async fn stats(&self) -> Value {
        self.get("/v1/stats").await.1
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        self.client()
            .get("http://localhost/metrics")
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// Waits until `check(stats)` holds, or panics with the logs.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for_stats(&self.client(), what, timeout, check, || self.logs()).await
    }
}

async fn try_get(client: &reqwest::Client, path: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = client.get(format!("http://localhost{path}")).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// GET over a socket client: status and JSON body (`null` if none).
pub async fn get(client: &reqwest::Client, path: &str) -> (u16, Value) {
    try_get(client, path).await.expect("GET over the socket")
}

/// POST of a JSON body over a socket client.
pub async fn post(client: &reqwest::Client, path: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("http://localhost{path}"))
        .json(body)
        .send()
        .await
        .expect("POST over the socket");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `/readyz` answers 503 with a reason containing `why`.
pub async fn assert_not_ready(client: &reqwest::Client, why: &str) {
    let (status, ready) = get(client, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let reason = ready["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(why),
        "not ready for another reason: {ready}"
    );
}

/// Polls `/v1/stats` until `check` holds; panics with the last stats and
/// `logs()` at the deadline.
pub async fn wait_for_stats(
    client: &reqwest::Client,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
    logs: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = get(client, "/v1/stats").await.1;
        if check(&stats) {
            return stats;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; last stats {stats:#}\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn unix_client(socket: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(socket.to_owned())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A chart's total for one series: the sum over its slots.
pub fn series_total(counts: &purgeq::store::Counts, series: &str) -> i64 {
    counts
        .iter()
        .filter(|(_, s, _)| s == series)
        .map(|(_, _, n)| n)
        .sum()
}

/// A quota day's chart (the ledger's changes), summed per series, by
/// series name.
pub async fn quota_chart_totals(
    store: &purgeq::store::Store,
    subscription: &str,
    day: &str,
) -> Vec<(String, i64)> {
    let chart = store
        .quota_through_the_day(&purgeq::store::QuotaAccount {
            subscription_id: subscription.into(),
            day: day.into(),
        })
        .await
        .expect("quota chart");
    let mut totals = std::collections::BTreeMap::new();
    for (_, series, n) in chart {
        *totals.entry(series).or_insert(0) += n;
    }
    totals.into_iter().collect()
}

/// The count of items in `state` from `/v1/stats`.
pub fn items(stats: &Value, state: &str) -> u64 {
    stats["items"][state].as_u64().unwrap_or(0)
}

/// `purgeq ARGS` with `env` set and `input` on standard input: exit code,
/// standard output, standard error.
pub fn run_with_input(
    args: &[&str],
    env: &[(&str, &str)],
    input: impl AsRef<[u8]>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run purgeq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_ref())
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The first TOML example under `heading` in the README, as
/// `purgeq check-config` reads it: exit code, stdout, stderr.
pub fn check_readme_example(heading: &str) -> (i32, String, String) {
    let example = include_str!("../../README.md")
        .split(heading)
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("a toml example under {heading:?} in the README"));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("purgeq.toml");
    std::fs::write(&path, example).expect("write");
    run_with_input(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
        "",
    )
}

//! The daemon held in the test's own process: [`purgeq::daemon::Daemon`]
//! started from a config file plus `PURGEQ__…` overrides, on a real SQLite
//! file, a real Unix socket and a real TCP port (port 0: no race for a
//! free one). A reload returns once every part uses the new settings, so a
//! test never sleeps to wait for one.
//!
//! Tests that prove what only a process can (signals, `kill -9`, socket
//! activation, sd_notify, what the binary logs) use [`super::TestDaemon`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use purgeq::config::Settings;
use purgeq::daemon::{Daemon, RunOptions};
use serde_json::Value;

pub struct HeldDaemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    daemon: Option<Daemon>,
}

impl HeldDaemon {
    /// Writes a config (`extra` is appended: sections of its own) and starts
    /// the daemon with `overrides` (`("batch.linger", "1h")` sets
    /// `PURGEQ__BATCH__LINGER`).
    pub async fn start(extra: &str, overrides: &[(&str, &str)]) -> HeldDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("purgeq.toml");
        let text = format!(
            "[store]\npath = \"{}\"\n[ingest]\nsocket = \"{}\"\nhttp = \"127.0.0.1:0\"\n{extra}",
            dir.path().join("purgeq.db").display(),
            dir.path().join("purgeq.sock").display(),
        );
        std::fs::write(&config, text).expect("write config");
        let mut held = HeldDaemon {
            dir,
            config,
            daemon: None,
        };
        let settings = held.settings(overrides).expect("valid settings");
        let options = RunOptions {
            config_path: Some(held.config.clone()),
            ..RunOptions::default()
        };
        held.daemon = Some(
            Daemon::start(settings, options)
                .await
                .expect("daemon starts"),
        );
        held
    }

    /// The config file with `overrides` on top, parsed as `serve` does.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Result<Settings, String> {
        let env: HashMap<String, String> = overrides
            .iter()
            .map(|(key, value)| {
                let key = format!("PURGEQ__{}", key.replace('.', "__").to_uppercase());
                (key, (*value).to_owned())
            })
            .collect();
        Settings::load(Some(&self.config), &env).map_err(|e| e.to_string())
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    /// Applies the config file with `overrides` on top; returns once every
    /// part uses it (or why it was refused).
    pub async fn reload_with(&self, overrides: &[(&str, &str)]) -> Result<(), String> {
        let settings = self.settings(overrides)?;
        self.daemon().reload_with(settings).await
    }

    /// Stops as SIGTERM does, and waits for it.
    pub async fn stop(mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().await;
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.daemon().addresses().socket.clone().expect("a socket")
    }

    pub fn http(&self) -> SocketAddr {
        self.daemon().addresses().http.expect("a TCP listener")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("purgeq.db")
    }

    pub fn client(&self) -> reqwest::Client {
        super::unix_client(&self.socket())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        super::get(&self.client(), path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        super::post(&self.client(), path, body).await
    }

    /// `/readyz` answers 503 with a reason containing `why`.
    pub async fn assert_not_ready(&self, why: &str) {
        super::assert_not_ready(&self.client(), why).await;
    }

    /// The URLs of request `id`, as the daemon lists them.
    pub async fn request_urls(&self, id: &str) -> std::collections::BTreeSet<String> {
        let (_, view) = self.get(&format!("/v1/purges/{id}")).await;
        view["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["url"].as_str().expect("url").to_owned())
            .collect()
    }

    pub async fn stats(&self) -> Value {
        self.get("/v1/stats").await.1
    }

    /// Waits until `check(stats)` holds, or panics with the last stats.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        super::wait_for_stats(&self.client(), what, timeout, check, String::new).await
    }
}

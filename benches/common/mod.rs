//! Helpers shared by the benchmarks.

// Each benchmark uses part of the helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release daemon, started in a temp dir with `[store]` and `[ingest]`
/// (the socket only) written for it, `store_extra` and `ingest_extra` added
/// to those tables, and `sections` appended.
pub struct BenchDaemon {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    pub fn start(
        binary: &str,
        store_extra: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        Self::start_on(binary, None, store_extra, ingest_extra, sections)
    }

    /// As [`BenchDaemon::start`], on the database `db` (prepared by the
    /// benchmark) instead of a new one.
    pub fn start_on(
        binary: &str,
        db: Option<&std::path::Path>,
        store_extra: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db.map_or_else(|| dir.path().join("purgeq.db"), PathBuf::from);
        let store = format!("[store]\npath = \"{}\"\n{store_extra}", db.display());
        Self::start_in(binary, dir, &store, ingest_extra, sections)
    }

    /// As [`BenchDaemon::start`], with `store` as the whole `[store]`
    /// section (fleet mode's `url`).
    pub fn start_with_store(
        binary: &str,
        store: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(binary, dir, store, ingest_extra, sections)
    }

    fn start_in(
        binary: &str,
        dir: tempfile::TempDir,
        store: &str,
        ingest_extra: &str,
        sections: &str,
    ) -> BenchDaemon {
        let socket = dir.path().join("purgeq.sock");
        let config = dir.path().join("purgeq.toml");
        std::fs::write(
            &config,
            format!(
                "{store}[ingest]\nsocket = \"{}\"\nhttp = \"\"\n{ingest_extra}{sections}",
                socket.display()
            ),
        )
        .expect("config");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn purgeq");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        BenchDaemon {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) used so far by process `pid`, from
/// `/proc/PID/stat` (clock ticks are 100 per second on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11) + field(12)) as f64 / 100.0
}

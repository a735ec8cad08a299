//! Typed settings: built-in defaults, overridden by a TOML file, overridden
//! by `PURGEQ__SECTION__KEY` environment variables.
//!
//! This is the only module that reads the environment (it is handed the
//! variables, so tests can pass their own). Everything is parsed and checked
//! once, here, and every problem is reported with the key it concerns and the
//! file it came from, all at once rather than one per restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::cdn::{Credentials, KeyId, KeyValue};
use crate::target::{HostPattern, Router};

/// Where the file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/purgeq/purgeq.toml";

/// The systemd credential name holding the key value.
pub const KEY_VALUE_CREDENTIAL: &str = "cdn-key-value";

/// sysexits' EX_CONFIG, the exit code for a bad configuration.
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub store: StoreSettings,
    pub ingest: IngestSettings,
    pub cdn: CdnSettings,
    pub batch: BatchSettings,
    pub sender: SenderSettings,
    pub tracker: TrackerSettings,
    pub quota: QuotaSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub daemon: DaemonSettings,
    pub deploy: DeploySettings,
    pub ui: UiSettings,
    pub fleet: FleetSettings,
    /// `[[origin_cache]]`: caches in front of the origin, purged before
    /// the CDN (issue 34).
    pub origin_cache: Vec<OriginCacheSettings>,
    /// `[verify]`: after the CDN says done, check the edge (issue 33).
    pub verify: VerifySettings,
    /// `[tags]`: the registry behind purges by tag (issue 35).
    pub tags: TagSettings,
    /// Derived by [`Settings::load`]: never read from the file.
    #[serde(skip)]
    pub derived: Derived,
}

/// A secret read from configuration (the TCP bearer token): redacted in
/// `Debug`, never serialized.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(value.into()))
    }

    /// Constant-time comparison, so response timing reveals nothing.
    pub fn matches(&self, candidate: &str) -> bool {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        let expected = self.0.expose_secret().as_bytes();
        expected.len() == candidate.len() && bool::from(expected.ct_eq(candidate.as_bytes()))
    }
}

impl IngestSettings {
    /// The TCP token's text, for the command-line client that sends it.
    pub fn token_text(&self) -> Option<String> {
        use secrecy::ExposeSecret;
        match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.0.expose_secret().to_owned()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_owned()),
            (None, None) => None,
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Values computed from the raw settings during validation.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    pub source: Option<PathBuf>,
    pub socket_mode: u32,
    pub http_addr: Option<SocketAddr>,
    pub socket_path: Option<PathBuf>,
    pub router: Router,
    /// The TCP bearer token, from `ingest.token` or `ingest.token_file`.
    pub tcp_token: Option<Secret>,
    /// `None` when no credentials are configured (the emulator is used),
    /// and always for a [`Reader::Client`], which reads no secret.
    pub credentials: Option<Credentials>,
    /// Credentials are configured, so the daemon talks to the real CDN
    /// (its endpoints, not the built-in emulator's): what a client needs
    /// to know of them.
    pub credentials_configured: bool,
    pub base_url: Option<Url>,
    /// `quota.utc_offset`, parsed: where quota days begin.
    pub quota_offset: QuotaOffset,
    /// `store.url`, parsed: the fleet's PostgreSQL database, when set.
    pub store_url: Option<crate::database_url::DatabaseUrl>,
    /// `fleet.node_name`, parsed, or the host name when it is not set.
    /// `None` only before validation: read it with [`Settings::node_name`].
    pub node_name: Option<crate::fleet::NodeName>,
    /// Who reads the settings: a client leaves the secret files unread.
    pub reader: Reader,
    /// The host names a TCP request's `Host` may carry besides addresses
    /// and localhost (`ingest::browser`): `ingest.allowed_hosts`, lower-case,
    /// and this machine's name.
    pub allowed_hosts: Vec<String>,
    /// Which `[[origin_cache]]` layers hold which hosts.
    pub origin_routes: crate::origin_cache::LayerRoutes,
}

/// Who loads the settings: the daemon (and `check-config`, `endpoints`)
/// reads every secret file; a client command reads none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reader {
    #[default]
    Daemon,
    Client,
}

/// Facts about the process, not settings: read from its environment once,
/// apart from the configuration (a reload does not change them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// `RUST_LOG`, which overrides `log.level` when set.
    pub rust_log: Option<String>,
    /// Standard error is the systemd journal (`JOURNAL_STREAM` is set).
    pub under_journal: bool,
    /// systemd listens for `sd_notify` messages (`NOTIFY_SOCKET` is set).
    pub notify_socket: bool,
}

impl Process {
    pub fn from_env(env: &HashMap<String, String>) -> Process {
        Process {
            rust_log: env.get("RUST_LOG").filter(|v| !v.is_empty()).cloned(),
            under_journal: env.contains_key("JOURNAL_STREAM"),
            notify_socket: env.contains_key("NOTIFY_SOCKET"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    pub path: PathBuf,
    /// `postgres://user@host:port/db`: fleet mode, the store on a shared
    /// PostgreSQL database instead of the file at `path`. A secret, since
    /// the URL may hold a password: never shown (read it parsed, from
    /// [`Derived::store_url`], whose `Display` leaves the password out).
    pub url: Option<Secret>,
    pub synchronous: Synchronous,
    /// Largest size of the database file; 0 for no cap.
    pub max_size_bytes: u64,
    /// Disk space set aside next to the database (`<path>.reserve`) and
    /// given back on a full disk, so queued work can still be recorded
    /// (see `store::reserve`); 0 disables it.
    pub reserve_bytes: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("purgeq.db"),
            url: None,
            synchronous: Synchronous::Full,
            max_size_bytes: 0,
            reserve_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Unix socket path; empty disables it.
    pub socket: String,
    /// Octal file mode of the socket, e.g. `"0660"`.
    pub socket_mode: String,
    /// TCP listen address; empty disables it.
    pub http: String,
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, over every listener: past
    /// it, new bodies get 503 with Retry-After (`ingest::body_budget`).
    /// Read at start.
    pub max_body_bytes_in_flight: usize,
    pub max_urls_per_request: usize,
    pub max_url_length: usize,
    /// Bearer token TCP clients must send; required when `http` is not
    /// loopback. The Unix socket relies on its file mode instead.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// Open connections per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Past this many pending URLs, new intents are refused (503 with
    /// Retry-After); 0 for no limit.
    pub max_pending: u64,
    /// Host names TCP clients may use besides IP addresses and localhost
    /// (and this machine's name) on a listener without a token: anything
    /// else is refused, so a web page cannot reach the API through DNS
    /// rebinding. With a token any name works (`ingest::browser`).
    pub allowed_hosts: Vec<String>,
    /// The longest intake waits for the store before it answers 503 with
    /// Retry-After (a black-holed PostgreSQL, a locked or stalled SQLite).
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// A client must send complete request headers within this time.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// And its whole body within this time after the headers.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            socket: "purgeq.sock".to_owned(),
            socket_mode: "0660".to_owned(),
            http: "127.0.0.1:8088".to_owned(),
            max_body_bytes: 8 * 1024 * 1024,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            max_urls_per_request: 10_000,
            max_url_length: 2048,
            token: None,
            token_file: None,
            max_connections: 1024,
            max_pending: 1_000_000,
            header_timeout: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            store_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdnSettings {
    /// Empty: the real service ([`crate::cdn::DEFAULT_BASE_URL`]), or the
    /// built-in emulator when no credentials are configured.
    pub base_url: String,
    pub subscription_id: String,
    pub key_id: String,
    pub key_value: Option<KeyValue>,
    pub key_value_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often each endpoint's cache policy is read again (also at start
    /// and on SIGHUP); `0s`: never read, nothing assumed from cache rules.
    #[serde(with = "humantime_serde")]
    pub cache_rules_refresh: Duration,
    pub endpoints: Vec<EndpointSettings>,
}

impl Default for CdnSettings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            subscription_id: String::new(),
            key_id: String::new(),
            key_value: None,
            key_value_file: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            cache_rules_refresh: Duration::from_secs(15 * 60),
            endpoints: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    pub id: String,
    pub hosts: Vec<String>,
    /// Preload every file purged on this endpoint once its purge has
    /// succeeded, whether or not the intent asked (decided when an intent
    /// is accepted).
    #[serde(default)]
    pub preload_after_purge: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    pub max_files: usize,
    pub max_directories: usize,
    /// URLs in one preload call. The API documents no limit: a
    /// conservative default (a preload makes the CDN fetch each file from
    /// the origin).
    pub max_preload_files: usize,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_files: 100,
            max_directories: 50,
            max_preload_files: 50,
            linger: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderSettings {
    pub requests_per_second: f64,
    pub burst: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    /// How long an endpoint answering `EndpointNotInActiveState` rests.
    #[serde(with = "humantime_serde")]
    pub endpoint_inactive_retry: Duration,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 2.0,
            burst: 5,
            concurrency: 4,
            max_attempts: 5,
            endpoint_inactive_retry: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerSettings {
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            give_up_after: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    pub files_per_day: u64,
    pub directories_per_day: u64,
    /// `+08:00`: the day boundary (China Standard Time by default).
    pub utc_offset: String,
    /// `auto`: when the day's file quota cannot cover the pending files,
    /// purge directories instead of their files; `never`: files wait.
    pub promote: Promote,
    /// A directory is chosen only when it covers at least this many
    /// pending files (keeps collateral small).
    pub promote_min_files: usize,
    /// Whether a host's root (`https://host/`, the whole site) may be
    /// chosen. Off by default: purging a site is a decision for a person.
    pub promote_to_root: bool,
    /// Held back from normal intents each day: only `urgent` ones use it.
    pub urgent_reserve_files: u64,
    pub urgent_reserve_directories: u64,
    /// Preload URLs per quota day. The API documents no preload quota: a
    /// conservative default, counted in `quota_days.preloads_used`.
    pub preloads_per_day: u64,
}

/// `[deploy]`: how `purgeq enqueue --git` turns a deploy's changed files
/// into URLs. The daemon does not use it; `check-config` checks it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    pub map: Vec<DeployMap>,
}

/// `[[deploy.map]]`: the files under `path` are served under `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployMap {
    /// A directory of the repository, relative, ending in `/` (`public/`);
    /// `""` for the whole repository.
    pub path: String,
    /// The URL that directory is served at, ending in `/`.
    pub url: String,
    /// File names a directory's URL also answers for (`index.html`): a
    /// changed one purges the directory's URL too.
    #[serde(default)]
    pub index: Vec<String>,
}

/// `quota.promote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Promote {
    Auto,
    Never,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            files_per_day: 2_000,
            directories_per_day: 500,
            utc_offset: "+08:00".to_owned(),
            promote: Promote::Auto,
            promote_min_files: 10,
            promote_to_root: false,
            urgent_reserve_files: 0,
            urgent_reserve_directories: 0,
            preloads_per_day: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(with = "humantime_serde")]
    pub keep_finished: Duration,
    /// How often the clean-up runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_finished: Duration::from_secs(30 * 86_400),
            interval: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Plain,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// `[ui]`: the status page at `GET /` on every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiSettings {
    /// `false`: no page (404), the API alone.
    pub enabled: bool,
    /// `true`: the page shows, but has no buttons, and refuses the actions
    /// (retry, cancel).
    pub read_only: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            read_only: false,
        }
    }
}

/// `[[origin_cache]]`: one cache in front of the origin (Varnish, nginx
/// with `ngx_cache_purge`, or any cache that takes `PURGE`). A URL's CDN
/// purge waits until every layer holding its host has purged it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginCacheSettings {
    /// Shown in the history, `status`, the page and `/metrics`; the name
    /// an intent's `skip_origin_caches` gives.
    pub name: String,
    pub kind: crate::origin_cache::LayerKind,
    /// Where purges are sent (`http://127.0.0.1:6081`): scheme, host and
    /// port only. The URL's own host travels as `Host`.
    pub url: String,
    /// The URL hosts this layer caches (`*.example.com` allowed); empty:
    /// every host an endpoint serves.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// How long one purge request may take.
    #[serde(
        default = "OriginCacheSettings::default_timeout",
        with = "humantime_serde"
    )]
    pub timeout: Duration,
    /// Purge requests in flight to this layer at once.
    #[serde(default = "OriginCacheSettings::default_concurrency")]
    pub concurrency: usize,
    /// Its place in the file, for problems (an entry that could not be
    /// read is left out, and the others keep their numbers).
    #[serde(skip)]
    pub index: usize,
}

impl OriginCacheSettings {
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }

    fn default_concurrency() -> usize {
        8
    }
}

/// `[verify]`: after a URL's purge (and preload) succeeded, probe the
/// CDN's edge and compare what it serves with what the origin serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    pub enabled: bool,
    /// Where the origin answers directly (`http://10.0.0.5:8080`); the
    /// URL's host is sent as `Host`. Empty: only the hosts of `origins`
    /// (with the built-in emulator, this is also where its edge fetches).
    pub origin: String,
    /// Per-host origins, for sites with several: `host = "base URL"`.
    pub origins: std::collections::BTreeMap<String, String>,
    /// Edge addresses to probe (`host:port`); empty: the addresses the
    /// URL's host resolves to (with the built-in emulator: its edge).
    pub edges: Vec<String>,
    /// How long a URL is probed before it is called stale.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Extra purges a URL still stale at half the deadline may cost (each
    /// counted against the day's quota like any purge).
    pub repurge: u32,
    /// Probe requests per second, all edges and origins together.
    pub probes_per_second: f64,
    /// URLs verified at once.
    pub concurrency: usize,
    /// Files probed for a directory (of those purgeq knows under it).
    pub sample: usize,
    /// How long one probe may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl VerifySettings {
    /// How far back a succeeded purge is still verified: the deadline,
    /// and never less than ten minutes (what finished while the daemon was
    /// down is caught up). The verify stage starts URLs within it, and the
    /// API holds a request in progress within it until they are started:
    /// the two must agree, or `--wait` could return between them.
    pub fn window(&self) -> Duration {
        self.deadline.max(Duration::from_secs(600))
    }
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            origin: String::new(),
            origins: std::collections::BTreeMap::new(),
            edges: Vec::new(),
            deadline: Duration::from_secs(300),
            repurge: 1,
            probes_per_second: 20.0,
            concurrency: 8,
            sample: 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// `[tags]`: which URL carries which tags, so a purge can name a tag
/// (issue 35). The registry is always there; these bound it and say
/// where it learns from besides `POST /v1/tags`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagSettings {
    /// URLs the registry holds at most; past it, the least recently seen
    /// are dropped (counted in `/metrics` and `/v1/stats`).
    pub max_urls: u64,
    /// Tags kept per URL (the first ones given).
    pub max_tags_per_url: usize,
    /// Response headers read for tags wherever purgeq fetches a URL
    /// (edge verification's origin probe). Empty: none are read.
    pub headers: Vec<String>,
    /// The origin's access log to learn tags from, followed like
    /// `tail -F`; written in the format of
    /// `contrib/nginx/purgeq-tags-log.conf`.
    pub access_log: Option<std::path::PathBuf>,
}

impl Default for TagSettings {
    fn default() -> Self {
        Self {
            max_urls: 1_000_000,
            max_tags_per_url: 64,
            headers: vec![
                "Cache-Tag".to_owned(),
                "Surrogate-Key".to_owned(),
                "xkey".to_owned(),
            ],
            access_log: None,
        }
    }
}

/// `[fleet]`: this daemon's place among several sharing one database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// The name `/v1/stats` shows for this node and the leader lease
    /// records; the host name when not set. Read at start: a reload does
    /// not rename a running node.
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything wrong with a configuration, each line naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Option<PathBuf>,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(path) => write!(f, "invalid configuration in {}", path.display())?,
            None => write!(f, "invalid configuration")?,
        }
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The UTC offset at which quota days begin, parsed from
/// `quota.utc_offset` once; its default is the documented default,
/// China Standard Time, so default settings agree with their own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaOffset(pub time::UtcOffset);

impl Default for QuotaOffset {
    fn default() -> Self {
        QuotaOffset(time::macros::offset!(+08:00))
    }
}

impl QuotaOffset {
    pub fn get(self) -> time::UtcOffset {
        self.0
    }
}

/// The endpoint the built-in emulator serves when the configuration names
/// none.
pub const DEMO_ENDPOINT_ID: &str = "00000000-0000-4000-8000-00000000de40";
/// Its hosts: `example.com` and every sub-domain.
pub const DEMO_HOSTS: [&str; 2] = ["example.com", "*.example.com"];

/// The process environment, for [`Settings::load`]. Reading it here keeps
/// every environment lookup in this module.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Which file to read.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_owned()),
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            default.exists().then(|| default.to_owned())
        }
    }
}

impl Settings {
    /// Loads `path` (if any) with the `PURGEQ__…` variables of `env` on top,
    /// and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        Settings::load_as(path, env, Reader::Daemon)
    }

    /// [`Settings::load`] for a client command (`status`, `enqueue`,
    /// `history`): the secret files are not read. They are the daemon's
    /// (the README makes `cdn.key_value_file` readable by root alone), and a
    /// client needs neither; a non-root operator's `status` exited 78 with
    /// "credentials are partly configured" (issue 29, item 8).
    pub fn load_for_client(
        path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        Settings::load_as(path, env, Reader::Client)
    }

    fn load_as(
        path: Option<&Path>,
        env: &HashMap<String, String>,
        reader: Reader,
    ) -> Result<Settings, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            source: path.map(Path::to_owned),
            problems,
        };
        let overrides: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("PURGEQ__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The file on its own, read once: the settings are it with the
        // variables on top, and which paths it wrote is asked of it alone.
        let written = match path {
            Some(path) if !path.exists() => {
                return Err(fail(vec![format!(
                    "the file {} does not exist",
                    path.display()
                )]));
            }
            Some(path) => Some(
                config::Config::builder()
                    .add_source(config::File::from(path).format(config::FileFormat::Toml))
                    .build()
                    .map_err(|e| fail(vec![e.to_string()]))?,
            ),
            None => None,
        };
        let mut builder = config::Config::builder();
        if let Some(written) = &written {
            builder = builder.add_source(written.clone());
        }
        let raw = builder
            .add_source(
                config::Environment::with_prefix("PURGEQ")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| fail(vec![e.to_string()]))?;
        let (mut settings, mut problems) = deserialize_sections(&raw, env);
        settings.derived.source = path.map(Path::to_owned);
        settings.derived.reader = reader;
        if let (Some(path), Some(written)) = (path, &written) {
            settings.resolve_relative_paths(path, written, env);
        }
        // Which store is meant must be unambiguous: a file, or a fleet's
        // database. `store.path` has a default, so only a path the
        // operator wrote counts here.
        if settings.store.url.is_some() && raw.get::<config::Value>("store.path").is_ok() {
            problems.push(
                "store.url and store.path are both set: store.url puts the store on PostgreSQL \
                 (fleet mode), store.path on a SQLite file; remove one of them"
                    .to_owned(),
            );
        }
        // Every problem at once: what could not be read, and what is wrong
        // with what could (a section that could not be read is checked as
        // its defaults, which are valid).
        if let Err(more) = settings.validate(env) {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(fail(problems))
        }
    }

    /// Paths written in the configuration file are relative to the file's
    /// directory, not to wherever a command runs: `purgeq status --config
    /// /etc/purgeq/purgeq.toml` run from elsewhere could not find a socket
    /// named `purgeq.sock` there (issue 29, item 13). Only paths the file
    /// itself sets move; defaults and `PURGEQ__…` variables stay relative
    /// to the working directory, and absolute paths are kept as they are.
    fn resolve_relative_paths(
        &mut self,
        file: &Path,
        written: &config::Config,
        env: &HashMap<String, String>,
    ) {
        let Some(base) = file.parent() else { return };
        let from_file = |key: &str, variable: &str| {
            !env.contains_key(variable) && written.get::<config::Value>(key).is_ok()
        };
        let resolve = |path: &Path| -> PathBuf {
            if path.is_relative() && !path.as_os_str().is_empty() {
                base.join(path)
            } else {
                path.to_owned()
            }
        };
        if from_file("store.path", "PURGEQ__STORE__PATH") {
            self.store.path = resolve(&self.store.path);
        }
        if from_file("ingest.socket", "PURGEQ__INGEST__SOCKET") && !self.ingest.socket.is_empty() {
            self.ingest.socket = resolve(Path::new(&self.ingest.socket))
                .to_string_lossy()
                .into_owned();
        }
        if from_file("ingest.token_file", "PURGEQ__INGEST__TOKEN_FILE") {
            self.ingest.token_file = self.ingest.token_file.as_deref().map(resolve);
        }
        if from_file("cdn.key_value_file", "PURGEQ__CDN__KEY_VALUE_FILE") {
            self.cdn.key_value_file = self.cdn.key_value_file.as_deref().map(resolve);
        }
    }

    /// Checks every value and fills [`Derived`]; collects all problems.
    fn validate(&mut self, env: &HashMap<String, String>) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();

        if self.store.path.as_os_str().is_empty() {
            problems.push("store.path: must not be empty".to_owned());
        }
        if let Some(url) = &self.store.url {
            use secrecy::ExposeSecret;
            match crate::database_url::DatabaseUrl::parse(url.0.expose_secret()) {
                Ok(url) => self.derived.store_url = Some(url),
                Err(error) => problems.push(error.to_string()),
            }
        }
        self.validate_ingest(&mut problems);
        self.validate_limits(&mut problems);

        match parse_utc_offset(&self.quota.utc_offset) {
            Some(offset) => self.derived.quota_offset = QuotaOffset(offset),
            None => problems.push(format!(
                "quota.utc_offset: {:?} is not an offset like \"+08:00\" (from -14:00 to +14:00)",
                self.quota.utc_offset
            )),
        }

        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level: {:?} is not a log level or filter",
                self.log.level
            ));
        }

        self.validate_cdn(env, &mut problems);
        self.validate_deploy(&mut problems);
        self.validate_origin_caches(&mut problems);
        self.validate_verify(&mut problems);
        self.validate_tags(&mut problems);

        match &self.fleet.node_name {
            Some(name) => match crate::fleet::NodeName::parse(name) {
                Ok(name) => self.derived.node_name = Some(name),
                Err(error) => problems.push(error.to_string()),
            },
            None => self.derived.node_name = Some(this_host()),
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// `[[deploy.map]]`: relative directory paths, each once; directory URLs
    /// that a configured endpoint serves (checked when endpoints are
    /// configured: without them, the built-in emulator serves any
    /// `example.com` host and nothing else can be known).
    fn validate_deploy(&self, problems: &mut Vec<String>) {
        let router = self.served_hosts();
        let mut paths = std::collections::HashSet::new();
        for (index, map) in self.deploy.map.iter().enumerate() {
            let key = format!("deploy.map[{index}]");
            let path = map.path.as_str();
            if path.starts_with('/') || path.split('/').any(|s| s == "..") {
                problems.push(format!(
                    "{key}.path: {path:?} must be relative to the repository, without `..`"
                ));
            } else if !path.is_empty() && !path.ends_with('/') {
                problems.push(format!(
                    "{key}.path: {path:?} must end with `/` (a directory), or be \"\" for everything"
                ));
            }
            if !paths.insert(path) {
                problems.push(format!("{key}.path: {path:?} is mapped twice"));
            }
            let url = match Url::parse(&map.url) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.path().ends_with('/')
                        && url.query().is_none()
                        && url.fragment().is_none() =>
                {
                    url
                }
                _ => {
                    problems.push(format!(
                        "{key}.url: {:?} must be an http(s) directory URL ending in `/`",
                        map.url
                    ));
                    continue;
                }
            };
            // Without [[cdn.endpoints]], the built-in emulator's hosts are
            // the ones served: a map must name one of them (issue 29, item
            // 11: any host was accepted then).
            if let Err(error) = router.target(
                url.as_str(),
                crate::target::Requested::Directory,
                self.ingest.max_url_length,
            ) {
                let hint = if self.cdn.endpoints.is_empty() {
                    format!(
                        " (no [[cdn.endpoints]] are configured, so the built-in emulator's hosts are \
                         served: {})",
                        DEMO_HOSTS.join(", ")
                    )
                } else {
                    String::new()
                };
                problems.push(format!("{key}.url: {error}{hint}"));
            }
        }
    }

    /// The hosts `serve` will take intents for: the configured endpoints',
    /// or, without [[cdn.endpoints]], the built-in emulator's.
    fn served_hosts(&self) -> std::borrow::Cow<'_, Router> {
        match self.cdn.endpoints.is_empty() {
            true => std::borrow::Cow::Owned(demo_router()),
            false => std::borrow::Cow::Borrowed(&self.derived.router),
        }
    }

    /// `[[origin_cache]]`: unique names, a known kind (serde refuses the
    /// others), a base URL, hosts that an endpoint serves.
    fn validate_origin_caches(&mut self, problems: &mut Vec<String>) {
        let mut names = std::collections::HashSet::new();
        let router = self.served_hosts();
        for layer in &self.origin_cache {
            let key = format!("origin_cache[{}]", layer.index);
            let name_ok = !layer.name.is_empty()
                && layer
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                problems.push(format!(
                    "{key}.name: {:?} must be letters, digits, '-', '_' or '.'",
                    layer.name
                ));
            } else if !names.insert(layer.name.as_str()) {
                problems.push(format!("{key}.name: {:?} is used twice", layer.name));
            }
            match Url::parse(&layer.url) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.username().is_empty() => {}
                _ => problems.push(format!(
                    "{key}.url: {:?} must be an http(s) address like \"http://127.0.0.1:6081\" \
                     (no path, query or user)",
                    layer.url
                )),
            }
            if layer.timeout.is_zero() {
                problems.push(format!("{key}.timeout: must be more than 0s"));
            }
            if layer.concurrency == 0 {
                problems.push(format!("{key}.concurrency: must be at least 1"));
            }
            for (host_index, host) in layer.hosts.iter().enumerate() {
                let probe = match HostPattern::parse(host) {
                    Ok(HostPattern::Exact(name)) => name,
                    Ok(HostPattern::Wildcard(suffix)) => format!("purgeq-check.{suffix}"),
                    Err(why) => {
                        problems.push(format!("{key}.hosts[{host_index}]: {host:?} {why}"));
                        continue;
                    }
                };
                if router.route(&probe).is_none() {
                    problems.push(format!(
                        "{key}.hosts[{host_index}]: {host:?} is served by no endpoint, so no purge \
                         of it would ever reach this layer"
                    ));
                }
            }
        }
        self.derived.origin_routes = crate::origin_cache::LayerRoutes::new(
            self.origin_cache
                .iter()
                .map(|l| (l.name.as_str(), l.hosts.as_slice())),
        );
    }

    /// `[tags]`: bounds, header names.
    fn validate_tags(&self, problems: &mut Vec<String>) {
        let tags = &self.tags;
        if tags.max_urls == 0 {
            problems.push("tags.max_urls: must be at least 1".to_owned());
        }
        if tags.max_tags_per_url == 0 {
            problems.push("tags.max_tags_per_url: must be at least 1".to_owned());
        }
        for (index, name) in tags.headers.iter().enumerate() {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!(
                    "tags.headers[{index}]: {name:?} is not a header name"
                ));
            }
        }
        if let Some(path) = tags
            .access_log
            .as_ref()
            .filter(|p| p.as_os_str().is_empty() || p.is_relative())
        {
            problems.push(format!(
                "tags.access_log: {} must be an absolute path",
                path.display()
            ));
        }
    }

    /// `[verify]`: base URLs for the origins, edge addresses, limits.
    fn validate_verify(&self, problems: &mut Vec<String>) {
        let verify = &self.verify;
        let base_url = |key: String, text: &str, problems: &mut Vec<String>| match Url::parse(text)
        {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.query().is_none() => {}
            _ => problems.push(format!(
                "{key}: {text:?} must be an http(s) base URL like \"http://10.0.0.5:8080\""
            )),
        };
        if !verify.origin.is_empty() {
            base_url("verify.origin".to_owned(), &verify.origin, problems);
        }
        for (host, origin) in &verify.origins {
            base_url(format!("verify.origins.{host}"), origin, problems);
        }
        for (index, edge) in verify.edges.iter().enumerate() {
            if crate::verify::parse_edge(edge).is_none() {
                problems.push(format!(
                    "verify.edges[{index}]: {edge:?} is not an address like \"203.0.113.10:80\""
                ));
            }
        }
        if verify.enabled && verify.origin.is_empty() && verify.origins.is_empty() {
            problems.push(
                "verify.enabled: set verify.origin (or verify.origins): what the edge serves is \
                 compared with what the origin serves"
                    .to_owned(),
            );
        }
        if verify.deadline.is_zero() {
            problems.push("verify.deadline: must be more than 0s".to_owned());
        }
        if verify.timeout.is_zero() {
            problems.push("verify.timeout: must be more than 0s".to_owned());
        }
        if !(verify.probes_per_second.is_finite() && verify.probes_per_second > 0.0) {
            problems.push("verify.probes_per_second: must be a positive number".to_owned());
        }
        if verify.concurrency == 0 {
            problems.push("verify.concurrency: must be at least 1".to_owned());
        }
        if verify.sample == 0 {
            problems.push("verify.sample: must be at least 1".to_owned());
        }
    }

    /// What `check-config` says about `[[origin_cache]]` besides problems:
    /// how directories reach each layer, and, in a fleet, a loopback
    /// address that only the leader's own host would be purged at.
    pub fn origin_cache_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for layer in &self.origin_cache {
            if !layer.kind.purges_directories() {
                notes.push(format!(
                    "origin cache {}: a {} layer cannot purge a directory in one request; a \
                     directory is purged there as each file purgeq knows under it",
                    layer.name, layer.kind
                ));
            }
            let loopback = Url::parse(&layer.url)
                .ok()
                .is_some_and(|url| match url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                    None => false,
                });
            if loopback && self.derived.store_url.is_some() {
                notes.push(format!(
                    "warning: origin cache {} is at a loopback address ({}) in a fleet: only the \
                     leader's own host would be purged; name each host's cache by an address the \
                     leader can reach",
                    layer.name, layer.url
                ));
            }
        }
        notes
    }

    /// `[ingest]`: the socket's mode and path, the TCP address, the token
    /// (and that a listener beyond loopback has one).
    fn validate_ingest(&mut self, problems: &mut Vec<String>) {
        match u32::from_str_radix(self.ingest.socket_mode.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => self.derived.socket_mode = mode,
            _ => problems.push(format!(
                "ingest.socket_mode: {:?} is not an octal file mode like \"0660\"",
                self.ingest.socket_mode
            )),
        }
        self.derived.socket_path =
            (!self.ingest.socket.is_empty()).then(|| PathBuf::from(&self.ingest.socket));
        self.derived.allowed_hosts = host_name()
            .map(|name| name.to_ascii_lowercase())
            .into_iter()
            .collect();
        for (index, name) in self.ingest.allowed_hosts.iter().enumerate() {
            match HostPattern::parse(name) {
                Ok(HostPattern::Exact(name)) => self.derived.allowed_hosts.push(name),
                _ => problems.push(format!(
                    "ingest.allowed_hosts[{index}]: {name:?} is not a host name (no port, no '*')"
                )),
            }
        }
        if !self.ingest.http.is_empty() {
            match self.ingest.http.parse::<SocketAddr>() {
                Ok(addr) => self.derived.http_addr = Some(addr),
                Err(_) => problems.push(format!(
                    "ingest.http: {:?} is not an address like \"127.0.0.1:8088\"",
                    self.ingest.http
                )),
            }
        }
        if self
            .ingest
            .token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(&t.0).trim().is_empty())
        {
            problems.push(
                "ingest.token: is empty; TCP clients could never authenticate (set a token, or remove the key)"
                    .to_owned(),
            );
        }
        if self.ingest.token.is_some() && self.ingest.token_file.is_some() {
            problems.push("ingest: set token or token_file, not both".to_owned());
        }
        let client = self.derived.reader == Reader::Client;
        self.derived.tcp_token = match (&self.ingest.token, &self.ingest.token_file) {
            (Some(token), _) => Some(token.clone()),
            // A client reads the token file when it can (to send it over
            // TCP), and does without when it may not: its problems are not
            // the client's.
            (None, Some(path)) if client => {
                read_secret(path, "ingest.token_file", &mut Vec::new()).map(Secret::new)
            }
            (None, Some(path)) => read_secret(path, "ingest.token_file", problems).map(Secret::new),
            (None, None) => None,
        };
        if let Some(addr) = self.derived.http_addr
            && !addr.ip().is_loopback()
            && self.derived.tcp_token.is_none()
            && !(client && self.ingest.token_file.is_some())
        {
            problems.push(format!(
                "ingest.http: {addr} is reachable from other hosts; set ingest.token or ingest.token_file \
                 (TCP clients then send Authorization: Bearer TOKEN), or listen on 127.0.0.1"
            ));
        }
    }

    /// Sizes and durations that must not be zero, and the sending rate.
    fn validate_limits(&self, problems: &mut Vec<String>) {
        for (key, value) in [
            ("ingest.max_body_bytes", self.ingest.max_body_bytes),
            (
                "ingest.max_urls_per_request",
                self.ingest.max_urls_per_request,
            ),
            ("ingest.max_url_length", self.ingest.max_url_length),
            ("ingest.max_connections", self.ingest.max_connections),
            ("batch.max_files", self.batch.max_files),
            // 0 would strand every directory intent and spin the batcher
            // (issue 13, bug 9): the API takes directories in every call.
            ("batch.max_directories", self.batch.max_directories),
            ("batch.max_preload_files", self.batch.max_preload_files),
            ("sender.concurrency", self.sender.concurrency),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if !(self.sender.requests_per_second.is_finite() && self.sender.requests_per_second > 0.0) {
            problems.push(format!(
                "sender.requests_per_second: {} must be a positive number",
                self.sender.requests_per_second
            ));
        }
        if self.sender.burst == 0 {
            problems.push("sender.burst: must be at least 1".to_owned());
        }
        if self.sender.max_attempts == 0 {
            problems.push("sender.max_attempts: must be at least 1".to_owned());
        }
        if self.retention.interval.is_zero() {
            problems.push("retention.interval: must be more than 0s".to_owned());
        }
        if self.tracker.poll_interval.is_zero() {
            problems.push("tracker.poll_interval: must be more than 0s".to_owned());
        }
        if self.ingest.max_body_bytes_in_flight < self.ingest.max_body_bytes {
            problems.push(format!(
                "ingest.max_body_bytes_in_flight: {} is less than ingest.max_body_bytes ({}): a body \
                 of the largest size could never be taken",
                self.ingest.max_body_bytes_in_flight, self.ingest.max_body_bytes
            ));
        }
        if self.ingest.header_timeout.is_zero() {
            problems.push("ingest.header_timeout: must be more than 0s".to_owned());
        }
        if self.ingest.store_timeout.is_zero() {
            problems.push("ingest.store_timeout: must be more than 0s".to_owned());
        }
        if self.ingest.body_timeout.is_zero() {
            problems.push("ingest.body_timeout: must be more than 0s".to_owned());
        }
        let quota = &self.quota;
        for (key, reserve, per_day, per_day_key) in [
            (
                "quota.urgent_reserve_files",
                quota.urgent_reserve_files,
                quota.files_per_day,
                "quota.files_per_day",
            ),
            (
                "quota.urgent_reserve_directories",
                quota.urgent_reserve_directories,
                quota.directories_per_day,
                "quota.directories_per_day",
            ),
        ] {
            if reserve > per_day {
                problems.push(format!(
                    "{key}: {reserve} is more than {per_day_key} ({per_day}); nothing normal could ever go"
                ));
            }
        }
        if quota.promote_min_files == 0 {
            problems.push("quota.promote_min_files: must be at least 1".to_owned());
        }
    }

    fn validate_cdn(&mut self, env: &HashMap<String, String>, problems: &mut Vec<String>) {
        if !self.cdn.base_url.is_empty() {
            match Url::parse(&self.cdn.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    self.derived.base_url = Some(url)
                }
                _ => problems.push(format!(
                    "cdn.base_url: {:?} is not an http(s) URL",
                    self.cdn.base_url
                )),
            }
        }
        self.derived.router = route_endpoints(&self.cdn.endpoints, problems);
        self.derived.credentials = match self.derived.reader {
            Reader::Daemon => credentials_of(&self.cdn, env, problems),
            Reader::Client => None,
        };
        self.derived.credentials_configured = self.derived.credentials.is_some()
            || (self.derived.reader == Reader::Client
                && !self.cdn.subscription_id.is_empty()
                && !self.cdn.key_id.is_empty()
                && (self.cdn.key_value.is_some()
                    || self.cdn.key_value_file.is_some()
                    || env.contains_key("CREDENTIALS_DIRECTORY")));
    }

    /// The directories the daemon will create files in exist. Checked by
    /// `check-config` and `serve` (which then exits 78 naming the key,
    /// rather than 1 with an OS error alone), not by every command that
    /// reads the configuration: the packaged file names /var/lib/purgeq and
    /// /run/purgeq, which exist only where the service is installed.
    pub fn check_directories(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (key, path) in [
            ("store.path", Some(self.store.path.as_path())),
            ("ingest.socket", self.derived.socket_path.as_deref()),
        ] {
            if let Some(parent) = path
                .and_then(Path::parent)
                .filter(|p| !p.as_os_str().is_empty())
                && !parent.is_dir()
            {
                problems.push(format!(
                    "{key}: the directory {} does not exist",
                    parent.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                source: self.derived.source.clone(),
                problems,
            })
        }
    }

    /// The endpoints as configured, or, when none is, the demo endpoint the
    /// built-in emulator serves (so `serve` works out of the box).
    pub fn with_demo_endpoint(mut self) -> Settings {
        if self.derived.router.is_empty() {
            self.cdn.endpoints.push(EndpointSettings {
                id: DEMO_ENDPOINT_ID.to_owned(),
                hosts: DEMO_HOSTS.iter().map(|h| h.to_string()).collect(),
                preload_after_purge: false,
            });
            self.derived.router = demo_router();
        }
        self
    }

    /// This node's name: `fleet.node_name`, or the host's.
    pub fn node_name(&self) -> crate::fleet::NodeName {
        self.derived.node_name.clone().unwrap_or_else(this_host)
    }

    /// True when real credentials are configured; otherwise `serve` uses
    /// the built-in emulator.
    pub fn has_credentials(&self) -> bool {
        self.derived.credentials_configured
    }
}

/// Deserializes each section on its own, so a file with several mistakes
/// is reported whole, not one mistake per run (issue 12), and says where a
/// value came from when an environment variable set it.
fn deserialize_sections(
    raw: &config::Config,
    env: &HashMap<String, String>,
) -> (Settings, Vec<String>) {
    fn section<T: serde::de::DeserializeOwned + Default>(
        raw: &config::Config,
        name: &str,
        env: &HashMap<String, String>,
        problems: &mut Vec<String>,
    ) -> T {
        let value = match raw.get::<config::Value>(name) {
            Ok(value) => value,
            Err(config::ConfigError::NotFound(_)) => return T::default(),
            Err(error) => {
                problems.push(format!("{name}: {error}"));
                return T::default();
            }
        };
        // The path inside the section (`linger`, `endpoints[1].hosts`):
        // the `config` crate names only the section. A key that cannot be
        // read is reported and left out, and the rest of the section is
        // read again, so its other keys are still checked (issue 29, item
        // 11: `burst = -1` hid `max_attempts = 0`).
        let mut table = value.clone().into_table().ok();
        let mut value = value;
        for _ in 0..32 {
            match serde_path_to_error::deserialize::<_, T>(value) {
                Ok(value) => return value,
                Err(error) => {
                    let path = error.path().to_string();
                    let key = if path == "." || path.is_empty() {
                        name.to_owned()
                    } else if path.starts_with('[') {
                        format!("{name}{path}")
                    } else {
                        format!("{name}.{path}")
                    };
                    problems.push(explain(&key, &error.into_inner().to_string(), env));
                    // The section's own key the error is under.
                    let top = path
                        .split(['.', '['])
                        .next()
                        .filter(|t| !t.is_empty() && *t != "?")
                        .map(str::to_owned);
                    let removed = match (table.as_mut(), top) {
                        (Some(table), Some(top)) => table.remove(&top).is_some(),
                        _ => false,
                    };
                    match table.as_ref().filter(|_| removed) {
                        Some(rest) => value = config::Value::new(None, rest.clone()),
                        None => return T::default(),
                    }
                }
            }
        }
        T::default()
    }
    let mut problems = Vec::new();
    const SECTIONS: [&str; 16] = [
        "store",
        "ingest",
        "cdn",
        "batch",
        "sender",
        "tracker",
        "quota",
        "retention",
        "log",
        "daemon",
        "deploy",
        "ui",
        "fleet",
        "origin_cache",
        "verify",
        "tags",
    ];
    if let Ok(top) = raw
        .clone()
        .try_deserialize::<HashMap<String, config::Value>>()
    {
        let mut unknown: Vec<&String> = top
            .keys()
            .filter(|k| !SECTIONS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            problems.push(format!(
                "{key}: unknown section (known: {})",
                SECTIONS.join(", ")
            ));
        }
    }
    let settings = Settings {
        store: section(raw, "store", env, &mut problems),
        ingest: section(raw, "ingest", env, &mut problems),
        cdn: section(raw, "cdn", env, &mut problems),
        batch: section(raw, "batch", env, &mut problems),
        sender: section(raw, "sender", env, &mut problems),
        tracker: section(raw, "tracker", env, &mut problems),
        quota: section(raw, "quota", env, &mut problems),
        retention: section(raw, "retention", env, &mut problems),
        log: section(raw, "log", env, &mut problems),
        daemon: section(raw, "daemon", env, &mut problems),
        deploy: section(raw, "deploy", env, &mut problems),
        ui: section(raw, "ui", env, &mut problems),
        fleet: section(raw, "fleet", env, &mut problems),
        origin_cache: origin_caches(raw, env, &mut problems),
        verify: section(raw, "verify", env, &mut problems),
        tags: section(raw, "tags", env, &mut problems),
        derived: Derived::default(),
    };
    (settings, problems)
}

/// A deserialization problem as `key: what is wrong`, saying where the
/// value came from when an environment variable set it (the `config`
/// crate blamed the file), and what to write for a duration (a number
/// there was reported as `string "5"`).
fn explain(key: &str, message: &str, env: &HashMap<String, String>) -> String {
    let message = message.split(" for key `").next().unwrap_or(message);
    let mut text = format!("{key}: {message}");
    let variable = format!(
        "PURGEQ__{}",
        key.split('[')
            .next()
            .unwrap_or(key)
            .replace('.', "__")
            .to_ascii_uppercase()
    );
    if env.contains_key(&variable) {
        text.push_str(&format!(" (from the environment variable {variable})"));
    }
    // "enum Promote does not have variant constructor sometimes" named
    // Rust internals, not the choices.
    if let Some((_, value)) = message.split_once(" does not have variant constructor ") {
        let choices = match key {
            "quota.promote" => " (write \"auto\" or \"never\")",
            "log.format" => " (write \"auto\", \"plain\" or \"json\")",
            "store.synchronous" => " (write \"full\" or \"normal\")",
            _ if key.starts_with("origin_cache[") && key.ends_with(".kind") => {
                " (write \"varnish\", \"nginx\" or \"http\")"
            }
            _ => "",
        };
        text = format!("{key}: {value:?} is not one of its values{choices}");
    }
    if message.contains("expected a duration") {
        text.push_str("; write a duration as text with a unit: \"5s\", \"250ms\", \"2h\"");
    }
    text
}

/// `[[origin_cache]]`, one entry at a time: a mistake in one is reported
/// with its index, and the others are still read and checked.
fn origin_caches(
    raw: &config::Config,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Vec<OriginCacheSettings> {
    let entries = match raw.get::<config::Value>("origin_cache") {
        Err(config::ConfigError::NotFound(_)) => return Vec::new(),
        Err(error) => {
            problems.push(format!("origin_cache: {error}"));
            return Vec::new();
        }
        Ok(value) => match value.into_array() {
            Ok(entries) => entries,
            Err(_) => {
                problems.push(
                    "origin_cache: must be a list of tables, written [[origin_cache]]".to_owned(),
                );
                return Vec::new();
            }
        },
    };
    let mut layers = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        match serde_path_to_error::deserialize::<_, OriginCacheSettings>(entry) {
            Ok(layer) => layers.push(OriginCacheSettings { index, ..layer }),
            Err(error) => {
                let path = error.path().to_string();
                let key = match path.as_str() {
                    "." | "" => format!("origin_cache[{index}]"),
                    path => format!("origin_cache[{index}].{path}"),
                };
                problems.push(explain(&key, &error.into_inner().to_string(), env));
            }
        }
    }
    layers
}

/// The built-in emulator's hosts, routed to its one endpoint.
fn demo_router() -> Router {
    let mut router = Router::default();
    for host in DEMO_HOSTS {
        if let Ok(pattern) = HostPattern::parse(host) {
            let _ = router.add(pattern, DEMO_ENDPOINT_ID.to_owned());
        }
    }
    router
}

/// This host's name (`gethostname(2)`), the default `fleet.node_name`.
/// A host name that cannot name a node (the system will not say, or it
/// has a space) is not the operator's mistake: "localhost" stands in.
fn this_host() -> crate::fleet::NodeName {
    host_name()
        .and_then(|name| crate::fleet::NodeName::parse(&name).ok())
        .unwrap_or_else(crate::fleet::NodeName::localhost)
}

/// `gethostname(2)`, when the system says.
fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_owned();
    (rc == 0 && !name.is_empty()).then_some(name)
}

/// A secret's text from a file, trimmed; problems are recorded, never the
/// content.
fn read_secret(path: &Path, what: &str, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => {
            problems.push(format!("{what}: {} is empty", path.display()));
            None
        }
        Err(error) => {
            problems.push(format!("{what}: cannot read {}: {error}", path.display()));
            None
        }
    }
}

/// `+08:00`, `-05:30`, `Z` or `+00:00`.
pub fn parse_utc_offset(text: &str) -> Option<time::UtcOffset> {
    if text == "Z" {
        return Some(time::UtcOffset::UTC);
    }
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    // Civil offsets run from -12:00 to +14:00; `time` takes up to ±25:59,
    // and "+25:00" made the quota day tomorrow's (issue 29, item 9).
    time::UtcOffset::parse(text, format)
        .ok()
        .filter(|offset| offset.whole_minutes().abs() <= 14 * 60)
}

/// The host router of `[[cdn.endpoints]]`: every host parsed, each routed
/// to one endpoint, each endpoint id listed once.
fn route_endpoints(endpoints: &[EndpointSettings], problems: &mut Vec<String>) -> Router {
    let mut router = Router::default();
    let mut ids = std::collections::HashSet::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let id = endpoint.id.trim();
        if id.is_empty() {
            problems.push(format!("cdn.endpoints[{index}].id: must not be empty"));
        } else if !ids.insert(id) {
            problems.push(format!(
                "cdn.endpoints[{index}].id: {:?} is configured twice; list every host of an endpoint in one entry",
                endpoint.id
            ));
        }
        if endpoint.hosts.is_empty() {
            problems.push(format!(
                "cdn.endpoints[{index}].hosts: list at least one host"
            ));
        }
        for (host_index, host) in endpoint.hosts.iter().enumerate() {
            let key = format!("cdn.endpoints[{index}].hosts[{host_index}]");
            match HostPattern::parse(host) {
                Ok(pattern) => {
                    if let Err(other) = router.add(pattern.clone(), endpoint.id.clone()) {
                        problems.push(format!(
                            "{key}: {pattern} is already routed to endpoint {other}"
                        ));
                    }
                }
                Err(why) => problems.push(format!("{key}: {host:?} {why}")),
            }
        }
    }
    router
}

/// The credentials, when all three parts are set: the key value from the
/// file, the setting or the systemd credential (exactly one source).
fn credentials_of(
    cdn: &CdnSettings,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<Credentials> {
    if cdn.key_value.is_some() && cdn.key_value_file.is_some() {
        problems.push(
            "cdn: set key_value or key_value_file, not both (which one would win is not obvious)"
                .to_owned(),
        );
    }
    if cdn
        .key_value
        .as_ref()
        .is_some_and(|v| v.expose().trim().is_empty())
    {
        problems.push(
            "cdn.key_value: is empty; every call would be refused with WrongSignature".to_owned(),
        );
    }
    let key_value = match (&cdn.key_value, &cdn.key_value_file) {
        (Some(value), _) => Some(value.clone()),
        (None, Some(path)) => read_secret(path, "cdn.key_value_file", problems).map(KeyValue::new),
        (None, None) => env.get("CREDENTIALS_DIRECTORY").and_then(|dir| {
            let path = Path::new(dir).join(KEY_VALUE_CREDENTIAL);
            path.exists()
                .then(|| read_secret(&path, "systemd credential cdn-key-value", problems))
                .flatten()
                .map(KeyValue::new)
        }),
    };
    let present = [
        ("cdn.subscription_id", !cdn.subscription_id.is_empty()),
        ("cdn.key_id", !cdn.key_id.is_empty()),
        ("cdn.key_value (or key_value_file)", key_value.is_some()),
    ];
    if present.iter().all(|(_, set)| *set) {
        return key_value.map(|key_value| Credentials {
            key_id: KeyId::new(cdn.key_id.clone()),
            key_value,
        });
    }
    if present.iter().any(|(_, set)| *set) {
        let missing: Vec<&str> = present
            .iter()
            .filter(|(_, set)| !set)
            .map(|(key, _)| *key)
            .collect();
        problems.push(format!(
            "cdn: credentials are partly configured; also set {}",
            missing.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("purgeq.toml");
        std::fs::write(&path, text).expect("write");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(Some(&path), &env)
    }

    /// Issue 29, item 13.
    #[test]
    fn relative_paths_in_the_file_are_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("purgeq.toml");
        std::fs::write(dir.path().join("key"), "k3y\n").expect("key");
        std::fs::write(
            &path,
            "[store]\npath = \"data/purgeq.db\"\n[ingest]\nsocket = \"purgeq.sock\"\n\
             [cdn]\nsubscription_id = \"s\"\nkey_id = \"k\"\nkey_value_file = \"key\"\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path), &HashMap::new()).expect("valid");
        assert_eq!(settings.store.path, dir.path().join("data/purgeq.db"));
        assert_eq!(
            PathBuf::from(&settings.ingest.socket),
            dir.path().join("purgeq.sock")
        );
        assert_eq!(
            settings.cdn.key_value_file.as_deref(),
            Some(dir.path().join("key").as_path())
        );
        assert!(settings.has_credentials(), "the key file was found");
        // A variable stays relative to the working directory; absolute
        // paths are kept.
        let env: HashMap<String, String> = [
            ("PURGEQ__STORE__PATH".to_owned(), "here.db".to_owned()),
            (
                "PURGEQ__INGEST__SOCKET".to_owned(),
                "/run/x.sock".to_owned(),
            ),
        ]
        .into();
        let settings = Settings::load(Some(&path), &env).expect("valid");
        assert_eq!(settings.store.path, PathBuf::from("here.db"));
        assert_eq!(settings.ingest.socket, "/run/x.sock");
        // Without a file, nothing moves.
        let defaults = Settings::load(None, &HashMap::new()).expect("defaults");
        assert_eq!(defaults.ingest.socket, "purgeq.sock");
    }

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::load(None, &HashMap::new()).expect("defaults");
        assert_eq!(settings.store.path, PathBuf::from("purgeq.db"));
        assert_eq!(settings.derived.socket_mode, 0o660);
        assert!(!settings.has_credentials());
        assert_eq!(settings.batch.linger, Duration::from_secs(2));
    }

    #[test]
    fn the_node_is_named_by_the_key_or_the_host() {
        let settings = load_text("", &[]).expect("defaults");
        assert!(!settings.node_name().as_str().is_empty());
        let settings = load_text("[fleet]\nnode_name = \"deploy-1\"\n", &[]).expect("named");
        assert_eq!(settings.node_name().as_str(), "deploy-1");
        let settings = load_text("", &[("PURGEQ__FLEET__NODE_NAME", "deploy-2")]).expect("env");
        assert_eq!(settings.node_name().as_str(), "deploy-2");
        let error = load_text("[fleet]\nnode_name = \"deploy 1\"\n", &[]).expect_err("space");
        assert!(
            error
                .to_string()
                .contains("fleet.node_name \"deploy 1\" has a control character or a space"),
            "{error}"
        );
    }

    #[test]
    fn store_url_selects_postgres_never_shows_its_password_and_excludes_store_path() {
        let settings = load_text(
            "[store]\nurl = \"postgres://deploy:s3cret@db.internal:5432/purgeq\"\n",
            &[],
        )
        .expect("fleet");
        let url = settings.derived.store_url.as_ref().expect("parsed");
        assert_eq!(url.to_string(), "postgres://deploy@db.internal:5432/purgeq");
        assert!(!format!("{settings:?}").contains("s3cret"));
        let error = load_text(
            "[store]\npath = \"x.db\"\nurl = \"postgres://deploy:s3cret@db/purgeq\"\n",
            &[],
        )
        .expect_err("both");
        let text = error.to_string();
        assert!(
            text.contains("store.url and store.path are both set"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let error = load_text("[store]\nurl = \"mysql://root:hunter2@db/x\"\n", &[])
            .expect_err("not postgres");
        assert!(error.to_string().contains("store.url"), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn the_sample_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/purgeq.toml");
        let settings = Settings::load(Some(&path), &HashMap::new()).expect("sample config");
        assert_eq!(settings.batch.max_files, BatchSettings::default().max_files);
        assert_eq!(
            settings.tracker.give_up_after,
            TrackerSettings::default().give_up_after
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let settings = load_text(
            "[batch]\nlinger = \"5s\"\nmax_files = 10\n",
            &[
                ("PURGEQ__BATCH__MAX_FILES", "20"),
                ("PURGEQ__RETENTION__KEEP_FINISHED", "7d"),
            ],
        )
        .expect("valid");
        assert_eq!(settings.batch.linger, Duration::from_secs(5));
        assert_eq!(settings.batch.max_files, 20);
        assert_eq!(
            settings.retention.keep_finished,
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn problems_name_the_key_and_the_file() {
        let error = load_text(
            "[[cdn.endpoints]]\nid = \"a\"\nhosts = [\"a.example.com\"]\n\
             [[cdn.endpoints]]\nid = \"b\"\nhosts = [\"exa mple.com\"]\n\
             [ingest]\nsocket_mode = \"999\"\n[quota]\nutc_offset = \"CST\"\n",
            &[],
        )
        .expect_err("invalid");
        let text = error.to_string();
        assert!(text.contains("purgeq.toml"), "{text}");
        assert!(
            text.contains("cdn.endpoints[1].hosts[0]: \"exa mple.com\" is not a host name"),
            "{text}"
        );
        assert!(text.contains("ingest.socket_mode"), "{text}");
        assert!(text.contains("quota.utc_offset"), "{text}");
    }

    #[test]
    fn a_batch_must_take_directories() {
        // Issue 13, bug 9: 0 stranded directory intents and spun the batcher.
        let error = load_text("[batch]\nmax_directories = 0\n", &[]).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("batch.max_directories: must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_and_origin() {
        // Issue 12, items 9 and 11.
        let error = load_text(
            "[tracker]\npoll_interval = 5\n[batch]\nbogus = 1\n[sender]\nconcurrency = \"x\"\n\
             [cdn]\nsubscription_id = \"s\"\nkey_id = \"k\"\nkey_value = \"\"\n\
             [[cdn.endpoints]]\nid = \"a\"\nhosts = [\"a.com\"]\n\
             [[cdn.endpoints]]\nid = \"a\"\nhosts = [\"b.com\"]\n\
             [ingest]\nhttp = \"0.0.0.0:9999\"\ntoken = \"\"\n",
            &[("PURGEQ__RETENTION__INTERVAL", "abc")],
        )
        .expect_err("invalid");
        let text = error.to_string();
        for expected in [
            "batch.bogus: unknown field `bogus`",
            "sender.concurrency: invalid type: string \"x\", expected an integer",
            "tracker.poll_interval: invalid value: string \"5\", expected a duration; write a duration as text with a unit",
            "retention.interval: invalid value: string \"abc\", expected a duration (from the environment variable PURGEQ__RETENTION__INTERVAL)",
            "cdn.key_value: is empty",
            "ingest.token: is empty",
            "cdn.endpoints[1].id: \"a\" is configured twice",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let both = load_text(
            "[cdn]\nsubscription_id = \"s\"\nkey_id = \"k\"\nkey_value = \"v\"\nkey_value_file = \"/etc/hostname\"\n",
            &[],
        )
        .expect_err("both");
        assert!(both.to_string().contains("not both"), "{both}");
        let missing = load_text("[ingest]\nsocket = \"/nonexistent/dir/s.sock\"\n", &[])
            .expect("readable")
            .check_directories()
            .expect_err("no such directory");
        assert!(
            missing
                .to_string()
                .contains("ingest.socket: the directory /nonexistent/dir does not exist"),
            "{missing}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = load_text("[batch]\nlinger_ms = 5\n", &[]).expect_err("typo");
        assert!(error.to_string().contains("linger_ms"), "{error}");
    }

    #[test]
    fn partial_credentials_are_refused() {
        let error = load_text("[cdn]\nkey_id = \"k\"\n", &[]).expect_err("partial");
        assert!(error.to_string().contains("cdn.subscription_id"), "{error}");
    }

    #[test]
    fn key_value_comes_from_the_systemd_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_VALUE_CREDENTIAL), "from-credential\n").expect("write");
        let settings = load_text(
            "[cdn]\nsubscription_id = \"s\"\nkey_id = \"k\"\n",
            &[("CREDENTIALS_DIRECTORY", dir.path().to_str().expect("utf-8"))],
        )
        .expect("valid");
        assert!(settings.has_credentials());
        assert!(!format!("{settings:?}").contains("from-credential"));
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(
            parse_utc_offset("+08:00"),
            time::UtcOffset::from_hms(8, 0, 0).ok()
        );
        assert_eq!(
            parse_utc_offset("-05:30"),
            time::UtcOffset::from_hms(-5, -30, 0).ok()
        );
        assert_eq!(parse_utc_offset("Z"), Some(time::UtcOffset::UTC));
        assert_eq!(parse_utc_offset("8"), None);
        for beyond in ["+25:00", "+14:01", "-15:00"] {
            assert_eq!(parse_utc_offset(beyond), None, "{beyond}");
        }
        assert!(parse_utc_offset("+14:00").is_some());
        assert!(parse_utc_offset("-12:00").is_some());
    }
}

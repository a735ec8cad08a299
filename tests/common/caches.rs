//! Real caches in front of a test origin, started as an operator would:
//! `varnishd` with the shipped `contrib/varnish/purgeq.vcl`, and `nginx`
//! with Debian's ngx_cache_purge and `contrib/nginx/purgeq-cache-purge.conf`.
//! Each logs the purges it receives with microsecond times, so a test can
//! put them beside the CDN emulator's journal.
//!
//! Without the programs the tests say so and skip, unless
//! `PURGEQ_REQUIRE_ORIGIN_CACHES` is set (CI installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib");
const CACHE_PURGE_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_cache_purge_module.so";

/// Whether varnishd, varnishncsa, nginx and its cache-purge module are
/// here; panics when they must be (`PURGEQ_REQUIRE_ORIGIN_CACHES`).
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = [
        ("varnishd", which("varnishd")),
        ("varnishncsa", which("varnishncsa")),
        ("nginx", which("nginx")),
        (
            "libnginx-mod-http-cache-purge",
            Path::new(CACHE_PURGE_MODULE).exists(),
        ),
    ]
    .into_iter()
    .filter(|(_, here)| !here)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: skipped: {} not installed (apt install varnish nginx libnginx-mod-http-cache-purge)",
        missing.join(", ")
    );
    if std::env::var_os("PURGEQ_REQUIRE_ORIGIN_CACHES").is_some() {
        panic!("{message}; PURGEQ_REQUIRE_ORIGIN_CACHES is set");
    }
    eprintln!("{message}");
    false
}

fn which(program: &str) -> bool {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(program).exists())
}

/// A free port on loopback, for a server that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The application behind the caches: every path answers
/// `v{version} {path}`, cacheable for an hour, and `version` changes when
/// the test deploys. Counts the requests that reach it.
pub struct TestOrigin {
    pub addr: SocketAddr,
    version: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    deleted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestOrigin {
    pub async fn start() -> TestOrigin {
        let version = Arc::new(AtomicU64::new(1));
        let hits = Arc::new(AtomicU64::new(0));
        let deleted: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the origin");
        let addr = listener.local_addr().expect("addr");
        let app = {
            let (version, hits, deleted) = (version.clone(), hits.clone(), deleted.clone());
            axum::Router::new().fallback(move |uri: axum::http::Uri| {
                let (version, hits, deleted) = (version.clone(), hits.clone(), deleted.clone());
                async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let gone = deleted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(uri.path());
                    let status = match gone {
                        true => axum::http::StatusCode::NOT_FOUND,
                        false => axum::http::StatusCode::OK,
                    };
                    let version = version.load(Ordering::Relaxed);
                    let mut headers = axum::http::HeaderMap::new();
                    headers.insert(
                        axum::http::header::CACHE_CONTROL,
                        axum::http::HeaderValue::from_static("public, max-age=3600"),
                    );
                    if let Ok(etag) = axum::http::HeaderValue::from_str(&format!("\"v{version}\""))
                    {
                        headers.insert(axum::http::header::ETAG, etag);
                    }
                    // A path's segments that start with `tag-` are its
                    // cache tags (issue 35): `/tag-a/tag-b/x` carries two.
                    let tags: Vec<&str> = uri
                        .path()
                        .split('/')
                        .filter(|s| s.starts_with("tag-"))
                        .collect();
                    if let Some(value) = (!tags.is_empty())
                        .then(|| axum::http::HeaderValue::from_str(&tags.join(", ")).ok())
                        .flatten()
                    {
                        headers.insert("cache-tag", value);
                    }
                    (
                        status,
                        headers,
                        match gone {
                            true => format!("deleted {uri}"),
                            false => format!("v{version} {uri}"),
                        },
                    )
                }
            })
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestOrigin {
            addr,
            version,
            hits,
            deleted,
            task,
        }
    }

    /// A deploy: every path answers the new version from now on.
    pub fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::Relaxed);
    }

    /// The file at `path` is deleted: the origin answers 404 for it.
    pub fn delete(&self, path: &str) {
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned());
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A purge a cache logged: when (seconds since the epoch), the method,
/// the path with its query, and the `Host`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub at: f64,
    pub method: String,
    pub path: String,
    pub host: String,
}

fn read_log(path: &Path, seconds_divisor: f64) -> Vec<Logged> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let at: f64 = parts.next()?.parse().ok()?;
            Some(Logged {
                at: at / seconds_divisor,
                method: parts.next()?.to_owned(),
                path: parts.next()?.to_owned(),
                host: parts.next()?.to_owned(),
            })
        })
        .filter(|l| l.method == "PURGE" || l.method == "BAN")
        .collect()
}

/// GET through a cache with `host`: the body.
pub async fn fetch(cache: u16, host: &str, path: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{cache}{path}"))
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .expect("GET through the cache");
    assert_eq!(response.status(), 200, "GET {path} through port {cache}");
    response.text().await.expect("body")
}

async fn wait_until_up(port: u16, what: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `varnishd -F` with the shipped VCL included by a site VCL that names
/// the origin, and `varnishncsa` logging the purges it takes.
pub struct Varnish {
    pub port: u16,
    dir: tempfile::TempDir,
    origin: SocketAddr,
    varnishd: Option<Child>,
    ncsa: Option<Child>,
}

impl Varnish {
    pub async fn start(origin: SocketAddr) -> Varnish {
        let mut varnish = Varnish {
            port: free_port(),
            dir: tempfile::tempdir().expect("tmp"),
            origin,
            varnishd: None,
            ncsa: None,
        };
        varnish.launch().await;
        varnish
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("instance")
    }

    fn purge_log_path(&self) -> PathBuf {
        self.dir.path().join("purges.log")
    }

    /// Starts it (again, on the same port after [`Varnish::stop`]).
    pub async fn launch(&mut self) {
        let vcl = self.dir.path().join("site.vcl");
        std::fs::write(
            &vcl,
            format!(
                "vcl 4.1;\nbackend default {{ .host = \"{}\"; .port = \"{}\"; }}\ninclude \"{CONTRIB}/varnish/purgeq.vcl\";\n",
                self.origin.ip(),
                self.origin.port()
            ),
        )
        .expect("site.vcl");
        let log = std::fs::File::create(self.dir.path().join("varnishd.log")).expect("log");
        let child = Command::new("varnishd")
            .arg("-F")
            .arg("-n")
            .arg(self.work_dir())
            .args(["-a", &format!("127.0.0.1:{}", self.port)])
            .arg("-f")
            .arg(&vcl)
            .args(["-s", "malloc,32m", "-T", "none", "-p", "default_ttl=3600"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn varnishd");
        self.varnishd = Some(child);
        let dir = self.dir.path().to_owned();
        wait_until_up(self.port, "varnishd", || {
            std::fs::read_to_string(dir.join("varnishd.log")).unwrap_or_default()
        })
        .await;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.purge_log_path())
            .expect("purge log");
        let ncsa = Command::new("varnishncsa")
            .arg("-n")
            .arg(self.work_dir())
            .args(["-F", "%{usec}t %m %U%q %{Host}i"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn varnishncsa");
        self.ncsa = Some(ncsa);
        // varnishncsa attaches to the shared log: give it a moment, so the
        // first purges are not missed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Stops it: its port refuses connections until [`Varnish::launch`].
    pub fn stop(&mut self) {
        kill(&mut self.ncsa);
        kill(&mut self.varnishd);
    }

    /// The PURGE and BAN requests it took, in order.
    pub fn purges(&self) -> Vec<Logged> {
        read_log(&self.purge_log_path(), 1_000_000.0)
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nginx` in the foreground with `proxy_cache`, the shipped snippet, and
/// an access log with millisecond times.
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    pub async fn start(origin: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let root = dir.path().display().to_string();
        let conf = format!(
            "load_module {CACHE_PURGE_MODULE};\n\
             daemon off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               log_format purges '$msec $request_method $request_uri $host $status';\n\
               access_log {root}/access.log purges;\n\
               client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
               proxy_cache_path {root}/cache keys_zone=site:4m;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 include {CONTRIB}/nginx/purgeq-cache-purge.conf;\n\
                 location / {{\n\
                   proxy_pass http://{origin};\n\
                   proxy_cache site;\n\
                   proxy_cache_valid 200 1h;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let log = std::fs::File::create(dir.path().join("nginx.out")).expect("log");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nginx");
        let nginx = Nginx {
            port,
            dir,
            child: Some(child),
        };
        let root = nginx.dir.path().to_owned();
        wait_until_up(port, "nginx", || {
            std::fs::read_to_string(root.join("nginx.out")).unwrap_or_default()
                + &std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
        })
        .await;
        nginx
    }

    /// The PURGE requests it took, in order.
    pub fn purges(&self) -> Vec<Logged> {
        read_log(&self.dir.path().join("access.log"), 1.0)
    }

    /// What its workers complained of (a crash shows here).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// What a [`PurgeRecorder`] received: (method, host, path?query, seconds
/// since 1970).
pub type Received = Vec<(String, String, String, f64)>;

/// A cache of kind `http` that only records: every request it receives
/// (method, `Host`, path and query, when), answered 200. Stands for a
/// site's own purge endpoint (issue 34's `http` kind).
pub struct PurgeRecorder {
    pub addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl PurgeRecorder {
    pub async fn start() -> PurgeRecorder {
        let seen: Arc<std::sync::Mutex<Received>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("addr");
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(
                move |method: axum::http::Method,
                      headers: axum::http::HeaderMap,
                      uri: axum::http::Uri| {
                    let seen = seen.clone();
                    async move {
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default();
                        let host = headers
                            .get(axum::http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let path = uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        seen.lock().unwrap_or_else(|p| p.into_inner()).push((
                            method.to_string(),
                            host,
                            path,
                            at,
                        ));
                        "purged"
                    }
                },
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PurgeRecorder { addr, seen, task }
    }

    /// What was received: (method, host, path?query, seconds since 1970).
    pub fn seen(&self) -> Received {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for PurgeRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

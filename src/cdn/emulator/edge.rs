//! The emulator as an edge (issue 33): nodes that serve the endpoints'
//! hosts from a cache filled from an origin, as the CDN's edge does, so a
//! purge's effect can be seen, and probed, on one machine.
//!
//! Each node is a listener of its own. A request (`GET`/`HEAD` with the
//! site's `Host`) is served from the node's copy while it is younger than
//! the TTL, else fetched from the origin and kept. A purge the API accepts
//! reaches each node after `edge_propagation_delay`: from then on, the
//! copies that node fetched before that moment are gone (a copy fetched
//! between the purge and its arrival is the old file too, as at a real
//! edge). The knobs `edge_drop_node` and `edge_drop_urls_containing` make
//! a node never receive some purges: the fault edge verification exists
//! to catch.
//!
//! The cache's rules are pure ([`NodeCache`]); the listeners and the
//! origin fetches are the thin part around them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::config::{EmulatedEndpoint, Knobs};
use crate::http_server::{self, Listener, ServeOptions};

/// Where the edge fetches from and how many nodes it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The origin, answering directly (`http://127.0.0.1:8080`); the
    /// site's host is sent as `Host`.
    pub origin: Url,
    /// Listeners, one per node (port 0: any free port).
    pub listen: Vec<SocketAddr>,
    /// How long a node keeps a copy before fetching it again.
    pub ttl: Duration,
}

/// The headers a node keeps with a copy and serves again: those that
/// identify the content (what edge verification compares) and its type.
const KEPT_HEADERS: [&str; 5] = [
    "etag",
    "last-modified",
    "content-type",
    "cache-control",
    "cache-tag",
];

/// One copy a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub fetched_at: SystemTime,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A purge on its way to a node: from `at` on, what the node fetched
/// before `at` and `matches` is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arrival {
    at: SystemTime,
    /// `host/path?query` of a file, or `host/dir/` (a prefix) of a
    /// directory.
    key: String,
    directory: bool,
}

impl Arrival {
    fn matches(&self, key: &str) -> bool {
        match self.directory {
            true => key.starts_with(&self.key),
            false => key == self.key,
        }
    }
}

/// One node's copies and the purges on their way to it. Pure: time is
/// passed in.
#[derive(Debug, Default)]
pub struct NodeCache {
    copies: HashMap<String, Copy>,
    arriving: Vec<Arrival>,
}

impl NodeCache {
    /// A purge that reaches this node at `at`.
    pub fn schedule(&mut self, key: String, directory: bool, at: SystemTime) {
        self.arriving.push(Arrival { at, key, directory });
    }

    /// Applies the purges that have arrived by `now`.
    fn arrive(&mut self, now: SystemTime) {
        let (arrived, waiting): (Vec<Arrival>, Vec<Arrival>) =
            self.arriving.drain(..).partition(|a| a.at <= now);
        self.arriving = waiting;
        for arrival in arrived {
            self.copies
                .retain(|key, copy| !(arrival.matches(key) && copy.fetched_at < arrival.at));
        }
    }

    /// The copy of `key` to serve at `now`, if the node holds a fresh one.
    pub fn lookup(&mut self, key: &str, now: SystemTime, ttl: Duration) -> Option<Copy> {
        self.arrive(now);
        let copy = self.copies.get(key)?;
        let age = now.duration_since(copy.fetched_at).unwrap_or_default();
        (age < ttl).then(|| copy.clone())
    }

    pub fn keep(&mut self, key: String, copy: Copy) {
        self.copies.insert(key, copy);
    }
}

/// The cache key of a URL: host, path and query, whatever the scheme (a
/// purge of `https://h/a` purges the copy served over http too).
pub fn key_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let mut key = format!("{host}{}", url.path());
    if let Some(query) = url.query() {
        key.push('?');
        key.push_str(query);
    }
    Some(key)
}

/// Which nodes drop a purge of `url` (the fault knobs): none, unless
/// `edge_drop_node` names one and `edge_drop_urls_containing` (when set)
/// is in the URL.
pub fn dropped_on(knobs: &Knobs, url: &str) -> Option<usize> {
    let node = knobs.edge_drop_node?;
    match knobs.edge_drop_urls_containing.as_deref() {
        Some(needle) if !needle.is_empty() && !url.contains(needle) => None,
        _ => Some(node),
    }
}

/// The edge: its nodes' caches and what they fetch from.
pub struct Edge {
    config: EdgeConfig,
    endpoints: Vec<EmulatedEndpoint>,
    nodes: Vec<Mutex<NodeCache>>,
    client: reqwest::Client,
}

impl Edge {
    fn node(&self, index: usize) -> std::sync::MutexGuard<'_, NodeCache> {
        self.nodes[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A purge the API accepted: it reaches each node after the
    /// propagation delay, except the nodes the fault knobs drop it on.
    pub fn purge(&self, files: &[String], directories: &[String], knobs: &Knobs) {
        let at = SystemTime::now() + knobs.edge_propagation_delay;
        let targets = files
            .iter()
            .map(|f| (f, false))
            .chain(directories.iter().map(|d| (d, true)));
        for (url, directory) in targets {
            let Some(key) = Url::parse(url).ok().as_ref().and_then(key_of) else {
                continue;
            };
            let dropped = dropped_on(knobs, url);
            for index in 0..self.nodes.len() {
                if dropped == Some(index) {
                    tracing::debug!(
                        node = index,
                        url,
                        "emulated edge: purge dropped by the fault knob"
                    );
                    continue;
                }
                self.node(index).schedule(key.clone(), directory, at);
            }
        }
    }

    /// Serves one request at node `index`.
    async fn serve(
        &self,
        index: usize,
        method: &Method,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
    ) -> Response {
        if method != Method::GET && method != Method::HEAD {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                "the edge serves GET and HEAD\n",
            )
                .into_response();
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
            .unwrap_or_default();
        if !self.endpoints.iter().any(|e| e.serves(&host)) {
            return (
                StatusCode::NOT_FOUND,
                format!("no endpoint serves the host {host:?}\n"),
            )
                .into_response();
        }
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let key = format!("{host}{path_and_query}");
        let now = SystemTime::now();
        let cached = self.node(index).lookup(&key, now, self.config.ttl);
        let (copy, hit) = match cached {
            Some(copy) => (copy, true),
            None => match self.fetch(&host, path_and_query).await {
                Ok(copy) => {
                    self.node(index).keep(key, copy.clone());
                    (copy, false)
                }
                Err(error) => {
                    return (
                        StatusCode::BAD_GATEWAY,
                        format!("the origin did not answer: {error}\n"),
                    )
                        .into_response();
                }
            },
        };
        respond(&copy, index, hit, method == Method::HEAD)
    }

    async fn fetch(&self, host: &str, path_and_query: &str) -> Result<Copy, String> {
        let url = format!(
            "{}{}",
            self.config.origin.as_str().trim_end_matches('/'),
            path_and_query
        );
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::HOST, host)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok(Copy {
            fetched_at: SystemTime::now(),
            status,
            headers,
            body,
        })
    }
}

fn respond(copy: &Copy, node: usize, hit: bool, head: bool) -> Response {
    let status = StatusCode::from_u16(copy.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = if head {
        Body::empty()
    } else {
        Body::from(copy.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &copy.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    if head {
        headers.insert(
            axum::http::header::CONTENT_LENGTH,
            HeaderValue::from(copy.body.len()),
        );
    }
    let age = SystemTime::now()
        .duration_since(copy.fetched_at)
        .unwrap_or_default()
        .as_secs();
    headers.insert(axum::http::header::AGE, HeaderValue::from(age));
    headers.insert(
        "x-cache",
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    headers.insert("x-edge-node", HeaderValue::from(node));
    response
}

/// The running nodes.
pub struct EdgeHandle {
    pub edge: Arc<Edge>,
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EdgeHandle {
    /// Binds each node's listener and serves until `shutdown`.
    pub async fn start(
        config: EdgeConfig,
        endpoints: Vec<EmulatedEndpoint>,
        shutdown: CancellationToken,
    ) -> std::io::Result<EdgeHandle> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            listeners.push(TcpListener::bind(addr).await?);
        }
        let edge = Arc::new(Edge {
            nodes: (0..listeners.len()).map(|_| Mutex::default()).collect(),
            config,
            endpoints,
            client,
        });
        let mut addrs = Vec::with_capacity(listeners.len());
        let mut tasks = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            addrs.push(listener.local_addr()?);
            let router = axum::Router::new()
                .fallback(node_handler)
                .with_state((edge.clone(), index));
            let options = ServeOptions {
                graceful: false,
                ..ServeOptions::default()
            };
            tasks.push(tokio::spawn(http_server::serve(
                Listener::Tcp(listener),
                router,
                options,
                shutdown.clone(),
            )));
        }
        Ok(EdgeHandle { edge, addrs, tasks })
    }
}

impl Drop for EdgeHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn node_handler(
    AxumState((edge, index)): AxumState<(Arc<Edge>, usize)>,
    request: Request,
) -> Response {
    edge.serve(index, request.method(), request.headers(), request.uri())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(at: SystemTime, body: &'static str) -> Copy {
        Copy {
            fetched_at: at,
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn a_purge_takes_effect_when_it_arrives() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let ttl = s(3600);
        let mut node = NodeCache::default();
        node.keep("h/a.css".into(), copy(t0, "v1"));
        node.keep("h/d/x.js".into(), copy(t0, "v1"));
        node.keep("h/dx.js".into(), copy(t0, "v1"));
        node.schedule("h/a.css".into(), false, t0 + s(10));
        node.schedule("h/d/".into(), true, t0 + s(10));
        // Before the purge arrives, the old copies are served.
        assert!(node.lookup("h/a.css", t0 + s(9), ttl).is_some());
        // A copy fetched after the purge was made but before it arrived
        // is old too.
        node.keep("h/d/x.js".into(), copy(t0 + s(5), "v1 again"));
        assert!(node.lookup("h/a.css", t0 + s(10), ttl).is_none());
        assert!(node.lookup("h/d/x.js", t0 + s(10), ttl).is_none());
        // Not under the directory: kept.
        assert!(node.lookup("h/dx.js", t0 + s(10), ttl).is_some());
        // Fetched after the purge arrived: kept.
        node.keep("h/a.css".into(), copy(t0 + s(11), "v2"));
        assert_eq!(
            node.lookup("h/a.css", t0 + s(12), ttl).map(|c| c.body),
            Some(Bytes::from_static(b"v2"))
        );
        // Older than the TTL: fetched again.
        assert!(node.lookup("h/a.css", t0 + s(11) + ttl, ttl).is_none());
    }

    #[test]
    fn the_fault_knobs_pick_a_node_and_urls() {
        let knobs = |node: Option<usize>, needle: Option<&str>| Knobs {
            edge_drop_node: node,
            edge_drop_urls_containing: needle.map(str::to_owned),
            ..Knobs::default()
        };
        let cases = [
            (knobs(None, None), "https://h/a.css", None),
            (knobs(None, Some("a.css")), "https://h/a.css", None),
            (knobs(Some(1), None), "https://h/a.css", Some(1)),
            (knobs(Some(1), Some("a.css")), "https://h/a.css", Some(1)),
            (knobs(Some(1), Some("b.css")), "https://h/a.css", None),
        ];
        for (knobs, url, expected) in cases {
            assert_eq!(dropped_on(&knobs, url), expected, "{knobs:?}");
        }
    }

    #[test]
    fn keys_ignore_the_scheme() {
        let key = |u: &str| key_of(&Url::parse(u).expect("url"));
        assert_eq!(
            key("https://www.example.com/a.css?v=1").as_deref(),
            Some("www.example.com/a.css?v=1")
        );
        assert_eq!(
            key("http://www.example.com/d/").as_deref(),
            Some("www.example.com/d/")
        );
    }
}

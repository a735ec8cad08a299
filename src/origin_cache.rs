//! Caches in front of the origin (Varnish, nginx's `proxy_cache`, any
//! HTTP cache that takes `PURGE`): what purgeq asks each of them, and what
//! their answers mean. Pure: the pipeline's `origin` stage does the I/O.
//!
//! Why they come first: the CDN re-fetches a purged URL from the origin;
//! when a cache in front of the origin still holds the old file, the CDN
//! fetches the old file again, keeps it for another TTL, and the purge's
//! quota is spent for nothing (`../shared/DESIGN.md`, "Freshness").

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::target::{HostPattern, Kind, Router};

/// How a layer is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Varnish with `contrib/varnish/purgeq.vcl`: `PURGE` a file, `BAN` a
    /// directory (every object under that path on that host).
    Varnish,
    /// nginx with `ngx_cache_purge` (Debian's
    /// `libnginx-mod-http-cache-purge`) and
    /// `contrib/nginx/purgeq-cache-purge.conf`: `PURGE` a file.
    Nginx,
    /// Any cache that takes `PURGE <path>` with the URL's `Host`.
    Http,
}

impl LayerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Varnish => "varnish",
            LayerKind::Nginx => "nginx",
            LayerKind::Http => "http",
        }
    }

    /// Whether one request purges a whole directory.
    ///
    /// Only Varnish: a `BAN` by host and path prefix. Debian's
    /// `ngx_cache_purge` is version 2.3, which has no wildcard purge: a
    /// `PURGE /dir/*` looks up the literal key `/dir/*`, answers 404 (not
    /// cached), and would be taken as done while every file under the
    /// directory stayed cached. So nginx and plain HTTP caches are given
    /// each file purgeq knows under the directory instead.
    pub fn purges_directories(self) -> bool {
        matches!(self, LayerKind::Varnish)
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRequest {
    /// `PURGE` or `BAN`.
    pub method: &'static str,
    /// The URL's path and query, as the layer keys its objects.
    pub path_and_query: String,
    /// The URL's host, sent as `Host`: a layer serving several sites keys
    /// its objects by host too.
    pub host: String,
}

/// Why a URL cannot be put to a layer (never expected: every stored URL
/// was normalized at intake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not an absolute http(s) URL")]
pub struct NotAUrl {
    pub url: String,
}

/// The request that purges `url` (a file, or a directory ending in `/`)
/// from a layer of `kind`; `None` for a directory the layer cannot purge
/// in one request (see [`LayerKind::purges_directories`]).
pub fn request_for(
    kind: LayerKind,
    target: Kind,
    url: &str,
) -> Result<Option<LayerRequest>, NotAUrl> {
    let parsed = url::Url::parse(url).map_err(|_| NotAUrl {
        url: url.to_owned(),
    })?;
    let host = match (parsed.scheme(), parsed.host_str()) {
        ("http" | "https", Some(host)) => match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        },
        _ => {
            return Err(NotAUrl {
                url: url.to_owned(),
            });
        }
    };
    let mut path_and_query = parsed.path().to_owned();
    if let Some(query) = parsed.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let method = match (target, kind) {
        (Kind::File, _) => "PURGE",
        (Kind::Directory, LayerKind::Varnish) => "BAN",
        (Kind::Directory, _) => return Ok(None),
    };
    Ok(Some(LayerRequest {
        method,
        path_and_query,
        host,
    }))
}

/// What a layer's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The layer no longer holds the URL (purged, or it held no copy).
    Done(&'static str),
    /// Not done: try again later (with the reason shown to operators).
    Retry(String),
}

/// Reads a layer's HTTP status. Anything but the statuses its contract
/// names is not done: a layer that is reached but not configured for
/// purges must hold the CDN back, not be taken as purged.
pub fn answer(kind: LayerKind, status: u16) -> Answer {
    match (kind, status) {
        (_, 200..=299) => Answer::Done("purged"),
        // ngx_cache_purge and most HTTP caches answer 404 for a URL they
        // do not hold: nothing to purge. Varnish's VCL answers 200 either
        // way, so a 404 there is the site's own VCL refusing the method.
        (LayerKind::Nginx | LayerKind::Http, 404) => Answer::Done("not cached"),
        (_, 403 | 405) => Answer::Retry(format!(
            "answered {status}: the layer refuses purges from this host \
             (is the purgeq snippet included, and this address allowed?)"
        )),
        (_, status) => Answer::Retry(format!("answered {status}")),
    }
}

/// How long a layer's failed purge waits before the next try: 1 s,
/// doubling, at most a minute. A layer that is down holds its URLs' CDN
/// purges back, so it is asked again soon after it returns.
pub fn retry_delay(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(60))
}

/// The layers that hold `host`, by name: each layer's `hosts`, or every
/// host when it names none.
#[derive(Debug, Clone, Default)]
pub struct LayerRoutes {
    layers: Vec<(String, Option<Router>)>,
}

impl LayerRoutes {
    /// From each layer's name and host patterns (already validated).
    pub fn new<'a>(layers: impl IntoIterator<Item = (&'a str, &'a [String])>) -> LayerRoutes {
        let layers = layers
            .into_iter()
            .map(|(name, hosts)| {
                let router = (!hosts.is_empty()).then(|| {
                    let mut router = Router::default();
                    for host in hosts {
                        if let Ok(pattern) = HostPattern::parse(host) {
                            // A pattern listed twice routes once: ignore
                            // the refusal.
                            let _ = router.add(pattern, name.to_owned());
                        }
                    }
                    router
                });
                (name.to_owned(), router)
            })
            .collect();
        LayerRoutes { layers }
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers in front of `host`'s origin, in configured order.
    pub fn for_host(&self, host: &str) -> Vec<&str> {
        self.layers
            .iter()
            .filter(|(_, router)| router.as_ref().is_none_or(|r| r.route(host).is_some()))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Whether a layer of this name is configured.
    pub fn knows(&self, name: &str) -> bool {
        self.layers.iter().any(|(n, _)| n == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(n, _)| n.as_str())
    }
}

/// The host of a normalized URL (`""` when it has none).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer, a target, and the request expected: method, path, `Host`.
    type Case = (
        LayerKind,
        Kind,
        &'static str,
        Option<(&'static str, &'static str, &'static str)>,
    );

    #[test]
    fn what_each_layer_is_asked() {
        let cases: &[Case] = &[
            (
                LayerKind::Varnish,
                Kind::File,
                "https://www.example.com/a/b.css?v=2",
                Some(("PURGE", "/a/b.css?v=2", "www.example.com")),
            ),
            (
                LayerKind::Varnish,
                Kind::Directory,
                "https://www.example.com/a/",
                Some(("BAN", "/a/", "www.example.com")),
            ),
            (
                LayerKind::Nginx,
                Kind::File,
                "http://example.com:8080/x.js",
                Some(("PURGE", "/x.js", "example.com:8080")),
            ),
            // No wildcard purge in Debian's ngx_cache_purge 2.3, nor in a
            // generic cache: the known files are purged instead.
            (
                LayerKind::Nginx,
                Kind::Directory,
                "https://example.com/a/",
                None,
            ),
            (
                LayerKind::Http,
                Kind::Directory,
                "https://example.com/a/",
                None,
            ),
            (
                LayerKind::Http,
                Kind::File,
                "https://example.com/%E4%B8%AD.html",
                Some(("PURGE", "/%E4%B8%AD.html", "example.com")),
            ),
        ];
        for (kind, target, url, expected) in cases {
            let got = request_for(*kind, *target, url).expect("a URL");
            let got = got
                .as_ref()
                .map(|r| (r.method, r.path_and_query.as_str(), r.host.as_str()));
            assert_eq!(got, *expected, "{kind} {target:?} {url}");
        }
        assert!(request_for(LayerKind::Varnish, Kind::File, "ftp://example.com/a").is_err());
    }

    #[test]
    fn what_each_answer_means() {
        use Answer::*;
        let cases: &[(LayerKind, u16, bool)] = &[
            (LayerKind::Varnish, 200, true),
            (LayerKind::Varnish, 204, true),
            (LayerKind::Varnish, 404, false),
            (LayerKind::Varnish, 405, false),
            (LayerKind::Varnish, 503, false),
            (LayerKind::Nginx, 200, true),
            (LayerKind::Nginx, 404, true),
            (LayerKind::Nginx, 403, false),
            (LayerKind::Nginx, 412, false),
            (LayerKind::Nginx, 502, false),
            (LayerKind::Http, 404, true),
            (LayerKind::Http, 301, false),
            (LayerKind::Http, 500, false),
        ];
        for (kind, status, done) in cases {
            let got = answer(*kind, *status);
            assert_eq!(matches!(got, Done(_)), *done, "{kind} {status}: {got:?}");
        }
        assert!(matches!(answer(LayerKind::Nginx, 403), Retry(r) if r.contains("refuses purges")));
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let delays: Vec<u64> = (0..10).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn layers_hold_their_hosts_or_every_host() {
        let only_www = vec!["www.example.com".to_owned()];
        let images = vec!["*.img.example.com".to_owned()];
        let routes = LayerRoutes::new([
            ("varnish-1", only_www.as_slice()),
            ("nginx-1", &[][..]),
            ("images", images.as_slice()),
        ]);
        let cases: &[(&str, &[&str])] = &[
            ("www.example.com", &["varnish-1", "nginx-1"]),
            ("example.com", &["nginx-1"]),
            ("a.img.example.com", &["nginx-1", "images"]),
            ("img.example.com", &["nginx-1"]),
        ];
        for (host, expected) in cases {
            assert_eq!(routes.for_host(host), *expected, "{host}");
        }
        assert!(routes.knows("images") && !routes.knows("varnish-2"));
        assert!(LayerRoutes::default().for_host("example.com").is_empty());
    }
}

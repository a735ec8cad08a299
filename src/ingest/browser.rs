//! What a web browser may do with the API: nothing a foreign page asks of it.
//!
//! The daemon listens on loopback without a token by default, and a
//! browser on the operator's desktop reaches loopback too. Two ways in,
//! both closed here, on every route:
//! - **Cross-site requests.** A foreign page can make the browser send a
//!   `POST` without a CORS preflight when its body is a form or text
//!   (`application/x-www-form-urlencoded`, `multipart/form-data`,
//!   `text/plain`), or has none. Browsers say where such a request comes
//!   from: `Sec-Fetch-Site` (`cross-site`, `same-site`) and `Origin` (a
//!   foreign origin, or `null` from a sandboxed frame or a `data:` URL). A
//!   state-changing request is refused when either says it is not from the
//!   daemon's own pages, and an API route refuses the three preflight-free
//!   content types outright (the status page's own forms are form posts
//!   and carry a per-session token: [`crate::ui::actions`]).
//! - **DNS rebinding.** A page of `evil.example` whose name then resolves
//!   to 127.0.0.1 is same-origin with itself, so the browser lets it read
//!   the answers. It cannot change the `Host` header, which names
//!   `evil.example`: over TCP without a token (the default loopback
//!   listener), a request is served only for a `Host` the daemon answers
//!   to — an IP address (a page cannot be *of* an address it does not
//!   serve), `localhost` and `*.localhost` (which browsers resolve to
//!   loopback themselves), this machine's host name, and
//!   `ingest.allowed_hosts`. With `ingest.token` a rebinding page finds
//!   only 401s and the login page, so any name of the host may be used.
//!   The Unix socket is out of a browser's reach: it is not checked for
//!   `Host`.
//!
//! The CLI, curl and scripts written for the CDN's API send no `Origin` or
//! `Sec-Fetch-*` and post JSON: none of this touches them.
//!
//! [`judge`] is the decision, a pure function with a table test; the
//! middleware around it only gathers the facts.

use axum::http::{Method, StatusCode};

/// What the decision looks at, read from one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub method: &'a str,
    /// The status page (`/`, `/ui/…`): its form posts are checked by
    /// their token, so form content types are allowed there.
    pub page: bool,
    /// Over TCP (a browser cannot open the Unix socket).
    pub over_tcp: bool,
    /// The TCP listener asks for `ingest.token`: then a rebinding page
    /// finds only 401s and a login page (it cannot send the token, and the
    /// browser keeps the page's session cookie for the real name), so the
    /// `Host` is not checked, and clients may use any name of the host.
    pub token_required: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Whether a TCP request may name `host` (no port): an IP address,
/// `localhost` or a name under it, or one of `names` (this machine's name
/// and `ingest.allowed_hosts`, lower-case: `Derived::allowed_hosts`).
fn allows(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || is_ip_literal(&host)
        || names.contains(&host)
}

/// Why a request was refused: the status and the text the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

/// Whether a request may go on.
///
/// | request | over | refused with |
/// |---|---|---|
/// | `Host: evil.example` (any method) | TCP without a token | 421, a name the daemon does not serve |
/// | `Host: evil.example` | TCP with `ingest.token`, or the Unix socket | — (the token or the socket's mode decides) |
/// | `POST`, `Sec-Fetch-Site: cross-site` or `same-site` | any | 403 |
/// | `POST`, `Origin: null` | any | 403 |
/// | `POST`, `Origin` of another host than `Host` | any | 403 |
/// | `POST` to the API as a form or `text/plain` | any | 415 |
/// | `POST` to the page as a form, same origin | any | — (its token decides) |
/// | `GET`, any `Origin` or `Sec-Fetch-Site`, allowed `Host` | any | — |
pub fn judge(facts: Facts<'_>, allowed: &[String]) -> Result<(), Refusal> {
    if facts.over_tcp
        && !facts.token_required
        && let Some(host) = facts.host
    {
        let name = host_without_port(host);
        if !allows(allowed, name) {
            return Err(Refusal {
                status: StatusCode::MISDIRECTED_REQUEST,
                error_type: "UnknownHost",
                message: format!(
                    "Host {name:?} is not a name this daemon answers to (an IP address, localhost, \
                     this machine's name, or ingest.allowed_hosts): refused so that a web page cannot \
                     reach the API through DNS rebinding"
                ),
            });
        }
    }
    let safe = matches!(
        Method::from_bytes(facts.method.as_bytes()),
        Ok(Method::GET | Method::HEAD | Method::OPTIONS)
    );
    if safe {
        return Ok(());
    }
    let forbidden = |message: String| Refusal {
        status: StatusCode::FORBIDDEN,
        error_type: "CrossSiteRequest",
        message,
    };
    if let Some(site) = facts.sec_fetch_site
        && !matches!(site, "same-origin" | "none")
    {
        return Err(forbidden(format!(
            "the browser says this request comes from a {site} page: only the daemon's own pages, \
             the CLI and scripts may change anything"
        )));
    }
    if let Some(origin) = facts.origin {
        if origin.trim() == "null" {
            return Err(forbidden(
                "Origin: null (a sandboxed frame, a file or data: page) may not change anything"
                    .to_owned(),
            ));
        }
        let origin_authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let same = facts
            .host
            .is_some_and(|host| origin_authority.eq_ignore_ascii_case(host));
        if !same {
            return Err(forbidden(format!(
                "a page of {origin} may not change anything here"
            )));
        }
    }
    if !facts.page
        && let Some(essence) = facts.content_type.map(media_type)
        && matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        )
    {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_type: "UnsupportedMediaType",
            message: format!(
                "content-type {essence} is refused on the API (a web page can send it cross-site \
                 without asking): send JSON with content-type: application/json"
            ),
        });
    }
    Ok(())
}

/// `text/plain; charset=utf-8` → `text/plain`.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `example.com:8088` → `example.com`; `[::1]:8088` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_ip_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>().is_ok()
}

/// The middleware: gathers the facts of `request` and applies [`judge`].
pub async fn guard(
    axum::extract::State(state): axum::extract::State<super::IngestState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let verdict = {
        let header = |name: axum::http::HeaderName| {
            request.headers().get(name).and_then(|v| v.to_str().ok())
        };
        let path = request.uri().path();
        let facts = Facts {
            method: request.method().as_str(),
            page: path == "/" || path.starts_with("/ui/"),
            over_tcp: matches!(
                request.extensions().get::<crate::http_server::Peer>(),
                Some(crate::http_server::Peer::Tcp(_))
            ),
            token_required: state.settings().derived.tcp_token.is_some(),
            host: header(axum::http::header::HOST),
            origin: header(axum::http::header::ORIGIN),
            sec_fetch_site: header(axum::http::HeaderName::from_static("sec-fetch-site")),
            content_type: header(axum::http::header::CONTENT_TYPE),
        };
        judge(facts, &state.settings().derived.allowed_hosts)
    };
    if let Err(refusal) = verdict {
        return super::error::ApiError::new(refusal.status, refusal.error_type, refusal.message)
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["deploy-1".to_owned(), "purgeq.internal".to_owned()]
    }

    fn post<'a>(host: &'a str) -> Facts<'a> {
        Facts {
            method: "POST",
            over_tcp: true,
            host: Some(host),
            content_type: Some("application/json"),
            ..Facts::default()
        }
    }

    fn status(facts: Facts<'_>) -> Option<u16> {
        judge(facts, &allowed()).err().map(|r| r.status.as_u16())
    }

    #[test]
    fn hosts_a_rebinding_page_would_name_are_refused_over_tcp() {
        for host in [
            "127.0.0.1:8088",
            "localhost:8088",
            "LOCALHOST",
            "app.localhost",
            "[::1]:8088",
            "10.1.2.3",
            "deploy-1:8088",
            "purgeq.internal",
            "purgeq.internal.",
        ] {
            let get = Facts {
                method: "GET",
                ..post(host)
            };
            assert_eq!(status(get), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8088",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
        ] {
            let get = Facts {
                method: "GET",
                ..post(host)
            };
            assert_eq!(status(get), Some(421), "{host}");
        }
        // The Unix socket: no browser there.
        let unix = Facts {
            over_tcp: false,
            ..post("evil.example")
        };
        assert_eq!(status(unix), None);
        // A listener that asks for the token: any name of the host (the
        // token decides, and a rebinding page has none).
        let with_token = Facts {
            token_required: true,
            ..post("deploy-1.example.com:8088")
        };
        assert_eq!(status(with_token), None);
        // No Host at all (HTTP/1.0 tools): no browser sends that.
        let bare = Facts {
            host: None,
            ..post("x")
        };
        assert_eq!(status(bare), None);
    }

    #[test]
    fn cross_site_requests_cannot_change_anything() {
        let host = "127.0.0.1:8088";
        let rows: [(Facts<'_>, Option<u16>); 13] = [
            // The CLI, curl: JSON, no Origin, no Sec-Fetch-*.
            (post(host), None),
            // A POST without a body (curl -X POST …/retry-failed).
            (
                Facts {
                    content_type: None,
                    ..post(host)
                },
                None,
            ),
            // A foreign page's form post.
            (
                Facts {
                    origin: Some("http://evil.example"),
                    sec_fetch_site: Some("cross-site"),
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..post(host)
                },
                Some(403),
            ),
            // The same without the browser's headers: the content type.
            (
                Facts {
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..post(host)
                },
                Some(415),
            ),
            (
                Facts {
                    content_type: Some("text/plain;charset=UTF-8"),
                    ..post(host)
                },
                Some(415),
            ),
            (
                Facts {
                    content_type: Some("multipart/form-data; boundary=x"),
                    ..post(host)
                },
                Some(415),
            ),
            (
                Facts {
                    sec_fetch_site: Some("same-site"),
                    ..post(host)
                },
                Some(403),
            ),
            (
                Facts {
                    origin: Some("null"),
                    ..post(host)
                },
                Some(403),
            ),
            (
                Facts {
                    origin: Some("http://localhost:9999"),
                    ..post(host)
                },
                Some(403),
            ),
            // The status page's own button: same origin, a form.
            (
                Facts {
                    page: true,
                    origin: Some("http://127.0.0.1:8088"),
                    sec_fetch_site: Some("same-origin"),
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..post(host)
                },
                None,
            ),
            // The page, but a foreign origin.
            (
                Facts {
                    page: true,
                    origin: Some("http://evil.example"),
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..post(host)
                },
                Some(403),
            ),
            // Reading is not acting: a foreign page's GET is answered
            // (the same-origin policy keeps it from reading the answer).
            (
                Facts {
                    method: "GET",
                    origin: Some("http://evil.example"),
                    sec_fetch_site: Some("cross-site"),
                    ..post(host)
                },
                None,
            ),
            // Typed by the user in the address bar.
            (
                Facts {
                    sec_fetch_site: Some("none"),
                    ..post(host)
                },
                None,
            ),
        ];
        for (facts, expected) in rows {
            assert_eq!(status(facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn ports_are_cut_from_names_not_from_addresses() {
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("a.example"), "a.example");
    }
}

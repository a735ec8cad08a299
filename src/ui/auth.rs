//! Who may see the page: the API's rules, in a browser's terms.
//!
//! On the Unix socket and on loopback TCP without `ingest.token`, anyone
//! who can connect may look, as with the API. Over TCP with a token (a
//! non-loopback bind requires one), a browser cannot send the bearer
//! header, so the page asks for the token ([`super::login_page`], which
//! shows nothing else), and `POST /ui/login` with the right one opens a
//! session ([`crate::ingest::sessions`]): a random id in a cookie (`HttpOnly`,
//! `SameSite=Strict`), good for 12 hours or until `POST /ui/logout`.
//! Wrong tokens are throttled per address and overall (429 with
//! `Retry-After`). No page, script or data is served without a bearer
//! token or a session.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::http_server::Peer;
use crate::ingest::IngestState;

pub(super) const COOKIE: &str = "purgeq_session";

/// The cookie named [`COOKIE`], if the request carries one.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Whether the request carries an open session's cookie.
pub(super) fn in_session(state: &IngestState, headers: &HeaderMap) -> bool {
    session_cookie(headers).is_some_and(|id| state.sessions.is_open(&id, std::time::Instant::now()))
}

fn login(status: StatusCode, problem: Option<&str>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::login_page(problem),
    )
        .into_response()
}

/// The layer in front of every page route.
pub async fn guard(State(state): State<IngestState>, request: Request, next: Next) -> Response {
    let over_tcp = matches!(request.extensions().get::<Peer>(), Some(Peer::Tcp(_)));
    let settings = state.settings();
    let Some(token) = settings.derived.tcp_token.as_ref().filter(|_| over_tcp) else {
        return next.run(request).await;
    };
    if request.uri().path() == "/ui/login" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|p| token.matches(p));
    let session = in_session(&state, headers);
    if bearer || session {
        return next.run(request).await;
    }
    login(StatusCode::UNAUTHORIZED, None)
}

/// `POST /ui/login`: the right token opens a session and goes to the page;
/// a wrong one asks again, and too many wrong ones wait.
pub async fn post_login(
    State(state): State<IngestState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let settings = state.settings();
    let Some(token) = settings.derived.tcp_token.as_ref() else {
        // No token configured: nothing to log in to.
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return login(
            StatusCode::FORBIDDEN,
            Some("log in from this daemon's own page"),
        );
    }
    let client = match peer.map(|axum::Extension(peer)| peer) {
        Some(Peer::Tcp(addr)) => Some(addr.ip()),
        _ => None,
    };
    let now = std::time::Instant::now();
    let sessions = &state.sessions;
    if let Err(wait) = sessions.throttle().check(client, now) {
        let seconds = wait.as_secs().max(1);
        let mut response = login(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!("too many wrong tokens: try again in {seconds} s")),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
        return response;
    }
    let presented = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !token.matches(presented.trim()) {
        sessions.throttle().failed(client, now);
        tracing::info!(client = ?client, "a wrong token was entered on the status page's login");
        return login(
            StatusCode::UNAUTHORIZED,
            Some("that is not this daemon's token"),
        );
    }
    sessions.throttle().succeeded(client);
    let id = sessions.open(now);
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::ingest::sessions::SESSION_TTL.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; purgeq_session=abc; b=2".parse().expect("cookie"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            "purgeq_sessionx=abc".parse().expect("cookie"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}

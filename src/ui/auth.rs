//! Who may see the page: the API's rules, in a browser's terms.
//!
//! On the Unix socket and on loopback TCP without `ingest.token`, anyone
//! who can connect may look, as with the API. Over TCP with a token (a
//! non-loopback bind requires one), a browser cannot send the bearer
//! header, so the page asks for the token ([`super::login_page`], which
//! shows nothing else), and `POST /ui/login` with the right one sets a
//! session cookie: a value derived from the token (never the token
//! itself), `HttpOnly` and `SameSite=Strict`, good until the token changes.
//! No page, script or data is served without one or the other.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::http_server::Peer;
use crate::ingest::IngestState;

const COOKIE: &str = "purgeq_session";
const PURPOSE: &str = "purgeq status page session";

/// The cookie named [`COOKIE`], if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
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
    let session = session_cookie(headers).is_some_and(|c| {
        let expected = token.derive(PURPOSE);
        c.len() == expected.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                c.as_bytes(),
                expected.as_bytes(),
            ))
    });
    if bearer || session {
        return next.run(request).await;
    }
    login(StatusCode::UNAUTHORIZED, None)
}

/// `POST /ui/login`: the right token sets the session cookie and goes to
/// the page; a wrong one asks again.
pub async fn post_login(
    State(state): State<IngestState>,
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
    let presented = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !token.matches(presented.trim()) {
        tracing::info!("a wrong token was entered on the status page's login");
        return login(
            StatusCode::UNAUTHORIZED,
            Some("that is not this daemon's token"),
        );
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        token.derive(PURPOSE)
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

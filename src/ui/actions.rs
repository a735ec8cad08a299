//! The page's buttons: retry a request's failed URLs, cancel its pending
//! ones. They do what `POST /v1/purges/{id}/retry` and `…/cancel` do, and
//! nothing else (the page writes to the store only through the actions
//! the API offers).
//!
//! A foreign page open in the same browser must not be able to press them
//! (cross-site request forgery). Two defences, both required:
//! - every form carries [`form_token`], a value derived from a secret
//!   drawn at process start and, when the page was opened in a login
//!   session, from that session's id (so a token seen in one session is
//!   worth nothing in another); a foreign page cannot read our pages (the
//!   same-origin policy; `frame-ancestors 'none'` keeps it from framing
//!   them), so it cannot know the value;
//! - the browser's own word on where the request comes from:
//!   `Sec-Fetch-Site` must be `same-origin` (or `none`, typed by the user),
//!   and an `Origin` header, when sent, must name this host.
//!
//! `ui.read_only = true` hides the buttons and refuses the actions.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::ingest::IngestState;
use crate::ingest::error::ApiError;

/// Drawn once per process: tokens do not survive a restart, which only
/// means a page opened before it must be reloaded to act.
fn secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

/// The hidden value every action form carries, for the page opened with
/// `headers` (its session, if it has one).
pub fn form_token(headers: &HeaderMap) -> String {
    token_for(
        secret(),
        super::auth::session_cookie(headers)
            .as_deref()
            .unwrap_or(""),
    )
}

fn token_for(secret: &[u8; 32], session: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"purgeq status page actions\0");
    mac.update(session.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a form post may act: the token matches and the browser says it
/// comes from our own page. The reason, when not.
pub fn check(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let forbidden = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{why}; reload the status page and press the button again"),
        )
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(forbidden(&format!("a {site} page may not act here")));
    }
    if let Some(origin) = header("origin") {
        let host = header(header::HOST.as_str()).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        // `null` (a sandboxed frame, a file: page) names no host at all.
        if origin == "null" || origin_host != host {
            return Err(forbidden(&format!("a page of {origin} may not act here")));
        }
    }
    let sent = url::form_urlencoded::parse(body)
        .find(|(key, _)| key == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let expected = form_token(headers);
    if sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(forbidden("the form's token is missing or stale"))
    }
}

/// `POST /ui/logout`: ends the session and forgets the cookie.
pub async fn post_logout(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = check(&headers, &body) {
        return error.into_response();
    }
    if let Some(id) = super::auth::session_cookie(&headers) {
        state.sessions.close(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (
                header::SET_COOKIE,
                format!(
                    "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                    super::auth::COOKIE
                ),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header"));
        }
        map
    }

    #[test]
    fn only_our_own_form_may_act() {
        let body = format!("csrf={}", form_token(&HeaderMap::new()));
        let ours = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("host", "127.0.0.1:8088"),
        ]);
        assert!(check(&ours, body.as_bytes()).is_ok());
        // A browser too old for Sec-Fetch-Site, with a same-host Origin.
        let old = headers(&[
            ("origin", "http://127.0.0.1:8088"),
            ("host", "127.0.0.1:8088"),
        ]);
        assert!(check(&old, body.as_bytes()).is_ok());
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let foreign = headers(&[(name, value)]);
            assert!(check(&foreign, body.as_bytes()).is_err(), "{value}");
        }
        let evil = headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8088"),
        ]);
        assert!(check(&evil, body.as_bytes()).is_err());
        let null = headers(&[("origin", "null"), ("host", "127.0.0.1:8088")]);
        assert!(check(&null, body.as_bytes()).is_err(), "Origin: null");
        assert!(check(&ours, b"csrf=0000").is_err(), "a wrong token");
        assert!(check(&ours, b"").is_err(), "no token");
        assert_ne!(token_for(&[1; 32], ""), token_for(&[2; 32], ""));
        // Bound to the session: another session's token does not act.
        assert_ne!(token_for(&[1; 32], "a"), token_for(&[1; 32], "b"));
        let mut in_session = ours.clone();
        in_session.insert("cookie", "purgeq_session=abc".parse().expect("cookie"));
        assert!(
            check(&in_session, body.as_bytes()).is_err(),
            "a token from no session"
        );
        let bound = format!("csrf={}", form_token(&in_session));
        assert!(check(&in_session, bound.as_bytes()).is_ok());
    }
}

//! The client's reading of CDN answers: any status code, headers and body,
//! for each of the three calls.
//!
//! The input is a small HTTP-like text, so seeds are readable files:
//!
//! ```text
//! ADD 202
//! x-correlation-id: 1234
//!
//! {"Succeeded": true, ...}
//! ```
//!
//! (`ADD`, `QUERY` or `LIST`, then headers, a blank line and the body.)
//! Beyond "never panics" (bodies are the service's, a proxy's HTML, or cut
//! short), it checks the rule the sender's error handling rests on: a body
//! with `"Succeeded": false` and an `ErrorInfo` is an API error whatever
//! the status code says, and nothing else is.
#![no_main]

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use purgeq::cdn::client::read;
use purgeq::cdn::{CdnError, wire};

/// Splits `data` at the first `\n`.
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, mut rest) = line(data);
    let Ok(first) = std::str::from_utf8(first) else {
        return;
    };
    let Some((call, status)) = first.split_once(' ') else {
        return;
    };
    let Some(status) = status
        .trim()
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return;
    };
    let mut headers = HeaderMap::new();
    loop {
        let (header, after) = line(rest);
        rest = after;
        if header.is_empty() {
            break;
        }
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&header[..colon]),
            HeaderValue::from_bytes(header[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let body = rest;

    let error = match call {
        "ADD" => read::add_purge(status, &headers, body).err(),
        "QUERY" => read::query_purge(status, &headers, body).err(),
        "LIST" => read::list_endpoints(status, &headers, body).err(),
        _ => return,
    };
    let documented_error =
        serde_json::from_slice::<wire::ErrorBody>(body).is_ok_and(|body| !body.succeeded);
    match &error {
        Some(CdnError::Api { .. }) => assert!(documented_error),
        _ => assert!(
            !documented_error,
            "an ErrorInfo body was not read as an API error"
        ),
    }
    if let Some(error) = error {
        // Formatting and classifying must not panic either.
        let _ = (error.to_string(), format!("{error:?}"), error.class());
    }
});

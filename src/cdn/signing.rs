//! Request signing for the Azure China CDN API.
//!
//! Every request carries the time it was made (`x-azurecdn-request-date`) and
//! an `Authorization: AzureCDN {key_id}:{signature}` header. The signature is
//! the upper-case hex HMAC-SHA256, keyed by the key *value*, of four lines
//! joined by CRLF: the path, the query parameters sorted by name
//! (`name:value`, joined by `", "`), the request date exactly as sent, and the
//! upper-case method.
//!
//! The same functions serve both sides: the client signs with them and the
//! emulator verifies with them, so a test against the emulator proves the
//! signer and the checker agree, and the fixture vectors prove both agree with
//! the reference implementation.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;
use url::Url;

use super::credentials::{KeyId, KeyValue};

/// Name of the header that carries the request time.
pub const DATE_HEADER: &str = "x-azurecdn-request-date";

/// The scheme word in front of `{key_id}:{signature}`.
pub const AUTH_SCHEME: &str = "AzureCDN";

/// `yyyy-MM-dd HH:mm:ss`, 24-hour clock, always UTC.
const REQUEST_DATE_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

type HmacSha256 = Hmac<Sha256>;

/// Formats a moment as the API wants it in `x-azurecdn-request-date`.
pub fn format_request_date(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    // Formatting with a fixed, valid description cannot fail for years 0..=9999.
    utc.format(REQUEST_DATE_FORMAT)
        .unwrap_or_else(|_| String::from("0000-00-00 00:00:00"))
}

/// Parses an `x-azurecdn-request-date` value; `None` when it is not exactly
/// of the documented form.
pub fn parse_request_date(value: &str) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(value, REQUEST_DATE_FORMAT)
        .ok()
        .map(|t| t.assume_utc())
}

/// Builds the string to sign for `method` on `url` at `request_date`.
///
/// `path` is taken as it appears on the wire (percent-encoded), the query
/// parameters decoded and sorted by name with a byte-wise comparison.
pub fn string_to_sign(method: &str, url: &Url, request_date: &str) -> String {
    string_to_sign_parts(method, url.path(), url.query(), request_date)
}

/// Same as [`string_to_sign`], from a request's raw path and query; the
/// emulator has these rather than a full URL.
pub fn string_to_sign_parts(
    method: &str,
    path: &str,
    query: Option<&str>,
    request_date: &str,
) -> String {
    let mut params: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    params.sort();
    let params = params
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{path}\r\n{params}\r\n{request_date}\r\n{}",
        method.to_ascii_uppercase()
    )
}

fn mac_for(key_value: &KeyValue) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key_value.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The upper-case hex signature of `string_to_sign`.
pub fn signature(key_value: &KeyValue, string_to_sign: &str) -> String {
    let mut mac = mac_for(key_value);
    mac.update(string_to_sign.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time (the emulator's side).
pub fn verify_signature(key_value: &KeyValue, string_to_sign: &str, claimed_hex: &str) -> bool {
    let Ok(claimed) = hex::decode(claimed_hex) else {
        return false;
    };
    let mut mac = mac_for(key_value);
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

/// The full `Authorization` header value.
pub fn authorization(key_id: &KeyId, key_value: &KeyValue, string_to_sign: &str) -> String {
    format!(
        "{AUTH_SCHEME} {}:{}",
        key_id.as_str(),
        signature(key_value, string_to_sign)
    )
}

/// An `Authorization` header split into its parts, or `None` when it is not
/// `AzureCDN {key_id}:{hex}`.
pub fn parse_authorization(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
    let (key_id, signature) = rest.split_once(':')?;
    let hex_ok = !signature.is_empty() && signature.bytes().all(|b| b.is_ascii_hexdigit());
    (!key_id.is_empty() && hex_ok).then_some((key_id, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_the_documented_date_shape() {
        let at = datetime!(2026-11-24 08:05:09 UTC);
        assert_eq!(format_request_date(at), "2026-11-24 08:05:09");
        let east = datetime!(2026-11-24 16:05:09 +08:00);
        assert_eq!(format_request_date(east), "2026-11-24 08:05:09");
        assert_eq!(parse_request_date("2026-11-24 08:05:09"), Some(at));
        assert_eq!(parse_request_date("2026-11-24T08:05:09"), None);
        assert_eq!(parse_request_date("Tue, 24 Nov 2026 08:05:09 GMT"), None);
    }

    #[test]
    fn parses_authorization_headers() {
        assert_eq!(
            parse_authorization("AzureCDN id:ABCDEF01"),
            Some(("id", "ABCDEF01"))
        );
        assert_eq!(parse_authorization("Bearer id:ABCDEF01"), None);
        assert_eq!(parse_authorization("AzureCDN id"), None);
        assert_eq!(parse_authorization("AzureCDN :AB"), None);
        assert_eq!(parse_authorization("AzureCDN id:XYZ"), None);
    }

    #[test]
    fn verification_matches_signing() {
        let key = KeyValue::new("k");
        let sig = signature(&key, "text");
        assert!(verify_signature(&key, "text", &sig));
        assert!(verify_signature(&key, "text", &sig.to_lowercase()));
        assert!(!verify_signature(&key, "other", &sig));
        assert!(!verify_signature(&KeyValue::new("x"), "text", &sig));
    }
}

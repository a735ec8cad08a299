//! Purge by tag on a CDN that has none (issue 35): the rules, pure.
//!
//! Azure China CDN purges URLs and directories only. purgeq keeps a
//! registry of which URL carries which tags (`store/tags.rs`), fed by
//! clients (`POST /v1/tags`), by the response headers of what it already
//! fetches (edge verification's origin probe), and by the origin's access
//! log; a purge by tag is the tag's URLs at that moment. This module holds
//! what is decided without I/O: what a tag may be, how a header or a log
//! line names tags, and how a request's tags become its files.

use std::collections::{BTreeMap, HashSet};

/// The longest tag taken: Fastly's surrogate keys stop at 1,024 bytes,
/// Cloudflare's cache tags at 1,024 per header; one tag of more than 128
/// is a mistake (a URL, a serialized object) rather than a name.
pub const MAX_TAG_BYTES: usize = 128;

/// Why a tag is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    Empty,
    TooLong(usize),
    /// Whitespace, a comma or a control character: the headers that carry
    /// tags separate them by these, so such a tag could never be learned
    /// back or told apart.
    BadCharacter(char),
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagError::Empty => write!(f, "a tag is empty"),
            TagError::TooLong(n) => write!(f, "a tag is {n} bytes, more than {MAX_TAG_BYTES}"),
            TagError::BadCharacter(c) => write!(
                f,
                "a tag contains {c:?}; tags are printable text without spaces or commas"
            ),
        }
    }
}

/// Checks one tag as a client or a header gave it.
pub fn check_tag(tag: &str) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(TagError::TooLong(tag.len()));
    }
    match tag.chars().find(|c| {
        c.is_whitespace() || c.is_control() || *c == ',' || crate::target::is_deceptive(*c)
    }) {
        Some(c) => Err(TagError::BadCharacter(c)),
        None => Ok(()),
    }
}

/// The tags a header value names. `Cache-Tag` separates by commas,
/// `Surrogate-Key` and `xkey` by spaces; splitting on both reads all
/// three (a comma or a space is never part of a tag, see [`check_tag`]).
/// Tags that are not valid are left out; each tag once, in order.
pub fn tags_in_header(value: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| check_tag(t).is_ok())
        .filter(|t| seen.insert(*t))
        .map(str::to_owned)
        .collect()
}

/// The tags a response's headers name, from the headers configured
/// (`tags.headers`, matched without regard to case) in that order.
/// Empty: the response said nothing about tags (not "no tags": a cached
/// answer from a layer in front of the origin may lack the header).
pub fn tags_in_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    wanted: &[String],
) -> Vec<String> {
    let headers: Vec<(&str, &str)> = headers.into_iter().collect();
    let mut tags = Vec::new();
    for name in wanted {
        for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            for tag in tags_in_header(value) {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
    }
    tags
}

/// One line of the origin's access log, in the documented format
/// (`contrib/nginx/purgeq-tags-log.conf`):
///
/// ```text
/// $status $scheme://$host$request_uri $upstream_http_cache_tag
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// A successful answer that named tags: learn them.
    Tagged { url: String, tags: Vec<String> },
    /// Nothing to learn: not a 2xx answer, or no tags (nginx writes `-`
    /// for an absent header, which a cache hit always is).
    Nothing,
}

/// Why a log line could not be read (counted, and skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine(pub &'static str);

/// Reads one access-log line (see [`LogLine`]).
pub fn parse_log_line(line: &str) -> Result<LogLine, BadLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut fields = line.splitn(3, ' ');
    let status = fields.next().unwrap_or_default();
    let url = fields.next().ok_or(BadLine("no URL after the status"))?;
    let tags = fields.next().unwrap_or("-").trim();
    let status: u16 = status
        .parse()
        .map_err(|_| BadLine("the first field is not an HTTP status"))?;
    if !(100..=599).contains(&status) {
        return Err(BadLine("the first field is not an HTTP status"));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BadLine("the second field is not an absolute http(s) URL"));
    }
    if !(200..300).contains(&status) || tags == "-" || tags.is_empty() {
        return Ok(LogLine::Nothing);
    }
    let tags = tags_in_header(tags);
    match tags.is_empty() {
        true => Ok(LogLine::Nothing),
        false => Ok(LogLine::Tagged {
            url: url.to_owned(),
            tags,
        }),
    }
}

/// A URL's tags cut to the configured maximum (`tags.max_tags_per_url`):
/// the first ones are kept (a header lists the most specific first, by
/// custom); returns how many were dropped.
pub fn bound_tags(tags: &mut Vec<String>, max: usize) -> usize {
    let dropped = tags.len().saturating_sub(max);
    tags.truncate(max);
    dropped
}

/// How a request's tags became files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Each URL once, in the order of the tags, with the first tag that
    /// gave it.
    pub urls: Vec<(String, String)>,
    /// How many URLs each tag gave (before removing URLs other tags gave).
    pub per_tag: BTreeMap<String, usize>,
    /// Tags the registry does not know.
    pub unknown: Vec<String>,
}

/// Turns each tag's URLs (as the registry gave them) into the request's
/// files: a URL two tags share is purged once, and `explicit` URLs (the
/// request's own `files`/`urls`) are not repeated.
pub fn expand(
    tags: &[String],
    found: &BTreeMap<String, Vec<String>>,
    explicit: &HashSet<&str>,
) -> Expansion {
    let mut expansion = Expansion::default();
    let mut seen: HashSet<&str> = explicit.clone();
    for tag in tags {
        if expansion.per_tag.contains_key(tag) {
            continue;
        }
        let urls = found.get(tag).map(Vec::as_slice).unwrap_or_default();
        expansion.per_tag.insert(tag.clone(), urls.len());
        if urls.is_empty() {
            expansion.unknown.push(tag.clone());
        }
        for url in urls {
            if seen.insert(url.as_str()) {
                expansion.urls.push((url.clone(), tag.clone()));
            }
        }
    }
    expansion
}

/// The warning a request's answer carries for tags the registry does
/// not know (not an error: the other tags' URLs are purged).
pub fn unknown_warning(unknown: &[String]) -> Option<String> {
    match unknown {
        [] => None,
        [one] => Some(format!(
            "tag {one:?} is not in the registry: no URL carries it"
        )),
        many => Some(format!(
            "{} tags are not in the registry: {}",
            many.len(),
            many.iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_printable_words() {
        let cases: &[(&str, Result<(), TagError>)] = &[
            ("product-42", Ok(())),
            ("Cat:7/ü", Ok(())),
            ("", Err(TagError::Empty)),
            ("a b", Err(TagError::BadCharacter(' '))),
            ("a,b", Err(TagError::BadCharacter(','))),
            ("a\u{7}", Err(TagError::BadCharacter('\u{7}'))),
            ("a\u{202e}", Err(TagError::BadCharacter('\u{202e}'))),
        ];
        for (tag, expected) in cases {
            assert_eq!(&check_tag(tag), expected, "{tag:?}");
        }
        assert_eq!(check_tag(&"x".repeat(129)), Err(TagError::TooLong(129)));
        assert_eq!(check_tag(&"x".repeat(128)), Ok(()));
    }

    #[test]
    fn header_values_split_on_commas_and_spaces() {
        let cases: &[(&str, &[&str])] = &[
            ("product-42,category-7", &["product-42", "category-7"]),
            (
                "product-42, category-7 ,x",
                &["product-42", "category-7", "x"],
            ),
            ("key1 key2  key3", &["key1", "key2", "key3"]),
            ("a,a b a", &["a", "b"]),
            ("", &[]),
            (" , ", &[]),
        ];
        for (value, expected) in cases {
            assert_eq!(tags_in_header(value), *expected, "{value:?}");
        }
    }

    #[test]
    fn configured_headers_are_read_in_order_without_case() {
        let wanted = vec![
            "Cache-Tag".to_owned(),
            "Surrogate-Key".to_owned(),
            "xkey".to_owned(),
        ];
        let headers = [
            ("content-type", "text/html"),
            ("xkey", "c d"),
            ("cache-tag", "a,b"),
            ("SURROGATE-KEY", "b c"),
        ];
        assert_eq!(tags_in_headers(headers, &wanted), ["a", "b", "c", "d"]);
        assert!(tags_in_headers(headers, &["X-Other".to_owned()]).is_empty());
    }

    #[test]
    fn access_log_lines() {
        let tagged = |url: &str, tags: &[&str]| {
            Ok(LogLine::Tagged {
                url: url.to_owned(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            })
        };
        let cases: &[(&str, Result<LogLine, BadLine>)] = &[
            (
                "200 https://www.example.com/p/42?x=1 product-42,category-7\n",
                tagged(
                    "https://www.example.com/p/42?x=1",
                    &["product-42", "category-7"],
                ),
            ),
            (
                "206 http://a.example.com/v.mp4 video-1 video-all",
                tagged("http://a.example.com/v.mp4", &["video-1", "video-all"]),
            ),
            ("200 https://www.example.com/ -", Ok(LogLine::Nothing)),
            ("200 https://www.example.com/", Ok(LogLine::Nothing)),
            (
                "404 https://www.example.com/gone product-1",
                Ok(LogLine::Nothing),
            ),
            (
                "304 https://www.example.com/ product-1",
                Ok(LogLine::Nothing),
            ),
            ("", Err(BadLine("no URL after the status"))),
            ("garbage", Err(BadLine("no URL after the status"))),
            (
                "GET https://www.example.com/ a",
                Err(BadLine("the first field is not an HTTP status")),
            ),
            (
                "999 https://www.example.com/ a",
                Err(BadLine("the first field is not an HTTP status")),
            ),
            (
                "200 /relative a",
                Err(BadLine("the second field is not an absolute http(s) URL")),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(&parse_log_line(line), expected, "{line:?}");
        }
    }

    #[test]
    fn a_url_keeps_its_first_tags_up_to_the_bound() {
        let mut tags: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(bound_tags(&mut tags, 2), 1);
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(bound_tags(&mut tags, 5), 0);
    }

    #[test]
    fn expansion_names_each_url_once_with_its_first_tag() {
        let found: BTreeMap<String, Vec<String>> =
            [("p1", vec!["/a", "/b"]), ("p2", vec!["/b", "/c", "/x"])]
                .into_iter()
                .map(|(t, urls)| (t.to_owned(), urls.into_iter().map(String::from).collect()))
                .collect();
        let tags: Vec<String> = ["p1", "p2", "nope", "p1"].map(String::from).to_vec();
        let explicit: HashSet<&str> = ["/x"].into_iter().collect();
        let expansion = expand(&tags, &found, &explicit);
        assert_eq!(
            expansion.urls,
            [("/a", "p1"), ("/b", "p1"), ("/c", "p2")].map(|(u, t)| (u.to_owned(), t.to_owned()))
        );
        assert_eq!(expansion.per_tag["p1"], 2);
        assert_eq!(expansion.per_tag["p2"], 3);
        assert_eq!(expansion.per_tag["nope"], 0);
        assert_eq!(expansion.unknown, ["nope"]);
        assert_eq!(
            unknown_warning(&expansion.unknown).as_deref(),
            Some("tag \"nope\" is not in the registry: no URL carries it")
        );
        assert_eq!(unknown_warning(&[]), None);
    }
}

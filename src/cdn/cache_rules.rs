//! An endpoint's cache policy, and what it tells the planner: which URLs
//! are one cached object, and how long a copy cached before an intent can
//! still be served.
//!
//! The CDN publishes each endpoint's policy (`GET …/cacherules`, the
//! Swagger's `CachePolicy`): rules by suffix, directory or full path with
//! a TTL, and three switches. Two of them change what a purge is worth:
//!
//! - `IgnoreQueryString`: the edge keys its cache on the path alone, so
//!   `a.js?v=1` and `a.js?v=2` are one object, and purging `a.js` purges
//!   both. purgeq sends one purge for them ([`CachePolicy::same_object`]).
//! - `IgnoreCacheControl`: the edge caches by these rules whatever the
//!   origin says, so the longest TTL among the rules that match a URL
//!   bounds how long any copy can live ([`CachePolicy::bound`]). An intent
//!   that waited longer than that needs no purge: every copy that predates
//!   it has expired. Where the edge honours the origin's headers, or no
//!   rule matches, nothing is assumed and the URL is purged.
//!
//! How rules combine when several match is not documented; the longest TTL
//! is the safe reading (a copy lives at most that long under any of them).
//! Pure functions over a parsed policy: the daemon reads and stores the
//! policy, the store applies what these decide.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cdn::wire::{CachePolicyBody, CacheRuleBody};
use crate::target::{Kind, PurgeTarget};

/// How a rule picks its URLs (`CacheRule.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleType {
    /// By file extension: `.html`.
    Suffix,
    /// Every file under a directory: `/static/`.
    Dir,
    /// One path: `/index.html`.
    FullUri,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Suffix => "Suffix",
            RuleType::Dir => "Dir",
            RuleType::FullUri => "FullUri",
        }
    }

    fn parse(text: &str) -> Option<RuleType> {
        [RuleType::Suffix, RuleType::Dir, RuleType::FullUri]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// One rule: the items it names and their TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRule {
    pub rule_type: RuleType,
    pub items: Vec<String>,
    pub ttl_secs: u64,
}

/// An endpoint's cache policy, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePolicy {
    pub rules: Vec<CacheRule>,
    pub ignore_cache_control: bool,
    pub ignore_query_string: bool,
    pub ignore_cookie: bool,
}

/// Why a policy body was refused: which field, and what it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PolicyError {
    pub field: String,
    pub problem: String,
}

/// How long a copy of a URL can live at the edge, and the rule that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    pub ttl_secs: u64,
    /// The rule, for the history: `Suffix .html, TTL 300 s`.
    pub rule: String,
}

impl CachePolicy {
    /// Reads the API's body, refusing what the Swagger does not allow (an
    /// unknown `Type`, a `TTL` that is not a number of seconds, a switch
    /// that is not `"true"`/`"false"`), naming the field.
    pub fn from_wire(body: &CachePolicyBody) -> Result<CachePolicy, PolicyError> {
        let rules = body
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| rule_from_wire(index, rule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CachePolicy {
            rules,
            ignore_cache_control: switch("IgnoreCacheControl", &body.ignore_cache_control)?,
            ignore_query_string: switch("IgnoreQueryString", &body.ignore_query_string)?,
            ignore_cookie: switch("IgnoreCookie", &body.ignore_cookie)?,
        })
    }

    /// The API's body for this policy (strings where the Swagger has them).
    pub fn to_wire(&self) -> CachePolicyBody {
        CachePolicyBody {
            rules: self
                .rules
                .iter()
                .map(|rule| CacheRuleBody {
                    items: rule.items.clone(),
                    ttl: rule.ttl_secs.to_string(),
                    rule_type: rule.rule_type.as_str().to_owned(),
                })
                .collect(),
            ignore_cache_control: Some(self.ignore_cache_control.to_string()),
            ignore_query_string: Some(self.ignore_query_string.to_string()),
            ignore_cookie: Some(self.ignore_cookie.to_string()),
        }
    }

    /// The URL the edge caches `url` as, when that differs from `url`: the
    /// URL without its query string where the endpoint ignores query
    /// strings. `None`: `url` is its own object.
    pub fn same_object(&self, url: &str) -> Option<String> {
        if !self.ignore_query_string {
            return None;
        }
        url.split_once('?').map(|(bare, _)| bare.to_owned())
    }

    /// How long a copy of `url` cached before now can still be served:
    /// the longest TTL of the rules that match it, where the edge ignores
    /// the origin's `Cache-Control`. `None`: no bound is known (the origin
    /// decides, or no rule matches), so the URL must be purged.
    pub fn bound(&self, url: &str) -> Option<Bound> {
        if !self.ignore_cache_control {
            return None;
        }
        let path = path_of(url);
        self.rules
            .iter()
            .filter_map(|rule| {
                rule.items
                    .iter()
                    .find(|item| matches(rule.rule_type, item, path))
                    .map(|item| Bound {
                        ttl_secs: rule.ttl_secs,
                        rule: format!(
                            "{} {item}, TTL {} s",
                            rule.rule_type.as_str(),
                            rule.ttl_secs
                        ),
                    })
            })
            .max_by_key(|bound| bound.ttl_secs)
    }
}

impl fmt::Display for CachePolicy {
    /// One line for `purgeq endpoints` and the page.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on_off = |b: bool| if b { "ignored" } else { "honoured" };
        write!(
            f,
            "query strings {}, Cache-Control {}",
            if self.ignore_query_string {
                "ignored"
            } else {
                "kept"
            },
            on_off(self.ignore_cache_control)
        )?;
        for rule in &self.rules {
            write!(
                f,
                "; {} {} {} s",
                rule.rule_type.as_str(),
                rule.items.join(" "),
                rule.ttl_secs
            )?;
        }
        Ok(())
    }
}

/// A policy as last read, and when; with the last refresh's failure, if
/// the newest attempt failed (the copy is then older than it should be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPolicy {
    pub policy: CachePolicy,
    /// RFC 3339, UTC.
    pub fetched_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_error: Option<String>,
}

/// The policies in force, by endpoint: loaded from the store at start,
/// replaced as the CDN answers. Read on every intent (a lock held for a
/// map lookup), written a few times an hour.
#[derive(Debug, Default)]
pub struct Policies {
    by_endpoint: RwLock<HashMap<String, KnownPolicy>>,
}

impl Policies {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, KnownPolicy>> {
        // A writer that panicked left a whole map (inserts are atomic).
        self.by_endpoint.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, KnownPolicy>> {
        self.by_endpoint.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, endpoint_id: &str) -> Option<CachePolicy> {
        self.read().get(endpoint_id).map(|k| k.policy.clone())
    }

    pub fn set(&self, endpoint_id: &str, known: KnownPolicy) {
        self.write().insert(endpoint_id.to_owned(), known);
    }

    /// Notes that a refresh failed; the copy in force stays.
    pub fn refresh_failed(&self, endpoint_id: &str, error: String) {
        if let Some(known) = self.write().get_mut(endpoint_id) {
            known.refresh_error = Some(error);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, KnownPolicy> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What the policies say about each file of a request posted `at`:
    /// files whose endpoint ignores query strings are rewritten to the
    /// object the edge caches (the URL asked for is kept in the fact), and
    /// files with a TTL bound get the moment their older copies are gone.
    /// Keyed by position in `targets`; files with nothing to say are left
    /// out.
    pub fn facts(
        &self,
        targets: &mut [PurgeTarget],
        at: OffsetDateTime,
    ) -> HashMap<usize, CacheFact> {
        let policies = self.read();
        let mut facts = HashMap::new();
        if policies.is_empty() {
            return facts;
        }
        for (position, target) in targets.iter_mut().enumerate() {
            if target.kind != Kind::File {
                continue;
            }
            let Some(known) = policies.get(&target.endpoint_id) else {
                continue;
            };
            let fact = fact_for(&known.policy, target, at);
            if fact != CacheFact::default() {
                facts.insert(position, fact);
            }
        }
        facts
    }
}

/// What an endpoint's policy says about one file of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheFact {
    /// The URL the client asked for, where the target now names the
    /// object the edge caches (`a.js?v=1` → `a.js`).
    pub asked_as: Option<String>,
    /// When every copy cached before the intent has expired, and by which
    /// rule.
    pub expires: Option<(OffsetDateTime, String)>,
}

/// [`Policies::facts`] for one file.
pub fn fact_for(policy: &CachePolicy, target: &mut PurgeTarget, at: OffsetDateTime) -> CacheFact {
    let asked_as = policy
        .same_object(&target.url)
        .map(|bare| std::mem::replace(&mut target.url, bare));
    let expires = policy.bound(&target.url).map(|bound| {
        let ttl = time::Duration::seconds(i64::try_from(bound.ttl_secs).unwrap_or(i64::MAX));
        (at.saturating_add(ttl), bound.rule)
    });
    CacheFact { asked_as, expires }
}

fn rule_from_wire(index: usize, rule: &CacheRuleBody) -> Result<CacheRule, PolicyError> {
    let field = |name: &str| format!("Rules[{index}].{name}");
    let rule_type = RuleType::parse(&rule.rule_type).ok_or_else(|| PolicyError {
        field: field("Type"),
        problem: format!(
            "{:?} is not Suffix, Dir or FullUri",
            truncated(&rule.rule_type)
        ),
    })?;
    let ttl_secs = parse_ttl(&rule.ttl).ok_or_else(|| PolicyError {
        field: field("TTL"),
        problem: format!("{:?} is not a number of seconds", truncated(&rule.ttl)),
    })?;
    if let Some(item) = rule.items.iter().find(|i| i.trim().is_empty()) {
        return Err(PolicyError {
            field: field("Items"),
            problem: format!("{item:?} is empty"),
        });
    }
    Ok(CacheRule {
        rule_type,
        items: rule.items.clone(),
        ttl_secs,
    })
}

/// Seconds, written as a whole number (`"300"`) or a number with a
/// fraction (`"300.0"`, the Swagger's `format: number`), never negative.
fn parse_ttl(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(whole) = text.parse::<u64>() {
        return Some(whole);
    }
    let number: f64 = text.parse().ok()?;
    (number.is_finite() && number >= 0.0 && number <= u64::MAX as f64).then_some(number as u64)
}

/// A switch: absent is `false`; otherwise `"true"` or `"false"` (the
/// Swagger's `format: boolean`; an empty string is neither).
fn switch(field: &str, value: &Option<String>) -> Result<bool, PolicyError> {
    match value.as_deref().map(str::trim) {
        None => Ok(false),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(PolicyError {
            field: field.to_owned(),
            problem: format!("{:?} is not \"true\" or \"false\"", truncated(other)),
        }),
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The path of an absolute URL, without its query or fragment:
/// `https://h/a/b.js?v=1` → `/a/b.js`.
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("/", |start| &after_scheme[start..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Whether `item` of a rule of `rule_type` picks `path`. Suffixes are
/// compared without case (`.HTML` is an `.html` file to a web server's
/// MIME table); a suffix may be written `.html`, `html` or `*.html`. A
/// directory picks what is under it (`/static` and `/static/` alike); a
/// full path picks that path only.
fn matches(rule_type: RuleType, item: &str, path: &str) -> bool {
    let item = item.trim();
    match rule_type {
        RuleType::Suffix => {
            let bare = item.trim_start_matches('*').trim_start_matches('.');
            let suffix = format!(".{}", bare.to_ascii_lowercase());
            !bare.is_empty() && path.to_ascii_lowercase().ends_with(&suffix)
        }
        RuleType::Dir => {
            let mut directory = if item.starts_with('/') {
                item.to_owned()
            } else {
                format!("/{item}")
            };
            if !directory.ends_with('/') {
                directory.push('/');
            }
            path.starts_with(&directory)
        }
        RuleType::FullUri => {
            let item = item.split_once("://").map_or(item, |(_, rest)| {
                rest.find('/').map_or("/", |start| &rest[start..])
            });
            if item.starts_with('/') {
                path == item
            } else {
                path.strip_prefix('/') == Some(item)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule_type: &str, items: &[&str], ttl: &str) -> CacheRuleBody {
        CacheRuleBody {
            items: items.iter().map(|s| (*s).to_owned()).collect(),
            ttl: ttl.to_owned(),
            rule_type: rule_type.to_owned(),
        }
    }

    fn policy(ignore_cache_control: &str, rules: Vec<CacheRuleBody>) -> CachePolicy {
        CachePolicy::from_wire(&CachePolicyBody {
            rules,
            ignore_cache_control: Some(ignore_cache_control.to_owned()),
            ignore_query_string: Some("false".to_owned()),
            ignore_cookie: None,
        })
        .expect("a valid policy")
    }

    #[test]
    fn the_longest_matching_ttl_bounds_a_copy_where_cache_control_is_ignored() {
        let rules = || {
            vec![
                rule("Suffix", &[".html", ".htm"], "300"),
                rule("Dir", &["/static/"], "86400"),
                rule("FullUri", &["/index.html"], "60"),
                rule("Suffix", &["js"], "3600"),
            ]
        };
        let ignoring = policy("true", rules());
        let honouring = policy("false", rules());
        // (url, bound where Cache-Control is ignored)
        let table: [(&str, Option<u64>); 9] = [
            ("https://h/a/page.html", Some(300)),
            ("https://h/a/PAGE.HTM", Some(300)),
            ("https://h/index.html", Some(300)),
            ("https://h/static/a.html", Some(86_400)),
            ("https://h/static/deep/x.png", Some(86_400)),
            ("https://h/staticky/x.png", None),
            ("https://h/app.js?v=2", Some(3600)),
            ("https://h/a/b.css", None),
            ("https://h/page.html.gz", None),
        ];
        for (url, expected) in table {
            assert_eq!(
                ignoring.bound(url).map(|b| b.ttl_secs),
                expected,
                "{url} where Cache-Control is ignored"
            );
            assert_eq!(honouring.bound(url), None, "{url} where it is honoured");
        }
        assert_eq!(
            ignoring.bound("https://h/static/a.html").map(|b| b.rule),
            Some("Dir /static/, TTL 86400 s".to_owned())
        );
    }

    #[test]
    fn rule_items_are_read_in_their_written_forms() {
        // (type, item, path, matches)
        let table = [
            ("Suffix", "*.css", "/a/b.css", true),
            ("Suffix", "css", "/a/b.css", true),
            ("Suffix", ".css", "/a/bcss", false),
            ("Suffix", "*", "/a/b", false),
            ("Dir", "static", "/static/a", true),
            ("Dir", "/static", "/static", false),
            ("Dir", "/", "/anything", true),
            ("FullUri", "index.html", "/index.html", true),
            ("FullUri", "/index.html", "/a/index.html", false),
            ("FullUri", "https://h/index.html", "/index.html", true),
        ];
        for (rule_type, item, path, expected) in table {
            let rule_type = RuleType::parse(rule_type).unwrap();
            assert_eq!(
                matches(rule_type, item, path),
                expected,
                "{rule_type:?} {item} on {path}"
            );
        }
    }

    #[test]
    fn only_an_endpoint_that_ignores_query_strings_makes_variants_one_object() {
        let mut ignoring = CachePolicy {
            ignore_query_string: true,
            ..CachePolicy::default()
        };
        let table = [
            ("https://h/a.js?v=1", Some("https://h/a.js")),
            ("https://h/a.js?", Some("https://h/a.js")),
            ("https://h/a.js", None),
        ];
        for (url, expected) in table {
            assert_eq!(ignoring.same_object(url).as_deref(), expected, "{url}");
        }
        ignoring.ignore_query_string = false;
        assert_eq!(ignoring.same_object("https://h/a.js?v=1"), None);
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        // (body, field named)
        let table: Vec<(CachePolicyBody, &str)> = vec![
            (
                CachePolicyBody {
                    rules: vec![rule("Prefix", &["/a"], "1")],
                    ..CachePolicyBody::default()
                },
                "Rules[0].Type",
            ),
            (
                CachePolicyBody {
                    rules: vec![rule("Dir", &["/a"], "1"), rule("Dir", &["/b"], "-5")],
                    ..CachePolicyBody::default()
                },
                "Rules[1].TTL",
            ),
            (
                CachePolicyBody {
                    rules: vec![rule("Suffix", &[""], "1")],
                    ..CachePolicyBody::default()
                },
                "Rules[0].Items",
            ),
            (
                CachePolicyBody {
                    ignore_query_string: Some("yes".to_owned()),
                    ..CachePolicyBody::default()
                },
                "IgnoreQueryString",
            ),
            (
                CachePolicyBody {
                    ignore_cookie: Some(String::new()),
                    ..CachePolicyBody::default()
                },
                "IgnoreCookie",
            ),
        ];
        for (body, field) in table {
            let error = CachePolicy::from_wire(&body).expect_err(field);
            assert_eq!(error.field, field);
        }
    }

    #[test]
    fn the_wire_form_reads_back_the_same() {
        let policy = CachePolicy {
            rules: vec![CacheRule {
                rule_type: RuleType::Suffix,
                items: vec![".html".to_owned()],
                ttl_secs: 300,
            }],
            ignore_cache_control: true,
            ignore_query_string: false,
            ignore_cookie: true,
        };
        assert_eq!(CachePolicy::from_wire(&policy.to_wire()), Ok(policy));
        assert_eq!(parse_ttl("300.0"), Some(300));
        assert_eq!(parse_ttl("NaN"), None);
    }
}

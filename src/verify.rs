//! Edge verification's rules (issue 33): what identifies a URL's content,
//! whether an edge serves what the origin serves, and what to do next.
//! Pure: the pipeline's `verify` stage makes the requests and keeps the
//! results.
//!
//! The promise: nothing that could not be checked is called fresh. An
//! edge or origin that cannot be reached, answers 5xx, redirects or times
//! out makes the URL `unverifiable`, never `fresh`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An edge address from the configuration (`203.0.113.10:80`).
pub fn parse_edge(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

/// What one answer said about the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// The body's SHA-256, hex (the first 16 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The tags the answer's headers named (`tags.headers`; the origin's
    /// answer only): fed to the tag registry, not stored with the round.
    #[serde(skip)]
    pub tags: Vec<String>,
}

impl Seen {
    /// In a few words: `200, ETag "v2"`, `404`.
    pub fn describe(&self) -> String {
        let mut text = self.status.to_string();
        if let Some(etag) = &self.etag {
            text.push_str(&format!(", ETag {etag}"));
        } else if let Some(modified) = &self.last_modified {
            text.push_str(&format!(", Last-Modified {modified}"));
        } else if let Some(hash) = &self.hash {
            text.push_str(&format!(", body {hash}"));
        }
        text
    }

    fn gone(&self) -> bool {
        matches!(self.status, 404 | 410)
    }
}

/// A probe's outcome: an answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Answered(Seen),
    /// Unreachable, timed out, unreadable.
    Failed(String),
}

/// What one edge serves, against the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeVerdict {
    Fresh,
    /// The edge serves other content: the difference.
    Stale(String),
    /// It could not be told: why.
    Unverifiable(String),
}

/// An ETag without its weak marker: a compressing edge may weaken it.
fn strong(etag: &str) -> &str {
    etag.strip_prefix("W/").unwrap_or(etag)
}

/// Compares what an edge served with what the origin serves now: the
/// `ETag` when the origin sends one, else `Last-Modified`, else the length
/// and a hash of the body. A deleted file (origin 404/410) is fresh where
/// the edge answers 404/410 too.
pub fn compare(origin: &Probe, edge: &Probe) -> EdgeVerdict {
    use EdgeVerdict::*;
    let origin = match origin {
        Probe::Failed(why) => return Unverifiable(format!("the origin: {why}")),
        Probe::Answered(seen) => seen,
    };
    match origin.status {
        200..=299 | 404 | 410 => {}
        300..=399 => {
            return Unverifiable(format!(
                "the origin redirects ({}): never followed",
                origin.status
            ));
        }
        status => return Unverifiable(format!("the origin answered {status}")),
    }
    let edge = match edge {
        Probe::Failed(why) => return Unverifiable(why.clone()),
        Probe::Answered(seen) => seen,
    };
    match edge.status {
        500..=599 => return Unverifiable(format!("answered {}", edge.status)),
        300..=399 => {
            return Unverifiable(format!("redirects ({}): never followed", edge.status));
        }
        _ => {}
    }
    if origin.gone() {
        return match edge.gone() {
            true => Fresh,
            false => Stale(format!(
                "serves {}, the origin {} (deleted)",
                edge.describe(),
                origin.status
            )),
        };
    }
    if !(200..=299).contains(&edge.status) {
        return Stale(format!(
            "answers {}, the origin {}",
            edge.status,
            origin.describe()
        ));
    }
    let same = if let Some(etag) = &origin.etag {
        edge.etag.as_deref().map(strong) == Some(strong(etag))
    } else if let Some(modified) = &origin.last_modified {
        edge.last_modified.as_ref() == Some(modified)
    } else {
        edge.length == origin.length && edge.hash == origin.hash
    };
    match same {
        true => Fresh,
        false => Stale(format!(
            "serves {}, the origin {}",
            edge.describe(),
            origin.describe()
        )),
    }
}

/// Where one URL's verification stands, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Since verification began (the purge's success).
    pub elapsed: Duration,
    pub deadline: Duration,
    /// Re-purges made so far, and how many may be made.
    pub repurges: u32,
    pub max_repurges: u32,
    /// Probe rounds so far (this one included).
    pub attempts: u32,
}

/// What to do after a round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Every edge serves what the origin serves.
    Fresh,
    /// Probe again after this long.
    Probe(Duration),
    /// Purge the URL again (it costs quota), then probe again later.
    Repurge(String),
    /// Final: an edge still serves other content at the deadline.
    Stale(String),
    /// Final: it could not be told by the deadline.
    Unverifiable(String),
}

impl Next {
    pub fn is_final(&self) -> bool {
        matches!(self, Next::Fresh | Next::Stale(_) | Next::Unverifiable(_))
    }
}

/// Rounds are 1 s apart, doubling to 15 s, and never past the deadline.
pub fn probe_delay(attempts: u32, left: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(4);
    Duration::from_secs(1u64 << exponent)
        .min(Duration::from_secs(15))
        .min(left.max(Duration::from_millis(100)))
}

/// Decides from one round's verdicts, by edge: fresh only when every edge
/// is; a stale edge at half the deadline earns a re-purge while the
/// budget lasts; at the deadline, stale (an edge named) or unverifiable.
pub fn decide(verdicts: &[(String, EdgeVerdict)], progress: Progress) -> Next {
    if verdicts.is_empty() {
        return Next::Unverifiable("no edge address to probe".to_owned());
    }
    let stale = verdicts.iter().find_map(|(edge, v)| match v {
        EdgeVerdict::Stale(difference) => Some(format!("edge {edge} {difference}")),
        _ => None,
    });
    let unverifiable = verdicts.iter().find_map(|(edge, v)| match v {
        EdgeVerdict::Unverifiable(why) if why.starts_with("the origin") => Some(why.clone()),
        EdgeVerdict::Unverifiable(why) => Some(format!("edge {edge}: {why}")),
        _ => None,
    });
    if stale.is_none() && unverifiable.is_none() {
        return Next::Fresh;
    }
    if progress.elapsed >= progress.deadline {
        return match (stale, unverifiable) {
            (Some(stale), _) => Next::Stale(stale),
            (None, Some(why)) => Next::Unverifiable(why),
            (None, None) => Next::Fresh,
        };
    }
    if let Some(stale) = &stale
        && progress.elapsed >= progress.deadline / 2
        && progress.repurges < progress.max_repurges
    {
        return Next::Repurge(stale.clone());
    }
    Next::Probe(probe_delay(
        progress.attempts,
        progress.deadline.saturating_sub(progress.elapsed),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name, the origin's answer, the edge's, and the verdict expected.
    type CompareCase = (&'static str, Probe, Probe, fn(&EdgeVerdict) -> bool);
    /// A name, a round's verdicts, where it stands, and what should follow.
    type DecideCase = (
        &'static str,
        Vec<(String, EdgeVerdict)>,
        Progress,
        fn(&Next) -> bool,
    );

    fn seen(
        status: u16,
        etag: Option<&str>,
        modified: Option<&str>,
        body: Option<(u64, &str)>,
    ) -> Probe {
        Probe::Answered(Seen {
            status,
            etag: etag.map(str::to_owned),
            last_modified: modified.map(str::to_owned),
            length: body.map(|(l, _)| l),
            hash: body.map(|(_, h)| h.to_owned()),
            tags: Vec::new(),
        })
    }

    #[test]
    fn what_an_edge_serves_against_the_origin() {
        use EdgeVerdict::*;
        let failed = || Probe::Failed("timed out after 5s".into());
        let v2 = seen(200, Some("\"v2\""), None, None);
        let cases: Vec<CompareCase> = vec![
            (
                "same ETag",
                v2.clone(),
                seen(200, Some("\"v2\""), None, None),
                |v| *v == Fresh,
            ),
            (
                "weakened by the edge",
                v2.clone(),
                seen(200, Some("W/\"v2\""), None, None),
                |v| *v == Fresh,
            ),
            (
                "old ETag",
                v2.clone(),
                seen(200, Some("\"v1\""), None, None),
                |v| matches!(v, Stale(d) if d.contains("\"v1\"")),
            ),
            (
                "no ETag at the edge",
                v2.clone(),
                seen(200, None, None, None),
                |v| matches!(v, Stale(_)),
            ),
            (
                "Last-Modified",
                seen(200, None, Some("Sat"), None),
                seen(200, None, Some("Sat"), None),
                |v| *v == Fresh,
            ),
            (
                "old Last-Modified",
                seen(200, None, Some("Sat"), None),
                seen(200, None, Some("Fri"), None),
                |v| matches!(v, Stale(_)),
            ),
            (
                "body hash",
                seen(200, None, None, Some((3, "ab"))),
                seen(200, None, None, Some((3, "ab"))),
                |v| *v == Fresh,
            ),
            (
                "other body",
                seen(200, None, None, Some((3, "ab"))),
                seen(200, None, None, Some((3, "cd"))),
                |v| matches!(v, Stale(_)),
            ),
            (
                "deleted, gone at the edge",
                seen(404, None, None, None),
                seen(410, None, None, None),
                |v| *v == Fresh,
            ),
            (
                "deleted, still served",
                seen(404, None, None, None),
                v2.clone(),
                |v| matches!(v, Stale(d) if d.contains("deleted")),
            ),
            (
                "edge 404, origin has it",
                v2.clone(),
                seen(404, None, None, None),
                |v| matches!(v, Stale(_)),
            ),
            (
                "origin down",
                Probe::Failed("cannot connect".into()),
                v2.clone(),
                |v| matches!(v, Unverifiable(w) if w.starts_with("the origin")),
            ),
            ("origin 503", seen(503, None, None, None), v2.clone(), |v| {
                matches!(v, Unverifiable(_))
            }),
            (
                "origin redirects",
                seen(302, None, None, None),
                v2.clone(),
                |v| matches!(v, Unverifiable(w) if w.contains("never followed")),
            ),
            ("origin 403", seen(403, None, None, None), v2.clone(), |v| {
                matches!(v, Unverifiable(_))
            }),
            ("edge times out", v2.clone(), failed(), |v| {
                matches!(v, Unverifiable(_))
            }),
            ("edge 502", v2.clone(), seen(502, None, None, None), |v| {
                matches!(v, Unverifiable(_))
            }),
            (
                "edge redirects",
                v2.clone(),
                seen(301, None, None, None),
                |v| matches!(v, Unverifiable(_)),
            ),
        ];
        for (name, origin, edge, expected) in cases {
            let verdict = compare(&origin, &edge);
            assert!(expected(&verdict), "{name}: {verdict:?}");
        }
    }

    #[test]
    fn what_follows_a_round() {
        use EdgeVerdict::*;
        let s = Duration::from_secs;
        let at = |elapsed: u64, repurges: u32| Progress {
            elapsed: s(elapsed),
            deadline: s(100),
            repurges,
            max_repurges: 1,
            attempts: 3,
        };
        let fresh = ("e1".to_owned(), Fresh);
        let stale = ("e2".to_owned(), Stale("serves 200, ETag \"v1\"".into()));
        let down = ("e2".to_owned(), Unverifiable("timed out after 5s".into()));
        let origin_down = (
            "e1".to_owned(),
            Unverifiable("the origin: cannot connect".into()),
        );
        let cases: Vec<DecideCase> = vec![
            (
                "every edge fresh",
                vec![fresh.clone(), fresh.clone()],
                at(1, 0),
                |n| *n == Next::Fresh,
            ),
            (
                "one stale, early: probe again",
                vec![fresh.clone(), stale.clone()],
                at(10, 0),
                |n| matches!(n, Next::Probe(_)),
            ),
            (
                "stale at half the deadline: re-purge",
                vec![fresh.clone(), stale.clone()],
                at(50, 0),
                |n| matches!(n, Next::Repurge(w) if w.starts_with("edge e2")),
            ),
            (
                "budget spent: probe on",
                vec![stale.clone()],
                at(60, 1),
                |n| matches!(n, Next::Probe(_)),
            ),
            (
                "stale at the deadline",
                vec![fresh.clone(), stale.clone()],
                at(100, 1),
                |n| matches!(n, Next::Stale(w) if w.starts_with("edge e2 serves")),
            ),
            (
                "edge down at the deadline",
                vec![fresh.clone(), down.clone()],
                at(100, 0),
                |n| matches!(n, Next::Unverifiable(w) if w.starts_with("edge e2:")),
            ),
            (
                "origin down: never fresh",
                vec![origin_down.clone()],
                at(100, 0),
                |n| matches!(n, Next::Unverifiable(w) if w.starts_with("the origin")),
            ),
            (
                "origin down, early: probe again",
                vec![origin_down.clone()],
                at(5, 0),
                |n| matches!(n, Next::Probe(_)),
            ),
            (
                "stale beats unverifiable",
                vec![down.clone(), stale.clone()],
                at(100, 1),
                |n| matches!(n, Next::Stale(_)),
            ),
            ("no edge at all", vec![], at(0, 0), |n| {
                matches!(n, Next::Unverifiable(_))
            }),
        ];
        for (name, verdicts, progress, expected) in cases {
            let next = decide(&verdicts, progress);
            assert!(expected(&next), "{name}: {next:?}");
        }
    }

    #[test]
    fn rounds_back_off_within_the_deadline() {
        let s = Duration::from_secs;
        let delays: Vec<u64> = (1..8).map(|n| probe_delay(n, s(60)).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 15, 15, 15]);
        assert_eq!(probe_delay(6, s(3)), s(3));
    }
}

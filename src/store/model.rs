//! The queue's rules as types, without SQL: an item's states and the
//! events that move it, as a function a table test can read row by row.
//! The SQL under `store/` applies these moves; `state_literals_in_sql_are_known`
//! checks that every state it names is one of these (a typo in a quoted
//! state is a query that silently matches nothing).

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::RequestId;
use crate::cdn::cache_rules::CacheFact;
use crate::target::{Priority, PurgeTarget};

/// An item's state (the `items.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    Pending,
    Sending,
    Submitted,
    Succeeded,
    Failed,
    Merged,
    Cancelled,
    /// No purge was needed: every copy cached before the request outlived
    /// the endpoint's TTL while it waited (issue 32). Final, and done for
    /// `--wait`; nothing was charged.
    Expired,
}

impl ItemState {
    pub const ALL: [ItemState; 8] = [
        ItemState::Pending,
        ItemState::Sending,
        ItemState::Submitted,
        ItemState::Succeeded,
        ItemState::Failed,
        ItemState::Merged,
        ItemState::Cancelled,
        ItemState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Sending => "sending",
            ItemState::Submitted => "submitted",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
            ItemState::Merged => "merged",
            ItemState::Cancelled => "cancelled",
            ItemState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<ItemState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Nothing more will happen to an item in this state.
    ///
    /// `merged` is not final: a merged item follows another, and its end is
    /// that item's end. Read as a URL's effective state (where merges are
    /// resolved), `merged` means the resolution did not reach the end of
    /// the chain, and calling that final made requests report `succeeded`
    /// while their directory was pending (issue 13, bug 1).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Succeeded | ItemState::Failed | ItemState::Cancelled | ItemState::Expired
        )
    }
}

/// Where one URL's purge at one cache in front of the origin stands (the
/// `origin_purges.state` column, issue 34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginPurgeState {
    /// Not confirmed yet: the URL's CDN purge waits.
    Pending,
    /// The layer answered that it no longer holds the URL.
    Done,
    /// Not asked, on purpose: an intent said so, the layer is no longer
    /// configured, or the URL needs no purge any more.
    Skipped,
}

impl OriginPurgeState {
    pub const ALL: [OriginPurgeState; 3] = [
        OriginPurgeState::Pending,
        OriginPurgeState::Done,
        OriginPurgeState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OriginPurgeState::Pending => "pending",
            OriginPurgeState::Done => "done",
            OriginPurgeState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<OriginPurgeState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where a URL's verification at the edge stands (the
/// `verifications.state` column, issue 33).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerificationState {
    /// Probing: the purge succeeded, the edges are not all fresh yet.
    Pending,
    /// Every edge serves what the origin serves.
    Fresh,
    /// An edge still served other content at the deadline.
    Stale,
    /// It could not be told (an edge or the origin unreachable, 5xx, a
    /// redirect, a timeout): never called fresh.
    Unverifiable,
}

impl VerificationState {
    pub const ALL: [VerificationState; 4] = [
        VerificationState::Pending,
        VerificationState::Fresh,
        VerificationState::Stale,
        VerificationState::Unverifiable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerificationState::Pending => "pending",
            VerificationState::Fresh => "fresh",
            VerificationState::Stale => "stale",
            VerificationState::Unverifiable => "unverifiable",
        }
    }

    pub fn parse(text: &str) -> Option<VerificationState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a batch's call does. Purges carry `items` (files and
/// directories); preloads carry rows of `preloads` (files only). One
/// batch is one or the other, and every transition below reads and
/// writes the table of its own operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Purge,
    Preload,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Purge => "purge",
            Operation::Preload => "preload",
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        match text {
            "purge" => Some(Operation::Purge),
            "preload" => Some(Operation::Preload),
            _ => None,
        }
    }

    /// The table that holds a batch's URLs.
    pub(super) fn table(self) -> &'static str {
        match self {
            Operation::Purge => "items",
            Operation::Preload => "preloads",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated request, ready to store.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub received_at: OffsetDateTime,
    pub source: String,
    pub label: Option<String>,
    /// Urgent requests' items are cut first and may use the reserve.
    pub priority: Priority,
    pub targets: Vec<PurgeTarget>,
    /// Positions in `targets` of the files to preload once their purge
    /// has succeeded (`"preload": true`, an endpoint's
    /// `preload_after_purge`).
    pub preload_after_purge: Vec<usize>,
    /// Files to preload without purging them (`POST /v1/preloads`); their
    /// positions in the request follow `targets`'.
    pub preload_only: Vec<PurgeTarget>,
    /// What the endpoints' cache policies say about its files, by position
    /// in `targets` ([`crate::cdn::cache_rules::Policies::facts`]).
    pub cache_facts: HashMap<usize, CacheFact>,
    /// The `[[origin_cache]]` layers in front of each target's host, as
    /// `(position in targets, layer)`: the target's CDN purge waits until
    /// each has purged it (issue 34).
    pub origin_purges: Vec<(usize, String)>,
    /// Layers the request skips explicitly (recorded as `skipped` for its
    /// URLs, with the request named).
    pub skip_origin_caches: Vec<String>,
    /// The tags the request named, with how many URLs each gave
    /// (issue 35); their URLs are among `targets`.
    pub tags: Vec<(String, usize)>,
    /// The tag each target came from, by position in `targets` (the
    /// first tag that gave it).
    pub via_tag: HashMap<usize, String>,
}

impl NewRequest {
    /// A purge request (no preloads yet: see the preload fields).
    pub fn purge(
        id: RequestId,
        received_at: OffsetDateTime,
        source: String,
        label: Option<String>,
        priority: Priority,
        targets: Vec<PurgeTarget>,
    ) -> NewRequest {
        NewRequest {
            id,
            received_at,
            source,
            label,
            priority,
            targets,
            preload_after_purge: Vec::new(),
            preload_only: Vec::new(),
            cache_facts: HashMap::new(),
            origin_purges: Vec::new(),
            skip_origin_caches: Vec::new(),
            tags: Vec::new(),
            via_tag: HashMap::new(),
        }
    }
}

/// Why an item was merged into another (`items.merge_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MergeReason {
    /// A directory a client asked for covers it.
    Covered,
    /// The planner chose a directory over it to save the day's file quota.
    Promoted,
}

impl MergeReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MergeReason::Covered => "covered",
            MergeReason::Promoted => "promoted",
        }
    }
}

/// What happens to an item: each event of the pipeline, the planner, an
/// operator or the cache rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemEvent {
    /// Cut into a batch: the call may reach the CDN from now on.
    Cut,
    /// The CDN accepted the call and gave a TaskTrackId to follow.
    Accepted,
    /// The CDN accepted the call but its answer could not be read: done,
    /// with nothing to follow (`UNTRACKED`).
    AcceptedUntracked,
    /// The tracker read the URL's final `Succeed`.
    Succeeded,
    /// A final failure: the CDN's `Failed`, a refused URL, attempts spent.
    Failed,
    /// Back to the queue: a transient error, a throttle, a split, a crash
    /// mid-call, a released batch, or an operator's retry of a failure.
    Returned,
    /// Carried by another item from now on: a pending twin (`coalesced`),
    /// a directory (`covered`, `promoted`).
    Merged,
    /// An operator cancelled every request that wanted it.
    Cancelled,
    /// The endpoint's cache rules say every older copy has expired.
    Expired,
}

impl ItemState {
    /// The state `event` moves an item in this state to, or `None` when
    /// the event cannot happen to it (the store's statements select by
    /// state, so such an event changes nothing).
    pub fn on(self, event: ItemEvent) -> Option<ItemState> {
        use ItemEvent as E;
        use ItemState as S;
        match (self, event) {
            (S::Pending, E::Cut) => Some(S::Sending),
            (S::Pending, E::Merged) => Some(S::Merged),
            (S::Pending, E::Cancelled) => Some(S::Cancelled),
            (S::Pending, E::Expired) => Some(S::Expired),
            (S::Sending, E::Accepted) => Some(S::Submitted),
            (S::Sending, E::AcceptedUntracked) => Some(S::Succeeded),
            (S::Sending | S::Submitted, E::Failed) => Some(S::Failed),
            (S::Submitted, E::Succeeded) => Some(S::Succeeded),
            (S::Sending | S::Submitted | S::Failed, E::Returned) => Some(S::Pending),
            // Returned while its URL is pending again: it follows that one.
            (S::Sending | S::Submitted | S::Failed, E::Merged) => Some(S::Merged),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemEvent as E;
    use ItemState as S;

    /// Every state a SQL statement may name: items' and preloads' (one
    /// vocabulary, see `batches.rs`'s `{table}` statements) and batches'.
    const BATCH_STATES: [&str; 6] = [
        "sending",
        "submitted",
        "succeeded",
        "failed",
        "split",
        "released",
    ];

    /// Every event, in the table's column order.
    const EVENTS: [ItemEvent; 9] = [
        E::Cut,
        E::Accepted,
        E::AcceptedUntracked,
        E::Succeeded,
        E::Failed,
        E::Returned,
        E::Merged,
        E::Cancelled,
        E::Expired,
    ];

    /// Every (state, event) pair: where it leads, or that it cannot happen.
    #[test]
    fn every_move_of_an_item_is_in_the_table() {
        // One row per state, one column per event in EVENTS' order.
        let n = None;
        let table: [(ItemState, [Option<ItemState>; 9]); 8] = [
            (
                S::Pending,
                [
                    Some(S::Sending),
                    n,
                    n,
                    n,
                    n,
                    n,
                    Some(S::Merged),
                    Some(S::Cancelled),
                    Some(S::Expired),
                ],
            ),
            (
                S::Sending,
                [
                    n,
                    Some(S::Submitted),
                    Some(S::Succeeded),
                    n,
                    Some(S::Failed),
                    Some(S::Pending),
                    Some(S::Merged),
                    n,
                    n,
                ],
            ),
            (
                S::Submitted,
                [
                    n,
                    n,
                    n,
                    Some(S::Succeeded),
                    Some(S::Failed),
                    Some(S::Pending),
                    Some(S::Merged),
                    n,
                    n,
                ],
            ),
            (
                S::Failed,
                [n, n, n, n, n, Some(S::Pending), Some(S::Merged), n, n],
            ),
            (S::Succeeded, [n; 9]),
            (S::Merged, [n; 9]),
            (S::Cancelled, [n; 9]),
            (S::Expired, [n; 9]),
        ];
        assert_eq!(table.len(), ItemState::ALL.len());
        for (state, row) in table {
            for (event, expected) in EVENTS.into_iter().zip(row) {
                assert_eq!(state.on(event), expected, "{state:?} on {event:?}");
            }
        }
    }

    /// A final state has no way out; `merged` is not final (it follows
    /// its carrier) but nothing moves it either.
    #[test]
    fn final_states_are_the_ones_nothing_leaves() {
        for state in ItemState::ALL {
            let stuck = EVENTS.into_iter().all(|e| state.on(e).is_none());
            if state.is_final() {
                assert!(
                    stuck || state == S::Failed,
                    "{state:?} is final but can move"
                );
            }
            assert_eq!(ItemState::parse(state.as_str()), Some(state));
        }
    }

    /// Every state literal in the store's SQL is a state some table has:
    /// `state = 'x'`, `state != 'x'`, `state IN ('x', …)`, `SET state = 'x'`.
    #[test]
    fn state_literals_in_sql_are_known() {
        let known: Vec<&str> = ItemState::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(super::super::PreloadState::ALL.iter().map(|s| s.as_str()))
            .chain(BATCH_STATES)
            .chain(OriginPurgeState::ALL.iter().map(|s| s.as_str()))
            .chain(VerificationState::ALL.iter().map(|s| s.as_str()))
            .collect();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("src/store") {
            let path = entry.expect("entry").path();
            if path.ends_with("model.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for literal in state_literals(&text) {
                checked += 1;
                assert!(
                    known.contains(&literal.as_str()),
                    "{}: state '{literal}' is no state of items, preloads, batches or origin purges",
                    path.display()
                );
            }
        }
        assert!(
            checked > 100,
            "only {checked} literals found: is the scan broken?"
        );
    }

    /// The quoted words compared with a `state` column in `text`.
    fn state_literals(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("state") {
            let after = &rest[at + "state".len()..];
            rest = after;
            let trimmed = after.trim_start();
            let operands = if let Some(r) = trimmed
                .strip_prefix("!=")
                .or_else(|| trimmed.strip_prefix("<>"))
                .or_else(|| trimmed.strip_prefix('='))
            {
                let r = r.trim_start();
                match r.strip_prefix('\'').and_then(|r| r.split_once('\'')) {
                    Some((word, _)) => vec![word.to_owned()],
                    None => continue,
                }
            } else if let Some(r) = trimmed
                .strip_prefix("NOT IN")
                .or_else(|| trimmed.strip_prefix("IN"))
            {
                let r = r.trim_start();
                match r.strip_prefix('(').and_then(|r| r.split_once(')')) {
                    Some((list, _)) if list.trim_start().starts_with('\'') => list
                        .split(',')
                        .map(|w| w.trim().trim_matches('\'').to_owned())
                        .collect(),
                    _ => continue,
                }
            } else {
                continue;
            };
            found.extend(operands);
        }
        found
    }
}

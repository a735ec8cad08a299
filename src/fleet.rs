//! Fleet leadership, as decisions: who may send, under which term, until when.
//!
//! In fleet mode several daemons share one PostgreSQL database. Every node
//! ingests, but only one — the leader — cuts batches, sends and records
//! outcomes, because the CDN's rate limit and daily quota belong to the
//! subscription, not to a host. Leadership is a lease row in PostgreSQL
//! (`fleet_leader`, see `store::fleet`): a node claims it, renews it well
//! before it expires, and loses it when it stops renewing.
//!
//! Every lease carries a **term** that grows by one at each change of
//! holder. Writes the leader makes (cutting a batch, recording an outcome)
//! check the term inside their own transaction, so a node that was paused
//! or cut off and comes back believing it still leads cannot write under
//! its old term: the database refuses it (fencing).
//!
//! A leader must also stop *sending* on its own, before the database could
//! tell it anything: a leader that cannot reach PostgreSQL could not record
//! what it sent. [`Lease`] is that clock. It starts when the claim was
//! *asked*, not answered (the database's expiry can only be later than
//! that), and it runs on the monotonic clock, so a leader stopped with
//! SIGSTOP sees its lease lapsed the moment it wakes.
//!
//! Everything here is pure; `store::fleet` runs the SQL and the daemon's
//! leader loop applies [`transition`].

use std::fmt;
use std::time::{Duration, Instant};

/// A node's name in the fleet (`fleet.node_name`, the host name by
/// default): shown in `/v1/stats` and recorded as the lease's holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName(String);

/// Why a node name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("fleet.node_name is empty")]
    Empty,
    #[error("fleet.node_name is {0} bytes long; at most 255 are allowed")]
    TooLong(usize),
    #[error(
        "fleet.node_name {0:?} has a control character or a space; use letters, digits, '.', '-' or '_'"
    )]
    Unprintable(String),
}

impl NodeName {
    /// Parses a node name: non-empty, at most 255 bytes (a host name's
    /// limit), no spaces or control characters, so it reads well in logs
    /// and `psql` and cannot be confused with another node's.
    pub fn parse(text: &str) -> Result<NodeName, NodeNameError> {
        if text.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if text.len() > 255 {
            return Err(NodeNameError::TooLong(text.len()));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(NodeNameError::Unprintable(text.to_owned()));
        }
        Ok(NodeName(text.to_owned()))
    }

    /// The name of last resort, for a host whose own name cannot be one.
    pub fn localhost() -> NodeName {
        NodeName("localhost".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A leadership term: 1 for the fleet's first leader, one more at each
/// change of holder. Only ever compared for equality with the lease row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(i64);

impl Term {
    /// A term read from the database; `None` for zero or less, which the
    /// schema's `CHECK (term > 0)` rules out.
    pub fn new(value: i64) -> Option<Term> {
        (value > 0).then_some(Term(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a node is, as `/v1/stats` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// SQLite: one host, no fleet; it always sends.
    Standalone,
    /// Holds the lease under `term`: runs the batcher, sender and tracker.
    Leader { term: Term },
    /// Ingests and answers reads; `leader` is the current holder, if the
    /// lease is held by a live node.
    Follower { leader: Option<(NodeName, Term)> },
}

impl Role {
    /// The word `/v1/stats` and `purgeq status` show.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader { .. } => "leader",
            Role::Follower { .. } => "follower",
        }
    }
}

/// The node's place in the fleet as `/v1/stats` shows it (`fleet`), and
/// `purgeq status` reads it back: plain words and numbers, so a script
/// can tell which host sends without knowing purgeq's types.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetStatus {
    /// `standalone`, `leader` or `follower` ([`Role::as_str`]).
    pub role: String,
    /// This node's name.
    pub node: String,
    /// The node that sends: this one when standalone or leader; the
    /// lease's holder for a follower, `None` while no live node holds it.
    pub leader: Option<String>,
    /// The leader's term; `None` when standalone (one host has no terms)
    /// or while nobody leads.
    pub term: Option<i64>,
    /// Every node of the fleet as it last said, read from the shared
    /// store when asked (`/v1/stats`, the page); empty when standalone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<FleetNode>,
}

/// One node of the fleet as its last heartbeat said (`fleet_nodes`), and
/// whether it is stale: silent for longer than a lease lasts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetNode {
    pub node: String,
    /// `leader` or `follower`, as the node last saw itself.
    pub role: String,
    /// Its term, when it led.
    pub term: Option<i64>,
    /// Its purgeq version.
    pub version: String,
    pub started_at: String,
    /// Seconds since its last heartbeat, by PostgreSQL's clock.
    pub heartbeat_age_seconds: f64,
    pub stale: bool,
}

impl FleetStatus {
    pub fn of(node: &NodeName, role: &Role) -> FleetStatus {
        let (leader, term) = match role {
            Role::Standalone => (Some(node.to_string()), None),
            Role::Leader { term } => (Some(node.to_string()), Some(term.get())),
            Role::Follower { leader } => match leader {
                Some((name, term)) => (Some(name.to_string()), Some(term.get())),
                None => (None, None),
            },
        };
        FleetStatus {
            role: role.as_str().to_owned(),
            node: node.to_string(),
            leader,
            term,
            nodes: Vec::new(),
        }
    }

    /// True when this node is the one that sends (standalone or leader):
    /// the `purgeq_fleet_leader` gauge.
    pub fn sends(&self) -> bool {
        self.role != "follower"
    }
}

/// The answer to one claim of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The term this node now holds the lease under, if the claim won (a
    /// renewal keeps the term; a takeover gets a new one).
    pub won: Option<Term>,
    /// Who holds the lease when the claim lost, if anyone.
    pub holder: Option<(NodeName, Term)>,
}

/// What a claim means for a node that held `held` before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Newly leader under `term`: recover the batches a former leader left
    /// `sending` or `submitted` (as a restart does), then start sending.
    Elected { term: Term },
    /// Still leader under the same term: carry on.
    Renewed { term: Term },
    /// Was leader and is not any more (or holds a different term, which
    /// means someone else led in between): stop sending at once.
    Deposed { holder: Option<(NodeName, Term)> },
    /// Was not leader and still is not.
    Following { holder: Option<(NodeName, Term)> },
}

/// Decides what a claim's answer means, given the term this node held.
///
/// A won claim under a term other than the one held is an election even
/// if this node held a lease before: its old term lapsed and another
/// node may have led (and recovered batches) in between, so the safe
/// course is to recover again.
pub fn transition(held: Option<Term>, claim: &Claim) -> Transition {
    match (held, claim.won) {
        (Some(old), Some(new)) if old == new => Transition::Renewed { term: new },
        (_, Some(new)) => Transition::Elected { term: new },
        (Some(_), None) => Transition::Deposed {
            holder: claim.holder.clone(),
        },
        (None, None) => Transition::Following {
            holder: claim.holder.clone(),
        },
    }
}

/// How long a lease lasts and how early a leader stops trusting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The lease's length in the database: a dead leader's lease is taken
    /// over this long after its last renewal, at most.
    pub ttl: Duration,
    /// How often the leader renews (and a follower tries to claim).
    pub renew_every: Duration,
    /// How long before the database's expiry the leader stops sending: room
    /// for the difference between the two clocks and a call in flight.
    pub margin: Duration,
}

impl LeaseTiming {
    /// Failover within 10 s (the bound): the lease lapses 6 s
    /// after the last renewal, followers try every 2 s, so a new leader
    /// claims at most 8 s after the old one's last renewal.
    pub const DEFAULT: LeaseTiming = LeaseTiming {
        ttl: Duration::from_secs(6),
        renew_every: Duration::from_secs(2),
        margin: Duration::from_secs(2),
    };
}

/// A leader's own view of its lease: it may send until `trusted_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub term: Term,
    trusted_until: Instant,
}

impl Lease {
    /// The lease won (or renewed) by a claim asked at `asked_at`: trusted
    /// for `ttl - margin` from then. The database's expiry was set when it
    /// ran the claim, after `asked_at`, so this ends before it.
    pub fn new(term: Term, asked_at: Instant, timing: LeaseTiming) -> Lease {
        let trusted_for = timing.ttl.saturating_sub(timing.margin);
        Lease {
            term,
            trusted_until: asked_at + trusted_for,
        }
    }

    /// Whether the leader may still send (and start a call) at `now`.
    pub fn is_trusted(&self, now: Instant) -> bool {
        now < self.trusted_until
    }

    /// When the leader stops trusting the lease (and sending).
    pub fn trusted_until(&self) -> Instant {
        self.trusted_until
    }

    /// How long from `now` the lease stays trusted (zero once lapsed).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.trusted_until.saturating_duration_since(now)
    }
}

/// Whether the pipeline of this node may make a CDN call now: the trust
/// deadline of the lease it was started under, moved on at each renewal.
/// The sender and the tracker ask just before each call, so a leader that
/// was paused, or whose renewals hang, stops calling at the deadline
/// itself — not when its lease loop next gets to run (a paused leader sent
/// within milliseconds of `SIGCONT`, issue 28). On a standalone host it
/// always allows.
#[derive(Debug)]
pub struct Trust(std::sync::Mutex<TrustState>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustState {
    Always,
    Until(Instant),
    Revoked,
}

impl Trust {
    /// A standalone host: no lease to lose.
    pub fn always() -> std::sync::Arc<Trust> {
        std::sync::Arc::new(Trust(std::sync::Mutex::new(TrustState::Always)))
    }

    /// A leader's, trusted until `lease`'s deadline.
    pub fn of(lease: &Lease) -> std::sync::Arc<Trust> {
        std::sync::Arc::new(Trust(std::sync::Mutex::new(TrustState::Until(
            lease.trusted_until(),
        ))))
    }

    fn set(&self, next: impl FnOnce(TrustState) -> TrustState) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *state = next(*state);
    }

    /// A renewal: trusted until `lease`'s new deadline (never after a
    /// revocation: a pipeline once stopped stays stopped).
    pub fn renew(&self, lease: &Lease) {
        self.set(|state| match state {
            TrustState::Until(_) => TrustState::Until(lease.trusted_until()),
            other => other,
        });
    }

    /// Deposed or stopping: no call from now on.
    pub fn revoke(&self) {
        self.set(|_| TrustState::Revoked);
    }

    /// Whether a call may start at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            TrustState::Always => true,
            TrustState::Until(deadline) => now < deadline,
            TrustState::Revoked => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(n: i64) -> Term {
        Term::new(n).unwrap()
    }

    fn node(name: &str) -> NodeName {
        NodeName::parse(name).unwrap()
    }

    #[test]
    fn a_pipeline_may_call_only_within_its_lease() {
        let timing = LeaseTiming::DEFAULT;
        let start = Instant::now();
        let lease = Lease::new(term(3), start, timing);
        let trust = Trust::of(&lease);
        let deadline = lease.trusted_until();
        let rows = [
            (start, true),
            (deadline - Duration::from_millis(1), true),
            // The deadline itself, and a process resumed long after it.
            (deadline, false),
            (deadline + Duration::from_secs(12), false),
        ];
        for (now, allowed) in rows {
            assert_eq!(trust.allows(now), allowed, "{:?}", now - start);
        }
        let renewed = Lease::new(term(3), start + Duration::from_secs(2), timing);
        trust.renew(&renewed);
        assert!(trust.allows(deadline), "renewed");
        trust.revoke();
        assert!(!trust.allows(start), "revoked");
        trust.renew(&renewed);
        assert!(!trust.allows(start), "a revoked pipeline stays stopped");
        assert!(Trust::always().allows(start + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn node_names_are_printable_and_bounded() {
        assert_eq!(node("deploy-01.example").as_str(), "deploy-01.example");
        assert_eq!(NodeName::parse(""), Err(NodeNameError::Empty));
        assert_eq!(
            NodeName::parse(&"a".repeat(256)),
            Err(NodeNameError::TooLong(256))
        );
        assert!(matches!(
            NodeName::parse("a b"),
            Err(NodeNameError::Unprintable(_))
        ));
        assert!(matches!(
            NodeName::parse("a\nb"),
            Err(NodeNameError::Unprintable(_))
        ));
    }

    #[test]
    fn terms_are_positive() {
        assert_eq!(Term::new(0), None);
        assert_eq!(Term::new(-1), None);
        assert_eq!(term(3).get(), 3);
    }

    #[test]
    fn a_first_win_is_an_election() {
        let claim = Claim {
            won: Some(term(1)),
            holder: None,
        };
        assert_eq!(
            transition(None, &claim),
            Transition::Elected { term: term(1) }
        );
    }

    #[test]
    fn a_win_under_the_held_term_is_a_renewal() {
        let claim = Claim {
            won: Some(term(4)),
            holder: None,
        };
        assert_eq!(
            transition(Some(term(4)), &claim),
            Transition::Renewed { term: term(4) }
        );
    }

    #[test]
    fn a_win_under_a_new_term_recovers_again() {
        // The old term lapsed: someone may have led in between.
        let claim = Claim {
            won: Some(term(6)),
            holder: None,
        };
        assert_eq!(
            transition(Some(term(4)), &claim),
            Transition::Elected { term: term(6) }
        );
    }

    #[test]
    fn a_lost_claim_deposes_a_leader_and_leaves_a_follower_following() {
        let holder = Some((node("b"), term(5)));
        let claim = Claim {
            won: None,
            holder: holder.clone(),
        };
        assert_eq!(
            transition(Some(term(4)), &claim),
            Transition::Deposed {
                holder: holder.clone()
            }
        );
        assert_eq!(transition(None, &claim), Transition::Following { holder });
    }

    #[test]
    fn the_lease_is_trusted_from_the_ask_for_ttl_less_margin() {
        let asked = Instant::now();
        let lease = Lease::new(term(1), asked, LeaseTiming::DEFAULT);
        assert!(lease.is_trusted(asked));
        assert!(lease.is_trusted(asked + Duration::from_millis(3_999)));
        assert!(!lease.is_trusted(asked + Duration::from_secs(4)));
        assert_eq!(
            lease.remaining(asked + Duration::from_secs(1)),
            Duration::from_secs(3)
        );
        assert_eq!(
            lease.remaining(asked + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn default_timing_fails_over_within_ten_seconds() {
        let t = LeaseTiming::DEFAULT;
        // Worst case: the leader dies just after renewing; the lease
        // lapses after ttl, and a follower's next try comes within
        // renew_every.
        assert!(t.ttl + t.renew_every <= Duration::from_secs(10));
        // A leader renews at least twice within its trusted window, so
        // one slow renewal does not stop its sending.
        assert!(t.renew_every * 2 <= t.ttl - t.margin);
    }

    #[test]
    fn roles_read_as_the_stats_words() {
        assert_eq!(Role::Standalone.as_str(), "standalone");
        assert_eq!(Role::Leader { term: term(1) }.as_str(), "leader");
        assert_eq!(Role::Follower { leader: None }.as_str(), "follower");
    }

    #[test]
    fn status_names_who_sends() {
        let here = NodeName::parse("deploy-1").unwrap();
        let there = NodeName::parse("deploy-2").unwrap();
        let standalone = FleetStatus::of(&here, &Role::Standalone);
        assert_eq!(
            (
                standalone.role.as_str(),
                standalone.leader.as_deref(),
                standalone.term
            ),
            ("standalone", Some("deploy-1"), None)
        );
        assert!(standalone.sends());
        let leader = FleetStatus::of(&here, &Role::Leader { term: Term(3) });
        assert_eq!(
            (leader.leader.as_deref(), leader.term),
            (Some("deploy-1"), Some(3))
        );
        assert!(leader.sends());
        let follower = FleetStatus::of(
            &here,
            &Role::Follower {
                leader: Some((there, Term(3))),
            },
        );
        assert_eq!(
            (
                follower.node.as_str(),
                follower.leader.as_deref(),
                follower.term
            ),
            ("deploy-1", Some("deploy-2"), Some(3))
        );
        assert!(!follower.sends());
        let orphan = FleetStatus::of(&here, &Role::Follower { leader: None });
        assert_eq!((orphan.leader, orphan.term), (None, None));
    }
}

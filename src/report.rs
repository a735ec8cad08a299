//! What the pipeline tells everyone else about itself: one typed status.
//!
//! `/v1/stats`, `/metrics`, `/readyz`, the `STATUS=` line for systemd and
//! (through `/v1/stats`) `purgeq status` all render from
//! [`PipelineStatus`], so they cannot drift apart without the compiler
//! noticing (they used to dig into a `serde_json::Value` by string). This
//! module owns the type and the trait the pipeline implements; neither
//! `ingest` nor `metrics` depends on `pipeline`, and `pipeline` depends on
//! neither of them for this.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Whether calls go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderState {
    Running,
    /// The CDN throttled us: every call waits for the gate.
    Throttled,
    /// Nothing is sent until the configuration changes (credentials).
    Paused,
}

/// The sender's side of the status (`sender` in `/v1/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderStatus {
    pub state: SenderState,
    pub paused_reason: Option<String>,
    pub paused_for_seconds: Option<f64>,
    pub throttled_for_seconds: Option<f64>,
    pub throttled_total: u64,
    pub batches_in_flight: usize,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Calls by `operation:outcome`.
    pub calls: HashMap<String, u64>,
}

/// Today's quota as the ledger counts it (`quota` in `/v1/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    pub day: String,
    pub utc_offset: String,
    pub files_per_day: u64,
    /// What the CDN certainly counted (accepted calls), and the calls
    /// under way: what sending is held to.
    pub files_used: u64,
    /// The part of `files_used` under way now.
    pub files_reserved: u64,
    pub files_left: u64,
    pub directories_per_day: u64,
    pub directories_used: u64,
    pub directories_reserved: u64,
    pub directories_left: u64,
    /// When the spent day turns, while it is spent.
    pub exhausted_until: Option<String>,
    /// Pending items today's quota cannot take (they wait for the next
    /// quota day), as of the planner's last look.
    pub files_waiting: u64,
    pub directories_waiting: u64,
    /// Pending files, and how many of them are urgent, as of the
    /// planner's last look: what a new request queues behind.
    #[serde(default)]
    pub files_pending: u64,
    #[serde(default)]
    pub urgent_files_pending: u64,
    /// When the next quota day starts.
    pub next_day_at: String,
    /// Held back each day for urgent intents.
    pub urgent_reserve_files: u64,
    pub urgent_reserve_directories: u64,
    /// Preloads: a budget of their own (`quota.preloads_per_day`).
    #[serde(default)]
    pub preloads_per_day: u64,
    #[serde(default)]
    pub preloads_used: u64,
    #[serde(default)]
    pub preloads_reserved: u64,
    #[serde(default)]
    pub preloads_left: u64,
    /// What the CDN may also have counted (unknown outcomes sent again):
    /// shown, never holding sending back (see `crate::ledger`).
    #[serde(default)]
    pub files_uncertain: u64,
    #[serde(default)]
    pub directories_uncertain: u64,
    #[serde(default)]
    pub preloads_uncertain: u64,
}

/// An endpoint left alone for a while (`EndpointNotInActiveState`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRest {
    pub reason: String,
    pub retry_in_seconds: f64,
}

/// The pipeline's status: the top-level `sender`, `quota` and
/// `endpoints_paused` of `/v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub sender: SenderStatus,
    /// `None` until the batcher first read the ledger.
    pub quota: Option<QuotaStatus>,
    pub endpoints_paused: BTreeMap<String, EndpointRest>,
}

impl PipelineStatus {
    /// Why the daemon is not ready, if it is not: a pause of sending.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.sender
            .paused_reason
            .as_ref()
            .filter(|_| self.sender.state == SenderState::Paused)
            .map(|reason| format!("sending is paused: {reason}"))
    }
}

/// Implemented by the pipeline; read by ingest, metrics and the daemon.
pub trait PipelineReport: Send + Sync + 'static {
    fn status(&self) -> PipelineStatus;
    /// Items were committed or put back: the batcher may have work.
    fn wake(&self);
    /// `count` new items were committed: the batcher may have work, and
    /// a large intent is planned against the quota before it is cut.
    fn added(&self, count: usize);
    /// The pipeline's loops are running (for the systemd watchdog).
    fn alive(&self) -> bool;
}

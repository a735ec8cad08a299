//! Draining the queue: the batcher cuts pending items into batches, the
//! sender makes one purge call per batch, the tracker follows each call's
//! `TaskTrackId` to a final result per URL.
//!
//! Every state change goes through the store as one transaction, and the
//! only state kept in memory is what may be lost in a crash (back-off
//! deadlines, pauses, poll schedules). So a restart, even after `kill -9`,
//! resumes from the database: batches left `sending` are sent again (a
//! purge is idempotent), `submitted` ones are tracked again.

mod batcher;
mod call_log;
pub mod gate;
mod origin;
mod sender;
mod tracker;
mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cdn::CdnClient;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::report::{EndpointRest, PipelineReport, PipelineStatus, SenderState, SenderStatus};
use crate::store::Timestamp;
use crate::store::{BatchId, QuotaAccount, QuotaUse, Store, StoreError, timestamp};
use gate::Gate;

/// What the pipeline shares between its tasks.
pub(crate) struct Shared {
    store: Store,
    /// Whether a CDN call may start now (a fleet leader's lease; always on
    /// a standalone host).
    trust: Arc<crate::fleet::Trust>,
    clock: SharedClock,
    gate: Gate,
    /// The daemon's settings channel: read when needed, never copied.
    settings: watch::Receiver<Arc<Settings>>,
    client: RwLock<Arc<CdnClient>>,
    wake_batcher: Notify,
    wake_tracker: Notify,
    /// Wakes the origin stage: new intents may have layer purges to make.
    wake_origin: Notify,
    shutdown: CancellationToken,
    /// One permit per batch under way (cut, not yet accepted or failed).
    batch_slots: Arc<Semaphore>,
    /// How many permits `batch_slots` was created with (fixed at start:
    /// a reload of `sender.concurrency` does not resize it).
    batch_slot_count: usize,
    endpoint_pauses: Mutex<HashMap<String, EndpointPause>>,
    status: Mutex<Status>,
    /// Set while the batcher and the tracker loops run.
    batcher_alive: AtomicBool,
    tracker_alive: AtomicBool,
    origin_alive: AtomicBool,
    /// Batches a sender task holds. A `sending` batch that nobody holds
    /// (left by a crash, or by a sender whose store write failed for good)
    /// is adopted by the batcher and sent again, without a restart.
    claimed: Mutex<HashSet<BatchId>>,
    /// Held while batches are made `sending` outside the batcher (a split)
    /// and while the batcher looks for unclaimed ones, so it never sees a
    /// batch between its commit and its claim.
    adoption: tokio::sync::Mutex<()>,
    /// When unclaimed `sending` batches were last looked for (`None`: not
    /// yet), and whether a sender let one go since.
    adoption_checked: Mutex<Option<Instant>>,
    adoption_requested: AtomicBool,
    /// When the quota planner last looked at the queue (`None`: not yet)
    /// and how long that took, and how many items were added since.
    planned_at: Mutex<Option<(Instant, Duration)>>,
    added_since_planning: std::sync::atomic::AtomicU64,
    /// Intents added since the planner last surveyed the queue, what it
    /// last surveyed, and how many surveys it made (see `batcher`).
    added_since_survey: std::sync::atomic::AtomicU64,
    last_survey: Mutex<Option<batcher::SurveyInputs>>,
    surveys: std::sync::atomic::AtomicU64,
    /// The waits last written to the store (`None` before the first
    /// write, which also clears what a previous run left).
    published_waits: Mutex<Option<Vec<crate::store::Wait>>>,
    /// Calls not yet written for the status page's charts.
    call_log: call_log::CallLog,
    /// The built-in emulator's edge nodes: what verification probes when
    /// `verify.edges` names none.
    emulated_edges: RwLock<Vec<std::net::SocketAddr>>,
}

/// A sender task's hold on a batch; let go when dropped, however the task
/// ends.
pub(crate) struct BatchClaim {
    shared: Arc<Shared>,
    id: BatchId,
}

impl Shared {
    /// True when this pipeline may not call the CDN any more: its lease
    /// is past its trust deadline, or it was deposed. Asked just before
    /// each call.
    fn lease_lapsed(&self) -> bool {
        !self.trust.allows(std::time::Instant::now())
    }
}

impl Drop for BatchClaim {
    fn drop(&mut self) {
        self.shared
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// How often the batcher looks for `sending` batches that no sender holds,
/// besides at start and when a sender lets one go.
const ADOPTION_RECHECK: Duration = Duration::from_secs(30);

/// How often, at most, the quota planner counts the queue.
const PLANNING_INTERVAL: Duration = Duration::from_secs(1);

/// Marks a loop as running for as long as it lives; cleared however the
/// loop ends, a panic included.
pub(crate) struct AliveGuard<'a>(&'a AtomicBool);

impl<'a> AliveGuard<'a> {
    pub(crate) fn new(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
struct EndpointPause {
    until: Instant,
    reason: String,
}

#[derive(Debug, Clone, Default)]
struct Status {
    quota: Option<QuotaUse>,
    quota_exhausted_until: Option<OffsetDateTime>,
    /// Files and directories that today's quota cannot take.
    quota_waiting: (u64, u64),
    /// Pending files (all, urgent) at the planner's last look: what a new
    /// request's files queue behind (its forecast).
    files_pending: (u64, u64),
    last_error: Option<(String, String)>,
    calls: HashMap<String, u64>,
}

impl Shared {
    fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    fn client(&self) -> Arc<CdnClient> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now_utc()
    }

    fn now_ts(&self) -> Timestamp {
        Timestamp::new(self.now())
    }

    /// Today's quota day of the configured subscription: where calls made
    /// now are counted.
    fn quota_account(&self) -> QuotaAccount {
        QuotaAccount {
            subscription_id: self.client().subscription_id().to_owned(),
            day: crate::quota::day_of(self.now(), self.settings().derived.quota_offset.get()),
        }
    }

    fn emulated_edges(&self) -> Vec<std::net::SocketAddr> {
        self.emulated_edges
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `count` new items were stored: the planner and the stages look.
    fn added(&self, count: usize) {
        self.added_since_planning
            .fetch_add(count as u64, Ordering::Relaxed);
        self.added_since_survey
            .fetch_add(count as u64, Ordering::Relaxed);
        self.wake_batcher.notify_one();
        // A URL already pending may have had its layer purges started
        // again (a new intent for it): wake the stage whatever `count`.
        self.wake_origin.notify_one();
    }

    /// Marks `id` as held by a sender task.
    fn claim(self: &Arc<Self>, id: BatchId) -> BatchClaim {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        BatchClaim {
            shared: self.clone(),
            id,
        }
    }

    fn published_waits(&self) -> std::sync::MutexGuard<'_, Option<Vec<crate::store::Wait>>> {
        self.published_waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the batcher should look for unclaimed `sending` batches.
    fn adoption_due(&self) -> bool {
        self.adoption_requested.load(Ordering::Relaxed)
            || self
                .adoption_checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|at| at.elapsed() >= ADOPTION_RECHECK)
    }

    fn adoption_done(&self) {
        self.adoption_requested.store(false, Ordering::Relaxed);
        *self
            .adoption_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the quota planner looks at the queue in this pass: at once
    /// after a batch's worth of new items (a deploy is planned before its
    /// first batch is cut), else once per [`PLANNING_INTERVAL`], so a
    /// stream of single-URL intents does not pay for a count of the whole
    /// queue each; and never more than a tenth of the time, however large
    /// the queue (a look at a million items takes a while).
    fn planning_due(&self) -> bool {
        self.planning_due_in().is_zero()
    }

    /// How long until the planner may look again (zero: now). A pass that
    /// skips planning looks again then, so the plan (and what `/v1/stats`
    /// says waits for the next day) is never left stale behind a batcher
    /// that sleeps until something changes.
    fn planning_due_in(&self) -> Duration {
        let planned_at = *self.planned_at.lock().unwrap_or_else(|p| p.into_inner());
        let Some((at, cost)) = planned_at else {
            return Duration::ZERO;
        };
        let elapsed = at.elapsed();
        let min_gap = cost * 10;
        let added = self.added_since_planning.load(Ordering::Relaxed);
        let batch = (self.settings().batch.max_files as u64).max(1);
        let due_after = if added >= batch {
            min_gap
        } else {
            min_gap.max(PLANNING_INTERVAL)
        };
        due_after.saturating_sub(elapsed)
    }

    fn added_since_survey(&self) -> u64 {
        self.added_since_survey.load(Ordering::Relaxed)
    }

    /// Whether the planner must survey the queue for `inputs`: not when
    /// they are what it last surveyed (then it is noted as surveyed now).
    fn survey_needed(&self, inputs: &batcher::SurveyInputs) -> bool {
        let mut last = self.last_survey.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == Some(inputs) {
            return false;
        }
        // Noted as the next survey will see it: nothing added since.
        *last = Some(batcher::SurveyInputs {
            added: 0,
            ..*inputs
        });
        self.added_since_survey.store(0, Ordering::Relaxed);
        true
    }

    fn count_survey(&self) {
        self.surveys.fetch_add(1, Ordering::Relaxed);
    }

    /// The planner looked at the queue, starting at `started`.
    fn planned(&self, started: Instant) {
        self.added_since_planning.store(0, Ordering::Relaxed);
        *self.planned_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), started.elapsed()));
    }

    /// A sender let its batch go without an end recorded: adopt it soon.
    fn request_adoption(&self) {
        self.adoption_requested.store(true, Ordering::Relaxed);
    }

    fn is_claimed(&self, id: BatchId) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// The CDN refused our credentials: pause every call until a reload
    /// (or [`gate::CREDENTIALS_RETRY`]), saying so once.
    fn pause_for_credentials(&self, error: &crate::cdn::CdnError, reason: &str) {
        if self.gate.pause(
            &error.outcome_label(),
            reason.to_owned(),
            gate::CREDENTIALS_RETRY,
        ) {
            tracing::error!("{reason}; sending is paused, every item is kept");
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call's outcome (for stats, metrics and the charts) and
    /// remembers the last error.
    fn record_call(
        &self,
        operation: &'static str,
        outcome: &str,
        duration: Duration,
        error: Option<&crate::cdn::CdnError>,
    ) {
        crate::metrics::api_call(operation, outcome, duration);
        self.call_log.push(crate::store::CallRecord {
            at: self.now_ts(),
            operation,
            outcome: call_log::outcome_of(error),
            error: error.map(|e| crate::store::CallError {
                error_type: outcome.to_owned(),
                message: e.to_string(),
                correlation_id: e.correlation_id().map(str::to_owned),
            }),
        });
        let error = error.map(ToString::to_string);
        let mut status = self.status();
        *status
            .calls
            .entry(format!("{operation}:{outcome}"))
            .or_default() += 1;
        if let Some(error) = error {
            status.last_error = Some((self.now_ts().to_string(), error));
        }
    }

    fn pause_endpoint(&self, endpoint_id: &str, reason: String) {
        self.endpoint_pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                endpoint_id.to_owned(),
                EndpointPause {
                    until: Instant::now() + self.settings().sender.endpoint_inactive_retry,
                    reason,
                },
            );
    }

    /// When a paused endpoint may be tried again, if it is paused.
    fn endpoint_paused_until(&self, endpoint_id: &str) -> Option<Instant> {
        let mut pauses = self
            .endpoint_pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match pauses.get(endpoint_id) {
            Some(pause) if pause.until > Instant::now() => Some(pause.until),
            Some(_) => {
                pauses.remove(endpoint_id);
                None
            }
            None => None,
        }
    }
}

/// The running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    tasks: TaskTracker,
}

impl Pipeline {
    /// Recovers what a previous run left in flight, then starts the
    /// batcher and the tracker.
    pub async fn start(
        store: Store,
        settings: watch::Receiver<Arc<Settings>>,
        client: CdnClient,
        clock: SharedClock,
    ) -> Result<Pipeline, StoreError> {
        Pipeline::start_with_trust(
            store,
            settings,
            client,
            clock,
            crate::fleet::Trust::always(),
        )
        .await
    }

    /// A fleet leader's pipeline: `store` is fenced to its term
    /// ([`Store::fenced`]), and no CDN call starts once `trust` no longer
    /// allows it (the lease's own deadline, checked just before each call).
    pub async fn start_with_trust(
        store: Store,
        settings: watch::Receiver<Arc<Settings>>,
        client: CdnClient,
        clock: SharedClock,
        trust: Arc<crate::fleet::Trust>,
    ) -> Result<Pipeline, StoreError> {
        let current = settings.borrow().clone();
        let now = Timestamp::new(clock.now_utc());
        let recovered = store.recover(now).await?;
        if recovered > 0 {
            tracing::info!(
                items = recovered,
                "put items left in flight by the previous run back to pending"
            );
        }
        let shared = Arc::new(Shared {
            trust,
            gate: Gate::new(&current.sender),
            batch_slots: Arc::new(Semaphore::new(current.sender.concurrency.max(1))),
            batch_slot_count: current.sender.concurrency.max(1),
            settings,
            client: RwLock::new(Arc::new(client)),
            store,
            clock,
            wake_batcher: Notify::new(),
            wake_tracker: Notify::new(),
            wake_origin: Notify::new(),
            shutdown: CancellationToken::new(),
            endpoint_pauses: Mutex::new(HashMap::new()),
            status: Mutex::new(Status::default()),
            batcher_alive: AtomicBool::new(false),
            tracker_alive: AtomicBool::new(false),
            origin_alive: AtomicBool::new(false),
            claimed: Mutex::new(HashSet::new()),
            adoption: tokio::sync::Mutex::new(()),
            adoption_checked: Mutex::new(None),
            adoption_requested: AtomicBool::new(false),
            planned_at: Mutex::new(None),
            added_since_planning: std::sync::atomic::AtomicU64::new(0),
            added_since_survey: std::sync::atomic::AtomicU64::new(0),
            last_survey: Mutex::new(None),
            surveys: std::sync::atomic::AtomicU64::new(0),
            published_waits: Mutex::new(None),
            call_log: call_log::CallLog::default(),
            emulated_edges: RwLock::new(Vec::new()),
        });
        // Batches a previous run left `sending` are adopted by the batcher
        // on its first pass (charged again, then sent again).
        let tasks = TaskTracker::new();
        tasks.spawn(batcher::run(shared.clone(), tasks.clone()));
        tasks.spawn(tracker::run(shared.clone()));
        tasks.spawn(origin::run(shared.clone()));
        tasks.spawn(verify::run(shared.clone()));
        tasks.spawn(call_log::run(shared.clone()));
        Ok(Pipeline { shared, tasks })
    }

    /// The built-in emulator's edge nodes, probed by verification when
    /// `verify.edges` names none.
    pub fn use_emulated_edges(&self, edges: Vec<std::net::SocketAddr>) {
        *self
            .shared
            .emulated_edges
            .write()
            .unwrap_or_else(|p| p.into_inner()) = edges;
    }

    /// How many times the quota planner has read the whole pending queue:
    /// a backlog that cannot move (a spent day) must not keep it busy.
    pub fn surveys(&self) -> u64 {
        self.shared.surveys.load(Ordering::Relaxed)
    }

    /// The handle the ingest API reads status from and wakes the batcher
    /// through.
    pub fn report(&self) -> Arc<dyn PipelineReport> {
        Arc::new(Reporter(self.shared.clone()))
    }

    /// Reacts to settings the daemon has just published on the channel
    /// (`old` were in force before): the gate takes the new limits, and the
    /// new client (credentials may have changed) lifts a credentials pause
    /// at once.
    pub fn settings_changed(&self, old: &Settings, new: &Settings, client: CdnClient) {
        self.shared.gate.reconfigure(&old.sender, &new.sender);
        *self
            .shared
            .client
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(client);
        if self.shared.gate.paused().is_some() {
            tracing::info!("new CDN settings loaded: resuming sending");
        }
        self.shared.gate.resume();
        self.shared.wake_batcher.notify_one();
        self.shared.wake_tracker.notify_one();
    }

    /// Stops cutting batches and making new calls; calls already on the
    /// wire finish (within `timeout`). What is left is finished by the next
    /// start.
    pub async fn shutdown(self, timeout: Duration) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?timeout,
                "calls still under way at the shutdown timeout; their batches will be sent again on the next start"
            );
        }
    }
}

/// [`PipelineReport`] over the shared state.
struct Reporter(Arc<Shared>);

impl PipelineReport for Reporter {
    fn status(&self) -> PipelineStatus {
        let shared = &self.0;
        let settings = shared.settings();
        let status = shared.status().clone();
        let now = Instant::now();
        let pause = shared.gate.paused();
        let throttled = shared.gate.throttled_until();
        let state = if pause.is_some() {
            SenderState::Paused
        } else if throttled.is_some() {
            SenderState::Throttled
        } else {
            SenderState::Running
        };
        let in_flight = shared
            .batch_slot_count
            .saturating_sub(shared.batch_slots.available_permits());
        let quota = status.quota.as_ref().map(|q| {
            q.status(
                &settings.quota,
                crate::store::QuotaContext {
                    exhausted_until: status.quota_exhausted_until.map(timestamp),
                    waiting: status.quota_waiting,
                    files_pending: status.files_pending,
                    next_day_at: timestamp(crate::quota::next_day_start(
                        shared.now(),
                        settings.derived.quota_offset.get(),
                    )),
                },
            )
        });
        let endpoints_paused = shared
            .endpoint_pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, p)| p.until > now)
            .map(|(id, p)| {
                (
                    id.clone(),
                    EndpointRest {
                        reason: p.reason.clone(),
                        retry_in_seconds: (p.until - now).as_secs_f64(),
                    },
                )
            })
            .collect();
        PipelineStatus {
            sender: SenderStatus {
                state,
                paused_reason: pause.as_ref().map(|p| p.reason.clone()),
                paused_for_seconds: pause.as_ref().map(|p| (p.until - now).as_secs_f64()),
                throttled_for_seconds: throttled.map(|t| (t - now).as_secs_f64()),
                throttled_total: shared.gate.throttled_total(),
                batches_in_flight: in_flight,
                last_error: status.last_error.as_ref().map(|(_, e)| e.clone()),
                last_error_at: status.last_error.as_ref().map(|(at, _)| at.clone()),
                calls: status.calls,
            },
            quota,
            endpoints_paused,
        }
    }

    fn wake(&self) {
        self.0.wake_batcher.notify_one();
        self.0.wake_origin.notify_one();
    }

    fn added(&self, count: usize) {
        self.0.added(count);
    }

    fn alive(&self) -> bool {
        self.0.batcher_alive.load(Ordering::Relaxed)
            && self.0.tracker_alive.load(Ordering::Relaxed)
            && self.0.origin_alive.load(Ordering::Relaxed)
    }
}

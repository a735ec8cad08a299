//! The batcher: cuts batches on demand.
//!
//! A batch is cut only when a sender slot is free and the gate is open, so
//! a backlog stays pending items (which can still coalesce) rather than
//! turning into thousands of batches committed in advance. A batch is cut
//! when it would be full, or when its oldest item has waited
//! `batch.linger`. The batcher sleeps until the next such moment, or until
//! woken (new items, a finished batch, a reload): an idle daemon does no
//! work at all.
//!
//! Each endpoint's turn cuts its purges first, then its preloads (files
//! whose purge succeeded, or asked for on their own): a purge keeps stale
//! content from visitors, a preload only saves the first of them a trip to
//! the origin, so purges never wait behind preloads for a sender slot.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::task::TaskTracker;

use super::{Shared, sender};
use crate::store::Timestamp;
use crate::store::{
    BatchId, CutLimits, PreloadLimits, QuotaUse, Readiness, StoreError, Wait, timestamp,
};
use crate::target::Kind;
use crate::{planner, quota};

/// With items waiting on an exhausted quota, the batcher sleeps until the
/// day turns; it looks this often anyway, in case the system clock was
/// stepped (a test's clock wakes it itself: `Clock::moved`). It was 5 s,
/// and each look counts the whole backlog (issue 31).
const QUOTA_RECHECK: Duration = Duration::from_secs(3600);

pub(super) async fn run(shared: Arc<Shared>, senders: TaskTracker) {
    let _alive = super::AliveGuard::new(&shared.batcher_alive);
    let mut moved = shared.clock.moved();
    let mut rotation = 0usize;
    let mut expiry = ExpiryWatch::default();
    let mut known = match shared.store.pending_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            tracing::warn!(%error, "cannot list endpoints with pending items");
            Vec::new()
        }
    };
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let next = match cut_what_can_go(&shared, &senders, &mut known, &mut rotation, &mut expiry)
            .await
        {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "batcher: store error; retrying in 5s");
                Some(Duration::from_secs(5))
            }
        };
        if next == Some(Duration::ZERO) {
            continue;
        }
        let sleep = tokio::time::sleep(next.unwrap_or(Duration::from_secs(86_400)));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake_batcher.notified() => {}
            _ = sleep, if next.is_some() => {}
            _ = clock_moved(&mut moved) => {}
        }
    }
}

/// Resolves when the clock is moved (never, for a clock that only moves
/// with time).
async fn clock_moved(moved: &mut Option<tokio::sync::watch::Receiver<()>>) {
    let Some(receiver) = moved else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        // The clock is gone: it will not move again.
        *moved = None;
    }
}

fn earlier(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

pub(super) fn until(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    let gap = to - from;
    if gap.is_negative() {
        Duration::ZERO
    } else {
        gap.unsigned_abs()
    }
}

/// Cuts every batch that may go now; returns when to look again (`None`:
/// only when woken).
async fn cut_what_can_go(
    shared: &Arc<Shared>,
    senders: &TaskTracker,
    known: &mut Vec<String>,
    rotation: &mut usize,
    watch: &mut ExpiryWatch,
) -> Result<Option<Duration>, StoreError> {
    // Before anything is cut, and whether or not anything may be sent:
    // a URL whose older copies have all expired needs no purge (issue 32).
    let expiry = expire_what_is_due(shared, watch).await?;
    let quota = shared.store.quota_use(&shared.quota_account()).await?;
    shared.status().quota = Some(quota.clone());
    publish_waits(shared, &quota).await?;
    if let Some(wait) = gate_wait(shared) {
        return Ok(Some(expiry.map_or(wait, |e| e.min(wait))));
    }
    if shared.adoption_due() && !adopt_unclaimed(shared, senders).await? {
        // Every slot is busy sending what a previous run left: woken when
        // one frees.
        return Ok(None);
    }
    let settings = shared.settings();
    // Planning skipped for now: look again when it is due. The next
    // expiry wakes the batcher too.
    let mut next: Option<Duration> = expiry;
    if shared.planning_due() {
        let started = tokio::time::Instant::now();
        plan_the_day(shared, &quota, watch.next).await?;
        shared.planned(started);
    } else {
        next = Some(shared.planning_due_in().max(Duration::from_millis(10)));
    }
    let mut endpoints = in_rotation(&settings, known, rotation);
    // Endpoints with urgent items go first: a hotfix does not wait for its
    // endpoint's turn behind a backlog elsewhere.
    let urgent = shared.store.urgent_pending().await?;
    endpoints.sort_by_key(|e| !urgent.endpoints.contains(e));
    let urgent_waiting = (urgent.files, urgent.directories);
    let mut cut_any = false;
    let mut quota_blocked = false;
    for endpoint in &endpoints {
        match cut_for(shared, senders, endpoint, &quota, urgent_waiting).await? {
            Cut::Nothing => {}
            Cut::Sent => cut_any = true,
            Cut::LookAgain(wait) => next = earlier(next, wait),
            Cut::QuotaSpent => quota_blocked = true,
            // Woken when a batch finishes.
            Cut::NoSlot => return Ok(next),
        }
        match cut_preloads_for(shared, senders, endpoint, &quota).await? {
            Cut::Nothing => {}
            Cut::Sent => cut_any = true,
            Cut::LookAgain(wait) => next = earlier(next, wait),
            // The purge quota is not spent: only preloads wait, and the
            // `quota:preload` wait says so.
            Cut::QuotaSpent => {
                let now = shared.now();
                let offset = shared.settings().derived.quota_offset.get();
                let turns = quota::next_day_start(now, offset);
                next = earlier(next, until(now, turns).min(QUOTA_RECHECK));
            }
            Cut::NoSlot => return Ok(next),
        }
    }
    if let Some(recheck) = note_quota_block(shared, quota_blocked) {
        next = earlier(next, recheck);
    }
    if cut_any {
        // More may be ready (another full batch, another endpoint).
        return Ok(Some(Duration::ZERO));
    }
    if next.is_none() {
        // Nothing waiting anywhere: refresh the list of endpoints with
        // pending items (cheap now, and it catches ones dropped from the
        // configuration).
        *known = shared.store.pending_endpoints().await?;
    }
    Ok(next)
}

/// How often at most the batcher looks for URLs whose cached copies have
/// expired: it is woken by every intent, and a look per intent cost ingest
/// a read per request for a rule that works in seconds.
const EXPIRY_LOOK_GAP: Duration = Duration::from_secs(1);

/// When the batcher last looked for expired URLs, and what it saw.
#[derive(Debug, Default)]
pub(super) struct ExpiryWatch {
    looked_at: Option<tokio::time::Instant>,
    /// The next pending file's expiry as of that look.
    next: Option<OffsetDateTime>,
}

/// Ends the pending files whose older copies have all expired; returns
/// how long until the batcher should look again (`None`: nothing will
/// expire). At most one look a second; a pass within that second asks to
/// be woken when it ends, so what an intent added meanwhile is not missed.
async fn expire_what_is_due(
    shared: &Arc<Shared>,
    watch: &mut ExpiryWatch,
) -> Result<Option<Duration>, StoreError> {
    let now = shared.now();
    if let Some(looked_at) = watch.looked_at {
        let since = looked_at.elapsed();
        if since < EXPIRY_LOOK_GAP {
            let gap_ends = EXPIRY_LOOK_GAP - since;
            return Ok(Some(
                watch
                    .next
                    .map_or(gap_ends, |next| until(now, next).max(gap_ends)),
            ));
        }
    }
    watch.looked_at = Some(tokio::time::Instant::now());
    watch.next = shared.store.next_expiry().await?;
    let Some(next) = watch.next else {
        return Ok(None);
    };
    if next > now {
        return Ok(Some(until(now, next)));
    }
    let expired = shared.store.expire_due(now).await?;
    if expired > 0 {
        tracing::info!(
            expired,
            "URLs ended without a purge: their cached copies have expired"
        );
        crate::metrics::expired(expired);
    }
    watch.next = shared.store.next_expiry().await?;
    Ok(watch.next.map(|next| until(now, next).max(EXPIRY_LOOK_GAP)))
}

/// Runs the quota planner when the normal files waiting do not fit in
/// their lane of today's file quota, carries out the directories it
/// chooses ([`crate::planner`]), and notes how many items wait for the
/// next quota day. Reads the whole queue only when files do not fit.
async fn plan_the_day(
    shared: &Arc<Shared>,
    quota: &QuotaUse,
    next_expiry: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    let settings = shared.settings();
    let rules = &settings.quota;
    let left = planner::Left {
        files: rules.files_per_day.saturating_sub(quota.files_used),
        directories: rules
            .directories_per_day
            .saturating_sub(quota.directories_used),
    };
    let mut counts = shared.store.lane_counts().await?;
    let file_lane = quota::lanes(left.files, rules.urgent_reserve_files, counts.urgent_files);
    let over = counts.files - counts.urgent_files > file_lane.normal;
    // The survey reads every pending URL: only when its inputs changed
    // since the last one (issue 31: a backlog waiting for the next quota
    // day was surveyed every few seconds, a core's worth of work for the
    // 14 hours of a spent day).
    let inputs = SurveyInputs {
        counts,
        left,
        rules: Arc::as_ptr(&settings) as usize,
        added: shared.added_since_survey(),
    };
    let now = shared.now();
    let next_day = Timestamp::new(quota::next_day_start(
        now,
        settings.derived.quota_offset.get(),
    ));
    if over {
        defer_what_expires(shared, next_expiry, next_day).await?;
    }
    if over && rules.promote == crate::config::Promote::Auto && shared.survey_needed(&inputs) {
        shared.count_survey();
        let mut survey = planner::Survey::new(rules);
        shared.store.survey_pending(&mut survey, next_day).await?;
        let promotions = survey.promotions(left);
        if !promotions.is_empty() {
            for promotion in &promotions {
                tracing::info!(endpoint = %promotion.endpoint_id, directory = %promotion.directory,
                    files = promotion.files,
                    "purging a directory instead of its files: the day's file quota cannot cover them");
            }
            shared
                .store
                .promote(promotions, Timestamp::new(now))
                .await?;
            counts = shared.store.lane_counts().await?;
        }
    }
    let mut status = shared.status();
    status.quota_waiting = counts.waiting(left, rules);
    status.files_pending = (counts.files, counts.urgent_files);
    Ok(())
}

/// The day cannot reach every file: those whose copies expire before it
/// turns wait for their expiry, not for quota (issue 32). A write only
/// when some file qualifies: `next_expiry` is the expiry watch's last look
/// (at most a second old; a file added since waits for the next planning).
async fn defer_what_expires(
    shared: &Arc<Shared>,
    next_expiry: Option<OffsetDateTime>,
    next_day: Timestamp,
) -> Result<(), StoreError> {
    if next_expiry.is_some_and(|at| at < next_day.get()) {
        let deferred = shared.store.defer_expiring(next_day).await?;
        if deferred > 0 {
            tracing::info!(
                deferred,
                "files left to expire: the day's quota cannot reach every file, and their cached copies expire before the next quota day"
            );
        }
    }
    Ok(())
}

/// What the planner's survey depends on: when none of it changed, the
/// survey would choose what it chose last time (nothing, or directories
/// already promoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SurveyInputs {
    pub counts: crate::store::LaneCounts,
    pub left: planner::Left,
    /// The settings' identity: a reload makes a new one.
    pub rules: usize,
    /// Intents added since the last survey.
    pub added: u64,
}

/// How long sending is held by a pause or a throttle, if it is.
fn gate_wait(shared: &Shared) -> Option<Duration> {
    let until = shared
        .gate
        .paused()
        .map(|p| p.until)
        .into_iter()
        .chain(shared.gate.throttled_until())
        .max()?;
    Some(until.saturating_duration_since(tokio::time::Instant::now()))
}

/// The configured endpoints and any others with pending items, starting
/// one further along each pass so that no endpoint always goes first.
fn in_rotation(
    settings: &crate::config::Settings,
    known: &[String],
    rotation: &mut usize,
) -> Vec<String> {
    let mut endpoints = settings.derived.router.endpoint_ids();
    for endpoint in known {
        if !endpoints.contains(endpoint) {
            endpoints.push(endpoint.clone());
        }
    }
    if !endpoints.is_empty() {
        *rotation = (*rotation + 1) % endpoints.len();
        endpoints.rotate_left(*rotation);
    }
    endpoints
}

/// What one endpoint's turn in a pass came to.
enum Cut {
    Nothing,
    /// A batch was cut and handed to a sender.
    Sent,
    LookAgain(Duration),
    QuotaSpent,
    /// A batch could go, but every sender slot is busy.
    NoSlot,
}

/// One endpoint's turn: cuts a batch if [`when_to_cut`] says so.
async fn cut_for(
    shared: &Arc<Shared>,
    senders: &TaskTracker,
    endpoint: &str,
    quota: &QuotaUse,
    urgent_waiting: (u64, u64),
) -> Result<Cut, StoreError> {
    if let Some(until) = shared.endpoint_paused_until(endpoint) {
        return Ok(Cut::LookAgain(
            until.saturating_duration_since(tokio::time::Instant::now()),
        ));
    }
    let settings = shared.settings();
    let now = shared.now();
    let batch = &settings.batch;
    let store = &shared.store;
    let files = store
        .readiness(endpoint, Kind::File, Timestamp::new(now), batch.max_files)
        .await?;
    let directories = store
        .readiness(
            endpoint,
            Kind::Directory,
            Timestamp::new(now),
            batch.max_directories,
        )
        .await?;
    let day = Day {
        quota,
        limits: &settings.quota,
        urgent_waiting,
    };
    let full = match when_to_cut(&files, &directories, &day, &settings, now) {
        When::Nothing => return Ok(Cut::Nothing),
        When::At(wait) => return Ok(Cut::LookAgain(wait)),
        When::QuotaSpent => return Ok(Cut::QuotaSpent),
        When::Now { full } => full,
    };
    let Ok(slot) = shared.batch_slots.clone().try_acquire_owned() else {
        return Ok(Cut::NoSlot);
    };
    let account = shared.quota_account();
    let limits = CutLimits {
        max_files: batch.max_files,
        max_directories: batch.max_directories,
        account: account.clone(),
        files_per_day: settings.quota.files_per_day,
        directories_per_day: settings.quota.directories_per_day,
        reserve_files: settings.quota.urgent_reserve_files,
        reserve_directories: settings.quota.urgent_reserve_directories,
    };
    let Some(batch) = store
        .cut_batch(endpoint, limits, Timestamp::new(now))
        .await?
    else {
        // Nothing cut: the writer's own quota check (the one that counts)
        // found the day spent since the snapshot, or the items went
        // meanwhile (cancelled, merged). Only the first is a quota wait
        // (issue 13: every empty cut was logged as "daily quota used up").
        let fresh = store.quota_use(&account).await?;
        let day = Day {
            quota: &fresh,
            ..day
        };
        if day.out_of_quota(&files, &directories) {
            return Ok(Cut::QuotaSpent);
        }
        tracing::debug!(
            endpoint,
            "nothing to cut after all: the items went meanwhile"
        );
        return Ok(Cut::Nothing);
    };
    tracing::debug!(batch = %batch.id, endpoint, files = batch.files.len(),
        directories = batch.directories.len(), full, "cut a batch");
    crate::metrics::batch_cut(batch.len());
    let claim = shared.claim(batch.id);
    senders.spawn(sender::run(shared.clone(), batch, claim, slot));
    Ok(Cut::Sent)
}

/// One endpoint's preload turn: cut like purges (when a batch is full or
/// its oldest has lingered), within `batch.max_preload_files` and the
/// day's preload quota.
async fn cut_preloads_for(
    shared: &Arc<Shared>,
    senders: &TaskTracker,
    endpoint: &str,
    quota: &QuotaUse,
) -> Result<Cut, StoreError> {
    if let Some(until) = shared.endpoint_paused_until(endpoint) {
        return Ok(Cut::LookAgain(
            until.saturating_duration_since(tokio::time::Instant::now()),
        ));
    }
    let settings = shared.settings();
    let now = shared.now();
    let max = settings.batch.max_preload_files;
    let ready = shared
        .store
        .preload_readiness(endpoint, Timestamp::new(now), max)
        .await?;
    let left = settings
        .quota
        .preloads_per_day
        .saturating_sub(quota.preloads_used);
    match when_to_cut_preloads(&ready, left, max, settings.batch.linger, now) {
        When::Nothing => return Ok(Cut::Nothing),
        When::At(wait) => return Ok(Cut::LookAgain(wait)),
        When::QuotaSpent => return Ok(Cut::QuotaSpent),
        When::Now { .. } => {}
    }
    let Ok(slot) = shared.batch_slots.clone().try_acquire_owned() else {
        return Ok(Cut::NoSlot);
    };
    let limits = PreloadLimits {
        max_files: max,
        account: shared.quota_account(),
        per_day: settings.quota.preloads_per_day,
    };
    let Some(batch) = shared
        .store
        .cut_preload_batch(endpoint, limits, Timestamp::new(now))
        .await?
    else {
        return Ok(Cut::Nothing);
    };
    tracing::debug!(batch = %batch.id, endpoint, files = batch.files.len(), "cut a preload batch");
    crate::metrics::batch_cut(batch.len());
    let claim = shared.claim(batch.id);
    senders.spawn(sender::run(shared.clone(), batch, claim, slot));
    Ok(Cut::Sent)
}

/// The batcher's policy for one endpoint's preloads, as [`when_to_cut`]
/// for purges: `left` is what the day's preload quota has left.
fn when_to_cut_preloads(
    ready: &Readiness,
    left: u64,
    max: usize,
    linger: Duration,
    now: OffsetDateTime,
) -> When {
    let Some(earliest) = ready.earliest_not_before.map(|t| t.get()) else {
        return When::Nothing;
    };
    let ripe_at = earliest + linger;
    if ready.eligible == 0 {
        return When::At(until(now, ripe_at).max(Duration::from_millis(10)));
    }
    if left == 0 {
        return When::QuotaSpent;
    }
    let full = ready.eligible >= max;
    if !full && ripe_at > now {
        return When::At(until(now, ripe_at));
    }
    When::Now { full }
}

/// Notes whether items wait for the next quota day (logged once per day,
/// shown in the status); returns how soon to look again when they do.
fn note_quota_block(shared: &Shared, blocked: bool) -> Option<Duration> {
    if !blocked {
        shared.status().quota_exhausted_until = None;
        return None;
    }
    let now = shared.now();
    let resumes = quota::next_day_start(now, shared.settings().derived.quota_offset.get());
    let first = shared
        .status()
        .quota_exhausted_until
        .replace(resumes)
        .is_none();
    if first {
        tracing::warn!(day = %shared.quota_account().day, resumes_at = %timestamp(resumes),
            "daily quota used up; the remaining items wait for the next quota day");
    }
    Some(until(now, resumes).min(QUOTA_RECHECK))
}

/// What the batcher does about one endpoint now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    /// Nothing pending.
    Nothing,
    /// Look again after this long (the oldest item lingers, or none may go
    /// yet).
    At(Duration),
    /// Items could go, but no kind that has some has quota left today.
    QuotaSpent,
    /// Cut a batch now; `full` when it fills the batch limits.
    Now { full: bool },
}

/// The batcher's policy for one endpoint, from how ready its items are:
///
/// | items | result |
/// |---|---|
/// | none pending | nothing |
/// | none eligible yet (`not_before` later) | look again when the first is ripe (never a zero wait) |
/// | eligible, but their kinds' quota spent | quota spent |
/// | a full batch's worth | now (full) |
/// | fewer, the oldest has lingered `batch.linger` | now |
/// | fewer, still lingering | look again when it has |
fn when_to_cut(
    files: &Readiness,
    directories: &Readiness,
    day: &Day<'_>,
    settings: &crate::config::Settings,
    now: OffsetDateTime,
) -> When {
    let earliest = [&files.earliest_not_before, &directories.earliest_not_before]
        .into_iter()
        .flatten()
        .map(|t| t.get())
        .min();
    let Some(earliest) = earliest else {
        return When::Nothing;
    };
    let ripe_at = earliest + settings.batch.linger;
    if files.eligible + directories.eligible == 0 {
        // Nothing may go before `earliest`, which is later than now (a
        // zero wait here spun the batcher: issue 13, bug 9).
        return When::At(until(now, ripe_at).max(Duration::from_millis(10)));
    }
    if day.out_of_quota(files, directories) {
        return When::QuotaSpent;
    }
    let full = files.eligible >= settings.batch.max_files
        || directories.eligible >= settings.batch.max_directories;
    if !full && ripe_at > now {
        return When::At(until(now, ripe_at));
    }
    When::Now { full }
}

/// Writes why pending work waits (a pause, a spent quota) when that
/// changed, so the `queue` view and every status say it.
async fn publish_waits(shared: &Arc<Shared>, quota: &QuotaUse) -> Result<(), StoreError> {
    let settings = shared.settings();
    let offset = settings.derived.quota_offset.get();
    let pause = shared.gate.paused().map(|p| p.reason);
    let waits = waits_for(
        pause.as_deref(),
        quota,
        &settings.quota,
        shared.now(),
        offset,
    );
    if shared.published_waits().as_ref() == Some(&waits) {
        return Ok(());
    }
    shared.store.set_waits(waits.clone()).await?;
    *shared.published_waits() = Some(waits);
    Ok(())
}

/// What holds pending work back now: a pause of sending, and each kind
/// whose quota for the day is spent (until the next quota day starts).
fn waits_for(
    pause: Option<&str>,
    quota: &QuotaUse,
    limits: &crate::config::QuotaSettings,
    now: OffsetDateTime,
    offset: time::UtcOffset,
) -> Vec<Wait> {
    let mut waits = Vec::new();
    if let Some(reason) = pause {
        waits.push(Wait {
            scope: "sender".into(),
            reason: format!("sending is paused: {reason}"),
            until: None,
        });
    }
    let turns = quota::next_day_start(now, offset);
    if limits.preloads_per_day <= quota.preloads_used {
        waits.push(Wait {
            scope: "quota:preload".into(),
            reason: format!(
                "waiting for quota: the day's {} preloads are spent; the next quota day starts {}",
                limits.preloads_per_day,
                quota::local_text(turns, offset)
            ),
            until: Some(timestamp(turns)),
        });
    }
    for (kind, used, per_day, reserve) in [
        (
            "file",
            quota.files_used,
            limits.files_per_day,
            limits.urgent_reserve_files,
        ),
        (
            "directory",
            quota.directories_used,
            limits.directories_per_day,
            limits.urgent_reserve_directories,
        ),
    ] {
        // Normal items wait once their lane is spent; urgent ones only when
        // the whole day is.
        if quota::lanes(per_day.saturating_sub(used), reserve, 0).normal == 0 {
            let held = if reserve > 0 && used < per_day {
                format!(" ({} held back for urgent intents)", per_day - used)
            } else {
                String::new()
            };
            waits.push(Wait {
                scope: format!("quota:{kind}"),
                reason: format!(
                    "waiting for quota: the day's {per_day} {kind} URLs are spent{held}; the next quota day starts {}",
                    quota::local_text(turns, offset)
                ),
                until: Some(timestamp(turns)),
            });
        }
    }
    waits
}

/// Today's quota as the cut sees it: the ledger, the limits and the
/// urgent items waiting (who may use the reserve).
#[derive(Debug, Clone, Copy)]
struct Day<'a> {
    quota: &'a QuotaUse,
    limits: &'a crate::config::QuotaSettings,
    /// Urgent files and directories pending, every endpoint.
    urgent_waiting: (u64, u64),
}

impl Day<'_> {
    fn lanes(&self, kind: Kind) -> quota::Lanes {
        let (per_day, used, reserve, urgent) = match kind {
            Kind::File => (
                self.limits.files_per_day,
                self.quota.files_used,
                self.limits.urgent_reserve_files,
                self.urgent_waiting.0,
            ),
            Kind::Directory => (
                self.limits.directories_per_day,
                self.quota.directories_used,
                self.limits.urgent_reserve_directories,
                self.urgent_waiting.1,
            ),
        };
        quota::lanes(per_day.saturating_sub(used), reserve, urgent)
    }

    /// True when the eligible items cannot go for lack of quota: no kind
    /// has eligible items of a lane with quota left today.
    fn out_of_quota(&self, files: &Readiness, directories: &Readiness) -> bool {
        let blocked = |ready: &Readiness, kind: Kind| {
            let lanes = self.lanes(kind);
            let urgent_can = ready.urgent > 0 && lanes.urgent > 0;
            let normal_can = ready.eligible > ready.urgent && lanes.normal > 0;
            !(urgent_can || normal_can)
        };
        blocked(files, Kind::File) && blocked(directories, Kind::Directory)
    }
}

/// Sends again every `sending` batch no sender holds: left by a previous
/// run, or by a sender whose store write failed for good. Looked for at
/// the first pass, when a sender let a batch go on an error, and every
/// [`super::ADOPTION_RECHECK`] besides (not at every wake-up: that cost
/// single-URL ingest a query per request). Each is charged
/// once more (its last call may have reached the CDN). False when a batch
/// waits for a free slot.
async fn adopt_unclaimed(shared: &Arc<Shared>, senders: &TaskTracker) -> Result<bool, StoreError> {
    let _guard = shared.adoption.lock().await;
    let unclaimed: Vec<BatchId> = shared
        .store
        .sending_batch_ids()
        .await?
        .into_iter()
        .filter(|id| !shared.is_claimed(*id))
        .collect();
    if unclaimed.is_empty() {
        shared.adoption_done();
        return Ok(true);
    }
    let account = shared.quota_account();
    for batch in shared.store.sending_batches(&unclaimed).await? {
        let Ok(slot) = shared.batch_slots.clone().try_acquire_owned() else {
            // Still due: looked at again when a slot frees.
            return Ok(false);
        };
        shared.store.adopt_sending(&[batch.id], &account).await?;
        tracing::info!(batch = %batch.id, endpoint = %batch.endpoint_id, urls = batch.len(),
            "sending again a batch that no task was sending (left by a previous run or a failed write)");
        let claim = shared.claim(batch.id);
        senders.spawn(sender::run(shared.clone(), batch, claim, slot));
    }
    shared.adoption_done();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(files_used: u64, directories_used: u64) -> QuotaUse {
        QuotaUse {
            day: "2026-11-25".into(),
            files_used,
            directories_used,
            ..QuotaUse::default()
        }
    }

    fn ready(eligible: usize, earliest: Option<&str>) -> Readiness {
        Readiness {
            eligible,
            urgent: 0,
            earliest_not_before: earliest.and_then(Timestamp::parse),
        }
    }

    #[test]
    fn every_row_of_the_cutting_table() {
        let mut settings = crate::config::Settings::default();
        settings.batch.max_files = 10;
        settings.batch.max_directories = 5;
        settings.batch.linger = Duration::from_secs(2);
        let now = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        let at = |s: &str| Some(format!("2026-11-25T{s}.000Z"));
        let none = ready(0, None);
        let fresh_use = quota(0, 0);
        let fresh = Day {
            quota: &fresh_use,
            limits: &settings.quota,
            urgent_waiting: (0, 0),
        };
        let at_0959 = at("09:59:00");
        let at_0959 = at_0959.as_deref();
        // Nothing pending.
        assert_eq!(
            when_to_cut(&none, &none, &fresh, &settings, now),
            When::Nothing
        );
        // None eligible yet: look again when the first is ripe.
        let later = at("10:00:30");
        assert_eq!(
            when_to_cut(&ready(0, later.as_deref()), &none, &fresh, &settings, now),
            When::At(Duration::from_secs(32))
        );
        // Eligible, quota spent for their kind.
        let spent_use = quota(settings.quota.files_per_day, 0);
        let spent = Day {
            quota: &spent_use,
            ..fresh
        };
        assert_eq!(
            when_to_cut(&ready(3, at_0959), &none, &spent, &settings, now),
            When::QuotaSpent
        );
        // A full batch of files, or of directories.
        assert_eq!(
            when_to_cut(&ready(10, at_0959), &none, &fresh, &settings, now),
            When::Now { full: true }
        );
        assert_eq!(
            when_to_cut(&none, &ready(5, at_0959), &fresh, &settings, now),
            When::Now { full: true }
        );
        // Fewer, lingered long enough.
        assert_eq!(
            when_to_cut(&ready(3, at_0959), &none, &fresh, &settings, now),
            When::Now { full: false }
        );
        // Fewer, still lingering: 1 s left.
        let just = at("09:59:59");
        assert_eq!(
            when_to_cut(&ready(3, just.as_deref()), &none, &fresh, &settings, now),
            When::At(Duration::from_secs(1))
        );
    }

    #[test]
    fn waits_say_why_and_until_when() {
        let limits = crate::config::QuotaSettings::default();
        let now = time::macros::datetime!(2026-11-25 10:00 UTC);
        let cst = time::macros::offset!(+08:00);
        assert!(waits_for(None, &quota(0, 0), &limits, now, cst).is_empty());
        let waits = waits_for(None, &quota(limits.files_per_day, 0), &limits, now, cst);
        assert_eq!(waits.len(), 1);
        assert_eq!(waits[0].scope, "quota:file");
        assert!(
            waits[0]
                .reason
                .contains("next quota day starts 2026-11-26 00:00 +08:00"),
            "{}",
            waits[0].reason
        );
        assert_eq!(waits[0].until.as_deref(), Some("2026-11-25T16:00:00.000Z"));
        let waits = waits_for(Some("bad key"), &quota(0, 0), &limits, now, cst);
        assert_eq!(waits[0].scope, "sender");
        assert!(waits[0].reason.contains("bad key"));
    }

    #[test]
    fn out_of_quota_only_when_no_eligible_kind_can_go() {
        let limits = crate::config::QuotaSettings::default();
        let (files_per_day, directories_per_day) =
            (limits.files_per_day, limits.directories_per_day);
        let out = |used: QuotaUse, files: &Readiness, directories: &Readiness| {
            let day = Day {
                quota: &used,
                limits: &limits,
                urgent_waiting: (0, 0),
            };
            day.out_of_quota(files, directories)
        };
        let (none, ten, one, three) = (
            ready(0, None),
            ready(10, None),
            ready(1, None),
            ready(3, None),
        );
        // Room for both.
        assert!(!out(quota(0, 0), &ten, &ten));
        // Files spent, directories waiting and allowed.
        assert!(!out(quota(files_per_day, 0), &ten, &one));
        // Files spent and only files waiting.
        assert!(out(quota(files_per_day, 0), &ten, &none));
        // Both spent.
        assert!(out(quota(files_per_day, directories_per_day), &ten, &ten));
        // Directories spent, only directories waiting.
        assert!(out(quota(0, directories_per_day), &none, &three));
    }

    #[test]
    fn the_reserve_holds_normal_items_and_lets_urgent_ones_through() {
        let limits = crate::config::QuotaSettings {
            urgent_reserve_files: 50,
            ..Default::default()
        };
        let spent = quota(limits.files_per_day - 50, 0);
        let day = Day {
            quota: &spent,
            limits: &limits,
            urgent_waiting: (0, 0),
        };
        let normal = ready(10, None);
        let urgent = Readiness {
            urgent: 1,
            ..ready(10, None)
        };
        let none = ready(0, None);
        assert!(day.out_of_quota(&normal, &none), "normal files wait");
        assert!(!day.out_of_quota(&urgent, &none), "an urgent file goes");
        let now = time::macros::datetime!(2026-11-25 10:00 UTC);
        let waits = waits_for(None, &spent, &limits, now, time::macros::offset!(+08:00));
        assert!(
            waits[0]
                .reason
                .contains("(50 held back for urgent intents)"),
            "{}",
            waits[0].reason
        );
    }
}

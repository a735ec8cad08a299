//! The gate every CDN call passes: pauses, throttling, the rate limiter and
//! the concurrency cap, in that order.
//!
//! Throttling is a property of the subscription, not of one call: when any
//! call is throttled, the gate closes for *every* caller until a deadline
//! (exponential back-off with jitter from `backon`, or the service's
//! `Retry-After` if longer). A credentials pause closes it until the
//! configuration is reloaded, or for a long while, after which one call
//! probes whether the key works again.
//!
//! Back-off alone would still hammer: when the deadline passes, the
//! limiter's whole burst goes out at once and is throttled again. So a
//! throttle also halves the gate's own pace (calls are then spaced
//! evenly), and each success raises the pace by 3 % (a slow climb: the service's limit is unknown and each
//! throttled answer costs a back-off), until it is back at the configured
//! rate and the pacer steps aside.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use governor::DefaultDirectRateLimiter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SenderSettings;

/// How long sending stays paused after the CDN refused our credentials,
/// unless the configuration is reloaded first.
pub const CREDENTIALS_RETRY: Duration = Duration::from_secs(300);

fn throttle_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

fn limiter_for(settings: &SenderSettings) -> DefaultDirectRateLimiter {
    crate::rate::token_bucket(settings.requests_per_second, settings.burst)
}

struct Throttle {
    until: Option<Instant>,
    backoff: ExponentialBackoff,
    total: u64,
    /// Calls per second the pacer allows; `None` when not pacing.
    pace: Option<f64>,
    /// When the pacer lets the next call go.
    next_slot: Instant,
    configured_rate: f64,
}

/// The slowest pace after repeated throttling: one call per 20 s.
const MIN_PACE: f64 = 0.05;

/// Each success raises the pace by this factor.
const PACE_GROWTH: f64 = 1.03;

/// Why sending is paused, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// What kind of problem (e.g. the error type): equal keys are the same
    /// problem, reported once.
    pub key: String,
    pub reason: String,
    pub until: Instant,
}

pub struct Gate {
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    /// Callers wait for the limiter one at a time, in the order they
    /// came (tokio's mutex is fair): the limiter itself lets whichever
    /// waiter wakes first win, and with a deep backlog at a low rate the
    /// sender's tasks won every token while the tracker's progress
    /// queries waited ten seconds and more (seen in `disk_full.py`).
    turn: tokio::sync::Mutex<()>,
    calls: Arc<Semaphore>,
    throttle: Mutex<Throttle>,
    pause: watch::Sender<Option<Pause>>,
}

/// Held for the duration of one call.
pub struct CallPermit {
    _slot: OwnedSemaphorePermit,
}

/// The gate's answer to a caller.
pub enum Admission {
    /// Go ahead; hold the permit for the duration of the call.
    Go(CallPermit),
    /// Sending is paused (credentials): do not wait, put the work back.
    Paused(Pause),
    /// The daemon is stopping.
    Shutdown,
}

impl Gate {
    pub fn new(settings: &SenderSettings) -> Self {
        Self {
            limiter: RwLock::new(Arc::new(limiter_for(settings))),
            turn: tokio::sync::Mutex::new(()),
            calls: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            throttle: Mutex::new(Throttle {
                until: None,
                backoff: throttle_backoff(),
                total: 0,
                pace: None,
                next_slot: Instant::now(),
                configured_rate: settings.requests_per_second,
            }),
            pause: watch::channel(None).0,
        }
    }

    /// New limits after a reload: the rate applies at once; the call cap
    /// grows at once and shrinks as calls finish.
    pub fn reconfigure(&self, old: &SenderSettings, new: &SenderSettings) {
        if old.requests_per_second != new.requests_per_second || old.burst != new.burst {
            *self.limiter.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limiter_for(new));
        }
        self.throttle_state().configured_rate = new.requests_per_second;
        if new.concurrency > old.concurrency {
            self.calls.add_permits(new.concurrency - old.concurrency);
        } else if new.concurrency < old.concurrency {
            self.calls.forget_permits(old.concurrency - new.concurrency);
        }
    }

    /// Waits until a call may go out: through throttling, the limiter and
    /// the pacer. Does not wait out a pause: the caller puts its work back.
    pub async fn admit(&self, shutdown: &CancellationToken) -> Admission {
        loop {
            if let Some(pause) = self.paused() {
                return Admission::Paused(pause);
            }
            if let Some(until) = self.throttled_until() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Admission::Shutdown,
                    _ = tokio::time::sleep_until(until) => continue,
                }
            }
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return Admission::Shutdown,
                slot = self.calls.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return Admission::Shutdown,
                },
            };
            let limiter = self
                .limiter
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            tokio::select! {
                _ = shutdown.cancelled() => return Admission::Shutdown,
                _ = async {
                    let _turn = self.turn.lock().await;
                    limiter.until_ready().await;
                } => {}
            }
            if let Some(slot) = self.reserve_paced_slot() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Admission::Shutdown,
                    _ = tokio::time::sleep_until(slot) => {}
                }
            }
            // A throttle or pause may have started while this caller waited.
            if self.throttled_until().is_none() && self.paused().is_none() {
                return Admission::Go(CallPermit { _slot: slot });
            }
        }
    }

    fn throttle_state(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When pacing, the moment this call may go (and the next slot moves on).
    fn reserve_paced_slot(&self) -> Option<Instant> {
        let mut throttle = self.throttle_state();
        let pace = throttle.pace?;
        let slot = throttle.next_slot.max(Instant::now());
        throttle.next_slot = slot + Duration::from_secs_f64(1.0 / pace);
        Some(slot)
    }

    /// The pacer's current rate, when it is pacing.
    pub fn pace(&self) -> Option<f64> {
        self.throttle_state().pace
    }

    /// Closes the gate for everyone after a throttled answer. Returns the
    /// wait chosen.
    pub fn on_throttled(&self, retry_after: Option<Duration>) -> Duration {
        crate::metrics::throttled();
        let mut throttle = self.throttle_state();
        throttle.total += 1;
        let current = throttle.pace.unwrap_or(throttle.configured_rate);
        throttle.pace = Some((current / 2.0).max(MIN_PACE));
        let backoff = throttle.backoff.next().unwrap_or(Duration::from_secs(60));
        let wait = retry_after.map_or(backoff, |r| r.max(backoff));
        let until = Instant::now() + wait;
        throttle.until = Some(throttle.until.map_or(until, |u| u.max(until)));
        wait
    }

    /// A call went through: the back-off starts from the bottom again and
    /// the pace rises.
    pub fn on_success(&self) {
        let mut throttle = self.throttle_state();
        throttle.backoff = throttle_backoff();
        if let Some(pace) = throttle.pace {
            let raised = pace * PACE_GROWTH;
            throttle.pace = (raised < throttle.configured_rate).then_some(raised);
        }
        drop(throttle);
        // A probe after a credentials pause worked: forget the pause, so a
        // new failure is reported again.
        self.pause.send_if_modified(|pause| pause.take().is_some());
    }

    pub fn throttled_until(&self) -> Option<Instant> {
        let mut throttle = self.throttle_state();
        match throttle.until {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                throttle.until = None;
                None
            }
        }
    }

    pub fn throttled_total(&self) -> u64 {
        self.throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }

    /// Pauses every call. Returns false when the same pause was already in
    /// force (so the caller logs a problem once, not on every retry).
    pub fn pause(&self, key: &str, reason: String, for_how_long: Duration) -> bool {
        let until = Instant::now() + for_how_long;
        let mut fresh = true;
        self.pause.send_modify(|pause| {
            fresh = pause.as_ref().is_none_or(|p| p.key != key);
            *pause = Some(Pause {
                key: key.to_owned(),
                reason,
                until,
            });
        });
        fresh
    }

    pub fn resume(&self) {
        self.pause.send_replace(None);
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Option<Pause> {
        self.pause
            .borrow()
            .as_ref()
            .filter(|p| p.until > Instant::now())
            .cloned()
    }

    /// Resolves when a pause is lifted (for the batcher's wake-ups).
    pub fn subscribe(&self) -> watch::Receiver<Option<Pause>> {
        self.pause.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: f64) -> Gate {
        Gate::new(&SenderSettings {
            requests_per_second: rate,
            burst: 1,
            concurrency: 1,
            max_attempts: 1,
            endpoint_inactive_retry: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn throttling_halves_the_pace_and_success_restores_it() {
        let gate = gate(8.0);
        assert_eq!(gate.pace(), None);
        gate.on_throttled(None);
        assert_eq!(gate.pace(), Some(4.0));
        gate.on_throttled(Some(Duration::from_secs(30)));
        assert_eq!(gate.pace(), Some(2.0));
        assert!(
            gate.throttled_until()
                .is_some_and(|u| u > Instant::now() + Duration::from_secs(29))
        );
        assert_eq!(gate.throttled_total(), 2);
        gate.on_success();
        assert!(gate.pace().is_some_and(|p| (p - 2.06).abs() < 1e-9));
        for _ in 0..45 {
            gate.on_success();
        }
        assert!(
            gate.pace().is_some_and(|p| p < 8.0),
            "still climbing: {:?}",
            gate.pace()
        );
        gate.on_success();
        assert_eq!(gate.pace(), None, "back at the configured rate: no pacing");
    }

    #[tokio::test]
    async fn pauses_are_reported_once_per_reason() {
        let gate = gate(1.0);
        assert!(gate.pause(
            "WrongSignature",
            "bad key (id 1)".into(),
            Duration::from_secs(60)
        ));
        assert!(!gate.pause(
            "WrongSignature",
            "bad key (id 2)".into(),
            Duration::from_secs(60)
        ));
        assert!(gate.pause("ApiKeyNotFound", "no key".into(), Duration::from_secs(60)));
        assert!(gate.paused().is_some());
        gate.resume();
        assert!(gate.paused().is_none());
    }
}

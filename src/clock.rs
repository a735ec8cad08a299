//! Wall-clock time, injectable.
//!
//! Request signing, clock-skew correction and daily quotas all depend on what
//! time it is. Production code asks a [`Clock`]; tests hand in a clock that
//! is an hour off, or one that crosses midnight on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now_utc(&self) -> OffsetDateTime;

    /// A signal that changes when this clock is moved other than by time
    /// passing (a test jumping past midnight), so that whoever sleeps
    /// until a moment on it wakes. `None`: it only ever moves with time
    /// (the system clock; a step of it is caught by the batcher's hourly
    /// look, see `pipeline::batcher`).
    fn moved(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The system clock shifted by an adjustable number of milliseconds.
///
/// Tests use it to simulate a host whose clock is wrong, or to jump forward
/// across a day boundary.
#[derive(Debug)]
pub struct ShiftedClock {
    shift_ms: AtomicI64,
    moved: tokio::sync::watch::Sender<()>,
}

impl ShiftedClock {
    pub fn new(shift: time::Duration) -> Arc<Self> {
        Arc::new(Self {
            shift_ms: AtomicI64::new(shift.whole_milliseconds() as i64),
            moved: tokio::sync::watch::channel(()).0,
        })
    }

    pub fn set_shift(&self, shift: time::Duration) {
        self.shift_ms
            .store(shift.whole_milliseconds() as i64, Ordering::SeqCst);
        self.moved.send_replace(());
    }
}

impl Clock for ShiftedClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
            + time::Duration::milliseconds(self.shift_ms.load(Ordering::SeqCst))
    }

    fn moved(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.moved.subscribe())
    }
}

pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

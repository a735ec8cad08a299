//! The token bucket shared by the sender's limiter and the emulator's.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A `governor` limiter allowing `per_second` calls a second on average
/// and `burst` back to back. Fractional rates (0.5/s) are allowed.
pub fn token_bucket(per_second: f64, burst: u32) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Duration::try_from_secs_f64(1.0 / per_second)
        .ok()
        .and_then(Quota::with_period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct(quota)
}

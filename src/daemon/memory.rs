//! Gives freed heap back to the system while the daemon waits.
//!
//! A burst of intake (a million URLs posted behind a spent day) leaves
//! glibc's arenas holding what the burst freed: it stays resident for the
//! hours the backlog waits, although nothing uses it (issue 31: RSS with
//! a million pending). glibc returns only the top of an arena by itself;
//! `malloc_trim` returns every free page. Once every [`EVERY`], a few
//! milliseconds of one thread at most; nothing on other allocators.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Between trims: short enough that a settled backlog is trimmed within
/// a minute, long enough to cost nothing.
const EVERY: Duration = Duration::from_secs(20);

pub(super) async fn run(stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        // On the blocking pool: the trim walks the arenas under their locks.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator's
    // own arenas; it takes their locks and may run beside other threads.
    unsafe {
        libc::malloc_trim(0);
    }
}

//! Process signals, through `signal-hook`'s tokio adapter.
//!
//! `signal-hook` rather than `tokio::signal` because it hands out one stream
//! for several signals, which the daemon needs for TERM/INT/HUP together.

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn terminated() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    signals.next().await;
    signals.handle().close();
    Ok(())
}

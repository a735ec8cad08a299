//! Logging with `tracing`: plain text, plain without timestamps under the
//! journal (which stamps lines itself), or JSON; the level can be changed
//! on reload.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, Process, Settings};

/// Changes the log level of the running process.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set_level(&self, filter: &str) {
        match EnvFilter::try_new(filter) {
            Ok(filter) => {
                if let Err(error) = self.0.reload(filter) {
                    tracing::warn!(%error, "could not change the log level");
                }
            }
            Err(error) => tracing::warn!(%error, filter, "invalid log level kept unchanged"),
        }
    }
}

/// The filter in force: `RUST_LOG` when set, else `log.level`.
pub fn filter_of(settings: &Settings, process: &Process) -> String {
    quiet_notices(
        process
            .rust_log
            .clone()
            .unwrap_or_else(|| settings.log.level.clone()),
    )
}

/// PostgreSQL's notices ("relation … already exists, skipping", from the
/// fleet schema's `IF NOT EXISTS` at every start) are not news: sqlx logs
/// them at INFO. Kept at WARN unless the filter names sqlx itself.
fn quiet_notices(filter: String) -> String {
    if filter.contains("sqlx") {
        filter
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    }
}

/// Installs the global subscriber. Call once, at startup.
pub fn init(settings: &Settings, process: &Process) -> LogHandle {
    let filter =
        EnvFilter::try_new(filter_of(settings, process)).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let format = match settings.log.format {
        LogFormat::Auto if process.under_journal => LogFormat::Plain,
        other => other,
    };
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Plain if process.under_journal => tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Plain | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A second init (in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    LogHandle(handle)
}

#[cfg(test)]
mod tests {
    use super::quiet_notices;

    #[test]
    fn postgres_notices_stay_quiet_unless_sqlx_is_asked_for() {
        assert_eq!(
            quiet_notices("info".into()),
            "info,sqlx::postgres::notice=warn"
        );
        assert_eq!(
            quiet_notices("info,purgeq=debug".into()),
            "info,purgeq=debug,sqlx::postgres::notice=warn"
        );
        assert_eq!(quiet_notices("sqlx=debug".into()), "sqlx=debug");
        assert!(tracing_subscriber::EnvFilter::try_new(quiet_notices("info".into())).is_ok());
    }
}

//! The API calls the status page's charts draw: each call's outcome in
//! four words ([`outcome_of`]), kept in memory and written to the `calls`
//! table every [`FLUSH_EVERY`] in one transaction (and once more at
//! shutdown), so sending never waits on a write for a chart. A crash loses
//! at most those seconds of chart data, never a URL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Shared;
use crate::cdn::{CdnError, ErrorClass};
use crate::store::CallRecord;

const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Calls not written yet.
#[derive(Default)]
pub(super) struct CallLog(Mutex<Vec<CallRecord>>);

impl CallLog {
    pub(super) fn push(&self, record: CallRecord) {
        self.lock().push(record);
    }

    fn take(&self) -> Vec<CallRecord> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CallRecord>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A call's outcome as the charts count it:
///
/// | the call | outcome |
/// |---|---|
/// | accepted, or a progress answer read | `accepted` |
/// | `RequestThrottled` | `throttled` |
/// | a fault retried as it is (5xx, timeout, clock skew, unreadable) | `transient` |
/// | any other error answer | `refused` |
pub(super) fn outcome_of(error: Option<&CdnError>) -> &'static str {
    match error.map(CdnError::class) {
        None => "accepted",
        Some(ErrorClass::Throttled) => "throttled",
        Some(ErrorClass::Transient | ErrorClass::ClockSkew) => "transient",
        Some(_) => "refused",
    }
}

/// Writes what was logged, every [`FLUSH_EVERY`], until shutdown (then
/// once more).
pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        let stopping = tokio::select! {
            _ = shared.shutdown.cancelled() => true,
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        let calls = shared.call_log.take();
        if !calls.is_empty()
            && let Err(error) = shared.store.record_calls(calls).await
        {
            // Chart data only: dropped, with a word, rather than held.
            tracing::debug!(%error, "cannot record API calls for the charts");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_outcome_table() {
        let api = |t: &str| CdnError::Api {
            status: 400,
            error_type: crate::cdn::ErrorType::parse(t),
            message: String::new(),
            correlation_id: None,
            retry_after: None,
        };
        assert_eq!(outcome_of(None), "accepted");
        assert_eq!(outcome_of(Some(&api("RequestThrottled"))), "throttled");
        assert_eq!(outcome_of(Some(&api("SomethingNew"))), "transient");
        assert_eq!(outcome_of(Some(&api("ParameterInvalid"))), "refused");
        assert_eq!(outcome_of(Some(&api("WrongSignature"))), "refused");
    }
}

//! Why pending work is not sent now: the `waits` table.
//!
//! The pipeline knows why it holds back (the day's quota is spent, sending
//! is paused); the table puts that where every reader looks: the `queue`
//! view, a request's status, `purgeq status`. One row per scope, written
//! only when the set changes.

use serde::Serialize;

use super::db::{on_conn, on_pool};
use super::{Store, StoreError};

/// A reason to hold back what is pending, for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Wait {
    /// `sender`, `quota:file` or `quota:directory`.
    pub scope: String,
    pub reason: String,
    /// Until when, as a stored timestamp; `None`: until an operator acts.
    pub until: Option<String>,
}

impl Wait {
    /// The reason with its end, as the `queue` view writes it.
    pub fn describe(&self) -> String {
        match &self.until {
            Some(until) => format!("{} (until {until})", self.reason),
            None => self.reason.clone(),
        }
    }
}

impl Store {
    /// Replaces every wait with `waits`.
    pub async fn set_waits(&self, waits: Vec<Wait>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let waits = waits.clone();
            Box::pin(async move {
                on_conn!(conn, c => sqlx::query("DELETE FROM waits").execute(c).await.map(|r| r.rows_affected()))?;
                for wait in &waits {
                    on_conn!(conn, c => sqlx::query("INSERT INTO waits (scope, reason, until) VALUES ($1, $2, $3)")
                        .bind(&wait.scope)
                        .bind(&wait.reason)
                        .bind(&wait.until)
                        .execute(c).await.map(|r| r.rows_affected()))?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn waits(&self) -> Result<Vec<Wait>, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = on_pool!(&self.reader, c => sqlx::query_as("SELECT scope, reason, until FROM waits ORDER BY scope")
                .fetch_all(c).await)?;
        Ok(rows
            .into_iter()
            .map(|(scope, reason, until)| Wait {
                scope,
                reason,
                until,
            })
            .collect())
    }
}

/// Why a pending URL of `kind` waits, given the current waits: a pause
/// first, then the quota of its kind.
pub fn why_pending(waits: &[Wait], kind: &str) -> Option<String> {
    let find = |scope: &str| waits.iter().find(|w| w.scope == scope);
    find("sender")
        .or_else(|| find(&format!("quota:{kind}")))
        .map(Wait::describe)
}

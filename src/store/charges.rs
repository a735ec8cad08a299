//! The day's quota as the store counts it (issue 28's two-part ledger):
//! what a batch is charged when it is cut, charged again when an attempt's
//! outcome is unknown, moved to the uncertain part, and refunded when the
//! CDN's answer proves it was not counted. The rules about what an answer
//! means are pure, in [`crate::ledger`]; these are the statements.

use serde::Serialize;

use super::BatchId;
use super::db::{Conn, on_conn};
use super::model::Operation;

/// Where a call is counted: one subscription's quota day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAccount {
    pub subscription_id: String,
    /// `YYYY-MM-DD` in the configured quota offset (see `crate::quota`).
    pub day: String,
}

/// The day's quota as the ledger counts it, in two parts (issue 28).
///
/// `files_used` is what the CDN certainly counted (accepted calls) and the
/// calls under way (charged when cut): what sending is held to.
/// `files_reserved` is the part of it under way now. `files_uncertain` is
/// what the CDN may also have counted: calls whose outcome was never known
/// (a timeout, a dropped connection, a crash mid-call) and that were sent
/// again. It is shown, and never holds sending back: the CDN's quota
/// refusal, which costs nothing, is the truth and settles it (see
/// [`crate::ledger`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    pub day: String,
    pub files_used: u64,
    pub directories_used: u64,
    pub files_reserved: u64,
    pub directories_reserved: u64,
    /// Preload URLs, a budget of their own (`quota.preloads_per_day`).
    #[serde(default)]
    pub preloads_used: u64,
    #[serde(default)]
    pub preloads_reserved: u64,
    #[serde(default)]
    pub files_uncertain: u64,
    #[serde(default)]
    pub directories_uncertain: u64,
    #[serde(default)]
    pub preloads_uncertain: u64,
}

/// What the day's counts do not say about the day: the rest of a
/// [`crate::report::QuotaStatus`].
#[derive(Debug, Clone, Default)]
pub struct QuotaContext {
    pub exhausted_until: Option<String>,
    /// Files and directories today's quota cannot take.
    pub waiting: (u64, u64),
    /// Pending files, all and urgent.
    pub files_pending: (u64, u64),
    pub next_day_at: String,
}

impl QuotaUse {
    /// The day as `/v1/stats` shows it, under `rules` (the sending
    /// pipeline's view, and a fleet follower's from the shared store: one
    /// mapping, so the two cannot disagree).
    pub fn status(
        &self,
        rules: &crate::config::QuotaSettings,
        context: QuotaContext,
    ) -> crate::report::QuotaStatus {
        crate::report::QuotaStatus {
            day: self.day.clone(),
            utc_offset: rules.utc_offset.clone(),
            files_per_day: rules.files_per_day,
            files_used: self.files_used,
            files_reserved: self.files_reserved,
            files_left: rules.files_per_day.saturating_sub(self.files_used),
            directories_per_day: rules.directories_per_day,
            directories_used: self.directories_used,
            directories_reserved: self.directories_reserved,
            directories_left: rules
                .directories_per_day
                .saturating_sub(self.directories_used),
            exhausted_until: context.exhausted_until,
            files_waiting: context.waiting.0,
            directories_waiting: context.waiting.1,
            files_pending: context.files_pending.0,
            urgent_files_pending: context.files_pending.1,
            next_day_at: context.next_day_at,
            urgent_reserve_files: rules.urgent_reserve_files,
            urgent_reserve_directories: rules.urgent_reserve_directories,
            preloads_per_day: rules.preloads_per_day,
            preloads_used: self.preloads_used,
            preloads_reserved: self.preloads_reserved,
            preloads_left: rules.preloads_per_day.saturating_sub(self.preloads_used),
            files_uncertain: self.files_uncertain,
            directories_uncertain: self.directories_uncertain,
            preloads_uncertain: self.preloads_uncertain,
        }
    }
}

pub(super) async fn quota_use(
    conn: &mut Conn<'_>,
    account: &QuotaAccount,
) -> Result<QuotaUse, sqlx::Error> {
    type Day = (i64, i64, i64, i64, i64, i64);
    let used: Option<Day> = on_conn!(conn, c => sqlx::query_as(
        "SELECT files_used, directories_used, preloads_used,
                files_uncertain, directories_uncertain, preloads_uncertain
         FROM quota_days
         WHERE subscription_id = $1 AND day = $2",
    )
    .bind(&account.subscription_id)
    .bind(&account.day)
    .fetch_optional(c).await)?;
    // Under way: all `sending` batches. Those cut by the first schema
    // (charged_day NULL) reserved instead of charging: count them here.
    // (Preload batches are all charged: the first schema had none.)
    type InFlight = (i64, i64, i64, i64, i64);
    let (
        in_flight_files,
        in_flight_directories,
        uncharged_files,
        uncharged_directories,
        in_flight_preloads,
    ): InFlight = on_conn!(conn, c => sqlx::query_as(
            "SELECT CAST(coalesce(sum(CASE WHEN operation = 'purge' THEN files END), 0) AS BIGINT),
                    CAST(coalesce(sum(CASE WHEN operation = 'purge' THEN directories END), 0) AS BIGINT),
                    CAST(coalesce(sum(CASE WHEN charged_day IS NULL AND operation = 'purge' THEN files END), 0)
                         AS BIGINT),
                    CAST(coalesce(sum(CASE WHEN charged_day IS NULL AND operation = 'purge' THEN directories END), 0)
                         AS BIGINT),
                    CAST(coalesce(sum(CASE WHEN operation = 'preload' THEN files END), 0) AS BIGINT)
             FROM batches WHERE state = 'sending'",
        )
        .fetch_one(c).await)?;
    let (
        files_used,
        directories_used,
        preloads_used,
        files_uncertain,
        directories_uncertain,
        preloads_uncertain,
    ) = used.unwrap_or_default();
    let count = |n: i64| n.max(0) as u64;
    Ok(QuotaUse {
        day: account.day.clone(),
        files_used: count(files_used) + count(uncharged_files),
        directories_used: count(directories_used) + count(uncharged_directories),
        files_reserved: count(in_flight_files),
        directories_reserved: count(in_flight_directories),
        preloads_used: count(preloads_used),
        preloads_reserved: count(in_flight_preloads),
        files_uncertain: count(files_uncertain),
        directories_uncertain: count(directories_uncertain),
        preloads_uncertain: count(preloads_uncertain),
    })
}

/// What one call costs each of the day's budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cost {
    files: i64,
    directories: i64,
    preloads: i64,
}

impl Cost {
    /// A batch's cost from its row: a preload batch's `files` are
    /// preloads.
    pub(super) fn of(operation: &str, files: i64, directories: i64) -> Cost {
        if operation == Operation::Preload.as_str() {
            Cost {
                files: 0,
                directories: 0,
                preloads: files,
            }
        } else {
            Cost {
                files,
                directories,
                preloads: 0,
            }
        }
    }

    pub(super) fn negated(self) -> Cost {
        Cost {
            files: -self.files,
            directories: -self.directories,
            preloads: -self.preloads,
        }
    }
}

/// Adds (or, negative, refunds) URLs to a quota day; never below zero.
pub(super) async fn add_to_day(
    conn: &mut Conn<'_>,
    subscription_id: &str,
    day: &str,
    cost: Cost,
) -> Result<(), sqlx::Error> {
    let sql = conn.pick(
        "INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
         VALUES ($1, $2, max(0, $3), max(0, $4), max(0, $5))
         ON CONFLICT (subscription_id, day) DO UPDATE SET
             files_used = max(0, files_used + $3),
             directories_used = max(0, directories_used + $4),
             preloads_used = max(0, preloads_used + $5)",
        "INSERT INTO quota_days (subscription_id, day, files_used, directories_used, preloads_used)
         VALUES ($1, $2, greatest(0, $3), greatest(0, $4), greatest(0, $5))
         ON CONFLICT (subscription_id, day) DO UPDATE SET
             files_used = greatest(0, quota_days.files_used + $3),
             directories_used = greatest(0, quota_days.directories_used + $4),
             preloads_used = greatest(0, quota_days.preloads_used + $5)",
    );
    on_conn!(conn, c => sqlx::query(sql)
    .bind(subscription_id)
    .bind(day)
    .bind(cost.files)
    .bind(cost.directories)
    .bind(cost.preloads)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The charge of a batch's current attempt, if charged: where, and what
/// it cost.
pub(super) async fn current_charge(
    conn: &mut Conn<'_>,
    batch_id: BatchId,
) -> Result<Option<(QuotaAccount, Cost)>, sqlx::Error> {
    type Row = (Option<String>, Option<String>, String, i64, i64);
    let row: Option<Row> = on_conn!(conn, c => sqlx::query_as(
        "SELECT charged_subscription, charged_day, operation, files, directories
         FROM batches WHERE id = $1",
    )
    .bind(batch_id)
    .fetch_optional(c).await)?;
    Ok(match row {
        Some((Some(subscription_id), Some(day), operation, files, directories)) => Some((
            QuotaAccount {
                subscription_id,
                day,
            },
            Cost::of(&operation, files, directories),
        )),
        _ => None,
    })
}

/// Charges the next attempt of each batch on `account`'s day, leaving any
/// earlier charge with the call it paid for.
pub(super) async fn charge_again(
    conn: &mut Conn<'_>,
    batch_ids: &[BatchId],
    account: &QuotaAccount,
) -> Result<(), sqlx::Error> {
    for id in batch_ids {
        let size: Option<(String, i64, i64)> = on_conn!(conn, c => sqlx::query_as("SELECT operation, files, directories FROM batches WHERE id = $1")
                .bind(id)
                .fetch_optional(c).await)?;
        let Some((operation, files, directories)) = size else {
            continue;
        };
        let cost = Cost::of(&operation, files, directories);
        add_to_day(conn, &account.subscription_id, &account.day, cost).await?;
        on_conn!(conn, c => sqlx::query("UPDATE batches SET charged_subscription = $2, charged_day = $3 WHERE id = $1")
            .bind(id)
            .bind(&account.subscription_id)
            .bind(&account.day)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// The current attempt's outcome will never be known: its charge moves
/// from the day's certain count to its uncertain one (the batch is then
/// charged anew for its next attempt).
pub(super) async fn doubt(conn: &mut Conn<'_>, batch_id: BatchId) -> Result<(), sqlx::Error> {
    let Some((account, cost)) = refund(conn, batch_id).await? else {
        return Ok(());
    };
    on_conn!(conn, c => sqlx::query(
        "UPDATE quota_days SET files_uncertain = files_uncertain + $3,
                directories_uncertain = directories_uncertain + $4,
                preloads_uncertain = preloads_uncertain + $5
         WHERE subscription_id = $1 AND day = $2",
    )
    .bind(&account.subscription_id)
    .bind(&account.day)
    .bind(cost.files)
    .bind(cost.directories)
    .bind(cost.preloads)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The CDN did not count the current attempt: give its charge back.
/// Returns what was refunded, and where.
pub(super) async fn refund(
    conn: &mut Conn<'_>,
    batch_id: BatchId,
) -> Result<Option<(QuotaAccount, Cost)>, sqlx::Error> {
    let charge = current_charge(conn, batch_id).await?;
    if let Some((account, cost)) = &charge {
        add_to_day(conn, &account.subscription_id, &account.day, cost.negated()).await?;
        on_conn!(conn, c => sqlx::query(
            "UPDATE batches SET charged_subscription = NULL, charged_day = NULL WHERE id = $1",
        )
        .bind(batch_id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(charge)
}

/// An accepted call counts on the day the CDN took it: a charge made on an
/// earlier day (a batch held back by throttling over midnight) moves, and a
/// batch never charged (cut by the first schema) is charged now.
pub(super) async fn move_charge(
    conn: &mut Conn<'_>,
    batch_id: BatchId,
    account: &QuotaAccount,
) -> Result<(), sqlx::Error> {
    match current_charge(conn, batch_id).await? {
        Some((charged, _)) if charged == *account => Ok(()),
        Some(_) => {
            refund(conn, batch_id).await?;
            charge_again(conn, &[batch_id], account).await
        }
        None => charge_again(conn, &[batch_id], account).await,
    }
}

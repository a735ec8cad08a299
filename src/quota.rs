//! The quota day: which calendar day a moment belongs to at a UTC offset,
//! and when the next one starts. Shared by the sender (charging), the
//! batcher (cutting), retention and the emulator (its own quotas).

use time::{OffsetDateTime, UtcOffset};

/// `YYYY-MM-DD` of `now` at `offset`: the key of `quota_days`.
pub fn day_of(now: OffsetDateTime, offset: UtcOffset) -> String {
    let local = now.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02}",
        local.year(),
        u8::from(local.month()),
        local.day()
    )
}

/// The first moment of the day after `now`'s, at `offset`.
pub fn next_day_start(now: OffsetDateTime, offset: UtcOffset) -> OffsetDateTime {
    let local = now.to_offset(offset);
    let tomorrow = local.date().next_day().unwrap_or(local.date());
    tomorrow.midnight().assume_offset(offset)
}

/// A moment as an operator reads it: `YYYY-MM-DD HH:MM` at `offset`, with
/// the offset written out (`2026-11-26 00:00 +08:00`).
pub fn local_text(at: OffsetDateTime, offset: UtcOffset) -> String {
    let local = at.to_offset(offset);
    let (hours, minutes, _) = offset.as_hms();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} {}{:02}:{:02}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        if offset.is_negative() { '-' } else { '+' },
        hours.unsigned_abs(),
        minutes.unsigned_abs()
    )
}

/// How much of what is left today each lane may use, for one kind:
/// urgent items may use all of it; normal items leave `reserve` for urgent
/// ones yet to come, and what the urgent items already waiting need.
///
/// | left | reserve | urgent waiting | urgent may use | normal may use |
/// |---|---|---|---|---|
/// | 100 | 0 | 0 | 100 | 100 |
/// | 100 | 10 | 0 | 100 | 90 |
/// | 100 | 10 | 30 | 100 | 60 |
/// | 5 | 10 | 0 | 5 | 0 |
///
/// The same after the waiting urgent items are sent (left 70, none
/// waiting: normal may still use 60), so the reserve is intact whatever
/// order things go in. The batcher's cut and the planner both use it, so
/// the plan says what the cut does.
pub fn lanes(left: u64, reserve: u64, urgent_waiting: u64) -> Lanes {
    Lanes {
        urgent: left,
        normal: left.saturating_sub(reserve.saturating_add(urgent_waiting)),
    }
}

/// How many of `pending` items (of which `urgent` are urgent) today's
/// `left` cannot take, with `reserve` held back for urgent ones.
pub fn waiting(pending: u64, urgent: u64, left: u64, reserve: u64) -> u64 {
    let lanes = lanes(left, reserve, urgent);
    urgent.saturating_sub(lanes.urgent)
        + pending.saturating_sub(urgent).saturating_sub(lanes.normal)
}

/// See [`lanes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    pub urgent: u64,
    pub normal: u64,
}

/// A rough estimate of how long a backlog takes to send, and how much of
/// it today's quota takes: a page that said "sending it all takes about
/// 7 s" beside "1,267 files wait for the next quota day" (issue 36) was
/// answering the first question when the reader asked the second.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Drain {
    pub pending_files: u64,
    pub pending_directories: u64,
    /// Purge calls needed at the batch limits.
    pub calls: u64,
    /// Those calls at the configured rate.
    pub seconds: f64,
    /// 0 when today's quota covers the backlog, else how many more quota
    /// days it needs.
    pub quota_days: u64,
    /// The part of the backlog today's quota takes, its calls and their
    /// time; the rest waits for the next quota day. (Default when read
    /// from a daemon that did not say: the CLI may be newer.)
    #[serde(default)]
    pub files_today: u64,
    #[serde(default)]
    pub directories_today: u64,
    #[serde(default)]
    pub calls_today: u64,
    #[serde(default)]
    pub seconds_today: f64,
}

/// Calls for `files` and `directories` at the batch limits.
fn calls_for((files, directories): (u64, u64), max_per_call: (u64, u64)) -> u64 {
    files
        .div_ceil(max_per_call.0.max(1))
        .max(directories.div_ceil(max_per_call.1.max(1)))
}

/// What the backlog needs: calls (a call carries up to `max_files` files
/// and `max_directories` directories), their time at `calls_per_second`,
/// and quota days for what `waiting` says today's quota cannot take;
/// and the same for the part it takes.
pub fn drain(
    pending: (u64, u64),
    max_per_call: (u64, u64),
    calls_per_second: f64,
    waiting: (u64, u64),
    per_day: (u64, u64),
) -> Drain {
    let seconds = |calls: u64| {
        if calls_per_second > 0.0 {
            calls as f64 / calls_per_second
        } else {
            0.0
        }
    };
    let calls = calls_for(pending, max_per_call);
    let today = (
        pending.0.saturating_sub(waiting.0),
        pending.1.saturating_sub(waiting.1),
    );
    let calls_today = calls_for(today, max_per_call);
    Drain {
        pending_files: pending.0,
        pending_directories: pending.1,
        calls,
        seconds: seconds(calls),
        quota_days: waiting
            .0
            .div_ceil(per_day.0.max(1))
            .max(waiting.1.div_ceil(per_day.1.max(1))),
        files_today: today.0,
        directories_today: today.1,
        calls_today,
        seconds_today: seconds(calls_today),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn every_row_of_the_lanes_table() {
        for (left, reserve, urgent, expected) in [
            (100, 0, 0, (100, 100)),
            (100, 10, 0, (100, 90)),
            (100, 10, 30, (100, 60)),
            (5, 10, 0, (5, 0)),
        ] {
            let lanes = lanes(left, reserve, urgent);
            assert_eq!((lanes.urgent, lanes.normal), expected);
        }
    }

    #[test]
    fn a_backlog_drains_in_calls_and_quota_days() {
        // 5,000 files on the default day (2,000 a day, 1,500 left today,
        // so 3,500 wait): 50 calls of 100, 10 s at 5 calls/s, 2 more
        // quota days.
        let d = drain((5_000, 0), (100, 50), 5.0, (3_500, 0), (2_000, 500));
        assert_eq!((d.calls, d.quota_days), (50, 2));
        assert!((d.seconds - 10.0).abs() < 1e-9);
        // Today: 1,500 files in 15 calls, 3 s; 3,500 wait.
        assert_eq!(
            (d.files_today, d.directories_today, d.calls_today),
            (1_500, 0, 15)
        );
        assert!((d.seconds_today - 3.0).abs() < 1e-9);
        // A spent day takes nothing today.
        let d = drain((1_267, 3), (100, 50), 5.0, (1_267, 0), (2_000, 500));
        assert_eq!(
            (d.files_today, d.directories_today, d.calls_today),
            (0, 3, 1)
        );
        assert_eq!(d.quota_days, 1);
        // Within today's quota: no more days; directories count too.
        let d = drain((10, 120), (100, 50), 10.0, (0, 0), (2_000, 500));
        assert_eq!((d.calls, d.quota_days), (3, 0));
        assert_eq!(
            (d.files_today, d.directories_today, d.calls_today),
            (10, 120, 3)
        );
        assert_eq!(
            drain((0, 0), (100, 50), 10.0, (0, 0), (2_000, 500)).calls,
            0
        );
    }

    #[test]
    fn local_text_shows_the_offset() {
        assert_eq!(
            local_text(datetime!(2026-11-25 16:00 UTC), offset!(+08:00)),
            "2026-11-26 00:00 +08:00"
        );
        assert_eq!(
            local_text(datetime!(2026-11-25 16:00 UTC), offset!(-05:30)),
            "2026-11-25 10:30 -05:30"
        );
    }

    #[test]
    fn days_roll_over_at_the_offset() {
        let cst = offset!(+08:00);
        // 15:59 UTC is 23:59 in China; 16:00 UTC is the next day there.
        assert_eq!(day_of(datetime!(2026-11-24 15:59 UTC), cst), "2026-11-24");
        assert_eq!(day_of(datetime!(2026-11-24 16:00 UTC), cst), "2026-11-25");
        assert_eq!(
            next_day_start(datetime!(2026-11-24 15:59 UTC), cst),
            datetime!(2026-11-24 16:00 UTC)
        );
        assert_eq!(
            day_of(datetime!(2026-12-31 23:00 UTC), UtcOffset::UTC),
            "2026-12-31"
        );
    }
}

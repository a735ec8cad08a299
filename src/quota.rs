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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

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

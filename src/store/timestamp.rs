//! The one timestamp type the store's API takes and its tables hold.
//!
//! Times are stored as RFC 3339 text in UTC with milliseconds
//! (`2026-11-25T10:00:00.000Z`): readable in `sqlite3`, and with one fixed
//! width so that text order is time order (`WHERE not_before <= ?`). The
//! store's callers pass [`Timestamp`] values, never strings, so a time in
//! another offset or format cannot reach a comparison in SQL.

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo};
use time::OffsetDateTime;

/// A moment, as the store writes it: UTC, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// `at` in UTC, truncated to the millisecond (what the text keeps).
    pub fn new(at: OffsetDateTime) -> Timestamp {
        let at = at.to_offset(time::UtcOffset::UTC);
        let millis = at.millisecond();
        Timestamp(
            at.replace_nanosecond(u32::from(millis) * 1_000_000)
                .unwrap_or(at),
        )
    }

    /// Reads the stored text (any RFC 3339 time is accepted).
    pub fn parse(text: &str) -> Option<Timestamp> {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(Timestamp::new)
    }

    pub fn get(self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(at: OffsetDateTime) -> Self {
        Timestamp::new(at)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        )
    }
}

impl sqlx::Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as sqlx::Type<Sqlite>>::type_info()
    }
}

impl sqlx::Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as sqlx::Encode<Sqlite>>::encode(self.to_string(), buf)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for Timestamp {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as sqlx::Decode<Sqlite>>::decode(value)?;
        Timestamp::parse(text).ok_or_else(|| format!("not a timestamp: {text:?}").into())
    }
}

impl sqlx::Type<sqlx::Postgres> for Timestamp {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Timestamp {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <String as sqlx::Encode<sqlx::Postgres>>::encode(self.to_string(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Timestamp {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Timestamp::parse(text).ok_or_else(|| format!("not a timestamp: {text:?}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn text_is_utc_with_milliseconds_and_sorts_as_time() {
        let at = Timestamp::new(datetime!(2026-11-25 18:00:00.123456 +08:00));
        assert_eq!(at.to_string(), "2026-11-25T10:00:00.123Z");
        assert_eq!(Timestamp::parse(&at.to_string()), Some(at));
        let later = Timestamp::new(datetime!(2026-11-25 10:00:01 UTC));
        assert!(at < later && at.to_string() < later.to_string());
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}

//! The two databases the store runs on: SQLite (one host, the default) and
//! PostgreSQL (a fleet of hosts sharing one database).
//!
//! The schemas are alike column for column (`migrations/` and
//! `migrations/postgres/`), so most statements are written once and run on
//! either. What differs is a handful of statements (`json_each` against
//! `json_array_elements`, `max()` against `greatest()`, a byte-order
//! `COLLATE "C"`), written out twice and chosen with [`Conn::pick`], the
//! id lists rewritten by [`id_lists_for_postgres`], and the Rust types
//! sqlx checks: PostgreSQL decodes a
//! column only as its own type, so every integer the store reads is a
//! `BIGINT` (counts, `CAST(... AS BIGINT)` for sums and lengths), and flags
//! are 0/1 integers rather than booleans, as on SQLite.
//!
//! sqlx's drivers are separate types, and a generic function over
//! `sqlx::Database` would have to repeat a dozen trait bounds on every
//! query. Instead [`on_conn!`] and [`on_pool!`] expand the one statement
//! twice, once per driver: each copy is type-checked against its own
//! driver, and the store's functions stay plain async functions.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// Which database the store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The connection a write (or a read that needs one connection) runs on,
/// inside the transaction the caller opened.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The same connection, borrowed for a shorter while: what a job,
    /// which takes `&'c mut Conn<'c>`, is given.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }

    /// A statement written for SQLite whose `json_each($N)` lists are all
    /// lists of ids (`BIGINT`), as this connection's dialect: see
    /// [`id_lists_for_postgres`].
    pub(crate) fn with_id_lists(&self, sqlite: &'static str) -> SqlStr {
        self.backend().with_id_lists(sqlite)
    }

    /// The statement written for this connection's dialect.
    pub(crate) fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        self.backend().pick(sqlite, postgres)
    }
}

impl Backend {
    pub(crate) fn with_id_lists(self, sqlite: &'static str) -> SqlStr {
        match self {
            Backend::Sqlite => sqlite.into_sql_str(),
            Backend::Postgres => AssertSqlSafe(id_lists_for_postgres(sqlite)).into_sql_str(),
        }
    }

    pub(crate) fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }
}

impl<'a> From<&'a mut SqliteConnection> for Conn<'a> {
    fn from(conn: &'a mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl<'a> From<&'a mut PgConnection> for Conn<'a> {
    fn from(conn: &'a mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

/// SQLite's `SELECT value FROM json_each($N)`, a list of ids bound as JSON
/// text, in PostgreSQL's words: the same bound text, unpacked as `BIGINT`s.
/// The only rewrite the store does, because the id lists are everywhere
/// and always the same fragment; any other difference is written out
/// twice with [`Conn::pick`]. The text changes only where the fragment is,
/// so a statement without one is left as it is.
pub(crate) fn id_lists_for_postgres(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len() + 32);
    let mut rest = sqlite;
    const FROM: &str = "SELECT value FROM json_each($";
    while let Some(at) = rest.find(FROM) {
        out.push_str(&rest[..at]);
        let after = &rest[at + FROM.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !after[digits..].starts_with(')') {
            // Not the fragment after all: keep it as it is.
            out.push_str(FROM);
            rest = after;
            continue;
        }
        out.push_str("SELECT value::bigint FROM json_array_elements_text($");
        out.push_str(&after[..digits]);
        out.push_str("::json)");
        rest = &after[digits + 1..];
    }
    out.push_str(rest);
    out
}

/// The read pool: reads never wait behind the writer.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// See [`Conn::with_id_lists`].
    pub(crate) fn with_id_lists(&self, sqlite: &'static str) -> SqlStr {
        self.backend().with_id_lists(sqlite)
    }

    /// The SQLite pool, for what only SQLite has (`EXPLAIN QUERY PLAN`
    /// in the plan checks).
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `$body` with `$c` bound to the driver's connection of `$conn` (a
/// `&mut Conn`): the body is compiled once per driver.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match &mut *$conn {
            $crate::store::db::Conn::Sqlite($c) => {
                let $c: &mut ::sqlx::SqliteConnection = &mut **$c;
                $body
            }
            $crate::store::db::Conn::Postgres($c) => {
                let $c: &mut ::sqlx::PgConnection = &mut **$c;
                $body
            }
        }
    };
}

/// Runs `$body` with `$p` bound to the driver's pool of `$pool` (a
/// `&Pool`): the body is compiled once per driver.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::db::Pool::Sqlite($p) => $body,
            $crate::store::db::Pool::Postgres($p) => $body,
        }
    };
}

pub(crate) use {on_conn, on_pool};

/// A list (ids, or rows as tuples) as the JSON array the statements
/// unpack (`json_each`, `json_array_elements`).
pub(super) fn json_list<T: serde::Serialize>(values: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(values).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::id_lists_for_postgres;

    #[test]
    fn id_lists_are_unpacked_as_bigints_and_nothing_else_changes() {
        assert_eq!(
            id_lists_for_postgres(
                "UPDATE items SET x = 1 WHERE id IN (SELECT value FROM json_each($1))
                 AND merged_into IN (SELECT value FROM json_each($12))"
            ),
            "UPDATE items SET x = 1 WHERE id IN (SELECT value::bigint FROM json_array_elements_text($1::json))
                 AND merged_into IN (SELECT value::bigint FROM json_array_elements_text($12::json))"
        );
        let untouched = "SELECT value FROM json_each($x) WHERE a = $1";
        assert_eq!(id_lists_for_postgres(untouched), untouched);
        assert_eq!(id_lists_for_postgres("SELECT 1"), "SELECT 1");
    }
}

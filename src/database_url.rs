//! A PostgreSQL address (`store.url`), parsed once: a leaf, so that the
//! settings (which parse it) and the store (which connects with it) both
//! use it without the settings depending on the store.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// A PostgreSQL address (`store.url`), parsed once. Its `Display` and
/// `Debug` never show the password: they say which server, database and
/// user, which is what an operator needs to read an error.
#[derive(Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
}

/// Why a `store.url` was refused: names the key, never echoes the URL
/// (it may hold a password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store.url is not a PostgreSQL URL (postgres://user@host:port/database): {reason}")]
pub struct DatabaseUrlError {
    reason: String,
}

impl DatabaseUrl {
    /// Parses `postgres://…` (or `postgresql://…`). A password missing from
    /// the URL comes from `PGPASSWORD`, as libpq does.
    pub fn parse(text: &str) -> Result<DatabaseUrl, DatabaseUrlError> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(DatabaseUrlError {
                reason: "it must start with postgres:// or postgresql://".into(),
            });
        }
        // Every parse error sqlx returns here is a configuration error,
        // and its words may quote part of the URL: say only that it failed.
        let options = PgConnectOptions::from_str(text).map_err(|_| DatabaseUrlError {
            reason: "it could not be parsed".into(),
        })?;
        Ok(DatabaseUrl { options })
    }

    /// The same address, for another database on the same server (tests
    /// make a fresh database per test).
    pub fn with_database(&self, database: &str) -> DatabaseUrl {
        DatabaseUrl {
            options: self.options.clone().database(database),
        }
    }

    pub fn database(&self) -> &str {
        self.options.get_database().unwrap_or("postgres")
    }

    /// The options to connect with, password included: for opening a
    /// connection, never for printing.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            self.database()
        )
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_server_database_and_user_but_never_the_password() {
        let url =
            DatabaseUrl::parse("postgres://deploy:s3cret-pw@db.internal:6543/purgeq").unwrap();
        let shown = format!("{url} {url:?}");
        assert!(shown.contains("deploy@db.internal:6543/purgeq"), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_naming_the_key_not_the_url() {
        let error = DatabaseUrl::parse("mysql://root:hunter2@localhost/db").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("store.url"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

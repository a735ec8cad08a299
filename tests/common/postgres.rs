//! A fresh PostgreSQL database per test, dropped after.
//!
//! The server comes from `PURGEQ_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the server every machine
//! of this project runs). A newcomer's machine may have none: then
//! [`TestDatabase::create`] returns `None` and says on stderr that the test
//! was skipped and why, unless `PURGEQ_REQUIRE_POSTGRES=1` (CI sets it),
//! which makes an unreachable server a failure.

use purgeq::store::fleet::DatabaseUrl;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one test; dropped (with any connections still in
/// it) by [`TestDatabase::drop_now`] or, failing that, on `Drop`.
pub struct TestDatabase {
    /// The server's URL as given (it may hold a password: never printed).
    server: String,
    pub url: DatabaseUrl,
    name: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates `purgeq_test_<uuid>` on the test server, or `None` (with a
    /// note on stderr) when no server is reachable and none is required.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let text = std::env::var("PURGEQ_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let server =
            DatabaseUrl::parse(&text).expect("PURGEQ_TEST_DATABASE_URL is a postgres:// URL");
        let mut admin = match PgConnection::connect(&text).await {
            Ok(conn) => conn,
            Err(error) => {
                assert!(
                    std::env::var_os("PURGEQ_REQUIRE_POSTGRES").is_none(),
                    "PURGEQ_REQUIRE_POSTGRES is set but PostgreSQL at {server} is unreachable: {error}"
                );
                eprintln!(
                    "skipped {test}: no PostgreSQL at {server} ({error}); set \
                     PURGEQ_TEST_DATABASE_URL to a server to run the fleet tests"
                );
                return None;
            }
        };
        let name = format!("purgeq_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Some(TestDatabase {
            url: server.with_database(&name),
            server: text,
            name,
            dropped: false,
        })
    }

    /// Drops the database, ending any connection still in it.
    pub async fn drop_now(mut self) {
        drop_database(&self.server, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_database(server: &str, name: &str) {
    let Ok(mut admin) = PgConnection::connect(server).await else {
        return;
    };
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A test that panicked before drop_now: drop it on a runtime of
        // its own, since Drop cannot await.
        let server = self.server.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&server, &name));
            }
        })
        .join();
    }
}

//! PostgreSQL for fleet mode: connecting, the schema, and the leader lease.
//!
//! The lease is one row (`fleet_leader`, id 1). A claim is a single
//! `INSERT … ON CONFLICT DO UPDATE`, so two nodes racing for a lapsed lease
//! cannot both win: PostgreSQL locks the row, and the second claim's
//! `WHERE` is evaluated against the first one's result. The decisions about
//! what a claim *means* are in [`crate::fleet`].
//!
//! A leader's writes go through [`FleetDb::begin_fenced`]: a transaction
//! whose first statement checks, under a share lock on the lease row, that
//! this node still holds the lease under its term. A takeover must lock
//! that row, so it waits for any fenced write in flight to commit, and a
//! write under an old term is refused. Connections set
//! `idle_in_transaction_session_timeout`, so a leader paused (SIGSTOP)
//! inside a fenced transaction cannot hold the row, and failover, for
//! longer than a few seconds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::{Store, StoreError};
pub use crate::database_url::{DatabaseUrl, DatabaseUrlError};
use crate::fleet::{Claim, NodeName, Term};

/// How long a paused session may sit inside a transaction before the
/// server ends it and frees its locks (see the module doc).
const IDLE_IN_TRANSACTION: &str = "3s";

/// Sets how long a claim waits for the lease row's lock: a claim that
/// cannot get it within a second fails `Busy`, and is tried again at the
/// next tick.
const CLAIM_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

/// Turns a PostgreSQL error into the store's kinds: a lost or refused
/// connection (the server restarting, `pg_terminate_backend`) is
/// `Unavailable` and retried; a serialization failure or a lock timeout
/// is `Busy`; the rest is `Internal`. `what` says what was being done.
/// True when `error` means the connection is gone or unusable (rather
/// than a statement failing on a good connection): no SQLSTATE at all,
/// or a connection exception (08), or the server shutting down (57P).
pub(crate) fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

pub(crate) fn pg_error(what: &str, error: sqlx::Error) -> StoreError {
    let sqlstate = match &error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let message = match &error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    let reason = format!("{what}: {message}");
    let lost = is_connection_lost(&error);
    let cause: super::Cause = Arc::new(error);
    match sqlstate.as_deref() {
        // 08: connection exception; 57P01..03: the server is shutting
        // down or starting; 53: out of resources (disk, connections).
        Some(code)
            if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") =>
        {
            StoreError::Unavailable {
                reason,
                cause: Some(cause),
            }
        }
        // 40001 serialization failure, 40P01 deadlock, 55P03 lock timeout.
        Some("40001" | "40P01" | "55P03") => StoreError::Busy { reason, cause },
        Some(_) => StoreError::Internal {
            context: reason,
            cause: Some(cause),
        },
        // No SQLSTATE: the connection itself failed (refused, reset,
        // closed by the server, the pool timed out waiting for one)...
        None if lost => StoreError::Unavailable {
            reason,
            cause: Some(cause),
        },
        // ...or the statement's answer could not be read (a column of the
        // wrong type): a bug, not an outage.
        None => StoreError::Internal {
            context: reason,
            cause: Some(cause),
        },
    }
}

/// Why a fenced write could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// This node no longer holds the lease under `0`: it must stop acting
    /// as leader and write nothing.
    #[error("this node no longer leads under term {0}: the write is refused")]
    Fenced(Term),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The fleet's database: a pool of connections and the lease's SQL.
#[derive(Clone)]
pub struct FleetDb {
    pool: PgPool,
    options: PgConnectOptions,
    url: DatabaseUrl,
}

impl fmt::Debug for FleetDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetDb").field("url", &self.url).finish()
    }
}

impl FleetDb {
    /// Connects and brings the schema up to date (the migrations under
    /// `migrations/postgres/`, embedded in the binary). Several nodes may
    /// start at once: sqlx takes an advisory lock around migrating, so
    /// one applies them and the others find them applied.
    pub async fn connect(url: &DatabaseUrl) -> Result<FleetDb, StoreError> {
        let options = url
            .connect_options()
            .clone()
            .application_name("purgeq")
            .options([
                ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
                // The store's statements are short; a plan costed high
                // (the page's request list over fifty 1,000-URL requests)
                // was JIT-compiled on every read, 40 ms of the page's 230
                // (issue 31).
                ("jit", "off"),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(|e| pg_error(&format!("cannot connect to {url}"), e))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::internal(format!("cannot migrate {url}"), e))?;
        Ok(FleetDb {
            pool,
            options,
            url: url.clone(),
        })
    }

    /// A connection of its own, outside the pool: the store's writer
    /// keeps one for its group transactions.
    pub(crate) async fn connect_one(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        use sqlx::ConnectOptions;
        self.options.connect().await
    }

    /// The server and database, without the password: what `/v1/stats`
    /// shows as the store's location.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims (or renews) the lease for `node`, which believes it holds
    /// `held`, for `ttl` from the database's now. Wins when the lease is
    /// free, lapsed, or held by this node under `held`; a renewal keeps the
    /// term, a takeover adds one. A lost claim reports the live holder.
    pub async fn claim(
        &self,
        node: &NodeName,
        held: Option<Term>,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let fail = |e| pg_error("cannot claim the fleet's lease", e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        sqlx::query(CLAIM_LOCK_TIMEOUT)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let won: Option<i64> = sqlx::query_scalar(
            "INSERT INTO fleet_leader AS l (id, node, term, since, expires_at)
             VALUES (1, $1, 1, purgeq_now(), now() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE SET
                 term = CASE WHEN l.node = $1 AND l.term = $3 THEN l.term ELSE l.term + 1 END,
                 since = CASE WHEN l.node = $1 AND l.term = $3 THEN l.since ELSE purgeq_now() END,
                 node = $1,
                 expires_at = EXCLUDED.expires_at
             WHERE (l.node = $1 AND l.term = $3) OR l.expires_at < now()
             RETURNING term",
        )
        .bind(node.as_str())
        .bind(ttl.as_secs_f64())
        .bind(held.map(Term::get))
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        let claim = match won {
            Some(term) => Claim {
                won: Some(Term::new(term).ok_or_else(|| StoreError::bug("lease term <= 0"))?),
                holder: None,
            },
            None => Claim {
                won: None,
                holder: read_holder(&mut tx).await.map_err(fail)?,
            },
        };
        tx.commit().await.map_err(fail)?;
        Ok(claim)
    }

    /// The live holder of the lease, if any (what a follower reports).
    pub async fn holder(&self) -> Result<Option<(NodeName, Term)>, StoreError> {
        let fail = |e| pg_error("cannot read the fleet's lease", e);
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        read_holder(&mut conn).await.map_err(fail)
    }

    /// Gives the lease up (a graceful shutdown), so a follower takes over
    /// at its next try rather than when the lease lapses. Does nothing if
    /// `node` no longer holds it under `term`; says whether it did.
    pub async fn release(&self, node: &NodeName, term: Term) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE fleet_leader SET expires_at = now() - interval '1 second'
             WHERE id = 1 AND node = $1 AND term = $2",
        )
        .bind(node.as_str())
        .bind(term.get())
        .execute(&self.pool)
        .await
        .map_err(|e| pg_error("cannot release the fleet's lease", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts a leader's write: a transaction that holds a share lock on
    /// the lease row, taken only if `node` holds the lease under `term`.
    /// Not checking expiry is deliberate: a lapsed lease nobody took over
    /// means nobody else led, so writing under it is still safe.
    pub async fn begin_fenced(
        &self,
        node: &NodeName,
        term: Term,
    ) -> Result<Transaction<'static, Postgres>, FleetError> {
        let fail = |e| pg_error("cannot start a leader's write", e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        match holds_lease(&mut tx, node.as_str(), term.get())
            .await
            .map_err(fail)?
        {
            true => Ok(tx),
            false => Err(FleetError::Fenced(term)),
        }
    }
}

/// Whether `node` holds the lease under `term`, checked inside the
/// caller's transaction with a share lock on the lease row: a takeover
/// (which updates the row) waits for that transaction to end, so nothing
/// it writes can land under a term that is no longer the current one.
pub(crate) async fn holds_lease(
    conn: &mut sqlx::PgConnection,
    node: &str,
    term: i64,
) -> Result<bool, sqlx::Error> {
    let held = sqlx::query(
        "SELECT 1 FROM fleet_leader WHERE id = 1 AND node = $1 AND term = $2 FOR SHARE",
    )
    .bind(node)
    .bind(term)
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

impl Store {
    /// This node's heartbeat: its row in `fleet_nodes`, now; nodes silent
    /// for a day are removed. Nothing on SQLite (one host, no fleet).
    pub async fn fleet_heartbeat(
        &self,
        status: &crate::fleet::FleetStatus,
        version: &str,
        started_at: super::Timestamp,
    ) -> Result<(), StoreError> {
        let super::db::Pool::Postgres(pool) = &self.reader else {
            return Ok(());
        };
        let fail = |e| pg_error("cannot write this node's heartbeat", e);
        let leads = status.role == "leader";
        sqlx::query(
            "WITH gone AS (DELETE FROM fleet_nodes WHERE heartbeat_at < now() - interval '1 day')
             INSERT INTO fleet_nodes (node, role, term, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (node) DO UPDATE SET role = excluded.role, term = excluded.term,
                 version = excluded.version, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&status.node)
        .bind(if leads { "leader" } else { "follower" })
        .bind(status.term.filter(|_| leads))
        .bind(version)
        .bind(started_at)
        .execute(pool)
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// Every node that wrote a heartbeat in the last day, by name; stale
    /// when silent for longer than `stale_after`. Empty on SQLite.
    pub async fn fleet_nodes(
        &self,
        stale_after: Duration,
    ) -> Result<Vec<crate::fleet::FleetNode>, StoreError> {
        let super::db::Pool::Postgres(pool) = &self.reader else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, Option<i64>, String, String, f64)> = sqlx::query_as(
            "SELECT node, role, term, version, started_at,
                    CAST(extract(epoch FROM now() - heartbeat_at) AS DOUBLE PRECISION)
             FROM fleet_nodes ORDER BY node",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| pg_error("cannot read the fleet's nodes", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(node, role, term, version, started_at, age)| crate::fleet::FleetNode {
                    node,
                    role,
                    term,
                    version,
                    started_at,
                    heartbeat_age_seconds: age.max(0.0),
                    stale: age > stale_after.as_secs_f64(),
                },
            )
            .collect())
    }
}

async fn read_holder(
    conn: &mut sqlx::PgConnection,
) -> Result<Option<(NodeName, Term)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT node, term FROM fleet_leader WHERE id = 1 AND expires_at >= now()")
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let node: String = row.try_get("node")?;
    let term: i64 = row.try_get("term")?;
    // A name or term the schema's checks should have kept out reads as
    // no holder rather than failing the caller's claim.
    Ok(NodeName::parse(&node).ok().zip(Term::new(term)))
}

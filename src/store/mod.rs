//! The store: SQLite on one host, PostgreSQL for a fleet ([`fleet`]); every
//! SQL statement purgeq runs lives under this module.
//!
//! Writes go through one writer task ([`writer`]) that group-commits;
//! reads use a separate read-only pool, so `GET` requests and `sqlite3`
//! sessions never wait behind a write. The schema is in `migrations/` and
//! is embedded in the binary.

mod batches;
mod cache_policies;
mod charges;
mod charts;
mod counts;
mod db;
mod enqueue;
mod file_guard;
pub mod fleet;
mod history;
mod ids;
mod model;
mod operator;
mod origin_purges;
mod plan;
mod preloads;
#[cfg(test)]
mod query_plans;
mod reads;
mod reserve;
mod retention;
mod returns;
mod search;
mod tags;
mod timestamp;
mod verifications;
mod waits;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

pub use batches::{
    Batch, BatchItem, CallOutcome, CutLimits, ItemResult, PreloadLimits, Readiness, SubmittedBatch,
    SubmittedItem,
};
pub use charges::{QuotaAccount, QuotaContext, QuotaUse};
pub use charts::{CallError, CallRecord, Counts, RecentError, Slot};
pub use counts::{ItemCount, PreloadCount, QueueCounts};
pub use enqueue::EnqueueOutcome;
pub use history::{HistoryEntry, HistoryFilter, read_history, read_history_postgres};
pub use ids::{BatchId, ItemId, RequestId};
pub use model::{ItemEvent, ItemState, NewRequest, Operation, OriginPurgeState, VerificationState};
pub use operator::Cancelled;
pub use origin_purges::{DuePurge, OriginLayerCounts, OriginLayerStatus, OriginOutcome};
pub use plan::{LaneCounts, UrgentPending};
pub use preloads::{PreloadCounts, PreloadState};
pub use reads::{ItemStatus, RequestState, RequestStatus, RequestSummary, StateCounts};
pub use retention::Removed;
pub use search::{Cursor, Found, Search, SearchPage, UrlMatch};
pub use tags::{FeedOutcome, TagFeed, TagRegistryCounts, TagSource};
pub use timestamp::Timestamp;
pub use verifications::{
    DueVerification, EdgeRecord, FreshnessSummary, REPURGE_SOURCE, RoundOutcome, StaleUrl,
    TimeToFresh, VerificationView, expect_verification,
};
pub use waits::{Wait, why_pending};

use crate::config::{StoreSettings, Synchronous};
use writer::{Command, Job, JobFuture, WriterSignals};

/// SQLite's page cache on the writing connection, in KiB (negative, as
/// `PRAGMA cache_size` takes it): SQLite's default, written down so the
/// daemon's memory is stated (`config/purgeq.toml`).
const WRITER_CACHE_KIB: &str = "-2048";

/// SQLite's page cache per read connection, in KiB (as `PRAGMA
/// cache_size` takes it, negative): the reads are index ranges and keys,
/// and the operating system caches the file anyway; SQLite's default
/// (2 MiB, which the writer keeps) on each of the four readers was a
/// quarter of the daemon's memory with a million pending (issue 31).
const READER_CACHE_KIB: &str = "-512";

/// Prepared statements kept per read connection (sqlx keeps 100): each
/// holds its compiled program, and the readers run a few dozen.
const READER_STATEMENTS: usize = 48;

/// How long a connection waits for a lock held by another process (an
/// operator's `sqlite3`, say) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What caused a store error, kept for code that looks (`source()`). Shared,
/// because one failed group commit answers every caller in the group.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why the store could not do what was asked. The message says the cause
/// in words (operators read it in logs and 503 bodies); `source()` keeps
/// the typed error underneath.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The disk is full, read-only or failing: try again later.
    Unavailable {
        reason: String,
        cause: Option<Cause>,
    },
    /// Another connection (an operator's `sqlite3` holding a write
    /// transaction, a PostgreSQL lock past its timeout) kept the lock, or
    /// a fleet node's write was refused because it no longer leads:
    /// nothing is wrong with the store, try again shortly (`reason` says
    /// which).
    Busy { reason: String, cause: Cause },
    /// The writer task is gone (shutting down).
    Closed,
    /// A fleet pipeline's write made under a term that has ended: refused
    /// for good (another node leads), so not worth retrying.
    Fenced { reason: String },
    /// The store did not answer an intent within its deadline
    /// (`ingest.store_timeout`). `withdrawn`: it was withdrawn before its
    /// commit, so it is not and never will be stored; otherwise it may
    /// have been (see `writer::Ticket`).
    TimedOut {
        after: std::time::Duration,
        withdrawn: bool,
    },
    /// A bug or a broken database: not worth retrying.
    Internal {
        context: String,
        cause: Option<Cause>,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable { reason, .. } => {
                write!(f, "the store cannot write: {reason}")
            }
            StoreError::Busy { reason, .. } => write!(f, "the write must wait: {reason}"),
            StoreError::Closed => f.write_str("the store is shutting down"),
            StoreError::Fenced { reason } => f.write_str(reason),
            StoreError::TimedOut { after, withdrawn } => write!(
                f,
                "the store did not answer within {after:?} (ingest.store_timeout); {}",
                if *withdrawn {
                    "nothing was stored"
                } else {
                    "the intent may still be stored: a retry with the same URLs is deduplicated"
                }
            ),
            StoreError::Internal { context, .. } => write!(f, "store error: {context}"),
        }
    }
}

/// Written by hand: a derived `source()` would hand out the `Arc`, and
/// code that looks for the `sqlx::Error` underneath could not downcast.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = match self {
            StoreError::Unavailable { cause, .. } | StoreError::Internal { cause, .. } => {
                cause.as_ref()
            }
            StoreError::Busy { cause, .. } => Some(cause),
            StoreError::Closed | StoreError::TimedOut { .. } | StoreError::Fenced { .. } => None,
        };
        cause.map(|c| &**c as &(dyn std::error::Error + 'static))
    }
}

impl StoreError {
    /// Worth trying again: the same write can succeed later (space freed,
    /// a lock released). A sender with an accepted call to record keeps
    /// trying on these; giving up would strand the batch (issue 13).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Busy { .. } | StoreError::TimedOut { .. }
        )
    }

    /// The store cannot write, for `reason` (no underlying error).
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        StoreError::Unavailable {
            reason: reason.into(),
            cause: None,
        }
    }

    /// The store cannot use the file: `what` failed with `cause`.
    pub(crate) fn cannot(
        what: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            reason: format!("{what}: {cause}"),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A failure that retrying will not fix: `context` says what was being
    /// done, with the cause's words.
    pub(crate) fn internal(
        context: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Internal {
            context: format!("{context}: {cause}"),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A broken invariant, with no underlying error.
    pub(crate) fn bug(context: impl Into<String>) -> Self {
        StoreError::Internal {
            context: context.into(),
            cause: None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        // SQLITE_BUSY 5 and SQLITE_LOCKED 6: another connection holds the
        // lock. Retryable, and no sign that the disk is in trouble.
        let code = primary_code(&error);
        let message = match &error {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        match (&error, code) {
            (sqlx::Error::Database(_), Some(5 | 6)) => StoreError::Busy {
                reason: message,
                cause: Arc::new(error),
            },
            // Primary result codes: SQLITE_READONLY 8, SQLITE_IOERR 10,
            // SQLITE_FULL 13, SQLITE_CANTOPEN 14; or the file system.
            (sqlx::Error::Database(_), Some(8 | 10 | 13 | 14)) | (sqlx::Error::Io(_), _) => {
                StoreError::Unavailable {
                    reason: message,
                    cause: Some(Arc::new(error)),
                }
            }
            _ => StoreError::Internal {
                context: message,
                cause: Some(Arc::new(error)),
            },
        }
    }
}

/// Bumps the store's change signal on every commit a node of the fleet
/// announces, until the store is dropped. sqlx's listener reconnects by
/// itself after a lost connection; notices sent meanwhile are lost, so a
/// reconnect counts as a change too (waiters read the tables again).
async fn listen_for_changes(
    mut listener: sqlx::postgres::PgListener,
    signals: std::sync::Weak<WriterSignals>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            () = stop.cancelled() => return,
        };
        let Some(signals) = signals.upgrade() else {
            return;
        };
        match received {
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "listening for the fleet's changes");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        signals.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How every connection to the file is opened: WAL, the configured
/// durability, foreign keys, and a wait for locks held by others.
fn connect_options(settings: &StoreSettings) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| StoreError::internal("sqlite options", e))?
        .filename(&settings.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .pragma("cache_size", WRITER_CACHE_KIB)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging())
}

/// Sets aside the disk reserve; false (and intents refused, with the
/// reason) when there is no room for it.
fn set_aside_reserve(
    reserve: &reserve::SpaceReserve,
    settings: &StoreSettings,
    signals: &WriterSignals,
) -> bool {
    let Err(error) = reserve.set_aside() else {
        return true;
    };
    let reason = format!(
        "cannot set aside the {} byte disk reserve next to {} ({error}); \
         new intents are refused until there is room",
        settings.reserve_bytes,
        settings.path.display()
    );
    tracing::error!("{reason}");
    signals.fail(&reason);
    false
}

/// Opens the write connection again. SQLite opens a file it may not write
/// read-only, and stays so: once the file is writable again, the writer
/// needs a new connection to use it.
pub(crate) struct WriteConnector {
    options: SqliteConnectOptions,
    max_size_bytes: u64,
}

impl WriteConnector {
    pub(crate) async fn connect(&self) -> Result<SqliteConnection, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        apply_max_size(&mut conn, self.max_size_bytes).await?;
        Ok(conn)
    }
}

/// SQLite's primary result code of `error`, if it is a database error.
fn primary_code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

/// True for `SQLITE_READONLY` (and its extended codes).
pub(crate) fn is_read_only(error: &sqlx::Error) -> bool {
    primary_code(error) == Some(8)
}

/// True for `SQLITE_FULL`: the disk, or `store.max_size_bytes`.
pub(crate) fn is_disk_full(error: &sqlx::Error) -> bool {
    primary_code(error) == Some(13)
}

/// `PRAGMA max_page_count` for a size in bytes (0: the largest allowed).
async fn apply_max_size(conn: &mut SqliteConnection, bytes: u64) -> Result<(), sqlx::Error> {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    let pages = if bytes == 0 {
        u64::from(u32::MAX - 1)
    } else {
        (bytes / page_size.max(512) as u64).max(1)
    };
    // PRAGMA arguments cannot be bound; `pages` is a number we computed.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {pages}"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Timestamps as stored: UTC, millisecond precision, fixed width.
pub fn timestamp(at: OffsetDateTime) -> String {
    Timestamp::new(at).to_string()
}

/// Parses a stored timestamp.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    Timestamp::parse(text).map(Timestamp::get)
}

#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Command>,
    reader: db::Pool,
    signals: Arc<WriterSignals>,
    /// SQLite's file, watched for being replaced or made read-only;
    /// `None` on PostgreSQL.
    file: Option<Arc<file_guard::DatabaseFile>>,
    /// The file's path, or the server and database (never a password).
    location: String,
    /// Stops the fleet's change listener when the last handle goes (or
    /// at `close`); `None` on SQLite.
    listening: Option<Arc<tokio_util::sync::DropGuard>>,
    /// The leadership this handle's writes are made under (see
    /// [`Store::fenced`]); `None` for every handle but a fleet pipeline's.
    fence: Option<writer::Fence>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database, applies migrations and
    /// starts the writer task.
    pub async fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        let path = settings.path.as_path();
        let options = connect_options(settings)?;
        let connector = WriteConnector {
            options: options.clone(),
            max_size_bytes: settings.max_size_bytes,
        };
        let mut conn: SqliteConnection = options
            .connect()
            .await
            .map_err(|e| StoreError::cannot(format_args!("cannot open {}", path.display()), e))?;
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::internal(format_args!("migrating {}", path.display()), e))?;
        apply_max_size(&mut conn, settings.max_size_bytes)
            .await
            .map_err(|e| StoreError::internal("setting store.max_size_bytes", e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", READER_CACHE_KIB)
                    .statement_cache_capacity(READER_STATEMENTS),
            )
            .await
            .map_err(|e| {
                StoreError::cannot(
                    format_args!("cannot open {} for reading", path.display()),
                    e,
                )
            })?;
        let file = Arc::new(file_guard::DatabaseFile::new(path).map_err(|e| {
            StoreError::cannot(format_args!("cannot inspect {}", path.display()), e)
        })?);
        let signals = Arc::new(WriterSignals::new());
        // A file that is already unwritable is reported, not fatal: the
        // daemon runs, refuses intents and says why in /readyz, rather
        // than exit and be restarted in a loop by systemd.
        let _ = signals.check_file(&file);
        let reserve = reserve::SpaceReserve::new(path, settings.reserve_bytes);
        let short_of_space = !set_aside_reserve(&reserve, settings, &signals);
        let (jobs, _task) = writer::spawn(
            conn,
            writer::WriterParts {
                connector,
                signals: signals.clone(),
                file: file.clone(),
                reserve,
                short_of_space,
            },
        );
        Ok(Store {
            jobs,
            reader: db::Pool::Sqlite(reader),
            signals,
            file: Some(file),
            location: path.display().to_string(),
            listening: None,
            fence: None,
        })
    }

    /// Opens the store on a fleet's PostgreSQL database (already migrated
    /// by [`fleet::FleetDb::connect`]): reads share the fleet's pool, and
    /// the writer keeps a connection of its own. Every node's commits are
    /// announced with `NOTIFY`, and a listener turns those from other
    /// nodes into this store's change signal, so a `?wait` on one node
    /// hears of a result recorded by the leader on another.
    pub async fn open_postgres(fleet: &fleet::FleetDb) -> Result<Store, StoreError> {
        let location = fleet.url().to_string();
        let conn = fleet
            .connect_one()
            .await
            .map_err(|e| fleet::pg_error(&format!("cannot connect to {location}"), e))?;
        let signals = Arc::new(WriterSignals::new());
        let mut listener = sqlx::postgres::PgListener::connect_with(fleet.pool())
            .await
            .map_err(|e| fleet::pg_error("cannot listen for the fleet's changes", e))?;
        listener
            .listen(writer::CHANGES_CHANNEL)
            .await
            .map_err(|e| fleet::pg_error("cannot listen for the fleet's changes", e))?;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listen_for_changes(
            listener,
            Arc::downgrade(&signals),
            stop.clone(),
        ));
        let (jobs, _task) = writer::spawn_postgres(fleet.clone(), conn, signals.clone());
        Ok(Store {
            jobs,
            reader: db::Pool::Postgres(fleet.pool().clone()),
            signals,
            file: None,
            location,
            listening: Some(Arc::new(stop.drop_guard())),
            fence: None,
        })
    }

    /// A handle whose writes are made as `node` leading under `term`: each
    /// commits only while the fleet's lease row says so, checked in the
    /// write's own transaction (see [`writer::Fence`]). The pipeline of a
    /// fleet's leader is given one per election, so whatever it still
    /// writes after its term ended is refused, whatever the node believes
    /// by then.
    pub fn fenced(&self, node: &crate::fleet::NodeName, term: crate::fleet::Term) -> Store {
        Store {
            fence: Some(writer::Fence {
                node: node.as_str().to_owned(),
                term: term.get(),
            }),
            ..self.clone()
        }
    }

    /// Where the data is: the SQLite file's path, or the PostgreSQL
    /// server and database (without the password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// False after a write failed for lack of space or I/O, until one
    /// succeeds again.
    pub fn is_writable(&self) -> bool {
        self.signals.failure().is_none()
    }

    /// Why the store cannot take new intents, if it cannot: the last write
    /// failure (disk full, I/O error) or the database file's state.
    pub fn not_writable_reason(&self) -> Option<String> {
        self.signals.failure()
    }

    /// A receiver that changes after every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.signals.changed.subscribe()
    }

    /// Runs `work` inside the writer's next group transaction.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut db::Conn<'c>) -> JobFuture<'c, T> + Send + 'static,
    {
        let (job, reply) = Job::new(work, self.fence.clone());
        self.jobs
            .send(Command::Job(Box::new(job)))
            .await
            .map_err(|_| StoreError::Closed)?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Hands a request to the writer, which stores it with whatever other
    /// requests are waiting.
    async fn submit_enqueue(&self, request: Arc<NewRequest>) -> Result<EnqueueOutcome, StoreError> {
        self.submit_enqueue_with(request, Default::default()).await
    }

    /// Hands a request to the writer with `ticket`, by which its client
    /// may withdraw it (see [`writer::Ticket`]).
    async fn submit_enqueue_with(
        &self,
        request: Arc<NewRequest>,
        ticket: Arc<writer::Ticket>,
    ) -> Result<EnqueueOutcome, StoreError> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Command::Enqueue {
                request,
                output: None,
                reply,
                ticket,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        receiver.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::enqueue`], answered within `deadline` whatever the
    /// database does (black-holed, locked, a stalled disk). Past it the
    /// intent is withdrawn if the writer has not begun it — then nothing
    /// is stored, ever — and the error says which: "nothing was stored",
    /// or "may still be stored" when its transaction had already begun
    /// (a retry with the same URLs is then deduplicated against it).
    pub async fn enqueue_within(
        &self,
        request: NewRequest,
        deadline: std::time::Duration,
    ) -> Result<EnqueueOutcome, StoreError> {
        let ticket: Arc<writer::Ticket> = Default::default();
        let answer = self.submit_enqueue_with(Arc::new(request), ticket.clone());
        match tokio::time::timeout(deadline, answer).await {
            Ok(result) => result,
            Err(_) => {
                let error = StoreError::TimedOut {
                    after: deadline,
                    withdrawn: ticket.withdraw(),
                };
                tracing::warn!("an intent was answered 503: {error}");
                Err(error)
            }
        }
    }

    /// Caps the database size (`store.max_size_bytes`; 0: no cap beyond
    /// SQLite's own). Past it, writes fail like on a full disk: ingest
    /// answers 503 and sending goes on; raising the cap (or freeing rows)
    /// lets writes through again.
    pub async fn set_max_size(&self, bytes: u64) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                match conn {
                    db::Conn::Sqlite(conn) => apply_max_size(conn, bytes).await,
                    // The database's size is the server's business.
                    db::Conn::Postgres(_) => Ok(()),
                }
            })
        })
        .await
    }

    /// For /readyz: the database file is the one opened and writable (see
    /// `file_guard`), and the writer commits.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        if let Some(file) = &self.file {
            self.signals
                .check_file(file)
                .map_err(StoreError::unavailable)?;
        }
        self.empty_write().await
    }

    /// True when the writer task answers (with success or an error): what
    /// the systemd watchdog needs to know. A stuck writer never returns.
    pub async fn probe_writer(&self) -> bool {
        !matches!(self.empty_write().await, Err(StoreError::Closed))
    }

    /// A write transaction around a read: proves the writer takes the
    /// write lock and commits, without needing any space.
    async fn empty_write(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            Box::pin(async move {
                let sql = conn.pick("PRAGMA user_version", "SELECT 1");
                db::on_conn!(conn, c => sqlx::query(sql).execute(c).await.map(|r| r.rows_affected()))?;
                Ok(())
            })
        })
        .await
    }

    /// Stops the writer once what is queued is committed, and waits for
    /// it; then closes the read pool. Writes asked for later fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let (reply, done) = tokio::sync::oneshot::channel();
        if self.jobs.send(Command::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
        if let Some(listening) = &self.listening {
            listening.token().cancel();
        }
        self.reader.close().await;
    }
}

//! The single writer: one task owns the only write connection.
//!
//! SQLite allows one writer at a time. Rather than let many tasks contend for
//! the lock (and retry on `SQLITE_BUSY`), every write is a job sent to this
//! task, which takes whatever jobs are waiting and commits them together in
//! one transaction: one fsync for many callers (group commit). Each caller
//! hears back only after the commit, so "accepted" means "on disk".
//!
//! Enqueues, the one write clients wait on, are more than grouped: a run of
//! them is stored by one call to [`enqueue_many`], a handful of statements
//! for the whole run, since each statement costs a round trip to sqlx's
//! connection thread.
//!
//! A job is a closure that may run more than once: if a group fails, the
//! writer rolls it back and runs each command again on its own, so one bad
//! command cannot fail its neighbours.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot, watch};

use super::StoreError;
use super::db::{Conn, on_conn};
use super::enqueue::{EnqueueOutcome, enqueue_many};
use super::file_guard::DatabaseFile;
use super::fleet::{FleetDb, holds_lease, is_connection_lost, pg_error};
use super::model::NewRequest;
use super::reserve::SpaceReserve;
use super::{WriteConnector, is_disk_full, is_read_only};
use sqlx::PgConnection;

/// The most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// The longest a PostgreSQL group (or a connection attempt) may go
/// unanswered before the connection is taken as lost: far beyond a busy
/// server's commit, far below what TCP takes to give up on a black hole.
const PG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) type JobFuture<'c, T> = BoxFuture<'c, Result<T, sqlx::Error>>;

/// A job with its result type erased, so jobs of any type share one queue.
pub(crate) trait ErasedJob: Send {
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'c>) -> BoxFuture<'c, Result<(), sqlx::Error>>;
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>);
    /// The leadership the job was made under, if it was (see [`Fence`]).
    fn fence(&self) -> Option<&Fence>;
}

pub(crate) struct Job<T, F> {
    work: F,
    output: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    fence: Option<Fence>,
}

impl<T, F> Job<T, F> {
    pub(crate) fn new(
        work: F,
        fence: Option<Fence>,
    ) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, receiver) = oneshot::channel();
        (
            Self {
                work,
                output: None,
                reply,
                fence,
            },
            receiver,
        )
    }
}

impl<T, F> ErasedJob for Job<T, F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c mut Conn<'c>) -> JobFuture<'c, T> + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'c>) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            self.output = Some((self.work)(conn).await?);
            Ok(())
        })
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Job { output, reply, .. } = *self;
        let result = outcome
            .and_then(|()| output.ok_or_else(|| StoreError::bug("a job finished without output")));
        // The caller may have gone away (client disconnected): nothing to do.
        let _ = reply.send(result);
    }
}

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Commit what is queued, close the connection, answer, and end: how
    /// shutdown waits for the last commit (the task used to be dropped).
    Stop(oneshot::Sender<()>),
    Job(Box<dyn ErasedJob>),
    Enqueue {
        request: Arc<NewRequest>,
        output: Option<EnqueueOutcome>,
        reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
        ticket: Arc<Ticket>,
    },
}

/// Who decides an intent's fate when its client stops waiting. The writer
/// takes the ticket when the intent's group begins and seals it just
/// before `COMMIT`; the client withdraws it when its deadline passes.
/// Until the seal the client wins, and the writer then leaves the intent
/// out (rolling back and running the rest again), so a client told
/// "nothing was stored" can rely on it: a withdrawn intent is never
/// committed later (issue 28, item 3). A sealed intent may commit after
/// its client gave up; the client is told so.
#[derive(Debug, Default)]
pub(crate) struct Ticket(std::sync::atomic::AtomicU8);

impl Ticket {
    const WAITING: u8 = 0;
    const TAKEN: u8 = 1;
    const SEALED: u8 = 2;
    const WITHDRAWN: u8 = 3;

    /// The writer's, as a group begins: false when the client withdrew it.
    pub(crate) fn take(&self) -> bool {
        self.step(|state| match state {
            Ticket::WAITING => Some(Ticket::TAKEN),
            Ticket::TAKEN | Ticket::SEALED => Some(state),
            _ => None,
        })
    }

    /// The writer's, just before `COMMIT`: false when the client withdrew
    /// it meanwhile.
    pub(crate) fn seal(&self) -> bool {
        self.step(|state| match state {
            Ticket::TAKEN | Ticket::SEALED => Some(Ticket::SEALED),
            _ => None,
        })
    }

    /// The client's, when it stops waiting: true when the intent was not
    /// sealed (and now never will be).
    pub(crate) fn withdraw(&self) -> bool {
        self.step(|state| match state {
            Ticket::WAITING | Ticket::TAKEN | Ticket::WITHDRAWN => Some(Ticket::WITHDRAWN),
            _ => None,
        })
    }

    fn step(&self, next: impl Fn(u8) -> Option<u8>) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, next)
            .is_ok()
    }
}

/// A group held an intent whose client withdrew it before the commit.
#[derive(Debug, thiserror::Error)]
#[error("an intent's client stopped waiting before it was committed")]
struct Withdrawn;

/// Seals the tickets of the group's intents, or fails the group when one
/// was withdrawn (it is then rolled back and each command runs alone).
fn seal_intents(group: &[Command]) -> Result<(), sqlx::Error> {
    let all_sealed = group
        .iter()
        .filter_map(|command| match command {
            Command::Enqueue { ticket, .. } => Some(ticket),
            Command::Job(_) | Command::Stop(_) => None,
        })
        .all(|ticket| ticket.seal());
    if all_sealed {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(Box::new(Withdrawn)))
    }
}

/// Drops from `group` the intents whose clients have stopped waiting, and
/// takes the tickets of the rest: from here on they may commit.
fn drop_withdrawn(group: &mut Vec<Command>) {
    group.retain(|command| match command {
        Command::Enqueue { ticket, .. } => ticket.take(),
        Command::Job(_) | Command::Stop(_) => true,
    });
}

impl Command {
    /// An enqueue: a client's new intent, the one write that grows the
    /// database and the one a full or doubtful disk refuses.
    fn is_intent(&self) -> bool {
        matches!(self, Command::Enqueue { .. })
    }

    fn finish(self, outcome: Result<(), StoreError>) {
        match self {
            Command::Stop(reply) => {
                let _ = reply.send(());
            }
            Command::Job(job) => job.finish(outcome),
            Command::Enqueue { output, reply, .. } => {
                let result = outcome.and_then(|()| {
                    output.ok_or_else(|| StoreError::bug("an enqueue finished without output"))
                });
                let _ = reply.send(result);
            }
        }
    }
}

/// Why new intents cannot be stored.
pub(crate) struct Failure {
    reason: String,
    /// The database file's (see [`DatabaseFile`]): a passing file check
    /// is enough to clear it.
    from_file: bool,
}

/// Shared signals from the writer to the rest of the store.
pub(crate) struct WriterSignals {
    /// Set after a write failed for lack of space or I/O, or while the
    /// database file objects; cleared by the next enqueue that commits
    /// (or, for the file's, a passing check). The store is writable while
    /// it is `None`.
    pub failure: std::sync::Mutex<Option<Failure>>,
    /// Bumped after every successful commit, to wake waiters.
    pub changed: watch::Sender<u64>,
}

impl WriterSignals {
    /// No failure yet, no commit yet.
    pub(crate) fn new() -> WriterSignals {
        WriterSignals {
            failure: std::sync::Mutex::new(None),
            changed: watch::channel(0).0,
        }
    }

    fn set_failure(&self, failure: Option<Failure>) -> Option<Failure> {
        std::mem::replace(
            &mut *self.failure.lock().unwrap_or_else(|p| p.into_inner()),
            failure,
        )
    }

    /// New intents cannot be stored, because of `reason`.
    pub(crate) fn fail(&self, reason: &str) {
        self.set_failure(Some(Failure {
            reason: reason.to_owned(),
            from_file: false,
        }));
    }

    /// New intents are stored again.
    pub(crate) fn recovered(&self) {
        if self.set_failure(None).is_some() {
            tracing::info!("the store takes new intents again");
        }
    }

    /// Why new intents cannot be stored, if they cannot.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|f| f.reason.clone())
    }

    /// Checks the database file (see [`DatabaseFile`]): an objection
    /// becomes the failure (logged when it begins); a pass clears a
    /// failure that was the file's.
    pub(crate) fn check_file(&self, file: &DatabaseFile) -> Result<(), String> {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match file.check() {
            Ok(()) => {
                if failure.as_ref().is_some_and(|f| f.from_file) {
                    *failure = None;
                    tracing::info!("the store takes new intents again");
                }
                Ok(())
            }
            Err(reason) => {
                if failure.is_none() {
                    tracing::error!("{reason}");
                }
                *failure = Some(Failure {
                    reason: reason.clone(),
                    from_file: true,
                });
                Err(reason)
            }
        }
    }
}

/// What the writer task owns besides its connection.
pub(crate) struct WriterParts {
    pub connector: WriteConnector,
    pub signals: Arc<WriterSignals>,
    pub file: Arc<DatabaseFile>,
    pub reserve: SpaceReserve,
    /// The reserve could not be set aside at start: the disk is full.
    pub short_of_space: bool,
}

pub(crate) fn spawn(
    conn: SqliteConnection,
    parts: WriterParts,
) -> (mpsc::Sender<Command>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(4096);
    let task = tokio::spawn(run(conn, receiver, parts));
    (sender, task)
}

/// The writer loop. For each group of waiting commands:
/// 1. intents are refused up front while the database file objects, or
///    while the disk is short of space (unless there is room again);
/// 2. the group runs in one transaction;
/// 3. on failure, two causes are repaired and the group runs again: a
///    connection opened read-only whose file is writable again is
///    reopened, and a full disk gets the reserve back (intents refused);
/// 4. if it still fails, each command runs alone, so one bad command
///    cannot fail its neighbours.
async fn run(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Command>, parts: WriterParts) {
    let WriterParts {
        connector,
        signals,
        file,
        reserve,
        mut short_of_space,
    } = parts;
    let mut group: Vec<Command> = Vec::with_capacity(MAX_GROUP);
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() && jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        stop = take_stop(&mut group);
        drop_withdrawn(&mut group);
        refuse_intents_if_the_file_objects(&file, &signals, &mut group);
        if short_of_space {
            short_of_space = !resume_if_there_is_room(&reserve, &signals, &mut group);
        }
        if group.is_empty() {
            continue;
        }
        let mut result = run_group(&mut Conn::Sqlite(&mut conn), &mut group).await;
        if result.as_ref().is_err_and(is_read_only) && file.check().is_ok() {
            // Opened while the file was read-only, and it no longer is.
            rollback(&mut Conn::Sqlite(&mut conn)).await;
            match connector.connect().await {
                Ok(fresh) => {
                    tracing::info!("the database file is writable again: reopened it");
                    conn = fresh;
                    result = run_group(&mut Conn::Sqlite(&mut conn), &mut group).await;
                }
                Err(error) => tracing::warn!(%error, "cannot reopen the database for writing"),
            }
        }
        if !short_of_space
            && result.as_ref().is_err_and(is_disk_full)
            && release_reserve_for_a_full_disk(&reserve, &signals)
        {
            short_of_space = true;
            rollback(&mut Conn::Sqlite(&mut conn)).await;
            refuse_intents_for_lack_of_space(&reserve, &signals, &mut group);
            if group.is_empty() {
                continue;
            }
            result = run_group(&mut Conn::Sqlite(&mut conn), &mut group).await;
        }
        settle_group(&mut Conn::Sqlite(&mut conn), &signals, &mut group, result).await;
    }
    if let Some(reply) = stop {
        // Refuse what comes after the stop, then close the connection (the
        // last one checkpoints the WAL).
        refuse_the_rest(&mut jobs);
        if let Err(error) = sqlx::Connection::close(conn).await {
            tracing::warn!(%error, "closing the store's write connection");
        }
        let _ = reply.send(());
        tracing::debug!("store writer stopped: asked to");
        return;
    }
    tracing::debug!("store writer stopped: every handle is gone");
}

/// Answers a group that ran: on failure, each command runs again alone
/// so that one failure stays its own.
async fn settle_group(
    conn: &mut Conn<'_>,
    signals: &WriterSignals,
    group: &mut Vec<Command>,
    result: Result<(), sqlx::Error>,
) {
    if result.is_err() && group.len() > 1 {
        rollback(conn).await;
        for command in group.drain(..) {
            let mut single = vec![command];
            let result = run_group(conn, &mut single).await;
            settle(conn, signals, single, result).await;
        }
    } else {
        let commands = std::mem::take(group);
        settle(conn, signals, commands, result).await;
    }
}

/// Takes a stop out of `group`, if one came: the loop ends once what came
/// with it is committed.
fn take_stop(group: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
    let index = group.iter().position(|c| matches!(c, Command::Stop(_)))?;
    match group.remove(index) {
        Command::Stop(reply) => Some(reply),
        _ => None,
    }
}

/// Refuses what comes after a stop.
fn refuse_the_rest(jobs: &mut mpsc::Receiver<Command>) {
    jobs.close();
    while let Ok(command) = jobs.try_recv() {
        command.finish(Err(StoreError::Closed));
    }
}

pub(crate) fn spawn_postgres(
    db: FleetDb,
    conn: PgConnection,
    signals: Arc<WriterSignals>,
) -> (mpsc::Sender<Command>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(4096);
    let task = tokio::spawn(run_postgres(db, Some(conn), receiver, signals));
    (sender, task)
}

/// The writer loop on PostgreSQL: the same groups as on SQLite, one
/// transaction each, without the file's concerns. A connection that is
/// lost (the server restarting, `pg_terminate_backend`) fails its group
/// with `Unavailable`, which ingest answers with 503: the group is not
/// run again on a new connection, because a lost `COMMIT` may or may not
/// have committed, and answering "accepted" for what is not known to be
/// stored is the one answer that must never be wrong. The next group
/// connects anew; until one can, every command is answered at once
/// with the reason.
async fn run_postgres(
    db: FleetDb,
    mut conn: Option<PgConnection>,
    mut jobs: mpsc::Receiver<Command>,
    signals: Arc<WriterSignals>,
) {
    let mut group: Vec<Command> = Vec::with_capacity(MAX_GROUP);
    let mut stop: Option<oneshot::Sender<()>> = None;
    let mut growth = Growth::default();
    while stop.is_none() && jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        stop = take_stop(&mut group);
        drop_withdrawn(&mut group);
        if group.is_empty() {
            continue;
        }
        let connection = match conn.as_mut() {
            Some(connection) => connection,
            None => match tokio::time::timeout(PG_DEADLINE, db.connect_one())
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
            {
                Ok(fresh) => {
                    // Reachable again: the outage's reason no longer holds
                    // (the next write says if something else is wrong).
                    tracing::info!("reconnected to PostgreSQL");
                    signals.recovered();
                    conn.insert(fresh)
                }
                Err(error) => {
                    let error = pg_error("cannot reach PostgreSQL", error);
                    note_failure(&signals, &error);
                    for command in group.drain(..) {
                        command.finish(Err(error.clone()));
                    }
                    continue;
                }
            },
        };
        let ran = match tokio::time::timeout(
            PG_DEADLINE,
            run_group(&mut Conn::Postgres(&mut *connection), &mut group),
        )
        .await
        {
            // No answer at all: a black-holed network looks like this, and
            // TCP would wait many minutes to say so. Handled as a lost
            // connection (a COMMIT sent may or may not have landed).
            Err(_) => Err(StoreError::Unavailable {
                reason: format!("PostgreSQL did not answer within {PG_DEADLINE:?}"),
                cause: None,
            }),
            Ok(Err(error)) if is_connection_lost(&error) => {
                Err(pg_error("lost the connection to PostgreSQL", error))
            }
            Ok(result) => Ok(result),
        };
        match ran {
            Err(error) => {
                note_failure(&signals, &error);
                conn = None;
                for command in group.drain(..) {
                    command.finish(Err(error.clone()));
                }
            }
            Ok(result) => {
                let new_items = if result.is_ok() { new_items(&group) } else { 0 };
                settle_group(
                    &mut Conn::Postgres(&mut *connection),
                    &signals,
                    &mut group,
                    result,
                )
                .await;
                if growth.added(new_items) {
                    analyze(connection).await;
                }
            }
        }
    }
    if let Some(reply) = stop {
        refuse_the_rest(&mut jobs);
        if let Some(conn) = conn
            && let Err(error) = sqlx::Connection::close(conn).await
        {
            tracing::warn!(%error, "closing the store's write connection");
        }
        let _ = reply.send(());
    }
}

/// Items the enqueues of a committed group added.
fn new_items(group: &[Command]) -> u64 {
    group
        .iter()
        .map(|c| match c {
            Command::Enqueue {
                output: Some(outcome),
                ..
            } => outcome.new as u64,
            _ => 0,
        })
        .sum()
}

/// When the queue has grown enough that PostgreSQL's statistics may lie.
///
/// Without statistics (a fleet database that grew from empty faster than
/// autovacuum, which looks once a minute, analyzes it) PostgreSQL links
/// each URL through the `items_state` range of every pending item of its
/// endpoint instead of the unique `items_pending` index: measured at 370
/// single-URL requests/s, p50 163 ms, with 400,000 pending (BENCHMARKS.md).
/// So the writer analyzes the queue's tables itself after 10,000 new
/// items, then after twice as many each time: a handful of `ANALYZE`s
/// over any growth, none in a steady state, which autovacuum keeps.
#[derive(Debug, Default)]
struct Growth {
    since: u64,
    next: u64,
}

impl Growth {
    const FIRST: u64 = 10_000;

    /// `n` more items; true when it is time to analyze.
    fn added(&mut self, n: u64) -> bool {
        if self.next == 0 {
            self.next = Self::FIRST;
        }
        self.since += n;
        if self.since < self.next {
            return false;
        }
        self.since = 0;
        self.next = self.next.saturating_mul(2);
        true
    }
}

/// `ANALYZE` of the tables enqueue reads, outside any transaction; a
/// failure only means the plans wait for autovacuum.
async fn analyze(conn: &mut PgConnection) {
    let started = std::time::Instant::now();
    match sqlx::query("ANALYZE items, request_items, preloads")
        .execute(&mut *conn)
        .await
    {
        Ok(_) => tracing::debug!(took = ?started.elapsed(), "analyzed the queue's tables"),
        Err(error) => tracing::warn!(%error, "could not analyze the queue's tables"),
    }
}

/// On "disk full", if the disk (not `store.max_size_bytes`) is what is
/// full and the reserve is in place, gives the reserve back so queued
/// work can still be recorded. True if it did.
fn release_reserve_for_a_full_disk(reserve: &SpaceReserve, signals: &WriterSignals) -> bool {
    if !reserve.is_set_aside() || reserve.free_bytes().is_ok_and(|f| f >= reserve.bytes()) {
        return false;
    }
    if !reserve.release() {
        return false;
    }
    let reason = short_of_space_reason(reserve);
    tracing::error!(
        "{reason}; released the {} byte reserve so that queued work is still recorded",
        reserve.bytes()
    );
    signals.fail(&reason);
    true
}

fn short_of_space_reason(reserve: &SpaceReserve) -> String {
    let free = reserve
        .free_bytes()
        .map_or_else(|e| format!("unknown: {e}"), |b| b.to_string());
    format!(
        "the disk is full: new intents are refused until {} bytes are free on the database's \
         file system ({free} now); queued work goes on",
        reserve.bytes().saturating_mul(2)
    )
}

/// While short of space: if the file system has room again, sets the
/// reserve aside anew and lets intents in (true); otherwise refuses the
/// group's intents (false).
fn resume_if_there_is_room(
    reserve: &SpaceReserve,
    signals: &WriterSignals,
    group: &mut Vec<Command>,
) -> bool {
    if reserve.room_to_resume() && reserve.set_aside().is_ok() {
        tracing::info!("there is room on the disk again: reserve set aside, taking new intents");
        signals.recovered();
        return true;
    }
    refuse_intents_for_lack_of_space(reserve, signals, group);
    false
}

fn refuse_intents_for_lack_of_space(
    reserve: &SpaceReserve,
    signals: &WriterSignals,
    group: &mut Vec<Command>,
) {
    if !group.iter().any(Command::is_intent) {
        return;
    }
    let reason = short_of_space_reason(reserve);
    signals.fail(&reason);
    refuse_intents(group, &reason);
}

/// Answers every intent of `group` with `reason`, keeping the other jobs.
fn refuse_intents(group: &mut Vec<Command>, reason: &str) {
    let (refused, kept): (Vec<_>, Vec<_>) = std::mem::take(group)
        .into_iter()
        .partition(Command::is_intent);
    *group = kept;
    for command in refused {
        command.finish(Err(StoreError::unavailable(reason)));
    }
}

/// New intents go to the database only while its file is the one opened,
/// and still writable (see [`DatabaseFile`]); otherwise they are answered
/// with the reason at once, and the rest of the group runs.
fn refuse_intents_if_the_file_objects(
    file: &DatabaseFile,
    signals: &WriterSignals,
    group: &mut Vec<Command>,
) {
    if !group.iter().any(Command::is_intent) {
        return;
    }
    if let Err(reason) = signals.check_file(file) {
        refuse_intents(group, &reason);
    }
}

/// Answers the callers of a committed (or failed) group and updates the
/// signals. Only enqueues, which grow the database, decide whether the
/// store counts as writable: a small job can still commit on a full disk.
async fn settle(
    conn: &mut Conn<'_>,
    signals: &WriterSignals,
    commands: Vec<Command>,
    result: Result<(), sqlx::Error>,
) {
    match result {
        Ok(()) => {
            if commands.iter().any(Command::is_intent) {
                signals.recovered();
            }
            signals.changed.send_modify(|n| *n = n.wrapping_add(1));
            for command in commands {
                command.finish(Ok(()));
            }
        }
        Err(error) => {
            rollback(conn).await;
            let error = store_error(conn, error);
            note_failure(signals, &error);
            for command in commands {
                command.finish(Err(error.clone()));
            }
        }
    }
}

/// `error` in the store's kinds, by the rules of the connection's
/// database (SQLite's result codes, PostgreSQL's SQLSTATEs).
fn store_error(conn: &Conn<'_>, error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Configuration(inner) = &error
        && let Some(fenced) = inner.downcast_ref::<Fenced>()
    {
        // Final: the term is over for good, so trying again is pointless
        // (an old pipeline's "trying again" loop kept a deposed leader
        // writing, issue 28). No sign the store is unwell either.
        return StoreError::Fenced {
            reason: fenced.to_string(),
        };
    }
    match conn {
        Conn::Sqlite(_) => StoreError::from(error),
        Conn::Postgres(_) => pg_error("a write to PostgreSQL failed", error),
    }
}

fn note_failure(signals: &WriterSignals, error: &StoreError) {
    if let StoreError::Unavailable { reason, .. } = error {
        signals.fail(reason);
    }
    tracing::warn!(%error, "store write failed");
}

/// The advisory lock every write transaction of a fleet takes first, so
/// the fleet's writes are serialized as one SQLite file's are: the
/// checks that keep the queue deduplicated ("is this URL already pending,
/// or covered by a pending directory?") read what every other node
/// committed before them. Held to the end of the transaction. The number
/// is "purgeq" in ASCII, so it reads as ours in `pg_locks`.
pub(crate) const FLEET_WRITE_LOCK: i64 = 0x7075_7267_6571;

/// The channel a fleet's commits are announced on (`NOTIFY`), so every
/// node's waiters and the leader's batcher hear of writes made elsewhere.
pub(crate) const CHANGES_CHANNEL: &str = "purgeq_changes";

/// The leadership a pipeline's write is made under: the node and the term
/// its pipeline was started for (`Store::fenced`). Every group with such a
/// write first checks, inside its own transaction and under a share lock
/// on the lease row, that the lease row still names that node and term.
/// The term is the write's own, not whatever the node believes now: a
/// leader that was paused or cut off, and whose old pipeline still has a
/// write to make (a call that was on the wire), is refused whatever it
/// leads by then. Intents and operator actions carry no fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    pub node: String,
    pub term: i64,
}

/// A group refused by the fence.
#[derive(Debug, thiserror::Error)]
#[error("this node ({node}) no longer leads the fleet under term {term}: the write is refused")]
pub(crate) struct Fenced {
    node: String,
    term: i64,
}

/// The distinct fences of `group`'s jobs.
fn fences(group: &[Command]) -> Vec<&Fence> {
    let mut fences: Vec<&Fence> = Vec::new();
    for command in group {
        if let Command::Job(job) = command
            && let Some(fence) = job.fence()
            && !fences.contains(&fence)
        {
            fences.push(fence);
        }
    }
    fences
}

async fn run_group(conn: &mut Conn<'_>, group: &mut [Command]) -> Result<(), sqlx::Error> {
    let begin = conn.pick("BEGIN IMMEDIATE", "BEGIN");
    on_conn!(conn, c => sqlx::query(begin).execute(c).await.map(|_| ()))?;
    if let Conn::Postgres(c) = conn {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FLEET_WRITE_LOCK)
            .execute(&mut **c)
            .await?;
        for fence in fences(group) {
            if !holds_lease(c, &fence.node, fence.term).await? {
                return Err(sqlx::Error::Configuration(Box::new(Fenced {
                    node: fence.node.clone(),
                    term: fence.term,
                })));
            }
        }
    }
    let mut start = 0;
    while start < group.len() {
        if let Command::Job(job) = &mut group[start] {
            job.run(&mut conn.reborrow()).await?;
            start += 1;
            continue;
        }
        // A run of enqueues: stored together.
        let run = group[start..].iter().take_while(|c| c.is_intent()).count();
        if run == 0 {
            // A stop: taken out of the group before it runs.
            start += 1;
            continue;
        }
        let requests: Vec<Arc<NewRequest>> = group[start..start + run]
            .iter()
            .filter_map(|c| match c {
                Command::Enqueue { request, .. } => Some(request.clone()),
                Command::Job(_) | Command::Stop(_) => None,
            })
            .collect();
        let outcomes = enqueue_many(conn, &requests).await?;
        for (command, outcome) in group[start..start + run].iter_mut().zip(outcomes) {
            if let Command::Enqueue { output, .. } = command {
                *output = Some(outcome);
            }
        }
        start += run;
    }
    if let Conn::Postgres(c) = conn {
        // Delivered at commit, to every node listening (this one too).
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANGES_CHANNEL)
            .execute(&mut **c)
            .await?;
    }
    seal_intents(group)?;
    on_conn!(conn, c => sqlx::query("COMMIT").execute(c).await.map(|_| ()))?;
    Ok(())
}

async fn rollback(conn: &mut Conn<'_>) {
    // Fails harmlessly when SQLite already rolled back on its own (as it
    // does after SQLITE_FULL), or PostgreSQL's connection is gone.
    if let Err(error) = on_conn!(conn, c => sqlx::query("ROLLBACK").execute(c).await.map(|_| ())) {
        tracing::debug!(%error, "rollback after a failed group");
    }
}

#[cfg(test)]
mod growth_tests {
    use super::Growth;

    #[test]
    fn statistics_are_refreshed_after_growth_then_ever_more_rarely() {
        let mut growth = Growth::default();
        assert!(!growth.added(9_999));
        assert!(growth.added(1), "10,000 new items");
        assert!(!growth.added(19_999));
        assert!(growth.added(1), "20,000 more");
        let analyses = (0..1_000).filter(|_| growth.added(1_000)).count();
        assert_eq!(analyses, 4, "40k, 80k, 160k, 320k more over 1,000,000");
    }
}

#[cfg(test)]
mod ticket_tests {
    use super::Ticket;

    /// Every order of the writer's and the client's moves: the client is
    /// told "nothing was stored" (withdraw() is true) exactly when the
    /// writer will not commit it (seal() is false).
    #[test]
    fn the_client_and_the_writer_never_both_win() {
        type Step = fn(&Ticket) -> bool;
        let take: Step = Ticket::take;
        let seal: Step = Ticket::seal;
        let withdraw: Step = Ticket::withdraw;
        let rows: [(&[Step], &[bool]); 5] = [
            // Withdrawn while waiting: never taken.
            (&[withdraw, take], &[true, false]),
            // Taken, then withdrawn before the commit: not sealed.
            (&[take, withdraw, seal], &[true, true, false]),
            // Sealed first: the client is told it may be stored.
            (&[take, seal, withdraw], &[true, true, false]),
            // A group run again after a failed commit keeps its seal.
            (&[take, seal, take, seal], &[true, true, true, true]),
            // Withdrawing twice says the same.
            (&[withdraw, withdraw], &[true, true]),
        ];
        for (steps, expected) in rows {
            let ticket = Ticket::default();
            let got: Vec<bool> = steps.iter().map(|step| step(&ticket)).collect();
            assert_eq!(got, expected);
        }
    }
}

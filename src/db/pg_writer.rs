//! Group commit for PostgreSQL: a few writer threads take the writes that arrive together and
//! store each group with one statement (or one transaction), so that one round trip, one commit
//! and one WAL flush serve many callers.
//!
//! One INSERT and one commit per create costs PostgreSQL far more than the row itself: under load
//! the server's own CPU is the limit (`bench/run`). Here callers queue in a channel; each of
//! [`writers`] threads drains what is waiting (up to [`MAX_GROUP`]) and stores it on a pooled
//! connection in one transaction: creates without an idempotency key as one multi-row INSERT,
//! keyed ones each looked up and inserted (see `opportunity::create_postgres_group`); past the
//! earliest deadline of the group, it is rolled back instead of committed. A caller is
//! answered only once its group is committed. When a group fails on a create of its own (a query
//! error, not a lost server), nothing of it is stored and its creates are stored again one at a
//! time, so that a create that fails never fails the others. A lone create takes the path it took
//! before grouping: one autocommitted INSERT, or one transaction with its key.
//!
//! Changes (update, archive, restore) queue for writer threads of their own and are grouped the
//! same way ([`PgWriter::change`]): a group reads and locks all its rows with one statement, in
//! id order (so that two groups, of this process or another, never wait for each other in a
//! cycle), decides each change on what the change before it left, writes the changed rows with
//! one statement, and last takes the feed positions, appends the events and gives the rows
//! their positions with one more, holding the feed's position lock only for that statement and
//! the COMMIT, as a group of creates does (`opportunity::finish_changes`).

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use diesel::r2d2::PooledConnection;
use diesel::result::Error as DieselError;
use diesel::{Connection, PgConnection};
use r2d2::Pool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::events::NewEvent;
use super::opportunity::{self, ChangeKey, Changed, CreateOutcome, Decision, Deferred, IdempotencyRecord, Locked};
use super::{DbConn, DbError, PgManager};
use crate::domain::opportunity::Opportunity;

/// The most creates stored by one statement: 29 columns a row stay well under PostgreSQL's
/// 65,535 bind parameters.
pub const MAX_GROUP: usize = 256;
/// Creates waiting for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Writer threads, each with one pooled connection while it stores a group. Few writers make
/// large groups under load; more than one keeps a slow group from stalling every caller.
const WRITERS: u32 = 2;

/// How many writer threads of each kind (creates, changes) a pool of `pool_size` connections
/// gets: one connection stays free for reads, `/ready`, the key purge and the checks after a
/// lost connection, unless the pool has fewer than three.
pub fn writers(pool_size: u32) -> u32 {
    WRITERS.min(pool_size.saturating_sub(1) / 2).max(1)
}

struct Job {
    /// Past this instant the create is not started, and a group holding it is rolled back
    /// before COMMIT: the caller is about to answer SERVICE_UNAVAILABLE, and a create answered
    /// so must not be stored.
    deadline: Instant,
    /// When the caller stops waiting.
    gives_up: Instant,
    opportunity: Opportunity,
    key: Option<IdempotencyRecord>,
    /// Appended, in the same transaction, when the create is stored.
    event: NewEvent,
    reply: oneshot::Sender<Result<CreateOutcome, DbError>>,
}

type Conn = PooledConnection<PgManager>;

/// The handle callers enqueue creates with; the writer threads end when the last handle is
/// dropped, after storing what was queued.
#[derive(Debug, Clone)]
pub struct PgWriter {
    jobs: mpsc::Sender<Job>,
    changes: mpsc::Sender<ChangeJob>,
    timeout: Duration,
}

impl PgWriter {
    /// Starts `writers` threads that store creates through `pool`; a create waits at most
    /// `timeout` in all.
    pub(super) fn start(pool: Pool<PgManager>, timeout: Duration, writers: u32) -> anyhow::Result<Self> {
        let jobs = spawn_writers("pg-writer", writers, &pool, |pool, group: &mut Vec<Job>| {
            let outcomes = store(pool, group);
            for (job, outcome) in group.drain(..).zip(outcomes) {
                // A caller that went away no longer needs the answer.
                let _ = job.reply.send(outcome);
            }
        })?;
        let changes = spawn_writers("pg-changer", writers, &pool, store_changes)?;
        Ok(Self { jobs, changes, timeout })
    }

    /// Writes waiting for a writer thread, creates and changes (sent, not yet taken into a
    /// group).
    pub fn queued(&self) -> usize {
        let waiting = |max: usize, free: usize| max - free;
        waiting(self.jobs.max_capacity(), self.jobs.capacity())
            + waiting(self.changes.max_capacity(), self.changes.capacity())
    }

    /// Changes the opportunity `id` as `decide` says (see [`opportunity::change_postgres`]) in
    /// the next group of changes, and answers once that group is committed, or
    /// SERVICE_UNAVAILABLE by `gives_up` at the latest.
    pub async fn change<E, F>(
        &self,
        id: Uuid,
        key: Option<ChangeKey>,
        gives_up: Instant,
        decide: F,
    ) -> Result<Changed<E>, DbError>
    where
        E: Send + 'static,
        F: Fn(Option<Opportunity>) -> Decision<E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let deadline = super::write_deadline(gives_up);
        let op = Box::new(Change { id, key, decide, outcome: None, reply });
        let job = ChangeJob { id, deadline, op };
        let call = async {
            self.changes
                .send(job)
                .await
                .map_err(|_| DbError::Unavailable("the PostgreSQL writers have stopped".into()))?;
            answer.await.map_err(|_| DbError::Unavailable("the PostgreSQL writer stopped before answering".into()))?
        };
        tokio::time::timeout_at(gives_up.into(), call).await.unwrap_or_else(|_| {
            Err(DbError::Unavailable(format!("the database did not answer within {:?}", self.timeout)))
        })
    }

    /// Stores one opportunity (with its idempotency key) and answers once it is committed, or
    /// SERVICE_UNAVAILABLE within the database timeout.
    pub async fn create(
        &self,
        opportunity: Opportunity,
        key: Option<IdempotencyRecord>,
        event: NewEvent,
    ) -> Result<CreateOutcome, DbError> {
        let gives_up = Instant::now() + self.timeout;
        let (reply, answer) = oneshot::channel();
        let job = Job { deadline: super::write_deadline(gives_up), gives_up, opportunity, key, event, reply };
        let call = async {
            self.jobs
                .send(job)
                .await
                .map_err(|_| DbError::Unavailable("the PostgreSQL writers have stopped".into()))?;
            answer.await.map_err(|_| DbError::Unavailable("the PostgreSQL writer stopped before answering".into()))?
        };
        tokio::time::timeout(self.timeout, call).await.unwrap_or_else(|_| {
            Err(DbError::Unavailable(format!("the database did not answer within {:?}", self.timeout)))
        })
    }
}

/// Starts `writers` threads named `name-N` that take the jobs queued on the returned sender in
/// groups (all that is waiting, up to [`MAX_GROUP`]) and hand each group to `store`, which
/// answers its jobs and leaves it empty. The threads end when the last sender is dropped.
fn spawn_writers<J: Send + 'static>(
    name: &str,
    writers: u32,
    pool: &Pool<PgManager>,
    store: fn(&Pool<PgManager>, &mut Vec<J>),
) -> anyhow::Result<mpsc::Sender<J>> {
    let (jobs, queue) = mpsc::channel::<J>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..writers {
        let queue = queue.clone();
        let pool = pool.clone();
        thread::Builder::new().name(format!("{name}-{n}")).spawn(move || {
            let mut group = Vec::with_capacity(MAX_GROUP);
            loop {
                {
                    // One writer waits on the queue at a time and takes all that is waiting.
                    let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let Some(first) = queue.blocking_recv() else { break };
                    group.push(first);
                    while group.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                }
                store(&pool, &mut group);
                group.clear();
            }
        })?;
    }
    Ok(jobs)
}

/// Stores a group and returns one outcome per create, in order.
fn store(pool: &Pool<PgManager>, group: &[Job]) -> Vec<Result<CreateOutcome, DbError>> {
    if group.len() > 1
        && let Some(outcomes) = store_together(pool, group)
    {
        return outcomes;
    }
    group.iter().map(|job| store_one(pool, job)).collect()
}

/// Stores a whole group at once; `None` when a create of it failed (nothing is stored then).
fn store_together(pool: &Pool<PgManager>, group: &[Job]) -> Option<Vec<Result<CreateOutcome, DbError>>> {
    let unavailable = |cause: &str| Some(group.iter().map(|_| Err(DbError::Unavailable(cause.to_string()))).collect());
    let deadline = group.iter().map(|job| job.deadline).min()?;
    let mut conn = match checkout(pool, deadline) {
        Ok(conn) => conn,
        Err(e) => return unavailable(&e.to_string()),
    };
    let items: Vec<_> = group.iter().map(|job| (&job.opportunity, job.key.as_ref(), &job.event)).collect();
    let mut outcomes = Vec::with_capacity(group.len());
    let stored = opportunity::create_postgres_group(&mut conn.conn, &items, deadline, &mut outcomes);
    let cause = match stored {
        Ok(()) => return Some(outcomes.into_iter().map(Ok).collect()),
        Err(diesel::result::Error::RollbackTransaction) => {
            return unavailable("the database did not answer before the deadline");
        }
        Err(e) => match DbError::classify(e) {
            DbError::Query(e) => {
                tracing::debug!(error = %e, size = group.len(), "a group failed; storing its creates one at a time");
                return None;
            }
            DbError::Unavailable(cause) => cause,
        },
    };
    // Lost around the commit: the group is stored whole or not at all, and whether one of its
    // new rows is there decides every answer.
    conn.broken = true;
    drop(conn);
    let created = group.iter().zip(&outcomes).find(|(_, o)| **o == CreateOutcome::Created);
    let gives_up = group.iter().map(|job| job.gives_up).min()?;
    match created {
        Some((job, _)) if outcomes.len() == group.len() && is_stored(pool, job.opportunity.id, gives_up) => {
            tracing::warn!(cause, size = group.len(), "the connection was lost after the commit; the group is stored");
            Some(outcomes.into_iter().map(Ok).collect())
        }
        _ => unavailable(&cause),
    }
}

/// Stores one create in its own statement or transaction.
fn store_one(pool: &Pool<PgManager>, job: &Job) -> Result<CreateOutcome, DbError> {
    let mut conn = checkout(pool, job.deadline)?;
    let id = job.opportunity.id;
    match opportunity::create(
        DbConn::Postgres(&mut conn.conn),
        &job.opportunity,
        job.key.as_ref(),
        &job.event,
        job.deadline,
    ) {
        Err(DbError::Unavailable(cause)) => {
            // Lost, or stuck past a timeout: r2d2 drops the connection on return. Whether the
            // commit happened decides the answer.
            conn.broken = true;
            drop(conn);
            if is_stored(pool, id, job.gives_up) {
                tracing::warn!(%id, cause, "the connection was lost after the commit; the create is stored");
                Ok(CreateOutcome::Created)
            } else {
                Err(DbError::Unavailable(cause))
            }
        }
        other => other,
    }
}

/// A pooled connection, waited for until `deadline` at most.
fn checkout(pool: &Pool<PgManager>, deadline: Instant) -> Result<Conn, DbError> {
    let wait = deadline.saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return Err(DbError::Unavailable("waited too long for a PostgreSQL writer".into()));
    }
    Ok(pool.get_timeout(wait)?)
}

/// Whether the opportunity is stored, asked on a fresh connection; `false` when that cannot be
/// told before `until`.
fn is_stored(pool: &Pool<PgManager>, id: Uuid, until: Instant) -> bool {
    checkout(pool, until).and_then(|mut conn| opportunity::exists_postgres(&mut conn.conn, id)).unwrap_or(false)
}

/// A change queued for a group: [`PgWriter::change`].
struct ChangeJob {
    /// The opportunity it locks: a group locks its rows in id order, so that two groups never
    /// wait for each other.
    id: Uuid,
    /// Past this instant the change is not started, and a group holding it is rolled back before
    /// COMMIT (its caller is about to answer SERVICE_UNAVAILABLE).
    deadline: Instant,
    op: Box<dyn ChangeOp>,
}

/// A change with its caller's types out of sight, so that changes of any kind share a group.
trait ChangeOp: Send {
    /// Runs the change in the caller's transaction, keeping its outcome; an error leaves the
    /// transaction to be rolled back.
    fn run(
        &mut self,
        conn: &mut PgConnection,
        locked: &mut Locked,
        deferred: &mut Vec<Deferred>,
    ) -> Result<(), DbError>;
    /// Answers the caller: with the kept outcome once the group committed, or with `failure`.
    fn answer(self: Box<Self>, failure: Option<DbError>);
}

struct Change<E, F> {
    id: Uuid,
    key: Option<ChangeKey>,
    decide: F,
    outcome: Option<Changed<E>>,
    reply: oneshot::Sender<Result<Changed<E>, DbError>>,
}

impl<E, F> ChangeOp for Change<E, F>
where
    E: Send + 'static,
    F: Fn(Option<Opportunity>) -> Decision<E> + Send + 'static,
{
    fn run(
        &mut self,
        conn: &mut PgConnection,
        locked: &mut Locked,
        deferred: &mut Vec<Deferred>,
    ) -> Result<(), DbError> {
        self.outcome = None;
        let changed = opportunity::change_postgres(conn, locked, self.id, self.key.as_ref(), &self.decide, deferred)?;
        self.outcome = Some(changed);
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<DbError>) {
        let outcome = match (failure, self.outcome) {
            (Some(e), _) => Err(e),
            (None, Some(outcome)) => Ok(outcome),
            (None, None) => Err(DbError::Unavailable("the change was not run".into())),
        };
        // A caller that went away no longer needs the answer.
        let _ = self.reply.send(outcome);
    }
}

/// Stores a group of changes in one transaction, rows locked in id order and events appended
/// last, and answers each caller; `group` is left empty. When a change of the group fails on a
/// query (not a lost server), nothing of the group is stored and each change runs again alone,
/// so that a change that fails never fails the others.
fn store_changes(pool: &Pool<PgManager>, group: &mut Vec<ChangeJob>) {
    let now = Instant::now();
    for job in group.extract_if(.., |job| job.deadline <= now) {
        job.op.answer(Some(DbError::Unavailable("waited too long for a PostgreSQL writer".into())));
    }
    // A stable sort: two changes of one opportunity keep their order.
    group.sort_by_key(|job| job.id);
    if group.len() > 1 {
        match run_changes(pool, group) {
            Ok(()) => {
                for job in group.drain(..) {
                    job.op.answer(None);
                }
                return;
            }
            Err(DbError::Query(e)) => {
                tracing::debug!(error = %e, size = group.len(), "a group of changes failed; running them one at a time");
            }
            Err(DbError::Unavailable(cause)) => {
                for job in group.drain(..) {
                    job.op.answer(Some(DbError::Unavailable(cause.clone())));
                }
                return;
            }
        }
    }
    for job in group.drain(..) {
        let mut alone = [job];
        let mut result = run_changes(pool, &mut alone);
        // A concurrent call stored the same key first: run again, and replay it.
        if matches!(&result, Err(DbError::Query(e)) if opportunity::is_unique_violation(e)) {
            result = run_changes(pool, &mut alone);
        }
        let [job] = alone;
        job.op.answer(result.err());
    }
}

/// Runs the changes of `group` in one transaction and commits it, unless the earliest deadline
/// of the group passed first.
fn run_changes(pool: &Pool<PgManager>, group: &mut [ChangeJob]) -> Result<(), DbError> {
    let deadline = group.iter().map(|job| job.deadline).min().expect("a group is never empty");
    let mut conn = checkout(pool, deadline)?;
    let result = conn.conn.transaction(|c| {
        // Every row of the group locked at once, in id order (the group is sorted).
        let ids: Vec<Uuid> = group.iter().map(|job| job.id).collect();
        let mut locked = opportunity::lock_postgres(c, &ids).map_err(opportunity::into_diesel)?;
        let mut deferred = Vec::with_capacity(group.len());
        for job in group.iter_mut() {
            job.op.run(c, &mut locked, &mut deferred).map_err(opportunity::into_diesel)?;
        }
        opportunity::finish_changes(DbConn::Postgres(c), &deferred)?;
        if Instant::now() >= deadline {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(DieselError::RollbackTransaction) => {
            Err(DbError::Unavailable("the database did not answer before the deadline".into()))
        }
        Err(e) => {
            let e = opportunity::from_diesel(e);
            if matches!(e, DbError::Unavailable(_)) {
                // Lost, or stuck past a timeout: r2d2 drops it on return. Whether the COMMIT
                // happened cannot be told from here; the callers answer SERVICE_UNAVAILABLE, and
                // a retry with the same key replays what was stored.
                conn.broken = true;
            }
            Err(e)
        }
    }
}
